"""Benchmark: the 4D output measured against a capture with known 3D truth, end to end.

Builds a small truth capture (demo.truth_capture: 1 subject, its metric scan with landmarks.json,
1 song), runs the real DAG through pipeline.build (local scheduler, `[paths]` in a temp folder as
config overrides, the default stand-ins) up to the assembled dataset, and compares what a user receives -- the uncut sequences
(sequences/<id>/motion.npz) and the released clips (flame_seqs/<id>.pkl, audio_seqs, bgm_seqs) --
with the truth, mapping each output frame to its source frame through metadata.csv:
- shape_mm: neutral-mesh vertex error in model space (mean; max printed), mm at FLAME scale
  (model units x 1000), of shapes/<subject>.npy (landmarks given); also the automatic-landmark
  fit of the same scan (printed as shape_mm_auto);
- scale_err: |fitted scan->model scale x true model->scan scale - 1|;
- head_rot_deg: median geodesic error of the head rotation (global o neck);
- jaw_deg: median geodesic error of the jaw rotation;
- face_ve_mm / lip_ve_mm: vertices of expression + jaw in head coordinates (zero global and neck,
  the true shape for both, so only expression and jaw differ; what LVE/FVE-style metrics see):
  median over frames of the mean face-region error, and median of the per-frame maximum over the
  lip region; regions: within one eye-corner distance of the static landmarks, front-facing
  (face) and within 0.6 mouth widths of the mouth landmarks (lips);
- rmse_ratio: landmark RMSE after refinement / before (RefineMotion's QC, frame-weighted);
- av_offset_samples: largest |lag| (samples at the dataset rate) of the cross-correlation peak of
  each released vocal clip against the truth vocal of its span; the same for the BGM clip against
  the true accompaniment (printed per clip);
- jitter_ratio: mean |second difference| of the output head rotation / the truth's;
- jitter_abs_deg: that mean |second difference| itself, degrees per frame^2 (the truth's printed
  and in the BENCH line as jitter_abs_deg_truth): a ratio swings with how smooth the truth is.

Decomposition (skipped with --no-oracle): after the default run (c), the same capture runs twice
more from the refinement on: (b) *oracle landmarks, fitted shape*: every segment's frames/*.npz is
rewritten with the truth's projected 68 landmarks (mapped into the portrait by the crop box of
segments.json) in place of the detector's, and the per-frame estimate refitted on them with the
same weight-free fit, so the landmarks the per-frame estimate, the outlier replacement, the
smoothing and Eq. 1 see are the truth's; (a) *oracle landmarks and true shape*: as (b) with the
true shape written over shape/shape.npy. A table prints every figure for each; the detector's own
error against the truth landmarks (portrait pixels) is printed per landmark group and per |yaw| bin.

Usage: python bench/end_to_end.py [--seconds 12] [--width 1280 --height 720] [--seed 0]
[--photo astronaut|hopper] [--keep DIR] [--no-oracle]
Last line: BENCH end_to_end shape_mm=<f> scale_err=<f> head_rot_deg=<f> jaw_deg=<f> face_ve_mm=<f>
lip_ve_mm=<f> rmse_ratio=<f> av_offset_samples=<int> jitter_ratio=<f> jitter_abs_deg=<f>
jitter_abs_deg_truth=<f> head_rot_deg_oracle=<f> jaw_deg_oracle=<f> lip_ve_mm_oracle=<f>
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from math import gcd
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import correlate, resample_poly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import luigi.configuration  # noqa: E402
import soundfile as sf  # noqa: E402

from demo.capture import PHOTOS  # noqa: E402
from demo.scan import read_truth  # noqa: E402
from demo.synthetic_motion import compose, rotation_error_deg  # noqa: E402
from demo.truth_capture import make_truth_capture, read_song_truth  # noqa: E402
from demo.truth_render import project  # noqa: E402
from flame_fit.geometry import vertex_normals  # noqa: E402
from flame_fit.landmark_fit import fit_segment  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from tasks import config  # noqa: E402
from tasks.common.atomic import npy_bytes, save_npz_atomic, write_bytes_atomic  # noqa: E402
from tasks.common.settings import CropSettings  # noqa: E402
from flame_fit.refine import jitter  # noqa: E402
from flame_fit.scan_fit import neutral_mesh  # noqa: E402
from pipeline.build import build, config_overrides  # noqa: E402
from tasks.assemble import AssembleDataset  # noqa: E402
from tasks.dataset.flame_pickle import load_flame_pickle  # noqa: E402
from tasks.dataset.metadata import read_metadata  # noqa: E402
from tasks.head_model import default_procedural_dir, head_model_for_task  # noqa: E402
from tasks.layout import Layout  # noqa: E402
from tasks.scans.fit import fit_subject_scan  # noqa: E402

TARGETS = {"shape_mm": ("<", 0.5), "shape_mm_auto": ("<", 1.0), "scale_err": ("<", 0.002),
           "head_rot_deg": ("<", 1.0), "jaw_deg": ("<", 1.5), "face_ve_mm": ("<", 1.5), "lip_ve_mm": ("<", 3.0),
           "rmse_ratio": ("<=", 1.0), "av_offset_samples": ("==", 0), "jitter_ratio": ("<=", 1.5)}


def overrides_for(raw: Path, processed: Path, model_dir: Path, clip_frames: int, sets: list[str]) -> dict:
    """The luigi.cfg overrides of this run ({section: {option: value}}): `[paths]` in the work
    folder, the procedural model in a shared temp folder, short clips, then `--set` values."""
    out = {"paths": {"raw_dir": raw, "processed_dir": processed, "release_dir": processed / "release"},
           "flame": {"procedural_model_dir": model_dir}, "dataset": {"clip_frames": clip_frames}}
    for kv in sets:
        key, v = kv.split("=", 1)
        sec, opt = key.split(".", 1)
        out.setdefault(sec, {})[opt] = v
    return out


def regions(model, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face and lip vertex masks (V,) bool of the neutral head at `shape`."""
    v, lmk = neutral_mesh(model, shape)
    eye = float(np.linalg.norm(lmk[36] - lmk[45]))
    d_face = np.linalg.norm(v[:, None] - lmk[None, 17:], axis=2).min(axis=1)
    n = vertex_normals(v, model.faces.cpu().numpy().astype(np.int64))
    face = (d_face < eye) & (n[:, 2] > 0.1)
    mouth_w = float(np.linalg.norm(lmk[48] - lmk[54]))
    d_lip = np.linalg.norm(v[:, None] - lmk[None, 48:68], axis=2).min(axis=1)
    lips = (d_lip < 0.6 * mouth_w) & (n[:, 2] > 0.1)
    return face, lips


