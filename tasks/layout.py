"""Where every input and output lives: raw/ (the capture) and processed/ (each stage's output).

These paths are the contract between stages (see `processed/README.md`). Stages call these
functions instead of joining strings, so a layout change happens here once.
"""
from __future__ import annotations

import json
from pathlib import Path

from tasks.config import paths
from tasks.common.errors import PipelineInputError

SUBJECT_FILE = "subject.json"
SONG_FILE = "song.json"
COLOR_VIDEO = "color.mkv"
VOCAL_FILE = "vocal.wav"
ACCOMPANIMENT_FILE = "accompaniment.wav"
ORIGINAL_STEMS = ("original.wav", "original.flac", "original.mp3")
SCAN_NAMES = ("head.obj", "head.ply")
SCAN_LANDMARKS = "landmarks.json"


def raw_root() -> Path:
    return Path(paths().raw_dir)


def processed_root() -> Path:
    return Path(paths().processed_dir)


# ----------------------------------------------------------------------------- raw/
def raw_subject_dir(subject: str) -> Path:
    return raw_root() / subject


def raw_song_dir(subject: str, song: str) -> Path:
    return raw_subject_dir(subject) / "songs" / song


def subject_json(subject: str) -> Path:
    return raw_subject_dir(subject) / SUBJECT_FILE


def song_json(subject: str, song: str) -> Path:
    return raw_song_dir(subject, song) / SONG_FILE


def list_subjects(raw: Path | None = None) -> list[str]:
    """Subject folders (those holding a subject.json or a songs/ folder), sorted."""
    raw = Path(raw) if raw is not None else raw_root()
    if not raw.is_dir():
        return []
    return sorted(p.name for p in raw.iterdir()
                  if p.is_dir() and not p.name.startswith(".")  # temporaries of an atomic write
                  and ((p / SUBJECT_FILE).exists() or (p / "songs").is_dir()))


def list_songs(subject: str, raw: Path | None = None) -> list[str]:
    raw = Path(raw) if raw is not None else raw_root()
    songs = raw / subject / "songs"
    if not songs.is_dir():
        return []
    return sorted(p.name for p in songs.iterdir() if p.is_dir() and not p.name.startswith("."))


VIDEO_EXTS = (".mkv", ".mp4", ".mov", ".avi", ".webm")


def find_color_video(song_dir: Path) -> Path | None:
    """color.mkv, or any other single video file in the song folder (the contract allows it)."""
    song_dir = Path(song_dir)
    p = song_dir / COLOR_VIDEO
    if p.exists():
        return p
    for ext in VIDEO_EXTS:
        found = sorted(q for q in song_dir.glob(f"*{ext}") if q.is_file())
        if found:
            return found[0]
    return None


def color_video_path(subject: str, song: str) -> Path:
    """The song's colour video (`find_color_video`); color.mkv's path when there is none."""
    d = raw_song_dir(subject, song)
    return find_color_video(d) or d / COLOR_VIDEO


def original_song_path(subject: str, song: str) -> Path | None:
    d = raw_song_dir(subject, song)
    for name in ORIGINAL_STEMS:
        if (d / name).exists():
            return d / name
    return None


def scan_path(subject: str) -> Path | None:
    d = raw_subject_dir(subject) / "scan"
    for name in SCAN_NAMES:
        if (d / name).exists():
            return d / name
    return None


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------- processed/
def subject_out(subject: str) -> Path:
    return processed_root() / subject


def song_out(subject: str, song: str) -> Path:
    return subject_out(subject) / song


def validation_report(subject: str) -> Path:
    return subject_out(subject) / "validation.json"


def validation_failed_report(subject: str) -> Path:
    """Written instead of validation.json when a capture fails, so heavy stages never start."""
    return subject_out(subject) / "validation_failed.json"


def portrait_dir(subject: str, song: str) -> Path:
    return song_out(subject, song) / "portrait"


def segments_json(subject: str, song: str) -> Path:
    return portrait_dir(subject, song) / "segments.json"


def segment_name(index: int) -> str:
    return f"segment_{index:03d}"


