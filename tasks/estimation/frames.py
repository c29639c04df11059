"""Per-frame FLAME estimates of one portrait segment, and a subject's mean shape.

`estimate_video`: one decode pass over the segment's portrait video, Dlib 68 landmarks on every
frame (tasks.faces.landmarks), then either
- EMOCA v2 (tasks.estimation.emoca) when `EmocaSettings.checkpoint_dir` names a model folder: crops
  are encoded in batches while the video streams, the per-crop camera is converted to the
  portrait frame; or
- the weight-free landmark fit (flame_fit.landmark_fit), a stand-in named as such in the log and
  in the record, when it is empty.
The arrays are `frames/segment_NNN.npz` (ARCHITECTURE.md "Per-segment arrays"), the record its `.json`.

`mean_shape`: the mean per-frame shape over segments (frames with landmarks), the initialisation
for the scan fit.
"""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
import torch

from flame_fit.landmark_fit import STAND_IN_NAME, FitParams, fit_segment, interpolate_missing
from tasks.common.atomic import save_npz_atomic, write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.progress import Progress
from tasks.common.provenance import model_record
from tasks.common.settings import EmocaSettings
from tasks.estimation.emoca import EmocaRunner, crop_boxes_from_landmarks, emoca_model_record, load_emoca
from tasks.faces.face_models import detect_faces, model_records as face_records
from tasks.faces.landmarks import LandmarkTracker, TrackParams, iter_rgb_frames, track_frames

log = logging.getLogger("singinghead")

FRAME_KEYS = ("landmarks", "landmark_ok", "confidence", "boxes", "shape", "expression",
              "global_orient", "jaw_pose", "cam", "crop_boxes")
FIX_RECROP = "delete the song's portrait/ folder and rerun CropPortraits"


def _frame_generator(frames, progress: Progress | None):
    for rgb in frames:
        yield rgb
        if progress is not None:
            progress.update(1)