@torch.no_grad()
def head_vertices(model, shape: np.ndarray, expression: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """Vertices (T,V,3) with zero global and neck pose."""
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    T = len(expression)
    out = model(f(np.repeat(shape[None], T, 0)), f(expression), torch.zeros(T, 3), torch.zeros(T, 3), f(jaw))
    return out.vertices.numpy().astype(np.float64)


def audio_lag(x: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
    """Lag (samples) maximising the cross-correlation of x against ref (x[n] ~ ref[n - lag])."""
    n = min(len(x), len(ref))
    x, ref = x[:n] - x[:n].mean(), ref[:n] - ref[:n].mean()
    c = correlate(x, ref, mode="full", method="fft")
    lags = np.arange(-n + 1, n)
    keep = np.abs(lags) <= max_lag
    return int(lags[keep][np.argmax(c[keep])])


def truth_audio(path: Path, sr_out: int, start_s: float, seconds: float) -> np.ndarray:
    data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    x = data.mean(axis=1)
    g = gcd(sr, sr_out)
    x = resample_poly(x, sr_out // g, sr // g)
    a = int(round(start_s * sr_out))
    return x[a:a + int(round(seconds * sr_out))]


def rerun_from(processed: Path, subject: str, stage: str) -> None:
    """Delete the outputs of `stage` and every later stage of one subject (and the dataset)."""
    order = ["estimate", "scan", "refine", "assemble"]
    later = order[order.index(stage):]
    sdir = processed / subject
    doomed = [processed / "dataset", processed / "release", sdir / "subject_done.json"]
    if "refine" in later:
        doomed += list(sdir.glob("*/motion"))
    if "scan" in later:
        doomed += [sdir / "shape"]
    if "estimate" in later:
        doomed += list(sdir.glob("*/frames")) + [sdir / "monocular_shape.npz"]
    for p in doomed:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


GROUPS = {"contour": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48),
          "outer lips": slice(48, 60), "inner lips": slice(60, 68)}
YAW_BINS = ((0, 10), (10, 20), (20, 30), (30, 90))


def head_yaw_deg(rotvec: np.ndarray) -> np.ndarray:
    """Yaw (T,) degrees of head rotations (T,3): first angle of the intrinsic y-x-z decomposition."""
    return np.degrees(Rotation.from_rotvec(rotvec).as_euler("YXZ")[:, 0])


def oracle_landmarks(truth: dict, segment: dict, portrait_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The truth's projected landmarks of one crop segment in portrait pixels (T,68,2) and which frames
    show the whole face (T,) bool; the crop box [x0, y0, x1, y1] of segments.json maps frame pixels."""
    a, b = int(segment["start_frame"]), int(segment["end_frame"])
    if segment.get("repeated_frames"):
        raise SystemExit("the oracle maps portrait frame t to recording frame start + t; this segment has "
                         "repeated frames")
    x0, y0, x1, _ = (float(v) for v in segment["box"])
    lmk = (truth["landmarks"][a:b].astype(np.float64) - [x0, y0]) * (portrait_size / (x1 - x0))
    inside = np.isfinite(lmk).all(axis=(1, 2)) & ((lmk >= 0) & (lmk < portrait_size)).all(axis=(1, 2))
    return lmk, inside & truth["face_visible"][a:b].astype(bool)


@torch.no_grad()
def surface_contour(model, truth: dict, a: int, b: int) -> np.ndarray:
    """The jaw contour as points fixed on the surface, frames [a, b) of the truth: (T,17,2) frame px.

    The model's 17 contour landmarks follow the face outline with the yaw (the dynamic contour, row
    `yaw` of its table); these are row 0's points (where they sit on a frontal face) posed and
    projected like the truth's, so the detector's contour can be told apart from the model's rule.
    """
    f = lambda k: torch.as_tensor(truth[k][a:b].astype(np.float32))  # noqa: E731
    shape = torch.as_tensor(np.repeat(truth["shape"][None], b - a, 0).astype(np.float32))
    verts = model(shape, f("expression"), f("global_orient"), f("neck_pose"), f("jaw_pose")).vertices.double()
    tri = model.faces[model.dynamic_lmk_faces_idx[0]]                                   # (17,3)
    pts = (verts[:, tri] * model.dynamic_lmk_bary[0].double()[None, :, :, None]).sum(dim=2).numpy()
    return np.stack([project(pts[t], truth["camera"][a + t]) for t in range(b - a)])


def detector_errors(lay, subject: str, song: str, truth: dict, portrait_size: int, model=None) -> dict:
    """Per-landmark distances (portrait px) of the detector's landmarks (frames/*.npz of the default
    run) to the truth's: {'dist': (N,68), 'yaw': (N,) |true yaw| degrees, 'frame': (N,) recording
    frames, 'detected', 'truth': (N,68,2) portrait px} over frames both have; with `model`, also
    'surface': (N,17) the detector's contour to the surface contour points (surface_contour)."""
    dist, yaw, surf, frames, detected, true = [], [], [], [], [], []
    head_true = compose(truth["global_orient"].astype(np.float64), truth["neck_pose"].astype(np.float64))
    for seg in lay.load_segments(subject, song):
        path = lay.frames_npz(subject, song, int(seg["index"]))
        if not path.is_file():
            continue
        with np.load(path) as z:
            det, ok = z["landmarks"].astype(np.float64), z["landmark_ok"].astype(bool)
        lmk, inside = oracle_landmarks(truth, seg, portrait_size)
        both = ok & inside
        dist.append(np.linalg.norm(det[both] - lmk[both], axis=2))
        a = int(seg["start_frame"])
        yaw.append(np.abs(head_yaw_deg(head_true[a:a + len(ok)][both])))
        frames.append(a + np.flatnonzero(both))
        detected.append(det[both])
        true.append(lmk[both])
        if model is not None:
            x0, y0, x1, _ = (float(v) for v in seg["box"])
            sc = (surface_contour(model, truth, a, a + len(ok)) - [x0, y0]) * (portrait_size / (x1 - x0))
            surf.append(np.linalg.norm(det[both, :17] - sc[both], axis=2))
    out = {"dist": np.concatenate(dist), "yaw": np.concatenate(yaw), "frame": np.concatenate(frames),
           "detected": np.concatenate(detected), "truth": np.concatenate(true)}
    if model is not None:
        out["surface"] = np.concatenate(surf)
    return out


