"""Per-frame estimation benchmark: quality on the demo capture and throughput of each part.

    python bench/per_frame.py                    # CPU: demo capture -> crop -> landmarks + fit
    python bench/per_frame.py --device cuda --models-only   # GPU machine: fit + EMOCA encoder only

Full mode builds a small demo capture (1280x720, 10 s, one subject and song; its truth has the
mouth opening and the head's yaw per source frame), crops it with the real crop stage, runs
landmarks + the weight-free estimator on every usable segment, and correlates
- the estimated jaw opening (jaw_pose[:, 0]) with the true mouth opening, and
- the estimated head yaw (global_orient, converted to the truth's camera convention
  R = Rz(roll) Ry(yaw) Rx(pitch), x right, y down, z forward) with the true yaw,
over frames with landmarks, mapping portrait frame t to source frame start_frame + t.
Throughput: landmarks (decode + Dlib tracking + MTCNN re-detections), the weight-free fit, and
the EMOCA encoder pair (random weights; EMOCA crop + E_flame + E_expression, same cost as real
weights) at the chosen batch size.
`--models-only` skips the capture (the GPU machine has no PyAV/Dlib): the fit runs on synthetic
landmark tracks of the head model and the correlations are against that synthetic truth.
The last line is `BENCH per_frame jaw_corr=... rot_corr=... lmk_fps=... fit_fps=... emoca_fps=...`.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flame_fit.landmark_fit import FitParams, fit_segment  # noqa: E402
from tasks.estimation import emoca as E  # noqa: E402

PAPER_FRAMES = 2.9e6


def hours(fps: float) -> float:
    """Hours for the paper's 2.9 M frames at `fps`."""
    return PAPER_FRAMES / fps / 3600 if fps and math.isfinite(fps) and fps > 0 else float("nan")


def corr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def yaw_in_camera_convention(global_orient: np.ndarray) -> np.ndarray:
    """FLAME root rotation (axis-angle, y up, z towards the camera) -> yaw of R = Rz Ry Rx in
    camera axes (x right, y down, z forward): conjugate by diag(1, -1, -1), then decompose."""
    from scipy.spatial.transform import Rotation
    R = Rotation.from_rotvec(np.asarray(global_orient, np.float64)).as_matrix()
    C = np.diag([1.0, -1.0, -1.0])
    return Rotation.from_matrix(C @ R @ C).as_euler("ZYX")[:, 1]


def head_model_for(work: Path, device: str):
    from flame_fit.flame import load_flame
    from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
    d = work / "procedural_head"
    if not (d / MODEL_FILE).is_file():
        d.mkdir(parents=True, exist_ok=True)
        write_procedural_head_model(d)
    model = load_flame(d / MODEL_FILE, d / EMBEDDING_FILE).to(device).eval()
    return model, {"name": model.name, "kind": "stand-in"}


