"""`singinghead preview`: find a segment's files and draw the preview MP4 (tasks.reporting.preview).

What to preview is either SUBJECT SONG SEGMENT (the crop stage's segment index) or one id of the
assembled dataset: a sequence id (the whole segment) or a clip id (only the clip's frames). Ids are
looked up in the dataset's metadata.csv, never computed here, so they mean what the dataset says
(whatever its numbering).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.build import config_overrides
from tasks import config
from tasks.common.errors import PipelineInputError
from tasks.common.names import check_name
from tasks.common.progress import Progress
from tasks.common.settings import CropSettings, DatasetSettings, DeviceSettings, FlameSettings, RefineSettings
from tasks.dataset.metadata import read_metadata
from tasks.head_model import get_head_model
from tasks.layout import Layout
from tasks.reporting.preview import load_npz, preview_size, write_preview

log = logging.getLogger("singinghead")

# motion.npz arrays that are not per frame
_MOTION_CONSTANTS = ("shape", "fps")


@dataclass(frozen=True)
class Target:
    """What to preview: frames [start, stop) of one crop segment; `dataset_id` when given by id."""

    subject: str
    song: str
    segment: int
    start: int = 0
    stop: int | None = None  # None: to the end of the segment
    dataset_id: str | None = None
    kind: str = "segment"  # segment | sequence | clip


def find_dataset_row(dataset_root: Path, dataset_id: str) -> dict:
    """The metadata.csv row (sequence or clip) of `dataset_id`, or a PipelineInputError naming
    metadata.csv with a few of the ids it does hold."""
    meta_path = Path(dataset_root) / "metadata.csv"
    if not meta_path.is_file():
        raise PipelineInputError(meta_path, f"no assembled dataset to look the id {dataset_id!r} up in",
                                 "build the dataset first (singinghead run), or give SUBJECT SONG SEGMENT "
                                 "(the crop segment index in portrait/segments.json)")
    rows = read_metadata(dataset_root)
    for row in rows:
        if row["id"] == dataset_id:
            return row
    examples = [r["id"] for kind in ("sequence", "clip") for r in rows if r["kind"] == kind][:1]
    examples += [r["id"] for r in rows if r["kind"] == "clip"][:1]
    shown = ", ".join(dict.fromkeys(examples)) or "none: the dataset is empty"
    raise PipelineInputError(meta_path, f"no sequence or clip with the id {dataset_id!r} (ids here: {shown})",
                             "use an id from the id column of metadata.csv, or give SUBJECT SONG SEGMENT")


def target_of_row(row: dict, meta_path: Path, segment: dict) -> Target:
    """The frames of crop segment `segment` (a segments.json entry) that the metadata row covers.

    metadata.csv gives spans in the recording's frame numbering, as segments.json does; a span that
    does not fit the segment means the dataset was built from an older crop."""
    seg_start, seg_end = int(segment["start_frame"]), int(segment["end_frame"])
    a, b = int(row["start_frame"]) - seg_start, int(row["end_frame"]) - seg_start
    whole = row["kind"] == "sequence"
    if not (0 <= a < b <= seg_end - seg_start) or (whole and (a, b) != (0, seg_end - seg_start)):
        raise PipelineInputError(meta_path,
                                 f"{row['kind']} {row['id']} spans frames {row['start_frame']}-{row['end_frame']} "
                                 f"of the recording, which is not within crop segment {segment['index']} "
                                 f"({seg_start}-{seg_end}) of {row['subject']}/{row['song']}",
                                 "the dataset is older than the crop: rebuild it (singinghead run)")
    return Target(row["subject"], row["song"], int(row["source_segment"]), a, b, row["id"], row["kind"])


def slice_frames(arrays: dict, start: int, stop: int, keep: tuple[str, ...] = ()) -> dict:
    """Per-frame arrays cut to frames [start, stop); arrays named in `keep` and scalars unchanged."""
    return {k: v if (k in keep or np.ndim(v) == 0) else v[start:stop] for k, v in arrays.items()}


# Panel heights --size accepts: even (the H.264 writer needs even sizes), big enough to see a face.
MIN_PANEL, MAX_PANEL = 64, 4096


def preview(args) -> int:
    if not (MIN_PANEL <= args.size <= MAX_PANEL and args.size % 2 == 0):
        raise PipelineInputError(f"preview size {args.size}", "is not a usable panel height",
                                 f"give singinghead preview --size an even number of pixels from {MIN_PANEL} "
                                 f"to {MAX_PANEL} (default 512)")
    with config_overrides({"paths": {"raw_dir": args.raw_dir, "processed_dir": args.processed_dir}}):
        lay = Layout.from_config()
        crop, refine, dataset = config.read(CropSettings), config.read(RefineSettings), config.read(DatasetSettings)
        flame, device = config.read(FlameSettings), config.read(DeviceSettings)
    given = [a for a in (args.song, args.segment) if a is not None]
    if len(given) == 1:
        raise PipelineInputError("preview arguments", "SONG given without SEGMENT",
                                 "give a dataset id alone (a sequence or clip id from metadata.csv) or all of "
                                 "SUBJECT SONG SEGMENT")
    row = None
    if given:
        target = Target(check_name(args.target, "subject"), check_name(args.song, "song"), int(args.segment))
    else:
        row = find_dataset_row(lay.dataset_root(), args.target)
        target = Target(check_name(row["subject"], "subject"), check_name(row["song"], "song"),
                        int(row["source_segment"]))
    subject, song, segment = target.subject, target.song, target.segment
    seg = lay.find_segment(subject, song, segment)
    frames_in_segment = seg["end_frame"] - seg["start_frame"]
    if frames_in_segment < dataset.min_sequence_frames:
        raise PipelineInputError(lay.segments_json(subject, song),
                                 f"segment {segment} has {frames_in_segment} frames, under the "
                                 f"{dataset.min_sequence_seconds:g} s minimum: it is never refined",
                                 "preview a segment that became a dataset sequence")
    if row is not None:
        target = target_of_row(row, lay.dataset_root() / "metadata.csv", seg)
    motion_path = lay.motion_npz(subject, song, segment)
    motion = load_npz(motion_path, "the refined motion", "run the pipeline (RefineMotion) for this segment first")
    frames = load_npz(lay.frames_npz(subject, song, segment), "the per-frame estimates",
                       "run EstimateFrames for this segment first")
    video = lay.portrait_dir(subject, song) / seg["video"]
    if target.kind == "clip":
        # write_preview plays its video from the first frame: the clip's own video in the dataset
        # (video_seqs/<id>.mp4, frame-exact) starts where the clip does.
        video = lay.dataset_root() / "video_seqs" / f"{target.dataset_id}.mp4"
        if not video.is_file():
            raise PipelineInputError(video, "the clip's video is missing from the dataset",
                                     "rebuild the dataset (singinghead run)")
        n_motion = len(motion["expression"])
        if n_motion < target.stop:
            raise PipelineInputError(motion_path, f"has {n_motion} frames; clip {target.dataset_id} ends at frame "
                                     f"{target.stop} of the segment", "rerun the pipeline from the refinement "
                                     f"(singinghead rerun --subject {subject} --from refine)")
        motion = slice_frames(motion, target.start, target.stop, keep=_MOTION_CONSTANTS)
        frames = slice_frames(frames, target.start, target.stop)
    model, record = get_head_model(flame, lay.models_dir(), device)
    if record.get("kind") != "real":
        log.warning("preview drawn with the STAND-IN %s", record.get("name"))
    if args.out:
        out = Path(args.out)
    elif target.dataset_id:
        out = lay.dataset_preview(target.dataset_id)
    else:
        out = lay.motion_preview(subject, song, segment)
    n = len(motion["expression"]) if not args.max_frames else min(args.max_frames, len(motion["expression"]))
    prog = Progress(None, n, "preview", bar=None)
    written = write_preview(model, motion, frames, video, out, panel=args.size,
                            portrait_size=crop.output_size, smooth_weight=refine.smooth_weight,
                            max_frames=args.max_frames, progress=prog)
    prog.close()
    what = (f"{target.kind} {target.dataset_id}: frames {target.start}-{target.stop} of "
            if target.dataset_id else "") + f"{subject}/{song} segment {segment}"
    print(f"wrote {out} ({written} frames of {what}, {'x'.join(map(str, preview_size(args.size)))})")
    return 0
