"""Benchmark: the fit's own error, with exact landmarks and the exact model (issue 20 item 2, run (a)).

The fast inner loop of bench/end_to_end.py's decomposition run (a): no video, no detector, no DAG.
The truth capture's motion (demo.truth_capture.plan_motion at its loudness, the subject's shape,
the same head model) is posed and projected exactly as the truth capture projects it; the landmarks
are mapped into a square portrait crop box (one box per segment, as the crop stage has), and then
- the weight-free per-frame estimator (flame_fit.landmark_fit.fit_segment) runs on them, and
- the refinement (flame_fit.refine.refine_motion) runs on its output with the true shape, with the
  pipeline's [refine] defaults (tasks.common.settings.RefineSettings; --library-defaults: RefineParams').
Head rotation (global o neck), jaw and lip errors and the head's jitter are measured against the
truth, as bench/end_to_end.py measures them (median geodesic error in degrees; lip: median over
frames of the largest lip-vertex error, mm, true shape, zero global and neck; jitter_abs: mean
|second difference| of the head rotation, degrees per frame^2), for the per-frame estimate
(`est_*`) and the refined motion (the output, no prefix).

Usage: python bench/fit_oracle.py [--seconds 6] [--seed 0] [--fit key=value ...] [--refine key=value ...]
       [--exact-preset] [--library-defaults] [--capture KEPT_END_TO_END_FOLDER [--detector LANDMARKS.npz]]
Last line: BENCH fit_oracle head_deg=<f> jaw_deg=<f> lip_mm=<f> jitter_abs_deg=<f> jitter_abs_deg_truth=<f>
est_head_deg=<f> est_jaw_deg=<f> est_lip_mm=<f> est_rmse_px=<f> est_s_per_100=<f> frames=<int>
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.end_to_end import head_vertices, regions  # noqa: E402 - the same face/lip regions and vertices
from demo.capture import FACE_HEIGHT_4K, plan_capture, song_audio  # noqa: E402
from demo.scan import procedural_head_model  # noqa: E402
from demo.synthetic_motion import compose, rotation_error_deg  # noqa: E402
from demo.truth_capture import frame_cameras, plan_motion, pose_model, subject_shape  # noqa: E402
from demo.truth_render import project  # noqa: E402
from flame_fit.landmark_fit import FitParams, fit_segment  # noqa: E402
from flame_fit.refine import RefineParams, jitter, refine_motion  # noqa: E402
from flame_fit.scan_fit import neutral_mesh  # noqa: E402
from tasks.common.settings import RefineSettings  # noqa: E402
from tasks.estimation.motion import refine_params as pipeline_refine_params  # noqa: E402


# The refinement settings that close most of the fit's own error on exact landmarks (notes of issue 20
# item 2); on Dlib's landmarks they make jaw and lips much worse. The pipeline applies
# flame_fit.refine.CLOSE_FIT (these values but the outlier fence, which stays the configured one) by
# itself to landmarks with little jitter ([refine] close_fit_noise_px).
EXACT_LANDMARK_REFINE = ["refit_jaw=true", "lambda_anchor=1e-7", "refit_rounds=2", "smooth_order=2",
                         "lambda_smooth=10", "outlier_scale=100", "smooth_weight=0.01"]


def truth_motion(model, seconds: float, seed: int, fps: int = 30, width: int = 1280, height: int = 720
                 ) -> dict:
    """The truth capture's subject S001 / first song, without rendering: shape (100,), expression (T,50),
    global_orient, neck_pose, jaw_pose (T,3), landmarks (T,68,2) frame px, segments [(a, b)] of frames
    that the crop stage would keep in one box (before the excursion / off-frame span)."""
    subj = plan_capture(1, 1, seed)[0]
    song = subj["songs"][0]
    n_frames = int(round(seconds * fps))
    loud = song_audio(song, n_frames, fps)[-1]
    shape = subject_shape(seed * 1000 + subj["variant"], int(model.n_shape))
    _, lmk0 = neutral_mesh(model, shape)
    face_height = float(lmk0[19:25, 1].mean() - lmk0[8, 1])
    face_px = FACE_HEIGHT_4K * height / 2160.0
    motion = plan_motion(n_frames, fps, width, height, face_px, loud, seed, int(model.n_expr))
    _, lmk3d = pose_model(model, shape, motion)
    cams = frame_cameras(lmk3d, motion["center"], motion["face_px"], face_height)
    landmarks = np.stack([project(lmk3d[t], cams[t]) for t in range(n_frames)])
    # segments: the frames outside the excursion and the off-frame span
    bad = np.zeros(n_frames, bool)
    for a, b in (motion["excursion"], motion["offframe"]):
        bad[max(int(a) - 3, 0):int(b) + 3] = True
    segs, a = [], None
    for t in range(n_frames + 1):
        if t < n_frames and not bad[t]:
            a = t if a is None else a
        elif a is not None:
            if t - a >= 30:
                segs.append((a, t))
            a = None
    return {"shape": shape, "landmarks": landmarks, "segments": segs,
            **{k: np.asarray(motion[k], np.float64)
               for k in ("expression", "global_orient", "neck_pose", "jaw_pose")}}


def capture_truth(work: Path, size: int = 1024) -> dict:
    """The truth of a kept bench/end_to_end.py folder's first segment, its landmarks mapped into the
    portrait by the segment's crop box (bench/end_to_end.py's oracle)."""
    import json
    song = sorted((work / "truth" / "S001").iterdir())[0]
    with np.load(song / "truth.npz") as z:
        tr = {k: z[k] for k in z.files}
    seg = json.loads((work / "processed" / "S001" / song.name / "portrait" / "segments.json").read_text())
    seg = seg["segments"][0]
    a, b = int(seg["start_frame"]), int(seg["end_frame"])
    x0, y0, x1, _ = (float(v) for v in seg["box"])
    lmk = (tr["landmarks"][a:b].astype(np.float64) - [x0, y0]) * (size / (x1 - x0))
    ok = ((lmk >= 0) & (lmk < size)).all(axis=(1, 2)) & tr["face_visible"][a:b].astype(bool)
    return {"shape": tr["shape"].astype(np.float32), "landmarks": tr["landmarks"], "segments": [(a, b)],
            "portrait_landmarks": lmk, "ok": ok,
            **{k: tr[k].astype(np.float64) for k in ("expression", "global_orient", "neck_pose", "jaw_pose")}}


def crop_landmarks(landmarks: np.ndarray, size: int, margin: float = 0.6) -> np.ndarray:
    """Frame-pixel landmarks (T,68,2) of one segment -> portrait pixels (T,68,2) of one square box
    around all of them (grown by `margin` per side, as the crop stage grows its box)."""
    lo, hi = landmarks.min(axis=(0, 1)), landmarks.max(axis=(0, 1))
    side = float((hi - lo).max()) * (1 + 2 * margin)
    x0, y0 = (lo + hi) / 2 - side / 2
    return (landmarks - [x0, y0]) * (size / side)


def errors(model, truth: dict, a: int, b: int, out: dict, lips: np.ndarray) -> dict:
    """Per-frame head (deg), jaw (deg), lip (mm) errors of `out` over truth frames [a, b)."""
    neck = out.get("neck_pose", np.zeros_like(out["global_orient"]))
    head_out = compose(np.asarray(out["global_orient"], np.float64), np.asarray(neck, np.float64))
    head_true = compose(truth["global_orient"][a:b], truth["neck_pose"][a:b])
    v_out = head_vertices(model, truth["shape"], out["expression"], out["jaw_pose"])
    v_tr = head_vertices(model, truth["shape"], truth["expression"][a:b], truth["jaw_pose"][a:b])
    return {"head": rotation_error_deg(head_out, head_true),
            "jaw": rotation_error_deg(np.asarray(out["jaw_pose"], np.float64), truth["jaw_pose"][a:b]),
            "lip": (np.linalg.norm(v_out - v_tr, axis=2) * 1000)[:, lips].max(axis=1),
            "jit": np.degrees(jitter(head_out)), "jit_true": np.degrees(jitter(head_true)),
            "jaw_bias": float(np.degrees(np.asarray(out["jaw_pose"])[:, 0]
                                         - truth["jaw_pose"][a:b, 0]).mean())}


def parse_sets(cls, items: list[str]):
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    kw = {}
    for kv in items:
        k, v = kv.split("=", 1)
        if k not in fields:
            raise SystemExit(f"{cls.__name__} has no field {k!r}")
        typ = str(getattr(fields[k], "__name__", fields[k]))
        as_bool = lambda x: x.lower() in ("1", "true", "yes")  # noqa: E731
        kw[k] = {"str": str, "int": int, "bool": as_bool}.get(typ, float)(v)
    return kw


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=1024, help="portrait size ([crop] output_size)")
    ap.add_argument("--fit", nargs="*", default=[], help="FitParams overrides key=value")
    ap.add_argument("--refine", nargs="*", default=[], help="RefineParams overrides key=value")
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--exact-preset", action="store_true",
                    help="refine with EXACT_LANDMARK_REFINE (then --refine)")
    ap.add_argument("--library-defaults", action="store_true",
                    help="start from RefineParams' defaults (the paper's) instead of the pipeline's [refine]")
    ap.add_argument("--capture", default="",
                    help="a kept bench/end_to_end.py folder: its truth and first segment's "
                    "crop box instead of the planned motion")
    ap.add_argument("--detector", default="", help="with --capture: an npz (landmarks, ok) of the detector's "
                    "landmarks on that segment's portrait video, fitted instead of the truth's")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = procedural_head_model()
    if args.capture:
        truth = capture_truth(Path(args.capture))
    else:
        truth = truth_motion(model, args.seconds, args.seed)
    fit_params = FitParams(**parse_sets(FitParams, args.fit))
    sets = (EXACT_LANDMARK_REFINE if args.exact_preset else []) + args.refine
    base = RefineParams() if args.library_defaults else pipeline_refine_params(RefineSettings(), args.size)
    refine_params = dataclasses.replace(base, **{**parse_sets(RefineParams, sets), "image_size": args.size})
    _, lips = regions(model, truth["shape"])
    est, ref, t_fit, n_fit, rmse = [], [], 0.0, 0, []
    for a, b in truth["segments"]:
        if args.capture:
            lmk, ok = truth["portrait_landmarks"], truth["ok"]
            if args.detector:
                with np.load(args.detector) as z:
                    lmk, ok = z["landmarks"].astype(np.float64), z["ok"].astype(bool)
        else:
            lmk = crop_landmarks(truth["landmarks"][a:b], args.size)
            ok = np.ones(b - a, bool)
        t0 = time.perf_counter()
        fit = fit_segment(model, lmk, ok, args.size, fit_params)
        t_fit += time.perf_counter() - t0
        n_fit += b - a
        rmse.append(fit["rmse_px"])
        est.append(errors(model, truth, a, b, fit, lips))
        if not args.no_refine:
            frames = {"landmarks": lmk, "landmark_ok": ok, "shape": np.repeat(fit["shape"][None], b - a, 0),
                      **{k: fit[k] for k in ("expression", "global_orient", "jaw_pose", "cam")}}
            motion, qc = refine_motion(model, frames, truth["shape"], refine_params)
            ref.append(errors(model, truth, a, b, motion, lips))
            print(f"segment [{a},{b}): landmark RMSE {qc['landmark_rmse_px']['before']:.2f} -> "
                  f"{qc['landmark_rmse_px']['after']:.2f} px, {qc['iterations']} iterations, "
                  f"{qc['seconds']['total']:.1f} s")

    def summary(rs):
        cat = lambda k: np.concatenate([r[k] for r in rs])  # noqa: E731
        return {"head": float(np.median(cat("head"))), "jaw": float(np.median(cat("jaw"))),
                "lip": float(np.median(cat("lip"))), "jit": float(np.mean([r["jit"] for r in rs])),
                "jit_true": float(np.mean([r["jit_true"] for r in rs])),
                "jaw_bias": float(np.mean([r["jaw_bias"] for r in rs]))}

    e = summary(est)
    r = summary(ref) if ref else {k: float("nan") for k in e}
    per100 = t_fit / n_fit * 100
    print(f"segments {truth['segments']}, {n_fit} frames, portrait {args.size} px")
    print(f"fit params {fit_params.as_dict()}")
    print(f"refine params {dataclasses.asdict(refine_params)}")
    print(f"{'':14s}{'head deg':>10s}{'jaw deg':>10s}{'jaw bias':>10s}{'lip mm':>10s}{'jitter':>10s}")
    for name, s in (("per-frame", e), ("refined", r)):
        print(f"{name:14s}" + "".join(f"{s[k]:10.3f}" for k in ("head", "jaw", "jaw_bias", "lip"))
              + f"{s['jit']:10.4f}")
    print(f"truth jitter {e['jit_true']:.4f} deg/frame^2; per-frame fit {per100:.2f} s per 100 frames, "
          f"landmark RMSE {np.mean(np.concatenate(rmse)):.3f} px")
    print(f"BENCH fit_oracle head_deg={r['head']:.3f} jaw_deg={r['jaw']:.3f} lip_mm={r['lip']:.3f} "
          f"jitter_abs_deg={r['jit']:.4f} jitter_abs_deg_truth={e['jit_true']:.4f} "
          f"est_head_deg={e['head']:.3f} est_jaw_deg={e['jaw']:.3f} est_lip_mm={e['lip']:.3f} "
          f"est_rmse_px={np.mean(np.concatenate(rmse)):.3f} "
          f"est_s_per_100={per100:.2f} frames={n_fit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
