"""Motion refinement's plain code: per-frame estimates -> one segment's smooth 3D motion.

`refine_segment` reads `frames/segment_NNN.npz` (the per-frame stage) and the subject's shape
(the scan-fit stage), runs flame_fit.refine.refine_motion (outlier replacement, landmark
smoothing, Eq. 1); `write_motion` writes `motion/segment_NNN.npz` (the motion contract) and
`motion/segment_NNN_qc.json`. The frame rate is the crop stage's: `segments.json`'s `fps`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch

from flame_fit.refine import ROUNDING_NOISE_PX, RefineParams, refine_motion
from tasks.capture.raw_layout import read_json
from tasks.common.atomic import save_npz_atomic, write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.settings import RefineSettings

log = logging.getLogger("singinghead")

MOTION_KEYS = ("expression", "global_orient", "neck_pose", "jaw_pose", "cam", "shape", "fps")
REFINE_INPUT_KEYS = ("landmarks", "landmark_ok", "shape", "expression", "global_orient", "jaw_pose", "cam")
FIX_FRAMES = "delete it and rerun EstimateFrames for this segment"


# the limits warned about in this process: RefineMotion reads [refine] once per segment, and a build
# of 27 hours of singing would repeat the warning hundreds of times
_WARNED_LIMITS: set[float] = set()


def refine_params(refine: RefineSettings, image_size: int) -> RefineParams:
    """RefineParams from `[refine]` and the portrait size (`[crop] output_size`). Warns, once per
    value and process, when `close_fit_noise_px` lets whole-pixel landmarks (Dlib's) be fitted closely."""
    values = {f.name: getattr(refine, f.name) for f in dataclasses.fields(refine)}
    if refine.close_fit_noise_px >= ROUNDING_NOISE_PX and refine.close_fit_noise_px not in _WARNED_LIMITS:
        _WARNED_LIMITS.add(refine.close_fit_noise_px)
        log.warning("[refine] close_fit_noise_px = %g is at or above the rounding noise of whole-pixel "
                    "landmarks (%.3f px): Dlib's landmarks of a still face can then be fitted closely, "
                    "jaw and lips following the detector's bias; keep it below unless the detector was "
                    "measured against truth", refine.close_fit_noise_px, ROUNDING_NOISE_PX)
    return RefineParams(**values, image_size=int(image_size))


def load_frames(path: Path) -> dict:
    """The arrays of frames/segment_NNN.npz, checked; raises PipelineInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(path, "per-frame estimates are missing",
                                 "run EstimateFrames for this segment")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # truncated or not an npz
        raise PipelineInputError(path, f"cannot read the per-frame estimates ({exc})", FIX_FRAMES) from exc
    missing = [k for k in REFINE_INPUT_KEYS if k not in arrays]
    if missing:
        raise PipelineInputError(path, f"missing arrays {missing}", FIX_FRAMES)
    T = len(arrays["expression"])
    want = {"landmarks": (T, 68, 2), "landmark_ok": (T,), "shape": (T, 100), "expression": (T, 50),
            "global_orient": (T, 3), "jaw_pose": (T, 3), "cam": (T, 3)}
    for k, shp in want.items():
        if arrays[k].shape != shp:
            raise PipelineInputError(path, f"'{k}' has shape {arrays[k].shape}, expected {shp}", FIX_FRAMES)
    if T < 3:
        raise PipelineInputError(path, f"only {T} frames: too short to refine", FIX_FRAMES)
    ok = arrays["landmark_ok"].astype(bool)
    for k in ("landmarks", "expression", "global_orient", "jaw_pose", "cam"):
        values = arrays[k][ok] if k == "landmarks" else arrays[k]     # failed detections may hold anything
        if not np.all(np.isfinite(values)):
            raise PipelineInputError(path, f"'{k}' holds NaN or infinite values", FIX_FRAMES)
    if not arrays["landmark_ok"].astype(bool).any():
        raise PipelineInputError(path, "no frame of this segment has a landmark detection",
                                 "check the portrait video of this segment (is a face visible?), then rerun "
                                 "EstimateFrames; or drop the segment")
    if np.any(arrays["cam"][:, 0] <= 0):
        raise PipelineInputError(path, "a camera scale is not positive", FIX_FRAMES)
    return arrays


def load_shape(path: Path) -> np.ndarray:
    path = Path(path)
    fix = "delete the subject's shape/ folder and rerun FitScanShape"
    try:
        shape = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise PipelineInputError(path, f"cannot read the subject's shape ({exc})", fix) from exc
    if shape.size != 100 or not np.all(np.isfinite(shape)):
        raise PipelineInputError(path, f"expected 100 finite shape coefficients, found shape {shape.shape}",
                                 fix)
    return shape.reshape(100).astype(np.float32)


def segments_fps(segments_json: Path) -> float:
    """Frame rate of a song's portrait videos: the `fps` the crop stage wrote into `segments.json`."""
    path = Path(segments_json)
    fix = "delete the song's portrait/ folder and rerun CropPortraits"
    if not path.is_file():
        raise PipelineInputError(path, "no portrait segments for this song", "run CropPortraits first")
    fps = read_json(path).get("fps")
    if not fps or float(fps) <= 0:
        raise PipelineInputError(path, "segments.json gives no positive frame rate ('fps')", fix)
    return float(fps)


def _round_floats(obj, digits: int = 6):
    """Timings and losses rounded in the QC record to `digits` significant digits, NaN and inf as None
    (stable text; the motion bytes stay exact). Significant, not decimal, digits: rounded to 6
    decimals, the recorded `tolerance` (1e-7) and a close fit's `lambda_anchor` (1e-7) read 0.0."""
    if isinstance(obj, float):
        # NaN (no frame measured) and inf are not JSON: null
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    return obj


def refine_segment(frames_npz: Path, shape_npy: Path, head_model, params: RefineParams, fps: float,
                   device: torch.device, task=None) -> tuple[dict, dict]:
    """Refine one segment: (motion arrays as MOTION_KEYS, QC record).

    head_model: (FlameModel on `device`, its model record). The QC record holds refine_motion's
    report (floats rounded) plus fps, head model and device.
    """
    torch.manual_seed(0)
    model, model_rec = head_model
    frames = load_frames(frames_npz)
    shape = load_shape(shape_npy)
    if task is not None:
        task.set_status_message(f"refining {len(frames['expression'])} frames on {device}")
    motion, qc = refine_motion(model, frames, shape, params, fps=fps, device=device)
    if qc["close_fit"]:
        log.info("%s: landmark noise %.3f px <= [refine] close_fit_noise_px %g: fitted closely (the jaw "
                 "re-fitted to the landmarks)", frames_npz, qc["landmark_noise_px"],
                 params.close_fit_noise_px)
    qc = _round_floats(qc)
    qc.update({"fps": fps, "head_model": model_rec, "device": str(device)})
    return motion, qc


def write_motion(npz_path: Path, qc_path: Path, motion: dict, qc: dict) -> None:
    """QC first, then the motion file (the stage's output), so a motion file implies its QC."""
    write_json_atomic(qc_path, qc)
    save_npz_atomic(npz_path, {k: np.asarray(motion[k], np.float32) for k in MOTION_KEYS})
