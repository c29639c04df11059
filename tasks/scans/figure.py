"""The scan fit's picture (fit.png): the scan with the fitted mesh over it, and the fit's distances.

Drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot): nothing global, such as
the process's backend or its list of open figures, is touched by a stage.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from flame_fit.geometry import SurfaceIndex
from flame_fit.scan_fit import apply_similarity
from tasks.scans.auto_landmarks import AutoLandmarks
from tasks.scans.render import make_view, render
from tasks.scans.scan_io import Scan


def fit_picture(scan: Scan, fit, model_vertices: np.ndarray, faces: np.ndarray, model_landmarks: np.ndarray,
                title: str, auto: AutoLandmarks | None = None, size: int = 320) -> bytes:
    """PNG bytes: front and side renders of the scan (model frame) with the fitted mesh's
    wireframe over them, a map of the scan-to-model distance in mm, and the auto-landmark render."""
    scan_m = dataclasses.replace(
        scan, vertices=apply_similarity(scan.vertices, fit.scale, fit.rotation, fit.translation))
    index = SurfaceIndex(scan_m.vertices, scan_m.faces)
    model_index = SurfaceIndex(model_vertices, faces)
    eye = float(np.linalg.norm(model_landmarks[36] - model_landmarks[45]))
    centre = model_landmarks[17:].mean(axis=0)
    views = {"front": make_view(centre, [0, 0, 1], [0, 1, 0], 1.7 * eye, size),
             "side": make_view(centre + [0, 0, -0.5 * eye], [1, 0, 0], [0, 1, 0], 1.7 * eye, size)}
    panels = 3 + (auto is not None)
    fig = Figure(figsize=(3.4 * panels, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    for ax, (name, view) in zip(axes, views.items()):
        rgb, _, _ = render(scan_m, index, view)
        ax.imshow(rgb)
        # wireframe of the model triangles facing this camera
        tri = model_vertices[faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        vis = faces[(n @ view.forward) > 0]
        edges = np.concatenate([vis[:, [0, 1]], vis[:, [1, 2]], vis[:, [2, 0]]])
        edges = np.unique(np.sort(edges, axis=1), axis=0)
        p = view.project(model_vertices)
        ax.add_collection(LineCollection(p[edges], colors=(0.1, 0.8, 0.2, 0.35), linewidths=0.3))
        lp = view.project(model_landmarks[17:])
        ax.plot(lp[:, 0], lp[:, 1], "r.", ms=2)
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.set_title(f"{name}: scan + fitted mesh", fontsize=8)
        ax.axis("off")
    _, pts, mask = render(scan_m, index, views["front"], shaded_only=True)
    dist = np.full(mask.shape, np.nan)
    dist[mask] = model_index.distance(pts[mask]) * 1000.0
    im = axes[2].imshow(dist, cmap="viridis", vmin=0, vmax=5)
    axes[2].set_title("scan-to-model distance (mm at model scale)", fontsize=8)
    axes[2].axis("off")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
    if auto is not None:
        axes[3].imshow(auto.image)
        ok = auto.valid
        axes[3].plot(auto.landmarks_2d[ok, 0], auto.landmarks_2d[ok, 1], "g.", ms=3)
        axes[3].plot(auto.landmarks_2d[~ok, 0], auto.landmarks_2d[~ok, 1], "rx", ms=3)
        axes[3].set_title(f"automatic landmarks (p={auto.probability:.2f})", fontsize=8)
        axes[3].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
