"""Benchmark: scan fitting on generated scans with a known shape.

For each seed a demo scan is generated (demo.scan: random shape, arbitrary units and
pose, noise, holes, hair cap, shoulders, photo texture) and fitted twice: with the true 3D
landmarks given (landmarks.json, scan units) and with landmarks found automatically. The error
is the distance of each fitted model vertex (mapped into the scan with the fitted alignment) to
the true model surface, divided by the true scan scale: model units, i.e. mm at FLAME scale
(metres x 1000), and as a fraction of the head size (the true mesh's bounding-box diagonal).
The zero-shape model under the same alignment procedure is printed as the reference.

Usage: python bench/scan_fit.py [--seeds 0 1 2] [--device cpu|cuda]
Last line: BENCH scan_fit median_mm_given=<f> p95_mm_given=<f> median_mm_auto=<f> p95_mm_auto=<f> seconds=<f>
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flame_fit.geometry import SurfaceIndex  # noqa: E402
from flame_fit.scan_fit import apply_similarity, invert_similarity, neutral_mesh  # noqa: E402
from demo.scan import read_truth, write_demo_scan  # noqa: E402
from tasks.head_model import head_model_for_task
from tasks.layout import Layout  # noqa: E402
from tasks.scans.fit import fit_subject_scan  # noqa: E402


def vertex_errors(model, shape: np.ndarray, alignment: dict, truth: dict, device) -> tuple[np.ndarray, float]:
    """Distances (V,) of the fitted vertices to the true surface in model units, and the head size."""
    faces = model.faces.cpu().numpy()
    v_true, _ = neutral_mesh(model, truth["shape"], device)
    v_fit, _ = neutral_mesh(model, shape, device)
    s_true = float(truth["scale"])
    true_scan = apply_similarity(v_true, s_true, truth["R"], truth["t"])
    to_scan = invert_similarity(alignment["scale"], alignment["R"], alignment["t"])
    fit_scan_units = apply_similarity(v_fit, *to_scan)
    d = SurfaceIndex(true_scan, faces).distance(fit_scan_units) / s_true
    head = float(np.linalg.norm(v_true.max(axis=0) - v_true.min(axis=0)))
    return d, head


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    model, rec = head_model_for_task(Layout.from_config(), device)
    print(f"head model: {rec['name']} ({rec['kind']}), device {device}, "
          f"torch threads {torch.get_num_threads()}")
    # one-time imports (MTCNN, Dlib model file) stay out of the per-scan times
    from tasks.faces import face_models
    face_models.detect_faces(np.zeros((64, 64, 3), np.uint8), device="cpu")
    face_models._predictor()

    rows = {"given": [], "auto": []}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in args.seeds:
            given_dir, auto_dir = tmp / f"s{seed}/given/scan", tmp / f"s{seed}/auto/scan"
            truth_dir = tmp / f"s{seed}/truth"
            write_demo_scan(given_dir, truth_dir, seed, write_landmarks=True, model=model)
            auto_dir.mkdir(parents=True)
            for p in given_dir.iterdir():
                if p.name != "landmarks.json":
                    shutil.copy(p, auto_dir / p.name)
            truth = read_truth(truth_dir)
            for kind, folder in (("given", given_dir), ("auto", auto_dir)):
                t0 = time.perf_counter()
                files, _ = fit_subject_scan(folder / "head.obj", model, rec, None, device)
                seconds = time.perf_counter() - t0
                times.append(seconds)
                d, head = vertex_errors(model, files["shape"], files["alignment"], truth, device)
                rep = files["report"]
                rows[kind].append(d)
                print(f"seed {seed} {kind:5s}: vertex error median {np.median(d) * 1000:.3f} mm "
                      f"p95 {np.percentile(d, 95) * 1000:.3f} mm (median {np.median(d) / head:.5f} "
                      f"of head size {head * 1000:.0f} mm); surface residual "
                      f"{rep['residuals_before_mm']['surface_median']:.2f} -> "
                      f"{rep['residuals_after_mm']['surface_median']:.2f} mm; {rep['iterations']} it, "
                      f"converged={rep['converged']}, {seconds:.1f} s (fit {rep['fit_seconds']:.1f} s)")
            d0, _ = vertex_errors(model, np.zeros(100, np.float32), {"scale": 1 / float(truth["scale"]),
                                  "R": truth["R"].T, "t": -truth["R"].T @ truth["t"] / float(truth["scale"])},
                                  truth, device)
            print(f"seed {seed} zero shape at the true alignment: median {np.median(d0) * 1000:.3f} mm "
                  f"p95 {np.percentile(d0, 95) * 1000:.3f} mm")
    out = {}
    for kind in ("given", "auto"):
        d = np.concatenate(rows[kind])
        out[f"median_mm_{kind}"] = float(np.median(d) * 1000)
        out[f"p95_mm_{kind}"] = float(np.percentile(d, 95) * 1000)
    seconds = float(np.mean(times))
    print(f"targets: median < 1 mm given, < 2 mm auto, < 30 s per scan; mean seconds per scan {seconds:.1f}")
    print(f"BENCH scan_fit median_mm_given={out['median_mm_given']:.4f} "
          f"p95_mm_given={out['p95_mm_given']:.4f} median_mm_auto={out['median_mm_auto']:.4f} "
          f"p95_mm_auto={out['p95_mm_auto']:.4f} seconds={seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