def emoca_throughput(device: str, batch: int, frames: list[np.ndarray], landmarks: np.ndarray,
                     n_batches: int) -> float:
    """Frames/s of EMOCA crop + both encoders, random weights (deca_clone, width 53)."""
    torch.manual_seed(0)
    enc = E.EmocaEncoder(E.ExpressionLayout(jaw_pose=True)).to(device).eval()
    runner = E.EmocaRunner(enc, device, batch, image_size=frames[0].shape[0])
    n = 0
    for i in range(batch):  # warm-up batch (cuDNN autotune, allocator)
        runner.add(frames[i % len(frames)], landmarks[i % len(landmarks)])
    runner.finish()
    runner = E.EmocaRunner(enc, device, batch, image_size=frames[0].shape[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(batch * n_batches):
        runner.add(frames[i % len(frames)], landmarks[i % len(landmarks)])
        n += 1
    runner.finish()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    fps = n / (time.perf_counter() - t)
    # the encoders alone, on crops already in device memory
    x = torch.rand(batch, 3, E.CROP_SIZE, E.CROP_SIZE, device=device)
    with torch.inference_mode():
        enc(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n_batches):
            enc(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    alone = batch * n_batches / (time.perf_counter() - t)
    print(f"EMOCA encoders alone (no crop, batch {batch}): {alone:.1f} frames/s")
    return fps


def synthetic_track(model, T: int, seed: int, size: int = 1024):
    """A head-model landmark track with known jaw opening and yaw (portrait pixels, 1 px noise)."""
    from flame_fit.camera import ndc_to_pixels, orth_project
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 30.0
    dev = model.v_template.device
    jaw = np.zeros((T, 3))
    jaw[:, 0] = 0.15 + 0.12 * np.sin(2 * np.pi * 0.7 * t)
    glob = np.zeros((T, 3))
    glob[:, 1] = 0.3 * np.sin(2 * np.pi * 0.3 * t)
    glob[:, 0] = 0.1 * np.sin(2 * np.pi * 0.2 * t)
    f = lambda a: torch.as_tensor(a, dtype=torch.float32, device=dev)  # noqa: E731
    with torch.no_grad():
        lmk = model.landmarks(f(rng.normal(0, 0.5, (1, 100))).expand(T, -1), f(rng.normal(0, 0.3, (T, 50))),
                              f(glob), None, f(jaw))
        px = ndc_to_pixels(orth_project(lmk, f(np.tile([4.5, 0.0, 0.02], (T, 1)))), size).cpu().numpy()
    return px + rng.normal(0, 1.0, px.shape), jaw[:, 0], glob


def run_models_only(args) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_per_frame_"))
    model, _ = head_model_for(work, args.device)
    fit_frames, jaw_est, jaw_true, yaw_est, yaw_true, t_fit = 0, [], [], [], [], 0.0
    for seg in range(args.segments):
        px, jaw, glob = synthetic_track(model, args.fit_frames, seg)
        ok = np.ones(len(px), bool)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fit_segment(model, px, ok, 1024, FitParams(), args.device)
        t_fit += time.perf_counter() - t0
        fit_frames += len(px)
        jaw_est.append(out["jaw_pose"][:, 0]), jaw_true.append(jaw)
        yaw_est.append(out["global_orient"][:, 1]), yaw_true.append(glob[:, 1])
    frame = np.zeros((1024, 1024, 3), np.uint8)
    frame[256:768, 256:768] = 128
    lmk = np.tile(np.linspace(300, 700, 68)[:, None], (1, 2))[None]
    emoca_fps = emoca_throughput(args.device, args.emoca_batch, [frame], lmk, args.emoca_batches)
    return {"jaw_corr": corr(np.concatenate(jaw_est), np.concatenate(jaw_true)),
            "rot_corr": corr(np.concatenate(yaw_est), np.concatenate(yaw_true)),
            "lmk_fps": float("nan"), "fit_fps": fit_frames / t_fit, "emoca_fps": emoca_fps,
            "note": "synthetic head-model tracks (no capture on this machine)"}


def run_full(args) -> dict:
    from demo.capture import make_demo_capture
    from tasks import config
    from tasks.common.settings import CropSettings
    from tasks.estimation.frames import estimate_video
    from tasks.faces.landmarks import iter_rgb_frames
    from tasks.faces.portrait_video import crop_video
    from tasks.layout import Layout

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_per_frame_"))
    raw, truth_root, processed = work / "raw", work / "demo_truth", work / "processed"
    layout = Layout(raw, processed, processed / "release")
    t0 = time.perf_counter()
    make_demo_capture(raw, truth_root, width=args.width, height=args.height, seconds=args.seconds,
                      n_subjects=1, n_songs=1, seed=0)
    print(f"demo capture: {time.perf_counter() - t0:.1f} s", flush=True)
    subject = layout.list_subjects()[0]
    song = layout.list_songs(subject)[0]
    pdir = layout.portrait_dir(subject, song)
    if not layout.segments_json(subject, song).is_file():
        t0 = time.perf_counter()
        crop_video(layout.color_video_path(subject, song), pdir, config.read(CropSettings), device="cpu")
        print(f"crop stage: {time.perf_counter() - t0:.1f} s", flush=True)
    with np.load(truth_root / subject / song / "truth.npz") as z:
        truth = {k: z[k] for k in z.files}
    head = head_model_for(work, args.device)
    min_frames = round(3.0 * 30)
    segs = [s for s in layout.load_segments(subject, song) if s["end_frame"] - s["start_frame"] >= min_frames]
    if not segs:
        raise SystemExit("the demo capture produced no segment of 3 s or more")
    jaw_e, jaw_t, yaw_e, yaw_t = [], [], [], []
    n_frames, t_lmk, t_fit = 0, 0.0, 0.0
    first = None
    for s in segs:
        video = pdir / s["video"]
        arrays, rec = estimate_video(video, device=args.device,
                                     expected_frames=s["end_frame"] - s["start_frame"],
                                     head_model=head)
        T = len(arrays["landmark_ok"])
        n_frames += T
        t_lmk += rec["timing_s"]["landmarks"]
        t_fit += rec["timing_s"]["estimator"]
        src = s["start_frame"] + np.arange(T)
        use = arrays["landmark_ok"] & truth["face_visible"][src].astype(bool)
        jaw_e.append(arrays["jaw_pose"][use, 0]), jaw_t.append(truth["mouth_open"][src][use])
        yaw_e.append(yaw_in_camera_convention(arrays["global_orient"][use]))
        yaw_t.append(truth["yaw"][src][use])
        print(f"{s['video']}: {T} frames, {int(arrays['landmark_ok'].sum())} with landmarks, "
              f"{rec['tracking']['mtcnn_runs']} MTCNN runs, landmarks {rec['timing_s']['landmarks']:.1f} s, "
              f"fit {rec['timing_s']['estimator']:.1f} s, median fit error "
              f"{np.nanmedian(arrays['fit_rmse_px']):.1f} px", flush=True)
        if first is None:
            first = (video, arrays["landmarks"])
    frames = list(iter_rgb_frames(first[0], max_frames=16))
    emoca_fps = emoca_throughput(args.device, args.emoca_batch, frames, first[1][:16], args.emoca_batches)
    return {"jaw_corr": corr(np.concatenate(jaw_e), np.concatenate(jaw_t)),
            "rot_corr": corr(np.concatenate(yaw_e), np.concatenate(yaw_t)),
            "lmk_fps": n_frames / t_lmk, "fit_fps": n_frames / t_fit, "emoca_fps": emoca_fps,
            "note": f"demo capture {args.width}x{args.height}, {args.seconds:g} s, "
                    f"{len(segs)} usable segment(s), "
                    f"{n_frames} portrait frames"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", help="work folder (kept; reruns reuse the capture and crops)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--models-only", action="store_true", help="skip capture/landmarks (GPU machine)")
    ap.add_argument("--fit-frames", type=int, default=300,
                    help="frames per synthetic segment (--models-only)")
    ap.add_argument("--segments", type=int, default=2, help="synthetic segments (--models-only)")
    ap.add_argument("--emoca-batch", type=int, default=None, help="default 8 on CPU, 64 on CUDA")
    ap.add_argument("--emoca-batches", type=int, default=None, help="timed batches (default 2 CPU, 20 CUDA)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.emoca_batch = args.emoca_batch or (64 if cuda else 8)
    args.emoca_batches = args.emoca_batches or (20 if cuda else 2)
    logging.basicConfig(level=logging.WARNING)
    r = run_models_only(args) if args.models_only else run_full(args)
    dev = torch.cuda.get_device_name(0) if cuda else f"CPU, {torch.get_num_threads()} torch thread(s)"
    print(f"device: {dev}; {r['note']}")
    print(f"jaw opening vs true mouth opening: r = {r['jaw_corr']:.3f}")
    print(f"head yaw vs true yaw:              r = {r['rot_corr']:.3f}")
    print(f"landmarks (decode + Dlib + MTCNN):  {r['lmk_fps']:.1f} frames/s")
    print(f"weight-free fit:                    {r['fit_fps']:.1f} frames/s")
    print(f"EMOCA encoders (batch {args.emoca_batch}, random):  {r['emoca_fps']:.1f} frames/s")
    print(f"{PAPER_FRAMES / 1e6:.1f} M frames at these rates (one process on this device): "
          f"landmarks {hours(r['lmk_fps']):.1f} h, weight-free fit {hours(r['fit_fps']):.1f} h, "
          f"EMOCA {hours(r['emoca_fps']):.1f} h")
    print(f"BENCH per_frame jaw_corr={r['jaw_corr']:.3f} rot_corr={r['rot_corr']:.3f} "
          f"lmk_fps={r['lmk_fps']:.2f} fit_fps={r['fit_fps']:.2f} emoca_fps={r['emoca_fps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
