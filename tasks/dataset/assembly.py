"""Assemble the dataset: sequences, 8 s clips in the published SingingHead layout, splits, metadata.

Layout (under `layout.dataset_root()`, see `processed/README.md` and `../shared/CONTRACTS.md`):

    train.txt val.txt test.txt          clip ids, sorted
    video_seqs/<id>.mp4                 240 frames, stream copy of the portrait (re-encode only as a fallback)
    flame_seqs/<id>.pkl                 {'shapecode' (1,100), 'expcodes' (240,50), 'posecodes' (240,9)}
    audio_seqs/<id>.wav                 dry vocal of the same span
    bgm_seqs/<id>_bgm.wav               background music of the same span
    sequences/<seq_id>/                 every usable segment uncut: video.mp4, vocal.wav, bgm.wav, motion.npz
    shapes/<subject>.npy                FLAME shape (100,) float32
    metadata.csv, manifest.json         manifest.json is written last: its presence means "complete"

Ids: clip `id<subject>_<song>_<segment>_<clip>`, sequence `id<subject>_<song>_<segment>`.
`<subject>` is the number in the subject folder name (S015 -> 15); `<song>` the leading number of
the song folder (003_country_... -> 3; a folder without one gets its 1-based position among the
subject's songs). `<segment>` numbers a song's kept sequences 1, 2, ... in time order and `<clip>`
numbers a sequence's 8 s clips 1, 2, ... from its start (both 1-based, like the published example
id15_3_1_3); metadata.csv maps each id back to the crop stage's segment index and frame span.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import luigi
import numpy as np

from tasks.media import clips as C
from tasks import layout
from tasks.common.atomic import (
    atomic_dir,
    atomic_path,
    json_dumps,
    npy_bytes,
    save_npz_atomic,
    write_bytes_atomic,
    write_json_atomic,
)
from tasks.config import audio, bgm, crop, dataset, device, emoca, flame, refine
from tasks.common.errors import PipelineInputError
from tasks.common.progress import Progress
from tasks.common.provenance import recorded_params
from tasks.dataset.splits import SPLITS, achieved_ratios, split_clips, split_lists

log = logging.getLogger("singinghead")

METADATA_COLUMNS = (
    "id",
    "kind",
    "subject",
    "subject_number",
    "song",
    "song_number",
    "segment",
    "source_segment",
    "clip",
    "genre",
    "language",
    "professional",
    "gender",
    "frames",
    "seq_start_frame",
    "start_frame",
    "end_frame",
    "split",
    "video_method",
)


# ----------------------------------------------------------------------------- ids
def subject_number(subject: str) -> int:
    """S015 -> 15 (the digits in the folder name)."""
    digits = re.findall(r"\d+", subject)
    if not digits:
        raise PipelineInputError(
            layout.raw_subject_dir(subject),
            "subject folder name holds no number",
            "name subject folders like S001, S002, ... (the number goes into clip ids)",
        )
    return int(digits[-1])


def song_number(song: str, songs: list[str]) -> int:
    """'003_country_take-me-home' -> 3; without a leading number: 1-based position in `songs`."""
    m = re.match(r"\d+", song)
    return int(m.group()) if m else sorted(songs).index(song) + 1


def clip_id(subj: int, song: int, segment: int, clip: int) -> str:
    return f"id{subj}_{song}_{segment}_{clip}"


def sequence_id(subj: int, song: int, segment: int) -> str:
    return f"id{subj}_{song}_{segment}"


# ----------------------------------------------------------------------------- plan
@dataclass
class SequencePlan:
    """One kept sequence and where its inputs are."""

    seq_id: str
    subject: str
    song: str
    segment_number: int  # 1-based among the song's kept sequences
    source_segment: int  # the crop stage's segment index
    start_frame: int  # span in the recording's frame numbering, end exclusive
    end_frame: int
    video: Path
    motion: Path
    vocal: Path
    bgm: Path
    meta: dict = field(default_factory=dict)
    clip_ids: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


def _read_optional_json(path: Path) -> dict:
    try:
        return layout.read_json(path)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise PipelineInputError(path, f"is not valid JSON ({e})", "fix or re-export the file") from e


def subject_meta(subject: str) -> dict:
    s = _read_optional_json(layout.subject_json(subject))
    prof = s.get("professional", "")
    return {"gender": str(s.get("gender", "")), "professional": "" if prof == "" else str(bool(prof)).lower()}


def song_meta(subject: str, song: str) -> dict:
    s = _read_optional_json(layout.song_json(subject, song))
    return {
        "genre": str(s.get("genre", "")),
        "language": str(s.get("language", "")),
        "title": str(s.get("title", "")),
    }


def plan_subject(
    subject: str, fps: float, min_seconds: float, clip_frames: int
) -> tuple[list[SequencePlan], int]:
    """(kept sequences, number dropped for being shorter than `min_seconds`) of one subject.

    Reads `subject_done.json`; segments the subject stage already left out count as dropped.
    """
    done_path = layout.subject_done(subject)
    if not done_path.exists():
        raise PipelineInputError(
            done_path,
            "is missing",
            f"build the subject first (luigi --module pipeline "
            f"BuildSubject --subject {subject} --local-scheduler)",
        )
    done = layout.read_json(done_path)
    subj_no = subject_number(subject)
    songs = layout.list_songs(subject) or sorted({s["song"] for s in done["sequences"]})
    smeta = subject_meta(subject)
    min_frames = int(round(min_seconds * fps))
    dropped = int(done.get("segments_too_short", 0))
    kept: list[SequencePlan] = []
    per_song: dict[str, int] = {}
    for s in sorted(done["sequences"], key=lambda s: (s["song"], s["start_frame"], s["segment"])):
        frames = int(s["end_frame"]) - int(s["start_frame"])
        if frames < min_frames:
            dropped += 1
            continue
        per_song[s["song"]] = per_song.get(s["song"], 0) + 1
        seg_no = per_song[s["song"]]
        song_no = song_number(s["song"], songs)
        seg = int(s["segment"])
        plan = SequencePlan(
            seq_id=sequence_id(subj_no, song_no, seg_no),
            subject=subject,
            song=s["song"],
            segment_number=seg_no,
            source_segment=seg,
            start_frame=int(s["start_frame"]),
            end_frame=int(s["end_frame"]),
            video=Path(s["video"]),
            motion=Path(s["motion"]),
            vocal=layout.segment_vocal_wav(subject, s["song"], seg),
            bgm=layout.segment_bgm_wav(subject, s["song"], seg),
            meta={
                **smeta,
                **song_meta(subject, s["song"]),
                "subject_number": subj_no,
                "song_number": song_no,
            },
        )
        plan.clip_ids = [clip_id(subj_no, song_no, seg_no, k + 1) for k in range(frames // clip_frames)]
        kept.append(plan)
    return kept, dropped


def check_unique_ids(plans: list[SequencePlan]) -> None:
    seen: dict[str, SequencePlan] = {}
    for p in plans:
        if p.seq_id in seen:
            q = seen[p.seq_id]
            raise PipelineInputError(
                layout.raw_song_dir(p.subject, p.song),
                f"gives the same id {p.seq_id} as {q.subject}/{q.song}",
                "give every subject a distinct number and every song of a subject a distinct "
                "leading number",
            )
        seen[p.seq_id] = p


# ----------------------------------------------------------------------------- writing
def write_sequence(
    plan: SequencePlan,
    root: Path,
    shape: np.ndarray,
    fps: float,
    sample_rate: int,
    clip_frames: int,
    encode: dict,
) -> list[dict]:
    """Write sequences/<seq_id>/ and the sequence's clips; returns one record per clip.

    Checks that video, motion and both audio files cover exactly the sequence's frames.
    """
    index = C.index_video(plan.video)
    if index.frames != plan.frames:
        raise PipelineInputError(
            plan.video,
            f"has {index.frames} frames, the segment spans {plan.frames}",
            "rebuild the portrait segment (CropPortraits) for this song",
        )
    if abs(float(index.fps) - fps) > 0.01:
        raise PipelineInputError(
            plan.video,
            f"runs at {float(index.fps):.3f} fps, the dataset at {fps:g}",
            "set [dataset] fps to the capture's rate, or re-crop the portraits",
        )
    motion = C.load_motion(plan.motion)
    if len(motion["expression"]) != plan.frames:
        raise PipelineInputError(
            plan.motion,
            f"has {len(motion['expression'])} frames, the video {plan.frames}",
            "rerun RefineMotion for this segment",
        )
    # expression and pose were fitted with the motion's own shape: keep them together, but say so
    # when it is not the subject's shape (the refinement stage is meant to use shapes/<subject>.npy)
    motion_shape = np.asarray(motion["shape"], np.float32).reshape(100)
    if not np.allclose(motion_shape, shape, atol=1e-4):
        log.warning(
            "%s: its shape differs from %s's shape (max |diff| %.3g); the clip pkl uses the motion's",
            plan.motion,
            plan.subject,
            float(np.abs(motion_shape - shape).max()),
        )
    shape = motion_shape
    wavs = {}
    for name, path in (("vocal", plan.vocal), ("bgm", plan.bgm)):
        data, sr = C.read_wav(path)
        if sr != sample_rate:
            raise PipelineInputError(
                path,
                f"is at {sr} Hz, the dataset rate is {sample_rate} Hz",
                "rebuild the segment audio (SegmentAudio) with the current [audio] sample_rate",
            )
        C.check_audio_length(path, len(data), plan.frames, sr, fps)
        wavs[name] = data

    seq_dir = root / "sequences" / plan.seq_id
    seq_dir.mkdir(parents=True, exist_ok=True)
    copy_file_atomic(plan.video, seq_dir / "video.mp4")
    for name, data in wavs.items():
        C.write_wav(seq_dir / f"{name}.wav", C.cut_audio(data, sample_rate, fps, 0, plan.frames), sample_rate)
    save_npz_atomic(
        seq_dir / "motion.npz",
        {
            **{k: np.asarray(motion[k], np.float32) for k in C.MOTION_KEYS},
            "cam": np.asarray(motion.get("cam", np.zeros((plan.frames, 3))), np.float32),
            "shape": np.asarray(shape, np.float32).reshape(100),
            "fps": np.asarray(fps, np.float32),
        },
    )

    spans = [(k * clip_frames, clip_frames) for k in range(len(plan.clip_ids))]
    if not spans:
        return []
    videos = [root / "video_seqs" / f"{cid}.mp4" for cid in plan.clip_ids]
    for d in ("video_seqs", "flame_seqs", "audio_seqs", "bgm_seqs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    cut = C.cut_video_clips(plan.video, spans, videos, index=index, **encode)
    records = []
    for cid, (start, count), rec in zip(plan.clip_ids, spans, cut):
        write_bytes_atomic(
            root / "flame_seqs" / f"{cid}.pkl", C.pickle_bytes(C.flame_clip(motion, shape, start, count))
        )
        for name, dst in (
            ("vocal", root / "audio_seqs" / f"{cid}.wav"),
            ("bgm", root / "bgm_seqs" / f"{cid}_bgm.wav"),
        ):
            C.write_wav(dst, C.cut_audio(wavs[name], sample_rate, fps, start, start + count), sample_rate)
        if rec["method"] != "stream-copy":
            log.warning("clip %s does not start on a keyframe of %s: re-encoded", cid, plan.video)
        records.append({"id": cid, "seq_start_frame": start, **rec})
    return records


def copy_file_atomic(src: Path, dst: Path) -> None:
    """Byte copy (the whole portrait is the sequence's video: a stream copy by definition)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def metadata_rows(
    plans: list[SequencePlan], clip_records: dict[str, dict], split_of: dict[str, str]
) -> list[dict]:
    """One row per sequence and per clip, sorted by id then kind (sequence rows first)."""
    rows = []
    for p in plans:
        base = {
            "subject": p.subject,
            "subject_number": p.meta["subject_number"],
            "song": p.song,
            "song_number": p.meta["song_number"],
            "segment": p.segment_number,
            "source_segment": p.source_segment,
            "genre": p.meta["genre"],
            "language": p.meta["language"],
            "professional": p.meta["professional"],
            "gender": p.meta["gender"],
        }
        seq_splits = sorted({split_of[c] for c in p.clip_ids})
        rows.append(
            {
                **base,
                "id": p.seq_id,
                "kind": "sequence",
                "clip": "",
                "frames": p.frames,
                "seq_start_frame": 0,
                "start_frame": p.start_frame,
                "end_frame": p.end_frame,
                "split": seq_splits[0] if len(seq_splits) == 1 else ("mixed" if seq_splits else ""),
                "video_method": "copy",
            }
        )
        for k, cid in enumerate(p.clip_ids):
            r = clip_records[cid]
            rows.append(
                {
                    **base,
                    "id": cid,
                    "kind": "clip",
                    "clip": k + 1,
                    "frames": r["frames"],
                    "seq_start_frame": r["seq_start_frame"],
                    "start_frame": p.start_frame + r["seq_start_frame"],
                    "end_frame": p.start_frame + r["seq_start_frame"] + r["frames"],
                    "split": split_of[cid],
                    "video_method": r["method"],
                }
            )
    return sorted(rows, key=lambda r: (r["id"], r["kind"] != "sequence"))


