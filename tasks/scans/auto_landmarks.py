"""The subject's shape from the light-stage scan: `FitScanShape(subject)`.

Loads the scan (OBJ/PLY, textured or vertex-coloured, any units), takes its 68 3D landmarks from
scan/landmarks.json or finds them automatically (ray-cast renders of the textured scan, MTCNN +
Dlib on the render, each landmark lifted to 3D through its ray's hit), fits the head model
(flame_fit.scan_fit) and writes processed/<subject>/shape/: shape.npy (written last),
alignment.json, report.json and fit.png. Without a scan the shape is the monocular mean.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from pathlib import Path

import luigi
import numpy as np
import torch

from flame_fit.geometry import SurfaceIndex
from flame_fit.scan_fit import (ScanFitConfig, apply_similarity, fit_scan, invert_similarity,
                                landmark_weights, neutral_mesh, umeyama)
from tasks import layout
from tasks.devices import gpu_resources, torch_device
from tasks.common.atomic import atomic_dir, json_dumps, npy_bytes
from tasks.common.errors import PipelineInputError

from tasks.estimate import SubjectShape

log = logging.getLogger("singinghead")

N_LANDMARKS = 68
SCAN_FIX = ("export the scan from Metashape as OBJ (with its .mtl and texture image) "
            "or as PLY with vertex colours")
# Dlib on a render places landmarks a few mm from where a person would click them on the scan:
# automatic landmarks get this std (model units) so the surface term leads the fit.
AUTO_LANDMARK_SIGMA = 0.01
LANDMARK_FIX = ("write scan/landmarks.json as {\"landmarks\": [[x, y, z], ...]} "
                "with 68 points in iBUG order, "
                "in the scan's own coordinates")


# ----------------------------------------------------------------------------- scan loading
@dataclasses.dataclass
class Scan:
    path: Path
    vertices: np.ndarray                   # (N, 3) float64, scan units
    faces: np.ndarray                      # (F, 3) int64
    corner_uv: np.ndarray | None = None    # (F, 3, 2) texture coordinates per triangle corner
    texture: np.ndarray | None = None      # (H, W, 3) uint8
    vertex_colors: np.ndarray | None = None  # (N, 3) uint8

    @property
    def has_color(self) -> bool:
        return self.texture is not None or self.vertex_colors is not None


def load_scan(path: Path) -> Scan:
    """Read an OBJ or PLY scan with trimesh (texture through the OBJ's .mtl, or vertex colours).

    Raises PipelineInputError when the file cannot be read or holds no triangles.
    """
    import trimesh

    path = Path(path)
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as e:  # trimesh raises many kinds on a damaged file
        raise PipelineInputError(path, f"cannot read the scan ({type(e).__name__}: {e})", SCAN_FIX) from e
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) < 3:
        raise PipelineInputError(path, "the scan holds no triangle mesh", SCAN_FIX)
    vertices = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    if not np.all(np.isfinite(vertices)):
        raise PipelineInputError(path, "the scan has non-finite vertex coordinates", SCAN_FIX)
    scan = Scan(path=path, vertices=vertices, faces=faces)
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
        image = getattr(getattr(visual, "material", None), "image", None)
        if image is None:
            base = getattr(getattr(visual, "material", None), "baseColorTexture", None)
            image = base
        if image is not None and len(visual.uv) == len(vertices):
            scan.texture = np.asarray(image.convert("RGB"), np.uint8)
            scan.corner_uv = np.asarray(visual.uv, np.float64)[faces]
        else:
            log.warning("%s: texture coordinates but no readable texture image; treating as untextured", path)
    elif getattr(visual, "kind", None) == "vertex":
        vc = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
        if len(vc) == len(vertices):
            scan.vertex_colors = vc
    return scan


def load_scan_landmarks(path: Path) -> np.ndarray:
    """68 3D landmarks (68, 3) float64 from landmarks.json: a list of [x, y, z] or
    {"landmarks": [...]}. Raises PipelineInputError on anything else."""
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        pts = data["landmarks"] if isinstance(data, dict) else data
        arr = np.asarray(pts, dtype=np.float64)
    except Exception as e:
        raise PipelineInputError(path, f"cannot read the landmarks ({type(e).__name__}: {e})",
                                 LANDMARK_FIX) from e
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise PipelineInputError(path, f"landmarks have shape {arr.shape}, expected (68, 3)", LANDMARK_FIX)
    if arr.shape[0] != N_LANDMARKS:
        raise PipelineInputError(path, f"has {arr.shape[0]} landmarks, expected 68 (iBUG order)",
                                 LANDMARK_FIX)
    if not np.all(np.isfinite(arr)):
        raise PipelineInputError(path, "landmarks contain non-finite values", LANDMARK_FIX)
    return arr


# ----------------------------------------------------------------------------- rendering
@dataclasses.dataclass
class View:
    """An orthographic camera: looks along -forward, image x along `right`, image y along -up."""
    center: np.ndarray     # (3,) point at the image centre
    right: np.ndarray      # (3,) unit
    up: np.ndarray         # (3,) unit
    forward: np.ndarray    # (3,) unit, from the subject towards the camera
    half_extent: float     # half image width in scan units
    size: int              # pixels (square)

    def rays(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays through pixel positions px (N, 2) (x, y, pixel centres at +0.5) -> origins, dirs (N, 3)."""
        px = np.asarray(px, np.float64).reshape(-1, 2)
        scale = 2 * self.half_extent / self.size
        a = (px[:, 0] - self.size / 2) * scale
        b = (self.size / 2 - px[:, 1]) * scale
        far = 4 * self.half_extent
        origins = self.center + a[:, None] * self.right + b[:, None] * self.up + far * self.forward
        return origins, np.broadcast_to(-self.forward, origins.shape).copy()

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel positions (N, 2) of 3D points (N, 3)."""
        d = np.asarray(points) - self.center
        scale = self.size / (2 * self.half_extent)
        return np.stack([d @ self.right * scale + self.size / 2, self.size / 2 - d @ self.up * scale], axis=1)


def make_view(center, forward, up, half_extent, size) -> View:
    f = np.asarray(forward, np.float64)
    f = f / np.linalg.norm(f)
    u = np.asarray(up, np.float64)
    u = u - (u @ f) * f
    u = u / np.linalg.norm(u)
    return View(np.asarray(center, np.float64), np.cross(u, f), u, f, float(half_extent), int(size))


def surface_albedo(scan: Scan, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Colour (N, 3) float in [0, 1] at surface points (triangle ids (N,), barycentrics (N, 3))."""
    if scan.texture is not None:
        uv = (scan.corner_uv[face_ids] * bary[:, :, None]).sum(axis=1)
        h, w = scan.texture.shape[:2]
        x = np.clip(uv[:, 0] % 1.0 * (w - 1), 0, w - 1)
        y = np.clip((1 - uv[:, 1] % 1.0) * (h - 1), 0, h - 1)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        t = scan.texture.astype(np.float64) / 255.0
        return ((1 - fy) * ((1 - fx) * t[y0, x0] + fx * t[y0, x1])
                + fy * ((1 - fx) * t[y1, x0] + fx * t[y1, x1]))
    if scan.vertex_colors is not None:
        vc = scan.vertex_colors.astype(np.float64) / 255.0
        return (vc[scan.faces[face_ids]] * bary[:, :, None]).sum(axis=1)
    return np.full((len(face_ids), 3), 0.7)


def render(scan: Scan, index: SurfaceIndex, view: View, shaded_only: bool = False
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view: RGB (S, S, 3) uint8 (albedo x soft Lambert light from the camera),
    hit points (S, S, 3) (NaN where missed) and the hit mask (S, S)."""
    s = view.size
    jj, ii = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5)
    o, d = view.rays(np.stack([jj.ravel(), ii.ravel()], axis=1))
    hit = index.cast(o, d)
    mask = np.isfinite(hit["t_hit"])
    img = np.ones((s * s, 3))
    pts = np.full((s * s, 3), np.nan)
    ids = hit["primitive_ids"][mask]
    pts[mask] = o[mask] + hit["t_hit"][mask, None] * d[mask]
    light = np.abs(hit["normals"][mask] @ view.forward)
    albedo = np.full((len(ids), 3), 0.75) if shaded_only else surface_albedo(scan, ids, hit["bary"][mask])
    img[mask] = albedo * (0.45 + 0.55 * light[:, None])
    return ((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(s, s, 3),
            pts.reshape(s, s, 3), mask.reshape(s, s))


def lift(index: SurfaceIndex, view: View, px: np.ndarray) -> np.ndarray:
    """3D points (N, 3) where rays through pixels px (N, 2) hit the scan; NaN rows on a miss."""
    o, d = view.rays(px)
    hit = index.cast(o, d)
    t = np.where(np.isfinite(hit["t_hit"]), hit["t_hit"], np.nan)
    return o + t[:, None] * d


# ----------------------------------------------------------------------------- automatic landmarks
def _sphere_directions() -> np.ndarray:
    """The 26 directions to the faces, edges and corners of a cube (unit)."""
    d = np.array([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)
                  if (x, y, z) != (0, 0, 0)], np.float64)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _perpendicular(f: np.ndarray) -> np.ndarray:
    a = np.array([0.0, 0.0, 1.0]) if abs(f[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = a - (a @ f) * f
    return u / np.linalg.norm(u)


def _detect_landmarks(rgb: np.ndarray):
    """(box (4,), probability, landmarks (68, 2)) of the best face in an RGB render, or None."""
    from tasks.faces import face_models
    boxes, probs = face_models.detect_faces(rgb, device="cpu")
    if len(boxes) == 0:
        return None
    # Dlib gives integer pixel indices; +0.5 puts them at pixel centres, where the rays go
    return boxes[0], float(probs[0]), face_models.predict_landmarks(rgb, boxes[0]).astype(np.float64) + 0.5


def _rolled(view: View) -> View:
    """The same camera rolled so that `np.rot90(image)` (90 degrees counter-clockwise) is its image."""
    return dataclasses.replace(view, up=view.right, right=-view.up)


@dataclasses.dataclass
class AutoLandmarks:
    landmarks: np.ndarray     # (68, 3) scan units, NaN where a ray missed
    valid: np.ndarray         # (68,) bool
    image: np.ndarray         # the final frontal render (S, S, 3) uint8
    landmarks_2d: np.ndarray  # (68, 2) on that render
    probability: float
    residual: float           # RMS of the static landmarks against the reference after a similarity
    views_tried: int


def _coarse_views(scan: Scan, index: SurfaceIndex, tile: int, progress=None
                  ) -> list[tuple[float, View, np.ndarray]]:
    """MTCNN faces on renders from 26 directions x 4 rolls, as (probability, view, box (4,)),
    best first. The 104 tiles go through the detector as one mosaic: a detector call costs
    far more than the pixels of one small tile."""
    from tasks.faces import face_models

    lo, hi = scan.vertices.min(axis=0), scan.vertices.max(axis=0)
    center, half = (lo + hi) / 2, 0.55 * float(np.linalg.norm(hi - lo))
    views, tiles = [], []
    for f in _sphere_directions():
        view = make_view(center, f, _perpendicular(f), half, tile)
        rgb, _, _ = render(scan, index, view)
        for k in range(4):
            views.append(view)
            tiles.append(np.rot90(rgb, k))
            view = _rolled(view)
        if progress is not None:
            progress.update(1)
    pad = tile // 8
    cell = tile + 2 * pad
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    mosaic = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[r * cell + pad:r * cell + pad + tile, c * cell + pad:c * cell + pad + tile] = t
    boxes, probs = face_models.detect_faces(mosaic, device="cpu")
    found = []
    for box, prob in zip(boxes, probs):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        r, c = int(cy // cell), int(cx // cell)
        i = r * cols + c
        if i >= len(views):
            continue
        off = np.array([c * cell + pad, r * cell + pad] * 2, np.float64)
        found.append((float(prob), views[i], np.asarray(box, np.float64) - off))
    return sorted(found, key=lambda x: -x[0])


def _landmarks_in_view(scan: Scan, index: SurfaceIndex, view: View, reference: np.ndarray):
    """Render, detect, predict and lift: (rgb, box, prob, lmk2d (68, 2), lmk3d (68, 3), rms, similarity)
    or None. rms: static-landmark RMS against `reference` after a similarity (reference units)."""
    rgb, _, _ = render(scan, index, view)
    det = _detect_landmarks(rgb)
    if det is None:
        return None
    box, prob, lmk2d = det
    pts = lift(index, view, lmk2d)
    ok = np.all(np.isfinite(pts), axis=1)
    ok[:17] = False
    if ok.sum() < 20:
        return None
    sim = umeyama(pts[ok], reference[ok])
    err = np.linalg.norm(apply_similarity(pts[ok], *sim) - reference[ok], axis=1)
    return rgb, box, prob, lmk2d, pts, float(np.sqrt(np.mean(err ** 2))), sim


def _frontal_view(reference: np.ndarray, sim, size: int, half_eyes: float) -> View:
    """The camera looking at the face straight on (the model's +z), model up = image up."""
    si, ri, ti = invert_similarity(*sim)
    face_center = apply_similarity(reference[17:].mean(axis=0, keepdims=True), si, ri, ti)[0]
    eye = float(np.linalg.norm(reference[36] - reference[45])) * si
    return make_view(face_center, ri @ np.array([0.0, 0.0, 1.0]), ri @ np.array([0.0, 1.0, 0.0]),
                     half_eyes * eye, size)


def find_landmarks_auto(scan: Scan, reference: np.ndarray, tile: int = 128, size: int = 384,
                        candidates: int = 3, refinements: int = 2, progress=None) -> AutoLandmarks:
    """68 3D landmarks of a coloured scan without annotations.

    1. MTCNN on renders from 26 directions x 4 rolls (one mosaic); 2. for the `candidates` most
    probable faces, a zoomed render, Dlib landmarks lifted to 3D through their rays, and a
    similarity to the model's reference landmarks (68, 3, model frame): the candidate whose
    static landmarks fit best wins; 3. `refinements` times: re-render exactly frontally as that
    similarity says and lift again (Dlib is most accurate on frontal faces).
    """
    if not scan.has_color:
        raise PipelineInputError(scan.path, "the scan has neither a texture nor vertex colours, "
                                 "so its landmarks "
                                 "cannot be found automatically", LANDMARK_FIX + "; or " + SCAN_FIX)
    index = SurfaceIndex(scan.vertices, scan.faces)
    found = _coarse_views(scan, index, tile, progress)
    tried = 4 * len(_sphere_directions())
    if not found:
        raise PipelineInputError(scan.path, "no face found on renders of the scan from 26 directions",
                                 LANDMARK_FIX + " (or check that the texture shows the face)")
    best = None
    for prob, view, box in found[:candidates]:
        # zoom on the detection: centre on its ray's hit, about twice the box wide
        o = lift(index, view, np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]))[0]
        scale = 2 * view.half_extent / view.size
        centre = o if np.all(np.isfinite(o)) else view.center
        half = 1.0 * max(box[2] - box[0], box[3] - box[1]) * scale
        zoom = dataclasses.replace(view, center=centre, half_extent=half, size=size)
        res = _landmarks_in_view(scan, index, zoom, reference)
        tried += 1
        if res is not None and (best is None or res[5] < best[5]):
            best = res
    if best is None:
        raise PipelineInputError(scan.path, "faces were detected on the renders but no landmarks "
                                 "could be lifted "
                                 "onto the scan", LANDMARK_FIX)
    for _ in range(refinements):
        res = _landmarks_in_view(scan, index, _frontal_view(reference, best[6], size, 1.3), reference)
        tried += 1
        if res is None:
            break
        best = res
    rgb, box, prob, lmk2d, pts, rms, sim = best
    valid = np.all(np.isfinite(pts), axis=1)
    # drop landmarks whose lift lands far from where the similarity puts them (ray through a hole)
    err = np.full(N_LANDMARKS, np.inf)
    err[valid] = np.linalg.norm(apply_similarity(pts[valid], *sim) - reference[valid], axis=1)
    eye = float(np.linalg.norm(reference[36] - reference[45]))
    valid &= err < max(5 * float(np.median(err[17:][valid[17:]])), 0.1 * eye)
    return AutoLandmarks(landmarks=pts, valid=valid, image=rgb, landmarks_2d=lmk2d, probability=prob,
                         residual=rms, views_tried=tried)


# ----------------------------------------------------------------------------- picture
def fit_picture(scan: Scan, fit, model_vertices: np.ndarray, faces: np.ndarray, model_landmarks: np.ndarray,
                title: str, auto: AutoLandmarks | None = None, size: int = 320) -> bytes:
    """PNG bytes: front and side renders of the scan (model frame) with the fitted mesh's
    wireframe over them, a map of the scan-to-model distance in mm, and the auto-landmark render."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    scan_m = dataclasses.replace(
        scan, vertices=apply_similarity(scan.vertices, fit.scale, fit.rotation, fit.translation))
    index = SurfaceIndex(scan_m.vertices, scan_m.faces)
    model_index = SurfaceIndex(model_vertices, faces)
    eye = float(np.linalg.norm(model_landmarks[36] - model_landmarks[45]))
    centre = model_landmarks[17:].mean(axis=0)
    views = {"front": make_view(centre, [0, 0, 1], [0, 1, 0], 1.7 * eye, size),
             "side": make_view(centre + [0, 0, -0.5 * eye], [1, 0, 0], [0, 1, 0], 1.7 * eye, size)}
    panels = 3 + (auto is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels, 3.8), dpi=100)
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
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the stage
def read_monocular_shape(subject: str) -> np.ndarray | None:
    p = layout.monocular_shape_npz(subject)
    if not p.exists():
        return None
    with np.load(p) as z:
        return np.asarray(z["shape"], np.float32).reshape(-1)[:100] if "shape" in z.files else None


def scan_landmarks_path(scan_path: Path) -> Path:
    return Path(scan_path).parent / layout.SCAN_LANDMARKS


def fit_subject_scan(scan_path: Path, model, model_rec: dict, init_shape: np.ndarray | None,
                     device: torch.device, config: ScanFitConfig = ScanFitConfig(), task=None
                     ) -> tuple[dict, bytes]:
    """Load the scan, read or find its landmarks, fit the model.

    Returns ({'shape': (100,) float32, 'alignment': dict, 'report': dict}, fit.png bytes).
    Raises PipelineInputError for an unreadable scan, a bad landmarks.json, or an uncoloured
    scan without landmarks.json.
    """
    from tasks.common.progress import Progress

    t0 = time.perf_counter()
    scan = load_scan(scan_path)
    lmk_file = scan_landmarks_path(scan_path)
    given = load_scan_landmarks(lmk_file) if lmk_file.exists() else None
    if given is None and not scan.has_color:
        raise PipelineInputError(scan_path, "the scan has neither a texture nor vertex colours "
                                 "and there is no "
                                 f"{layout.SCAN_LANDMARKS} next to it", f"{SCAN_FIX}, or {LANDMARK_FIX}")
    auto = None
    if given is not None:
        landmarks = given
        weights = landmark_weights(contour_weight=config.contour_weight)
        source = "given"
    else:
        _, ref = neutral_mesh(model, np.zeros(100, np.float32) if init_shape is None else init_shape, device)
        prog = Progress(task, 26, "scan landmarks: renders")
        auto = find_landmarks_auto(scan, ref, progress=prog)
        prog.close()
        landmarks = np.where(auto.valid[:, None], auto.landmarks, 0.0)
        # the contour of a scan depends on the view: automatic contour points are dropped
        weights = landmark_weights(contour_weight=0.0, valid=auto.valid)
        source = "auto"
        config = dataclasses.replace(config, sigma_landmark=max(config.sigma_landmark, AUTO_LANDMARK_SIGMA))
    prog = Progress(task, config.max_iters + config.probe_iters * (len(config.scale_starts) + 1), "scan fit")
    fit = fit_scan(model, scan.vertices, landmarks, weights, init_shape, config, device, progress=prog)
    prog.close()
    verts, lmk = neutral_mesh(model, fit.shape, device)
    mm = lambda d: {k: round(v * 1000.0, 4) for k, v in d.items()}  # noqa: E731
    report = {
        "scan": str(scan_path), "landmark_source": source,
        "landmarks_used": int((weights > 0).sum()),
        "units": ("mm at model scale (model units x 1000; "
                  "scan units converted with the fitted alignment scale)"),
        "residuals_before_mm": mm(fit.before), "residuals_after_mm": mm(fit.after),
        "iterations": fit.iterations, "converged": fit.converged, "fit_seconds": round(fit.seconds, 3),
        "total_seconds": round(time.perf_counter() - t0, 3), "face_region_points": fit.n_region_points,
        "init": "monocular mean shape" if init_shape is not None else "zero shape",
        "warnings": list(fit.warnings), "model": model_rec, "config": dataclasses.asdict(config),
        "device": str(device), "scan_units_per_model_unit": 1.0 / fit.scale,
    }
    if auto is not None:
        report["auto_landmarks"] = {"probability": auto.probability, "valid": int(auto.valid.sum()),
                                    "residual_to_model_mm": round(auto.residual * 1000, 3),
                                    "views_tried": auto.views_tried}
    for w in fit.warnings:
        log.warning("FitScanShape %s: %s", scan_path, w)
    alignment = {"direction": "scan -> model: x_model = scale * R @ x_scan + t", "scale": fit.scale,
                 "R": fit.rotation, "t": fit.translation}
    stand_in = "" if model_rec.get("kind") == "real" else " [STAND-IN: " + str(model_rec.get("name")) + "]"
    flag = "" if fit.converged else "  NOT CONVERGED"
    title = (f"{scan_path.parent.parent.name}: landmarks {source}, surface median "
             f"{fit.before['surface_median'] * 1000:.2f} -> {fit.after['surface_median'] * 1000:.2f} mm"
             f"{flag}{stand_in}")
    png = fit_picture(scan, fit, verts, model.faces.cpu().numpy(), lmk, title, auto)
    return {"shape": fit.shape, "alignment": alignment, "report": report}, png


def write_shape_dir(out_dir: Path, shape: np.ndarray, report: dict, alignment: dict | None,
                    png: bytes | None) -> None:
    """Write the shape folder as a whole (atomic_dir); shape.npy is written last inside it."""
    with atomic_dir(out_dir) as tmp:
        (tmp / "report.json").write_text(json_dumps(report), encoding="utf-8")
        if alignment is not None:
            (tmp / "alignment.json").write_text(json_dumps(alignment), encoding="utf-8")
        if png is not None:
            (tmp / "fit.png").write_bytes(png)
        (tmp / "shape.npy").write_bytes(npy_bytes(np.asarray(shape, np.float32).reshape(100)))


class FitScanShape(luigi.Task):
    """The subject's FLAME shape (100,): fitted to the scan, or the monocular mean without one."""

    subject = luigi.Parameter()
    fit_config = ScanFitConfig()     # class-level so tests can shorten the fit

    @property
    def resources(self):
        return gpu_resources()

    def requires(self):
        return SubjectShape(subject=self.subject)

    def output(self):
        return luigi.LocalTarget(str(layout.scan_shape_npy(self.subject)))

    def run(self):
        from tasks.head_model import get_head_model

        scan_path = layout.scan_path(self.subject)
        init = read_monocular_shape(self.subject)
        out_dir = layout.shape_dir(self.subject)
        if scan_path is None:
            if init is None:
                raise PipelineInputError(layout.monocular_shape_npz(self.subject),
                                         "no scan and no monocular shape for this subject",
                                         "add raw/<subject>/scan/head.obj or run the per-frame stage first")
            report = {"source": "no scan: monocular mean shape", "landmark_source": None,
                      "monocular_shape": str(layout.monocular_shape_npz(self.subject))}
            log.info("FitScanShape %s: no scan: monocular mean shape", self.subject)
            write_shape_dir(out_dir, init, report, None, None)
            return
        device = torch_device()
        model, rec = get_head_model(device)
        files, png = fit_subject_scan(scan_path, model, rec, init, device, self.fit_config, task=self)
        files["report"]["source"] = "scan fit"
        write_shape_dir(out_dir, files["shape"], files["report"], files["alignment"], png)
