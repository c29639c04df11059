"""The raw capture layout (`raw/README.md`): file names and how to list and find them.

Plain functions of explicit folders; `tasks.layout.Layout` builds on them for the configured roots.
"""
from __future__ import annotations

from pathlib import Path

from tasks.common.bounded import read_json_bounded

SUBJECT_FILE = "subject.json"
SONG_FILE = "song.json"
COLOR_VIDEO = "color.mkv"
VOCAL_FILE = "vocal.wav"
ACCOMPANIMENT_FILE = "accompaniment.wav"
ORIGINAL_STEMS = ("original.wav", "original.flac", "original.mp3")
SCAN_NAMES = ("head.obj", "head.ply")
SCAN_LANDMARKS = "landmarks.json"
SCAN_UNITS = "scan.json"          # optional {"units": "mm"}: the scan is metric
VIDEO_EXTS = (".mkv", ".mp4", ".mov", ".avi", ".webm")


def list_subjects(raw: Path) -> list[str]:
    """Subject folders of a capture root (those holding a subject.json or a songs/ folder), sorted."""
    raw = Path(raw)
    if not raw.is_dir():
        return []
    return sorted(p.name for p in raw.iterdir()
                  if p.is_dir() and not p.name.startswith(".")  # temporaries of an atomic write
                  and ((p / SUBJECT_FILE).exists() or (p / "songs").is_dir()))


def list_songs(subject_dir: Path) -> list[str]:
    """Song folders of one subject folder, sorted."""
    songs = Path(subject_dir) / "songs"
    if not songs.is_dir():
        return []
    return sorted(p.name for p in songs.iterdir() if p.is_dir() and not p.name.startswith("."))


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


def find_original_song(song_dir: Path) -> Path | None:
    for name in ORIGINAL_STEMS:
        if (Path(song_dir) / name).exists():
            return Path(song_dir) / name
    return None


def find_scan(subject_dir: Path) -> Path | None:
    d = Path(subject_dir) / "scan"
    for name in SCAN_NAMES:
        if (d / name).exists():
            return d / name
    return None


def links_outside(raw: Path, subject: str) -> list[tuple[str, Path]]:
    """Subject, scan and song folders of `subject` that resolve outside `raw` (links a lab may set on
    purpose, e.g. to another disk): (path relative to raw, where it resolves), sorted. They are
    read like the others; validation warns and the dataset manifest records them."""
    root = Path(raw).resolve()
    subject_dir = Path(raw) / subject
    folders = [subject_dir, subject_dir / "scan"]
    folders += [subject_dir / "songs" / s for s in list_songs(subject_dir)]
    out = []
    for p in folders:
        if p.exists() and not p.resolve().is_relative_to(root):
            out.append((p.relative_to(raw).as_posix(), p.resolve()))
    return out


def read_json(path: Path) -> dict:
    """A JSON file read bounded (regular file, size capped), refusing keys given twice; a missing
    file is FileNotFoundError (callers treat it as absent), anything else PipelineInputError."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    return read_json_bounded(path)