def print_detector_errors(err: dict) -> None:
    d, yaw = err["dist"], err["yaw"]
    print(f"detector landmarks vs truth (portrait px, mean per landmark, {len(d)} frames; 'surface': the "
          "detector's contour vs the frontal contour points fixed on the surface):")
    surf = err.get("surface")

    def groups(x, m):
        out = "  ".join(f"{g} {x[m][:, sl].mean():.2f}" for g, sl in GROUPS.items())
        return out + (f"  surface {surf[m].mean():.2f}" if surf is not None else "")
    everything = np.ones(len(d), bool)
    print(f"  {groups(d, everything)}  all {d.mean():.2f}")
    for lo, hi in YAW_BINS:
        m = (yaw >= lo) & (yaw < hi)
        if m.any():
            print(f"  |yaw| {lo:2d}-{hi:2d} deg ({m.sum():4d} frames): {groups(d, m)}  all {d[m].mean():.2f}")


def write_oracle_frames(lay, model, subject: str, truth_root: Path, portrait_size: int) -> int:
    """Rewrite every segment's frames/*.npz with the truth's landmarks and the weight-free per-frame fit
    on them (the default estimator's fit, the same parameters); returns the number of segments."""
    n = 0
    for song in lay.list_songs(subject):
        truth, _ = read_song_truth(truth_root / subject / song)
        for seg in lay.load_segments(subject, song):
            path = lay.frames_npz(subject, song, int(seg["index"]))
            if not path.is_file():
                continue
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            lmk, ok = oracle_landmarks(truth, seg, portrait_size)
            lmk = np.where(ok[:, None, None], lmk, np.nan)
            fit = fit_segment(model, lmk, ok, portrait_size, device="cpu")
            arrays.update({"landmarks": lmk.astype(np.float32), "landmark_ok": ok,
                           "shape": np.repeat(fit["shape"][None], len(ok), 0).astype(np.float32),
                           "fit_rmse_px": fit["rmse_px"].astype(np.float32)})
            arrays.update({k: fit[k].astype(np.float32)
                           for k in ("expression", "global_orient", "jaw_pose", "cam")})
            save_npz_atomic(path, arrays)
            n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--clip-frames", type=int, default=90, help="[dataset] clip_frames for this small capture")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photo", choices=sorted(PHOTOS), default="astronaut",
                    help="the face photograph textured onto the truth capture's head (demo.capture.PHOTOS)")
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temp folder)")
    ap.add_argument("--set", nargs="*", default=[], help="luigi overrides section.option=value")
    ap.add_argument("--rerun-from", choices=["estimate", "scan", "refine", "assemble"], default=None,
                    help="with --keep: delete the outputs of this stage and later ones first")
    ap.add_argument("--no-oracle", action="store_true", help="only the default run, no decomposition")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="e2e_"))
    work.mkdir(parents=True, exist_ok=True)
    raw, processed, truth_root = work / "raw", work / "processed", work / "truth"
    # named by the generator's version (as processed/_models is), so a changed head model is regenerated
    # rather than an older one measured under the new code's name
    model_dir = default_procedural_dir(Path(tempfile.gettempdir()) / "singinghead_bench_models")
    # the repository's luigi.cfg whatever the working directory
    luigi.configuration.get_config().add_config_path(str(ROOT / "luigi.cfg"))
    overrides = overrides_for(raw, processed, model_dir, args.clip_frames, args.set)
    with config_overrides(overrides):
        lay = Layout.from_config()
        model, rec = head_model_for_task(lay, "cpu")
    print(f"head model: {rec['name']} ({rec['kind']}); work folder {work}")

    t0 = time.perf_counter()
    make_truth_capture(raw, truth_root, width=args.width, height=args.height, seconds=args.seconds,
                       n_subjects=1, n_songs=1, seed=args.seed, scan_landmarks=True, model=model,
                       photo=args.photo)
    t_capture = time.perf_counter() - t0
    subject = "S001"
    if args.rerun_from:
        rerun_from(processed, subject, args.rerun_from)
    t0 = time.perf_counter()
    result = build(AssembleDataset, workers=1, overrides=overrides, log_level="WARNING")
    t_dag = time.perf_counter() - t0
    if not result.ok:
        print(f"the DAG failed: {result.summary}", file=sys.stderr)
        return 1
    print(f"capture {t_capture:.0f} s, DAG {t_dag:.0f} s")

    with config_overrides(overrides):
        portrait_size = config.read(CropSettings).output_size
    res = measure(model, rec, lay, work, raw, processed, truth_root, subject)
    for song in lay.list_songs(subject):
        truth, _ = read_song_truth(truth_root / subject / song)
        err = detector_errors(lay, subject, song, truth, portrait_size, model)
        print_detector_errors(err)
        if args.keep:   # per frame, for a closer look (the oracle runs below overwrite frames/*.npz)
            np.savez(work / f"detector_{song}.npz", **err)
    print("targets (default stand-ins):")
    for k, (op, target) in TARGETS.items():
        v = res[k]
        met = {"<": v < target, "<=": v <= target, "==": v == target}[op]
        print(f"  {k:18s} {v:10.4f}  target {op} {target}: {'met' if met else 'NOT met'}")
    runs = {"c default": res}
    if not args.no_oracle:
        n = write_oracle_frames(lay, model, subject, truth_root, portrait_size)
        print(f"oracle: {n} segments' frames rewritten with the truth's landmarks")

        def refine_again(label: str) -> dict | None:
            """Rebuild from the refinement on what is now in processed/; the figures, or None."""
            rerun_from(processed, subject, "refine")
            t0 = time.perf_counter()
            if not build(AssembleDataset, workers=1, overrides=overrides, log_level="WARNING").ok:
                print(f"the DAG failed on {label}", file=sys.stderr)
                return None
            print(f"{label}: DAG {time.perf_counter() - t0:.0f} s")
            return measure(model, rec, lay, work, raw, processed, truth_root, subject, auto=False)

        runs["b oracle lmk"] = refine_again("(b) oracle landmarks, fitted shape")
        if runs["b oracle lmk"] is None:
            return 1
        true_shape = np.load(truth_root / subject / "subject_truth.npz")["shape"].astype(np.float32)
        write_bytes_atomic(lay.scan_shape_npy(subject), npy_bytes(true_shape))
        runs["a oracle+shape"] = refine_again("(a) oracle landmarks, true shape")
        if runs["a oracle+shape"] is None:
            return 1
        keys = ["shape_mm", "scale_err", "head_rot_deg", "jaw_deg", "face_ve_mm", "lip_ve_mm", "rmse_ratio",
                "jitter_ratio", "jitter_abs_deg", "jitter_abs_deg_truth", "av_offset_samples"]
        print("decomposition:")
        print(f"  {'':22s}" + "".join(f"{name:>16s}" for name in runs))
        for k in keys:
            print(f"  {k:22s}" + "".join(f"{r[k]:16.4f}" for r in runs.values()))
    oracle = runs.get("a oracle+shape", {})
    print(f"BENCH end_to_end shape_mm={res['shape_mm']:.4f} scale_err={res['scale_err']:.5f} "
          f"head_rot_deg={res['head_rot_deg']:.3f} jaw_deg={res['jaw_deg']:.3f} face_ve_mm={res['face_ve_mm']:.3f} "
          f"lip_ve_mm={res['lip_ve_mm']:.3f} rmse_ratio={res['rmse_ratio']:.3f} "
          f"av_offset_samples={res['av_offset_samples']} jitter_ratio={res['jitter_ratio']:.3f} "
          f"jitter_abs_deg={res['jitter_abs_deg']:.4f} "
          f"jitter_abs_deg_truth={res['jitter_abs_deg_truth']:.4f} "
          f"head_rot_deg_oracle={oracle.get('head_rot_deg', float('nan')):.3f} "
          f"jaw_deg_oracle={oracle.get('jaw_deg', float('nan')):.3f} "
          f"lip_ve_mm_oracle={oracle.get('lip_ve_mm', float('nan')):.3f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(model, rec, lay, work: Path, raw: Path, processed: Path, truth_root: Path, subject: str,
            auto: bool = True) -> dict:
    """Every figure of the module docstring for the dataset now under `lay` (printed as it goes)."""
    droot = lay.dataset_root()
    rows = read_metadata(droot)
    res: dict[str, float] = {}

    # -- shape and scale
    scan_truth = read_truth(truth_root / subject)
    true_shape = np.load(truth_root / subject / "subject_truth.npz")["shape"]
    v_true, _ = neutral_mesh(model, true_shape)
    fitted = np.load(droot / "shapes" / f"{subject}.npy")
    d = np.linalg.norm(neutral_mesh(model, fitted)[0] - v_true, axis=1) * 1000
    res["shape_mm"] = float(d.mean())
    align = json.loads((lay.shape_dir(subject) / "alignment.json").read_text())
    res["scale_err"] = abs(float(align["scale"]) * float(scan_truth["scale"]) - 1.0)
    print(f"shape (landmarks given): vertex error mean {d.mean():.3f} mm, max {d.max():.3f} mm; "
          f"scale {float(align['scale']):.6g} vs true {1 / float(scan_truth['scale']):.6g} "
          f"(error {res['scale_err']:.5f})")
    if auto:
        auto_scan_fit(model, rec, lay, work, raw, subject, v_true, scan_truth, res)

    # -- per frame: sequences (uncut) and clips
    per_frame(model, rows, droot, raw, truth_root, subject, true_shape, res)

    num = den = 0.0
    for qc_path in sorted(processed.glob(f"{subject}/*/motion/segment_*_qc.json")):
        qc = json.loads(qc_path.read_text())
        r = qc["landmark_rmse_px"]
        n = r["frames_measured"]
        num += n * r["after"] ** 2
        den += n * r["before"] ** 2
        print(f"{qc_path.parent.parent.name}/{qc_path.name}: landmark RMSE {r['before']:.2f} -> {r['after']:.2f} px "
              f"({n} frames); landmark noise {qc['landmark_noise_px']} px, "
              f"{'fitted closely' if qc['close_fit'] else 'the given [refine] values'}")
    res["rmse_ratio"] = float(np.sqrt(num / den)) if den else float("nan")
    return res


