"""`singinghead preview`: find a segment's files and draw the side-by-side MP4 (tasks.reporting.preview)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.build import config_overrides
from tasks import config
from tasks.common.errors import PipelineInputError
from tasks.common.progress import Progress
from tasks.common.settings import CropSettings, DatasetSettings, DeviceSettings, FlameSettings, RefineSettings
from tasks.head_model import get_head_model
from tasks.layout import Layout
from tasks.reporting.preview import write_preview

log = logging.getLogger("singinghead")


def _load_npz(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        raise PipelineInputError(path, f"{what} is missing", fix)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def preview(args) -> int:
    with config_overrides({"paths": {"raw_dir": args.raw_dir, "processed_dir": args.processed_dir}}):
        lay = Layout.from_config()
        crop, refine, dataset = config.read(CropSettings), config.read(RefineSettings), config.read(DatasetSettings)
        flame, device = config.read(FlameSettings), config.read(DeviceSettings)
    subject, song, segment = args.subject, args.song, int(args.segment)
    seg = lay.find_segment(subject, song, segment)
    frames_in_segment = seg["end_frame"] - seg["start_frame"]
    if frames_in_segment < dataset.min_sequence_frames:
        raise PipelineInputError(lay.segments_json(subject, song),
                                 f"segment {segment} has {frames_in_segment} frames, under the "
                                 f"{dataset.min_sequence_seconds:g} s minimum: it is never refined",
                                 "preview a segment that became a dataset sequence")
    video = lay.portrait_dir(subject, song) / seg["video"]
    motion = _load_npz(lay.motion_npz(subject, song, segment), "the refined motion",
                       "run the pipeline (RefineMotion) for this segment first")
    frames = _load_npz(lay.frames_npz(subject, song, segment), "the per-frame estimates",
                       "run EstimateFrames for this segment first")
    model, record = get_head_model(flame, lay.models_dir(), device)
    if record.get("kind") != "real":
        log.warning("preview drawn with the STAND-IN %s", record.get("name"))
    out = Path(args.out) if args.out else lay.motion_preview(subject, song, segment)
    n = len(motion["expression"]) if not args.max_frames else min(args.max_frames, len(motion["expression"]))
    prog = Progress(None, n, "preview", bar=None)
    written = write_preview(model, motion, frames, video, out, panel=args.size,
                            portrait_size=crop.output_size, smooth_weight=refine.smooth_weight,
                            max_frames=args.max_frames, progress=prog)
    prog.close()
    print(f"wrote {out} ({written} frames, {2 * args.size}x{args.size})")
    return 0
