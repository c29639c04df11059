"""Benchmark of the motion refinement on generated singing-like sequences with known truth.

For each generated sequence (240 frames and longer, 1024 px portrait, 2 px landmark noise, 5% gross
landmark errors, noisy per-frame estimates with 5% gross errors; see demo.synthetic_motion)
it prints, before (the per-frame estimates) and after refinement: global-orientation error, head
rotation error (global composed with neck), neck error, landmark RMSE against the detections and
jitter; then compares the exact landmark smoother with the paper's Adam at equal objective.

Metrics:
- rot_err_deg: median global-orientation error after refinement (degrees), all sequences.
- neck_err_deg: median neck-pose error after refinement. Landmarks alone cannot tell neck from
  global rotation (see flame_fit.refine); the neck estimate follows the regulariser, so this is
  roughly the size of the true (small) neck motion.
- rmse_ratio: landmark RMSE of the refined model against the detections (frames without gross
  errors or failed detections) divided by the RMSE of the true landmarks against the same
  detections, i.e. the noise level in the same metric.
- jitter_ratio: mean |second difference| of the head rotation before / after.
- smoother_speedup: Adam's time to reach the exact solution's objective (within 1e-5) / exact time.
- seconds_240: wall time of the whole refinement (outliers, smoothing, Eq. 1) of 240 frames.

Usage: python bench/motion.py [--device cpu|cuda] [--seeds 3] [--long 480]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flame_fit.refine import (RefineParams, jitter, landmark_rmse, project_landmarks_px,  # noqa: E402
                              refine_motion)
from flame_fit.smoothing import (smooth_landmarks_adam, smooth_landmarks_exact,  # noqa: E402
                                 smoothing_objective)
from demo.synthetic_motion import (MotionSpec, compose, generate_sequence,  # noqa: E402
                                   rotation_error_deg)
from tasks import config  # noqa: E402
from tasks.common.settings import CropSettings, FlameSettings, RefineSettings  # noqa: E402
from tasks.estimation.motion import refine_params  # noqa: E402
from tasks.head_model import get_head_model  # noqa: E402
from tasks.layout import Layout  # noqa: E402


def load_model(device: str):
    """The configured head model (FLAME when [flame] model_path is set, else the procedural one)."""
    flame = config.read(FlameSettings)
    models_dir = Layout.from_config().models_dir()
    if not flame.model_path and not os.environ.get("SINGINGHEAD_BENCH_KEEP_MODEL_DIR"):
        # the procedural model is generated once per machine into a scratch folder
        models_dir = Path(tempfile.gettempdir()) / "singinghead_bench_models"
    return get_head_model(flame, models_dir, device)


def refine_params_from_config() -> RefineParams:
    """What RefineMotion uses: `[refine]` (and the portrait size from `[crop]`)."""
    return refine_params(config.read(RefineSettings), config.read(CropSettings).output_size)


def evaluate(model, seq, params: RefineParams, device: str) -> dict:
    tr, fr = seq.truth, seq.frames
    t0 = time.perf_counter()
    motion, qc = refine_motion(model, fr, tr["shape"], params, device=device)
    seconds = time.perf_counter() - t0
    T = len(tr["expression"])
    head_true = compose(tr["global_orient"], tr["neck_pose"])
    head_after = compose(motion["global_orient"].astype(np.float64), motion["neck_pose"].astype(np.float64))
    before_glob = fr["global_orient"].astype(np.float64)    # per-frame stage: the whole head rotation
    good = fr["landmark_ok"] & ~seq.injected["landmarks"]
    after_px = project_landmarks_px(model, motion["shape"], motion["expression"], motion["global_orient"],
                                    motion["neck_pose"], motion["jaw_pose"], motion["cam"], params.image_size)
    before_px = project_landmarks_px(model, fr["shape"], fr["expression"], before_glob, np.zeros((T, 3)),
                                     fr["jaw_pose"], fr["cam"], params.image_size)
    noise = landmark_rmse(tr["landmarks"], fr["landmarks"], good)
    deg = 180.0 / np.pi
    return {
        "T": T, "seconds": seconds, "iterations": qc["iterations"], "converged": qc["converged"],
        "glob_before": np.median(rotation_error_deg(before_glob, tr["global_orient"])),
        "glob_after": np.median(rotation_error_deg(motion["global_orient"], tr["global_orient"])),
        "head_before": np.median(rotation_error_deg(before_glob, head_true)),
        "head_after": np.median(rotation_error_deg(head_after, head_true)),
        # the per-frame stage has no neck (0), so its neck error is the true neck's size
        "neck_before": np.median(np.degrees(np.linalg.norm(tr["neck_pose"], axis=1))),
        "neck_after": np.median(rotation_error_deg(motion["neck_pose"], tr["neck_pose"])),
        "neck_true": np.median(np.degrees(np.linalg.norm(tr["neck_pose"], axis=1))),
        "rmse_before": landmark_rmse(before_px, fr["landmarks"], good),
        "rmse_after": landmark_rmse(after_px, fr["landmarks"], good),
        "rmse_truth": landmark_rmse(after_px, tr["landmarks"]),
        "noise": noise,
        "jit_before": jitter(before_glob) * deg, "jit_after": jitter(head_after) * deg,
        "jit_true": jitter(head_true) * deg,
        "outliers": qc["outlier_fraction"],
    }


def smoother_race(seq, weight: float, repeats: int = 5) -> tuple[float, float, int]:
    """(exact seconds, Adam seconds to the same objective within 1e-5, Adam iterations)."""
    obs = seq.frames["landmarks"].astype(np.float64)
    ok = seq.frames["landmark_ok"] & ~seq.injected["landmarks"]
    t_exact = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        xe = smooth_landmarks_exact(obs, ok, 1.0, weight)
        t_exact.append(time.perf_counter() - t0)
    target = smoothing_objective(xe, obs, ok, 1.0, weight) * (1 + 1e-5)
    t0 = time.perf_counter()
    xa, iters = smooth_landmarks_adam(obs, ok, 1.0, weight, target=target)
    t_adam = time.perf_counter() - t0
    if smoothing_objective(xa, obs, ok, 1.0, weight) > target:
        print(f"  warning: Adam stopped at {iters} iterations above the exact objective", flush=True)
    return float(np.median(t_exact)), t_adam, iters


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--seeds", type=int, default=3, help="sequences of 240 frames")
    ap.add_argument("--long", type=int, default=480, help="frames of one extra longer sequence (0: none)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--set", nargs="*", default=[], help="RefineParams overrides, e.g. smooth_weight=2")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    model, record = load_model(args.device)
    params = refine_params_from_config()
    for kv in args.set:
        k, v = kv.split("=", 1)
        setattr(params, k, type(getattr(params, k))(v))
    print(f"head model: {record['name']} ({record['kind']}); device {args.device}; torch threads "
          f"{torch.get_num_threads()}")
    print(f"params: {params}")

    runs = [(240, s) for s in range(args.seeds)] + ([(args.long, 100)] if args.long else [])
    # warm-up (allocations, first-call overheads) so the timing is of the steady state
    evaluate(model, generate_sequence(model, MotionSpec(frames=30), seed=999), params, args.device)
    results = []
    hdr = (f"{'T':>4} {'seed':>4} | {'glob err':>15} | {'head err':>15} | {'neck err':>15} | "
           f"{'lmk RMSE px':>17} | {'jitter deg':>15} | {'iters':>5} {'sec':>6}")
    print(hdr)
    print("-" * len(hdr))
    for T, seed in runs:
        seq = generate_sequence(model, MotionSpec(frames=T), seed=seed)
        r = evaluate(model, seq, params, args.device)
        results.append(r)
        print(f"{T:>4} {seed:>4} | {r['glob_before']:6.2f} -> {r['glob_after']:5.2f} | "
              f"{r['head_before']:6.2f} -> {r['head_after']:5.2f} | "
              f"{r['neck_before']:6.2f} -> {r['neck_after']:5.2f} | "
              f"{r['rmse_before']:7.2f} -> {r['rmse_after']:5.2f} | "
              f"{r['jit_before']:6.3f} -> {r['jit_after']:5.3f} | "
              f"{r['iterations']:5d} {r['seconds']:6.2f}", flush=True)
    print("(errors: medians over frames, degrees; 'before' = the per-frame estimates, whose global "
          "orientation is the whole head rotation and whose neck is 0; lmk RMSE against detections "
          "without gross errors)")
    noise = np.mean([r["noise"] for r in results])
    print(f"noise level (true landmarks vs detections): {noise:.2f} px RMSE; refined vs true landmarks: "
          f"{np.mean([r['rmse_truth'] for r in results]):.2f} px; true head jitter "
          f"{np.mean([r['jit_true'] for r in results]):.3f} deg; true neck size "
          f"{np.mean([r['neck_true'] for r in results]):.2f} deg")
    print(f"outlier fractions (last sequence): {results[-1]['outliers']}")

    race_seq = generate_sequence(model, MotionSpec(frames=240), seed=0)
    t_exact, t_adam, iters = smoother_race(race_seq, params.smooth_weight)
    print(f"landmark smoother, 240 frames x 136 tracks: exact {t_exact * 1e3:.2f} ms, "
          f"Adam {t_adam * 1e3:.1f} ms "
          f"({iters} iterations) to the same objective")

    all_glob = np.median([r["glob_after"] for r in results])
    all_neck = np.median([r["neck_after"] for r in results])
    rmse_ratio = np.mean([r["rmse_after"] / r["noise"] for r in results])
    jitter_ratio = np.mean([r["jit_before"] / r["jit_after"] for r in results])
    sec240 = np.median([r["seconds"] for r in results if r["T"] == 240])
    print(f"BENCH motion rot_err_deg={all_glob:.3f} neck_err_deg={all_neck:.3f} rmse_ratio={rmse_ratio:.3f} "
          f"jitter_ratio={jitter_ratio:.2f} smoother_speedup={t_adam / t_exact:.1f} seconds_240={sec240:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
