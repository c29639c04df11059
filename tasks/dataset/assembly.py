"""Assemble the dataset: sequences, 8 s clips in the published SingingHead layout, splits, metadata.

Layout (under the dataset root, see `processed/README.md` and `../shared/CONTRACTS.md`):

    train.txt val.txt test.txt          clip ids, sorted
    video_seqs/<id>.mp4                 240 frames, stream copy of the portrait (re-encode only as a fallback)
    flame_seqs/<id>.pkl                 {'shapecode' (1,100), 'expcodes' (240,50), 'posecodes' (240,9)}
    audio_seqs/<id>.wav                 dry vocal of the same span, 16-bit PCM WAV at [audio] sample_rate
    bgm_seqs/<id>_bgm.wav               background music of the same span, 16-bit PCM WAV
    sequences/<seq_id>/                 every usable segment uncut: video.mp4, vocal.wav, bgm.wav, motion.npz
    shapes/<subject>.npy                FLAME shape (100,) float32
    metadata.csv, manifest.json         manifest.json is written last: its presence means "complete"

Ids and numbering: `tasks.dataset.plan`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tasks.common.atomic import atomic_dir, npy_bytes, write_bytes_atomic, write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.capture.raw_layout import links_outside, read_json
from tasks.common.progress import Progress
from tasks.common.settings import AudioSettings, DatasetSettings
from tasks.dataset.manifest import collect_provenance, config_parameters, gather_records, tool_version
from tasks.dataset.metadata import metadata_csv_bytes, metadata_rows
from tasks.dataset.plan import DatasetPaths, check_unique_ids, plan_subject, subject_number
from tasks.dataset.sequences import write_sequence
from tasks.dataset.splits import SPLITS, achieved_ratios, split_clips, split_lists
from tasks.media.clips import ClipEncoding

log = logging.getLogger("singinghead")


def _scan_fit_flags(report_path: Path) -> list[str]:
    """What the scan fit flagged in shape/report.json (a fit let through by [scan_fit] on_bad_fit = flag)."""
    if not report_path.is_file():
        return []
    flagged = read_json(report_path).get("flagged") or []
    return [str(f) for f in flagged] if isinstance(flagged, list) else [str(flagged)]


def assemble_dataset(
    subjects: list[str],
    root: Path,
    paths: DatasetPaths,
    *,
    dataset: DatasetSettings,
    audio: AudioSettings,
    encoding: ClipEncoding,
    config_record: Iterable,
    stage_outputs: Mapping[Path, str],
    task=None,
    threads: int = 1,
) -> dict:
    """Build the dataset for `subjects` into `root` (replaced as a whole); returns the manifest.

    `paths` says where each subject's inputs are; `encoding` re-encodes clips that cannot be cut
    by stream copy; `config_record` are the settings objects the manifest records; `stage_outputs`
    maps each stage task's output path to its stage name (names the stage of each gathered record).
    `threads` sequences are cut at once (PyAV releases the GIL); the bytes do not depend on it.
    """
    cfg = dataset
    fps, clip_frames, sr = float(cfg.fps), int(cfg.clip_frames), int(audio.sample_rate)
    fractions = (cfg.train_fraction, cfg.val_fraction, round(1.0 - cfg.train_fraction - cfg.val_fraction, 10))
    plans, dropped, shapes, records, flags = [], 0, {}, [], {}
    for subject in subjects:
        kept, n_drop = plan_subject(paths, subject, fps, cfg.min_sequence_seconds, clip_frames)
        plans += kept
        dropped += n_drop
        shape_path = paths.scan_shape_npy(subject)
        if not shape_path.exists():
            raise PipelineInputError(shape_path, "is missing", f"rerun FitScanShape for {subject}")
        shape = np.load(shape_path).astype(np.float32).reshape(-1)
        if shape.shape != (100,):
            raise PipelineInputError(
                shape_path, f"has shape {shape.shape}, expected (100,)", "rerun FitScanShape"
            )
        shapes[subject] = shape
        flagged = _scan_fit_flags(shape_path.parent / "report.json")
        if flagged:
            flags.setdefault("scan_fit", {})[subject] = flagged
        linked = links_outside(paths.raw_subject_dir(subject).parent, subject)
        if linked:      # names inside raw/ only: the manifest ships, the machine's paths do not
            flags.setdefault("links_outside_raw", {})[subject] = [rel for rel, _ in linked]
        records += gather_records(paths.subject_out(subject), paths.subject_done(subject), stage_outputs)
    check_unique_ids(plans)

    clip_records: dict[str, dict] = {}
    with atomic_dir(root) as tmp:
        (tmp / "shapes").mkdir()
        for subject, shape in shapes.items():
            write_bytes_atomic(tmp / "shapes" / f"{subject}.npy", npy_bytes(shape))
        progress = Progress(task, len(plans), "assemble sequences")
        with ThreadPoolExecutor(max(1, threads)) as pool:  # PyAV releases the GIL while decoding
            futures = [
                pool.submit(write_sequence, p, tmp, shapes[p.subject], fps, sr, clip_frames, encoding,
                            int(audio.channels))
                for p in plans
            ]
            for f in futures:
                for r in f.result():
                    clip_records[r["id"]] = r
                progress.update(1)
        progress.close()

        clip_list = [{"id": cid, "subject": p.subject, "song": p.song} for p in plans for cid in p.clip_ids]
        split_of = split_clips(clip_list, seed=cfg.split_seed, fractions=fractions, by_song=cfg.split_by_song)
        lists = split_lists(split_of)
        for s in SPLITS:
            write_bytes_atomic(tmp / f"{s}.txt", "".join(f"{i}\n" for i in lists[s]).encode())
        write_bytes_atomic(
            tmp / "metadata.csv", metadata_csv_bytes(metadata_rows(plans, clip_records, split_of))
        )

        re_encoded = sorted(c for c, r in clip_records.items() if r["method"] != "stream-copy")
        prov = collect_provenance(records)
        manifest = {
            "tool": {"name": "singinghead", "version": tool_version()},
            "dataset": {
                "layout": "SingingHead",
                "fps": fps,
                "clip_frames": clip_frames,
                "sample_rate": sr,
                "min_sequence_seconds": cfg.min_sequence_seconds,
                "numbering": "ids are id<subject>_<song>_<segment>_<clip> with segment and clip counted "
                "from 0 as in the official id0_10_0_0 (segment: the song's kept face-stable sequences in "
                "time order; clip: the sequence's 8 s clips from its start); metadata.csv maps each id to "
                "the crop stage's segment index (source_segment) and the recording's frame span "
                "(start_frame, end_frame exclusive)",
                "audio": f"16-bit PCM WAV, {sr} Hz, {int(audio.channels)} channel(s)",
                "posecodes": "global_orient 3 | neck_pose 3 | jaw_pose 3 (axis-angle, radians)",
                "motion_59": "expcodes 0:50 | global 50:53 | neck 53:56 | jaw 56:59",
            },
            "stand_ins": prov["stand_ins"],
            "models": prov["models"],
            "parameters": {"config": config_parameters(config_record), "stages": prov["stage_parameters"]},
            "subjects": {s: subject_number(s, paths.raw_subject_dir(s)) for s in subjects},
            "counts": {
                "subjects": len(subjects),
                "sequences_kept": len(plans),
                "sequences_dropped_short": dropped,
                "sequence_frames": sum(p.frames for p in plans),
                "clips": len(clip_list),
                "clips_per_split": {s: len(lists[s]) for s in SPLITS},
                "clip_frames_dropped": sum(p.frames - clip_frames * len(p.clip_ids) for p in plans),
            },
            "splits": {
                "by_song": bool(cfg.split_by_song),
                "seed": cfg.split_seed,
                "target": dict(zip(SPLITS, fractions)),
                "achieved": achieved_ratios(split_of),
            },
            "clip_cutting": {"stream_copy": len(clip_records) - len(re_encoded), "re_encoded": re_encoded},
        }
        if flags:   # what the build let through flagged (e.g. [scan_fit] on_bad_fit = flag)
            manifest["flags"] = flags
            log.warning("the dataset holds FLAGGED results: %s (see manifest.json)", json.dumps(flags))
        if prov["stand_ins"]:
            log.warning(
                "the dataset was built with STAND-IN models: %s (see manifest.json)",
                ", ".join(prov["stand_ins"]),
            )
        write_json_atomic(tmp / "manifest.json", manifest)  # last: its presence marks a complete dataset
    return manifest