def metadata_csv_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in METADATA_COLUMNS})
    return buf.getvalue().encode("utf-8")


def read_metadata(root: Path) -> list[dict]:
    with open(Path(root) / "metadata.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- provenance
def stage_of_record(rel: Path) -> str:
    """Which stage wrote a record, from its place under processed/<subject>/."""
    parts = rel.parts
    for folder, stage in (
        ("portrait", "crop"),
        ("frames", "estimate"),
        ("motion", "refine"),
        ("audio", "audio"),
        ("shape", "shape"),
    ):
        if folder in parts[:-1]:
            return stage
    if rel.name == "bgm.json":
        return "bgm"
    if rel.name == "validation.json":
        return "validate"
    return rel.stem


def gather_records(subject: str) -> list[tuple[str, dict]]:
    """(stage, record) for every JSON record of a subject that holds a model record or parameters."""
    root = layout.subject_out(subject)
    out = []
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root)
        if rel.name == layout.subject_done(subject).name or rel.name.startswith("."):
            continue
        try:
            rec = layout.read_json(p)
        except (json.JSONDecodeError, OSError):
            log.warning("unreadable record %s: left out of the manifest", p)
            continue
        if isinstance(rec, dict) and (_model_list(rec) or {"params", "parameters", "config"} & rec.keys()):
            out.append((stage_of_record(rel), rec))
    return out


