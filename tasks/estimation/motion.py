"""`RefineMotion(subject, song, segment)`: per-frame estimates -> the segment's smooth 3D motion.

Reads `frames/segment_NNN.npz` (EstimateFrames) and the subject's shape (FitScanShape), runs
flame_fit.refine.refine_motion (outlier replacement, landmark smoothing, Eq. 1) and writes
`motion/segment_NNN.npz` (the motion contract) and `motion/segment_NNN_qc.json`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import luigi
import numpy as np
import torch

from flame_fit.refine import RefineParams, refine_motion
from tasks import layout
from tasks.devices import gpu_resources, torch_device
from tasks.common.atomic import save_npz_atomic, write_json_atomic
from tasks.config import crop as crop_config
from tasks.config import dataset as dataset_config
from tasks.config import refine as refine_config
from tasks.common.errors import PipelineInputError
from tasks.common.provenance import recorded_params

log = logging.getLogger("singinghead")

MOTION_KEYS = ("expression", "global_orient", "neck_pose", "jaw_pose", "cam", "shape", "fps")
FRAME_KEYS = ("landmarks", "landmark_ok", "shape", "expression", "global_orient", "jaw_pose", "cam")
FIX_FRAMES = "delete it and rerun EstimateFrames for this segment"

def refine_params(cfg: refine_config | None = None, image_size: int | None = None) -> RefineParams:
    """RefineParams from `[refine]` (and the portrait size from `[crop]`)."""
    cfg = cfg or refine_config()
    values = {name: getattr(cfg, name) for name, _ in cfg.get_params()}
    return RefineParams(**values, image_size=int(image_size or crop_config().output_size))


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
    missing = [k for k in FRAME_KEYS if k not in arrays]
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


def frames_fps(subject: str, song: str, segment: int) -> float:
    """Frame rate of the segment's portrait video: the crop stage's `segments.json`, else `[dataset] fps`."""
    path = layout.segments_json(subject, song)
    if path.is_file():
        fps = layout.read_json(path).get("fps")
        if fps:
            return float(fps)
    return float(dataset_config().fps)


def write_motion(npz_path: Path, qc_path: Path, motion: dict, qc: dict) -> None:
    """QC first, then the motion file (the task's output), so a motion file implies its QC."""
    write_json_atomic(qc_path, qc)
    save_npz_atomic(npz_path, {k: np.asarray(motion[k], np.float32) for k in MOTION_KEYS})


def _round_floats(obj, digits: int = 6):
    """Timings and losses rounded in the QC record (stable text; the motion bytes stay exact)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    return obj


class RefineMotion(luigi.Task):
    """The refined motion of one usable portrait segment."""

    subject = luigi.Parameter()
    song = luigi.Parameter()
    segment = luigi.IntParameter()

    @property
    def resources(self):
        return gpu_resources()

    def requires(self):
        from tasks.estimate import EstimateFrames
        from tasks.scan_fit import FitScanShape
        return {"frames": EstimateFrames(subject=self.subject, song=self.song, segment=self.segment),
                "shape": FitScanShape(subject=self.subject)}

    def output(self):
        return luigi.LocalTarget(str(layout.motion_npz(self.subject, self.song, self.segment)))

    def run(self):
        from tasks.head_model import get_head_model

        torch.manual_seed(0)
        device = torch_device()
        model, model_rec = get_head_model(device)
        frames = load_frames(layout.frames_npz(self.subject, self.song, self.segment))
        shape = load_shape(layout.scan_shape_npy(self.subject))
        params = refine_params()
        fps = frames_fps(self.subject, self.song, self.segment)
        self.set_status_message(f"refining {len(frames['expression'])} frames on {device}")
        motion, qc = refine_motion(model, frames, shape, params, fps=fps, device=device)
        qc = _round_floats(qc)
        qc.update({"subject": self.subject, "song": self.song, "segment": int(self.segment), "fps": fps,
                   "head_model": model_rec, "device": str(device),
                   "config": recorded_params(refine_config(), crop_config())})
        if model_rec.get("kind") != "real":
            log.warning("RefineMotion %s/%s/%d: fitted with the STAND-IN %s", self.subject, self.song,
                        self.segment, model_rec.get("name"))
        log.info("RefineMotion %s/%s/%d: landmark RMSE %.2f -> %.2f px, %d iterations, %.2f s", self.subject,
                 self.song, self.segment, qc["landmark_rmse_px"]["before"], qc["landmark_rmse_px"]["after"],
                 qc["iterations"], qc["seconds"]["total"])
        qc_path = layout.motion_qc(self.subject, self.song, self.segment)
        write_motion(Path(self.output().path), qc_path, motion, qc)