def estimate_video(video: str | Path, *, head_model, emoca: EmocaSettings = EmocaSettings(),
                   device: torch.device | str = "cpu", expected_frames: int | None = None,
                   fit_params=None, track_params=None, task=None,
                   detect=None, predict=None) -> tuple[dict, dict]:
    """Landmarks + FLAME estimate of every frame of one portrait video.

    Returns (arrays, record): arrays as in FRAME_KEYS (float32; landmark_ok bool), T frames;
    record = estimator/head-model/landmark model records, parameters and tracking statistics.
    `head_model` = (FlameModel, record) on `device`; `emoca` says which estimator runs;
    `detect`/`predict` override the MTCNN/Dlib functions (tests).
    """
    video = Path(video)
    device = torch.device(device)
    checkpoint_dir, batch_size = emoca.checkpoint_dir, emoca.batch_size
    track_params = track_params or TrackParams()
    fit_params = fit_params or FitParams()
    progress = Progress(task, expected_frames or 1, f"landmarks {video.name}")
    sizes: set = set()
    runner, emoca_rec, have_lmk = None, None, []
    if checkpoint_dir:
        loaded = load_emoca(checkpoint_dir, device)
        emoca_rec = emoca_model_record(loaded)

    def on_frame(i, rgb, lmk, ok):
        nonlocal runner
        sizes.add(rgb.shape[:2])
        if len(sizes) > 1 or rgb.shape[0] != rgb.shape[1]:
            raise PipelineInputError(video, "portrait frames must be square and of one size, "
                                     f"got {sorted(sizes)}",
                                     FIX_RECROP)
        if checkpoint_dir:
            if runner is None:
                runner = EmocaRunner(loaded.encoder, device, batch_size, image_size=rgb.shape[0])
            valid = bool(np.all(np.isfinite(lmk)))
            have_lmk.append(valid)
            if not valid:  # no face seen yet in this segment: EMOCA's no-face rule, the whole frame
                h = rgb.shape[0]
                lmk = np.array([[0, 0], [h - 1, h - 1]] * 34, np.float32)
            runner.add(rgb, lmk)

    t0 = time.perf_counter()
    # MTCNN runs on the stage's device (it used to read [device] itself)
    tracker = LandmarkTracker(detect or functools.partial(detect_faces, device=device), predict, track_params)
    track = track_frames(_frame_generator(iter_rgb_frames(video), progress), tracker, on_frame)
    progress.close()
    t_track = time.perf_counter() - t0
    T = len(track.ok)
    if T == 0:
        raise PipelineInputError(video, "portrait video has no frames", FIX_RECROP)
    if expected_frames is not None and T != expected_frames:
        raise PipelineInputError(video, f"portrait video has {T} frames but segments.json says "
                                 f"{expected_frames}"
                                 " (truncated or stale video)", FIX_RECROP)
    if not track.ok.any():
        raise PipelineInputError(video, "no face found in any frame of the segment (MTCNN + Dlib)",
                                 "check the crop stage's segments; " + FIX_RECROP)
    image_size = int(next(iter(sizes))[0])
    arrays = {"landmarks": track.landmarks.astype(np.float32), "landmark_ok": track.ok,
              "confidence": track.confidence.astype(np.float32), "boxes": track.boxes.astype(np.float32)}

    t1 = time.perf_counter()
    model, head_rec = head_model
    if checkpoint_dir:
        est = runner.finish()
        have = np.array(have_lmk, bool)
        for k in ("shape", "expression", "global_orient", "jaw_pose", "cam", "crop_cam", "crop_boxes"):
            est[k] = interpolate_missing(est[k], have).astype(np.float32)
        estimator = emoca_rec
        if not head_rec.get("kind") == "real":
            log.warning("EMOCA codes are FLAME 2020 coefficients; the configured head model (%s) is not "
                        "FLAME 2020, so later stages will decode them with another basis",
                        head_rec.get("name"))
        fitted = {k: est[k] for k in ("expression", "global_orient", "jaw_pose", "cam", "crop_boxes")}
        fitted["shape"] = est["shape"]
        extra = {"crop_cam": est["crop_cam"]}
    else:
        log.warning("per-frame FLAME estimates come from the %s", STAND_IN_NAME)
        estimator = model_record(STAND_IN_NAME, real=False)
        fit = fit_segment(model, track.landmarks, track.ok, image_size, fit_params, device)
        fitted = {k: fit[k] for k in ("expression", "global_orient", "jaw_pose", "cam")}
        fitted["shape"] = np.repeat(fit["shape"][None], T, axis=0)
        fitted["crop_boxes"] = crop_boxes_from_landmarks(track.landmarks).astype(np.float32)
        extra = {"fit_rmse_px": fit["rmse_px"]}
    t_est = time.perf_counter() - t1
    arrays.update({k: np.asarray(v, np.float32) for k, v in fitted.items()})
    arrays.update(extra)

    record = {
        "video": str(video),
        "frames": T,
        "image_size": image_size,
        "estimator": estimator,
        "head_model": head_rec,
        "landmark_models": face_records() if detect is None and predict is None else [],
        "params": {
            "tracking": track_params.as_dict(),
            "fit": fit_params.as_dict() if not checkpoint_dir else None,
            "emoca": {"checkpoint_dir": checkpoint_dir, "batch_size": batch_size,
                      "crop": "kpt68 box x1.1, size int(x1.25), 224x224 bilinear, RGB [0,1]"},
            "device": str(device),
        },
        "crop_boxes": "npz key crop_boxes (T,3) [cx, cy, size] in portrait pixels"
                      + (" (EMOCA input crops)" if checkpoint_dir
                         else " (EMOCA rule; unused by the stand-in)"),
        "tracking": {"frames_ok": int(track.ok.sum()), "mtcnn_runs": int(track.detections),
                     "failures": track.stats},
        "timing_s": {"landmarks": round(t_track, 3), "estimator": round(t_est, 3)},
    }
    return arrays, record


def write_frames(npz_path: Path, record_path: Path, arrays: dict, record: dict) -> None:
    """Record first: the .npz (the stage's output) appears last, so it implies the record."""
    write_json_atomic(record_path, record)
    save_npz_atomic(npz_path, arrays)


def mean_shape(npz_paths: list[Path]) -> tuple[np.ndarray, int]:
    """Mean per-frame shape over frames with landmarks (all frames of a segment that has none).
    Returns (shape (100,) float32, number of frames averaged)."""
    total, n = None, 0
    for p in npz_paths:
        with np.load(p) as z:
            shape, ok = z["shape"].astype(np.float64), z["landmark_ok"].astype(bool)
        use = shape[ok] if ok.any() else shape
        total = use.sum(0) if total is None else total + use.sum(0)
        n += len(use)
    if total is None or n == 0:
        raise ValueError("no frames to average")
    return (total / n).astype(np.float32), n


def write_mean_shape(out_path: Path, npz_paths: list[Path]) -> None:
    """monocular_shape.npz: {'shape': (100,) float32, 'n_frames', 'n_segments'} over `npz_paths`."""
    shape, n = mean_shape(npz_paths)
    save_npz_atomic(out_path, {"shape": shape, "n_frames": np.int64(n), "n_segments": np.int64(len(npz_paths))})