def _model_list(rec, depth: int = 0) -> list[dict]:
    """Every model record inside a stage record: a dict with 'name' and 'kind' real | stand-in, found
    under any key ('model', 'models', 'estimator', 'head_model', ...), in lists too, 4 levels deep."""
    if depth > 4:
        return []
    if isinstance(rec, dict):
        if "name" in rec and rec.get("kind") in ("real", "stand-in"):
            return [rec]
        return [m for k in sorted(rec) for m in _model_list(rec[k], depth + 1)]
    if isinstance(rec, list):
        return [m for v in rec for m in _model_list(v, depth + 1)]
    return []


def collect_provenance(records: list[tuple[str, dict]]) -> dict:
    """{'models': [...], 'stand_ins': [...], 'stage_parameters': {stage: [unique params]}}."""
    models: dict[str, dict] = {}
    params: dict[str, dict[str, dict]] = {}
    for stage, rec in records:
        for m in _model_list(rec):
            entry = {
                "name": str(m.get("name", "?")),
                "kind": m.get("kind", "unknown"),
                "files": sorted(
                    (
                        {"path": str(f.get("path")), "sha256": f.get("sha256")}
                        for f in m.get("files", [])
                        if isinstance(f, dict)
                    ),
                    key=lambda f: f["path"],
                ),
            }
            key = json.dumps(entry, sort_keys=True)
            models.setdefault(key, {**entry, "used_by": set()})["used_by"].add(stage)
        for k in ("params", "parameters", "config"):
            if isinstance(rec.get(k), dict):
                params.setdefault(stage, {})[json.dumps(rec[k], sort_keys=True, default=str)] = rec[k]
    model_list = sorted(
        ({**m, "used_by": sorted(m["used_by"])} for m in models.values()),
        key=lambda m: (m["name"], m["kind"], json.dumps(m["files"])),
    )
    return {
        "models": model_list,
        "stand_ins": sorted({m["name"] for m in model_list if m["kind"] != "real"}),
        "stage_parameters": {s: [v[k] for k in sorted(v)] for s, v in sorted(params.items())},
    }


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("singinghead")
    except Exception:  # not installed (running from a checkout)
        cfg = Path(__file__).resolve().parents[1] / "setup.cfg"
        m = re.search(r"^version\s*=\s*(\S+)", cfg.read_text(), re.M) if cfg.exists() else None
        return m.group(1) if m else "unknown"