def auto_scan_fit(model, rec, lay, work, raw, subject, v_true, scan_truth, res) -> None:
    """The automatic-landmark fit of the same scan (shape_mm_auto)."""
    auto_dir = work / "auto_scan"
    if auto_dir.exists():
        shutil.rmtree(auto_dir)
    shutil.copytree(raw / subject / "scan", auto_dir)
    (auto_dir / "landmarks.json").unlink()
    mono = np.load(lay.monocular_shape_npz(subject))["shape"]
    files, _ = fit_subject_scan(auto_dir / "head.obj", model, rec, mono, torch.device("cpu"))
    d_auto = np.linalg.norm(neutral_mesh(model, files["shape"])[0] - v_true, axis=1) * 1000
    res["shape_mm_auto"] = float(d_auto.mean())
    scale_auto = abs(float(files["alignment"]["scale"]) * float(scan_truth["scale"]) - 1.0)
    d_mono = np.linalg.norm(neutral_mesh(model, mono)[0] - v_true, axis=1) * 1000
    print(f"shape (automatic landmarks): mean {d_auto.mean():.3f} mm, max {d_auto.max():.3f} mm, scale error "
          f"{scale_auto:.5f}; monocular mean shape: {d_mono.mean():.3f} mm; zero shape: "
          f"{np.linalg.norm(neutral_mesh(model, np.zeros(100))[0] - v_true, axis=1).mean() * 1000:.3f} mm")