def bgm_wav(subject: str, song: str) -> Path:
    return song_out(subject, song) / "bgm.wav"


def bgm_record(subject: str, song: str) -> Path:
    return song_out(subject, song) / "bgm.json"


def segment_audio_dir(subject: str, song: str) -> Path:
    return song_out(subject, song) / "audio"


def frames_npz(subject: str, song: str, segment: int) -> Path:
    return song_out(subject, song) / "frames" / f"{segment_name(segment)}.npz"


def monocular_shape_npz(subject: str) -> Path:
    return subject_out(subject) / "monocular_shape.npz"


def shape_dir(subject: str) -> Path:
    return subject_out(subject) / "shape"


def motion_npz(subject: str, song: str, segment: int) -> Path:
    return song_out(subject, song) / "motion" / f"{segment_name(segment)}.npz"


def motion_qc(subject: str, song: str, segment: int) -> Path:
    return song_out(subject, song) / "motion" / f"{segment_name(segment)}_qc.json"


def motion_preview(subject: str, song: str, segment: int) -> Path:
    return song_out(subject, song) / "motion" / f"{segment_name(segment)}_preview.mp4"


def subject_done(subject: str) -> Path:
    return subject_out(subject) / "subject_done.json"


def dataset_root() -> Path:
    return processed_root() / "dataset" / "SingingHead"


def report_dir() -> Path:
    return processed_root() / "dataset" / "report"


def release_root() -> Path:
    return Path(paths().release_dir) if paths().release_dir else processed_root() / "release"


def build_summary_json() -> Path:
    """BuildSingingHead's output, written when the whole build (release verified) is done."""
    return processed_root() / "build_summary.json"


def models_dir() -> Path:
    return processed_root() / "_models"


def load_segments(subject: str, song: str) -> list[dict]:
    """The crop stage's segments (index, start_frame, end_frame, box, video)."""
    return read_json(segments_json(subject, song))["segments"]


def find_segment(subject: str, song: str, index: int) -> dict:
    """The segment of segments.json with this index, or a PipelineInputError naming the file."""
    seg_file = segments_json(subject, song)
    if not seg_file.is_file():
        raise PipelineInputError(seg_file, "no portrait segments for this song", "run CropPortraits first")
    for seg in load_segments(subject, song):
        if int(seg["index"]) == int(index):
            return seg
    raise PipelineInputError(seg_file, f"no segment {index}", "pick a segment listed in segments.json")


def usable_segments(subject: str, song: str, fps: float, min_seconds: float) -> list[dict]:
    """Segments long enough to become dataset sequences; shorter ones stay in segments.json only."""
    return [s for s in load_segments(subject, song)
            if (s["end_frame"] - s["start_frame"]) >= round(min_seconds * fps)]


def usable_plan(subject: str, fps: float, min_seconds: float) -> list[tuple[str, dict]]:
    """(song, segment) of every usable segment of every song of the subject, songs sorted."""
    return [(song, seg) for song in list_songs(subject)
            for seg in usable_segments(subject, song, fps, min_seconds)]


def segment_vocal_wav(subject: str, song: str, segment: int) -> Path:
    """The dry vocal cut to one portrait segment, at the dataset's rate and channels."""
    return segment_audio_dir(subject, song) / f"{segment_name(segment)}_vocal.wav"


def segment_bgm_wav(subject: str, song: str, segment: int) -> Path:
    return segment_audio_dir(subject, song) / f"{segment_name(segment)}_bgm.wav"


def segment_audio_record(subject: str, song: str) -> Path:
    return segment_audio_dir(subject, song) / "audio.json"


def frames_record(subject: str, song: str, segment: int) -> Path:
    return frames_npz(subject, song, segment).with_suffix(".json")


def scan_shape_npy(subject: str) -> Path:
    """The subject's final FLAME shape (100,) float32: the scan fit, or the monocular mean."""
    return shape_dir(subject) / "shape.npy"


def scan_fit_report(subject: str) -> Path:
    return shape_dir(subject) / "report.json"