def config_parameters() -> dict:
    """Every stage's luigi.cfg section ([paths] left out: it is where, not how)."""
    return json.loads(
        json_dumps(recorded_params(dataset(), crop(), bgm(), audio(), flame(), emoca(), refine(), device()))
    )


# ----------------------------------------------------------------------------- the whole dataset
def assemble_dataset(subjects: list[str], root: Path, task=None, threads: int = 1) -> dict:
    """Build the dataset for `subjects` into `root` (replaced as a whole); returns the manifest.

    `threads` sequences are cut at once (PyAV releases the GIL); the bytes do not depend on it.
    """
    cfg = dataset()
    fps, clip_frames, sr = float(cfg.fps), int(cfg.clip_frames), int(audio().sample_rate)
    fractions = (cfg.train_fraction, cfg.val_fraction, round(1.0 - cfg.train_fraction - cfg.val_fraction, 10))
    encode = {"crf": crop().crf, "preset": crop().preset, "keyint": crop().keyframe_interval}
    plans, dropped, shapes, records = [], 0, {}, []
    for subject in subjects:
        kept, n_drop = plan_subject(subject, fps, cfg.min_sequence_seconds, clip_frames)
        plans += kept
        dropped += n_drop
        shape_path = layout.scan_shape_npy(subject)
        if not shape_path.exists():
            raise PipelineInputError(shape_path, "is missing", f"rerun FitScanShape for {subject}")
        shape = np.load(shape_path).astype(np.float32).reshape(-1)
        if shape.shape != (100,):
            raise PipelineInputError(
                shape_path, f"has shape {shape.shape}, expected (100,)", "rerun FitScanShape"
            )
        shapes[subject] = shape
        records += gather_records(subject)
    check_unique_ids(plans)

    clip_records: dict[str, dict] = {}
    with atomic_dir(root) as tmp:
        (tmp / "shapes").mkdir()
        for subject, shape in shapes.items():
            write_bytes_atomic(tmp / "shapes" / f"{subject}.npy", npy_bytes(shape))
        progress = Progress(task, len(plans), "assemble sequences")
        with ThreadPoolExecutor(max(1, threads)) as pool:  # PyAV releases the GIL while decoding
            futures = [
                pool.submit(write_sequence, p, tmp, shapes[p.subject], fps, sr, clip_frames, encode)
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
                "numbering": "segment and clip numbers in ids are 1-based; metadata.csv maps them to the "
                "crop stage's segment index and the recording's frame span (end exclusive)",
                "posecodes": "global_orient 3 | neck_pose 3 | jaw_pose 3 (axis-angle, radians)",
                "motion_59": "expcodes 0:50 | global 50:53 | neck 53:56 | jaw 56:59",
            },
            "stand_ins": prov["stand_ins"],
            "models": prov["models"],
            "parameters": {"config": config_parameters(), "stages": prov["stage_parameters"]},
            "subjects": {s: subject_number(s) for s in subjects},
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
        if prov["stand_ins"]:
            log.warning(
                "the dataset was built with STAND-IN models: %s (see manifest.json)",
                ", ".join(prov["stand_ins"]),
            )
        write_json_atomic(tmp / "manifest.json", manifest)  # last: its presence marks a complete dataset
    return manifest


class AssembleDataset(luigi.Task):
    """Every subject's sequences and clips in the SingingHead layout, with splits and a manifest."""

    threads = luigi.IntParameter(default=2, significant=False)

    def requires(self):
        from tasks.subject import SubjectOutputs  # lazy: the per-subject stages are heavy imports

        return [SubjectOutputs(subject=s) for s in layout.list_subjects()]

    def output(self):
        return luigi.LocalTarget(str(layout.dataset_root() / "manifest.json"))

    def run(self):
        assemble_dataset(layout.list_subjects(), layout.dataset_root(), task=self, threads=self.threads)