def per_frame(model, rows, droot, raw, truth_root, subject, true_shape, res) -> None:
    """Head, jaw, face, lip errors and jitter of the sequences; A/V lags of the clips (into res)."""
    face, lips = regions(model, true_shape)
    per = {"head": [], "jaw": [], "face": [], "lip": []}
    jit, jit_abs, jit_abs_true = [], [], []
    songs = {}
    clip_checks = []
    for row in rows:
        song = row["song"]
        if song not in songs:
            songs[song] = read_song_truth(truth_root / subject / song)
        tr, tj = songs[song]
        a, b = int(row["start_frame"]), int(row["end_frame"])
        if row["kind"] == "sequence":
            with np.load(droot / "sequences" / row["id"] / "motion.npz") as z:
                m = {k: z[k].astype(np.float64) for k in ("expression", "global_orient", "neck_pose", "jaw_pose")}
        else:
            pk = load_flame_pickle(droot / "flame_seqs" / f"{row['id']}.pkl")
            pose = np.asarray(pk["posecodes"], np.float64)
            m = {"expression": np.asarray(pk["expcodes"], np.float64), "global_orient": pose[:, :3],
                 "neck_pose": pose[:, 3:6], "jaw_pose": pose[:, 6:9]}
        head_out = compose(m["global_orient"], m["neck_pose"])
        head_true = compose(tr["global_orient"][a:b].astype(np.float64), tr["neck_pose"][a:b].astype(np.float64))
        e_head = rotation_error_deg(head_out, head_true)
        e_jaw = rotation_error_deg(m["jaw_pose"], tr["jaw_pose"][a:b].astype(np.float64))
        v_out = head_vertices(model, true_shape, m["expression"], m["jaw_pose"])
        v_tr = head_vertices(model, true_shape, tr["expression"][a:b], tr["jaw_pose"][a:b])
        dv = np.linalg.norm(v_out - v_tr, axis=2) * 1000
        e_face, e_lip = dv[:, face].mean(axis=1), dv[:, lips].max(axis=1)
        if row["kind"] == "sequence":
            per["head"].append(e_head)
            per["jaw"].append(e_jaw)
            per["face"].append(e_face)
            per["lip"].append(e_lip)
            jit.append(jitter(head_out) / max(jitter(head_true), 1e-12))
            jit_abs.append(np.degrees(jitter(head_out)))
            jit_abs_true.append(np.degrees(jitter(head_true)))
            yaw_o, yaw_t = head_out[:, 1], head_true[:, 1]
            print(f"sequence {row['id']} frames [{a},{b}): head {np.median(e_head):.2f} deg, jaw "
                  f"{np.median(e_jaw):.2f} deg, face {np.median(e_face):.2f} mm, lip max {np.median(e_lip):.2f} mm, "
                  f"jitter x{jit[-1]:.2f}, yaw r={np.corrcoef(yaw_o, yaw_t)[0, 1]:.3f}, jaw-open r="
                  f"{np.corrcoef(m['jaw_pose'][:, 0], tr['jaw_pose'][a:b, 0])[0, 1]:.3f}")
        else:
            clip_checks.append((row["id"], a, b, float(np.median(e_head)), float(np.median(e_jaw))))

    # -- audio of the released clips
    sr = None
    lags = []
    for cid, a, b, eh, ej in clip_checks:
        tr, tj = songs[[r["song"] for r in rows if r["id"] == cid][0]]
        fps, off = float(tj["fps"]), float(tj["audio_offset_s"])
        vocal, sr = sf.read(str(droot / "audio_seqs" / f"{cid}.wav"), dtype="float64", always_2d=True)
        bgm, _ = sf.read(str(droot / "bgm_seqs" / f"{cid}_bgm.wav"), dtype="float64", always_2d=True)
        seconds = (b - a) / fps
        song = [r["song"] for r in rows if r["id"] == cid][0]
        raw_vocal = raw / subject / "songs" / song / "vocal.wav"
        ref_v = truth_audio(raw_vocal, sr, a / fps + off, seconds)
        ref_b = truth_audio(truth_root / subject / song / "accompaniment.wav", sr, a / fps + off, seconds)
        lv = audio_lag(vocal.mean(axis=1), ref_v, sr // 5)
        lb = audio_lag(bgm.mean(axis=1), ref_b, sr // 5)
        lags += [lv, lb]
        print(f"clip {cid} frames [{a},{b}): head {eh:.2f} deg, jaw {ej:.2f} deg; vocal lag {lv} samples, "
              f"bgm lag {lb} samples (at {sr} Hz)")

    cat = lambda k: np.concatenate(per[k]) if per[k] else np.array([np.nan])  # noqa: E731
    res["head_rot_deg"] = float(np.median(cat("head")))
    res["jaw_deg"] = float(np.median(cat("jaw")))
    res["face_ve_mm"] = float(np.median(cat("face")))
    res["lip_ve_mm"] = float(np.median(cat("lip")))
    res["jitter_ratio"] = float(np.mean(jit)) if jit else float("nan")
    res["jitter_abs_deg"] = float(np.mean(jit_abs)) if jit_abs else float("nan")
    res["jitter_abs_deg_truth"] = float(np.mean(jit_abs_true)) if jit_abs_true else float("nan")
    res["av_offset_samples"] = int(max(abs(x) for x in lags)) if lags else -1


if __name__ == "__main__":
    sys.exit(main())
