"""The scan-fit stage's plain code: a subject's FLAME shape from the light-stage scan.

`fit_subject_scan` loads the scan (tasks.scans.scan_io), takes its 68 3D landmarks from
scan/landmarks.json or finds them automatically (tasks.scans.auto_landmarks), fits the head model
(flame_fit.scan_fit) and draws fit.png (tasks.scans.figure); `write_shape_dir` writes
processed/<subject>/shape/: shape.npy (written last), alignment.json, report.json and fit.png.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch

from flame_fit.scan_fit import ScanFitConfig, fit_scan, landmark_weights, neutral_mesh
from tasks.capture.raw_layout import SCAN_LANDMARKS
from tasks.common.atomic import atomic_dir, json_dumps, npy_bytes
from tasks.common.errors import PipelineInputError
from tasks.common.progress import Progress
from tasks.common.settings import ScanFitSettings
from tasks.scans.auto_landmarks import find_landmarks_auto
from tasks.scans.figure import fit_picture
from tasks.scans.scan_io import (LANDMARK_FIX, SCAN_FIX, declared_scale, load_scan, load_scan_landmarks,
                                 scan_landmarks_path, scan_units)

log = logging.getLogger("singinghead")

# Dlib on a render places landmarks several mm from where they belong on the scan (2-14 mm per
# group on the truth captures' scans, the contour and brows worst): automatic landmarks get this std
# (model units) so the surface term leads the fit. 20 mm against 10 mm: 0.55-0.96 mm instead of
# 0.55-1.48 mm (mean vertex error) on the four truth captures.
AUTO_LANDMARK_SIGMA = 0.02


def read_monocular_shape(p: Path) -> np.ndarray | None:
    """The per-frame stage's mean shape (100,) float32 from monocular_shape.npz, or None without one."""
    p = Path(p)
    if not p.exists():
        return None
    with np.load(p) as z:
        return np.asarray(z["shape"], np.float32).reshape(-1)[:100] if "shape" in z.files else None


def fit_subject_scan(scan_path: Path, model, model_rec: dict, init_shape: np.ndarray | None,
                     device: torch.device, config: ScanFitConfig = ScanFitConfig(), task=None,
                     units_mode: str = "infer") -> tuple[dict, bytes]:
    """Load the scan, read or find its landmarks, fit the model.

    Returns ({'shape': (100,) float32, 'alignment': dict, 'report': dict}, fit.png bytes).
    Raises PipelineInputError for an unreadable scan, a bad landmarks.json or scan.json, or an
    uncoloured scan without landmarks.json, and for a scan without declared units that no unit
    makes a head of (`units_mode` 'infer', the `[scan_fit] units` setting). With declared units (scan.json) or
    inferred ones the scan -> model scale is fixed, only rotation and translation are fitted; with
    `units_mode` 'free' an undeclared scan's scale is fitted.
    """
    t0 = time.perf_counter()
    scan = load_scan(scan_path)
    declared_scale(scan_path)          # a bad scan.json fails before the automatic landmarks' renders
    lmk_file = scan_landmarks_path(scan_path)
    given = load_scan_landmarks(lmk_file) if lmk_file.exists() else None
    if given is None and not scan.has_color:
        raise PipelineInputError(scan_path, "the scan has neither a texture nor vertex colours "
                                 "and there is no "
                                 f"{SCAN_LANDMARKS} next to it", f"{SCAN_FIX}, or {LANDMARK_FIX}")
    auto = None
    if given is not None:
        landmarks = given
        weights = landmark_weights(contour_weight=config.contour_weight)
        source = "given"
        units = scan_units(scan_path, scan.vertices, landmarks, units_mode)
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
        units = scan_units(scan_path, scan.vertices, auto.landmarks, units_mode, valid=auto.valid)
    if units.scale is not None:
        config = dataclasses.replace(config, fixed_scale=units.scale)
    if units.source != "declared":
        log.info("FitScanShape %s: scan scale %s", scan_path, units.describe())
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
        "iterations": fit.iterations, "converged": fit.converged,
        "shape_change_mm": round(fit.shape_change * 1000.0, 6) if np.isfinite(fit.shape_change) else None,
        "fit_seconds": round(fit.seconds, 3),
        "total_seconds": round(time.perf_counter() - t0, 3), "face_region_points": fit.n_region_points,
        "init": "monocular mean shape" if init_shape is not None else "zero shape",
        "warnings": list(fit.warnings), "model": model_rec, "config": dataclasses.asdict(config),
        "device": str(device), "scan_units_per_model_unit": 1.0 / fit.scale,
        "scale": units.describe(), "scan_units": units.record(),
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


def bad_fit_reasons(report: dict, shape: np.ndarray, settings: ScanFitSettings) -> list[str]:
    """Why a scan fit did not fit its scan (empty: it did), from its report and shape (100,):
    landmarks left further than `max_landmark_residual_mm` (mean), or a shape coefficient beyond
    `max_abs_shape_coefficient` prior standard deviations."""
    reasons = []
    lmk = float(report["residuals_after_mm"]["landmark_mean"])
    if not lmk <= settings.max_landmark_residual_mm:
        reasons.append(f"the fitted landmarks stay {lmk:.1f} mm from the scan's on average (at most "
                       f"{settings.max_landmark_residual_mm:g} accepted; "
                       f"{'not ' if not report.get('converged') else ''}converged)")
    top = float(np.max(np.abs(shape)))
    if not top <= settings.max_abs_shape_coefficient:
        reasons.append(f"shape coefficient {int(np.argmax(np.abs(shape)))} is {top:.1f} prior standard "
                       f"deviations (at most {settings.max_abs_shape_coefficient:g} accepted)")
    return reasons


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
