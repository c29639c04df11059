"""Check a release folder (tar shards + SHA256SUMS) or an extracted/assembled dataset folder.

`verify_release` is what `singinghead verify-release` runs; every problem is returned as one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf

from tasks.common.atomic import file_sha256
from tasks.dataset.packing import CLIP_FOLDERS, SPLIT_FILES, clip_files
from tasks.media import clips as C
from tasks.media.video_io import count_frames


def _iter_tar_files(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, "r|") as tar:  # streaming: one pass, members in file order
        for m in tar:
            if m.isfile():
                yield m.name, tar.extractfile(m).read()


def _strip_prefix(name: str) -> str:
    """'SingingHead/video_seqs/x.mp4' -> 'video_seqs/x.mp4' (any top folder)."""
    parts = name.split("/")
    for i, p in enumerate(parts):
        if p in CLIP_FOLDERS + ("shapes", "sequences") or p in SPLIT_FILES + (
            "metadata.csv",
            "manifest.json",
        ):
            return "/".join(parts[i:])
    return name


def check_clip_file(rel: str, data: bytes, frames: int, sr_fps: tuple[int | None, float]) -> str | None:
    """Problem with one clip file's content, or None."""
    fps = sr_fps[1]
    try:
        if rel.endswith(".pkl"):
            d = C.safe_load_pickle(data)
            want = {"shapecode": (1, 100), "expcodes": (frames, 50), "posecodes": (frames, 9)}
            got = {k: tuple(np.asarray(d.get(k)).shape) if k in d else None for k in want}
            if got != want:
                return f"pkl shapes {got}, expected {want}"
        elif rel.endswith(".wav"):
            info = sf.info(io.BytesIO(data))
            want = C.expected_samples(frames, info.samplerate, fps)
            if sr_fps[0] and info.samplerate != sr_fps[0]:
                return f"sample rate {info.samplerate}, the dataset's is {sr_fps[0]}"
            if abs(info.frames - want) > 1:
                return f"{info.frames} samples, {frames} frames need {want}"
        elif rel.endswith(".mp4"):
            n = count_frames(io.BytesIO(data))
            if n != frames:
                return f"{n} video frames, expected {frames}"
    except Exception as e:  # any unreadable file is a finding, not a crash
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def _dataset_params(manifest_bytes: bytes | None) -> tuple[int, int | None, float]:
    """(clip frames, sample rate or None, fps) from a dataset manifest, else the published defaults."""
    if not manifest_bytes:
        return 240, None, 30.0
    ds = json.loads(manifest_bytes).get("dataset", {})
    return int(ds.get("clip_frames", 240)), ds.get("sample_rate"), float(ds.get("fps", 30.0))


def _check_members(
    members: Iterable[tuple[str, bytes]],
    frames: int,
    sr: int | None,
    fps: float,
    expected_sha: dict[str, str],
    problems: list[str],
) -> tuple[set[str], dict[str, bytes]]:
    """Check each (relative path, bytes) as it streams by; returns (paths seen, small files kept)."""
    present, kept = set(), {}
    for rel, data in members:
        if rel in expected_sha and hashlib.sha256(data).hexdigest() != expected_sha[rel]:
            problems.append(f"{rel}: checksum mismatch (corrupted or changed)")
        present.add(rel)
        if rel in SPLIT_FILES or rel == "manifest.json":
            kept[rel] = data
        elif rel.split("/")[0] in CLIP_FOLDERS:
            p = check_clip_file(rel, data, frames, (sr, fps))
            if p:
                problems.append(f"{rel}: {p}")
    return present, kept


def _tar_members(folder: Path, problems: list[str]) -> Iterator[tuple[str, bytes]]:
    for tar in sorted(folder.glob("*.tar")):
        try:
            for name, data in _iter_tar_files(tar):
                yield _strip_prefix(name), data
        except (tarfile.TarError, OSError, EOFError) as e:
            problems.append(f"{tar.name}: unreadable tar ({e})")


def verify_release(folder: Path) -> list[str]:
    """Every problem found in a release folder (tar shards) or an extracted/assembled dataset folder.

    Checks SHA256SUMS and each packed file's checksum (release_manifest.json), that every id of the
    split files has its four files, and their shapes, sample counts and frame counts. Tar members are
    checked as they stream by, so memory stays at one file.
    """
    folder = Path(folder)
    problems: list[str] = []
    expected_sha: dict[str, str] = {}
    if (folder / "SHA256SUMS").exists():
        for line in (folder / "SHA256SUMS").read_text().splitlines():
            if not line.strip():
                continue
            h, fname = line.split(maxsplit=1)
            fname = fname.lstrip("*")
            if not (folder / fname).exists():
                problems.append(f"{fname}: listed in SHA256SUMS but missing")
            elif file_sha256(folder / fname) != h:
                problems.append(f"{fname}: checksum mismatch (corrupted or changed)")
        rm = folder / "release_manifest.json"
        if rm.exists():
            for shard in json.loads(rm.read_text())["shards"]:
                for f in shard["files"]:
                    expected_sha[_strip_prefix(f["path"])] = f["sha256"]
        manifest = (folder / "manifest.json").read_bytes() if (folder / "manifest.json").exists() else None
        frames, sr, fps = _dataset_params(manifest)
        present, kept = _check_members(
            _tar_members(folder, problems), frames, sr, fps, expected_sha, problems
        )
        missing_packed = sorted(set(expected_sha) - present)
        problems += [f"{rel}: listed in release_manifest.json but in no shard" for rel in missing_packed]
    else:
        root = next(
            (
                c
                for c in [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
                if (c / "train.txt").exists()
            ),
            folder,
        )
        manifest = (root / "manifest.json").read_bytes() if (root / "manifest.json").exists() else None
        frames, sr, fps = _dataset_params(manifest)
        paths = {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}
        paths = {
            rel: p
            for rel, p in paths.items()
            if rel in SPLIT_FILES or rel == "manifest.json" or rel.split("/")[0] in CLIP_FOLDERS
        }
        present, kept = _check_members(
            ((rel, p.read_bytes()) for rel, p in paths.items()), frames, sr, fps, expected_sha, problems
        )
    if not any(s in kept for s in SPLIT_FILES):
        return problems + [f"{folder}: no train.txt/val.txt/test.txt found"]
    seen: set[str] = set()
    for s in SPLIT_FILES:
        if s not in kept:
            problems.append(f"{s}: missing")
            continue
        for cid in kept[s].decode().split():
            if cid in seen:
                problems.append(f"{cid}: listed in more than one split")
            seen.add(cid)
            problems += [f"{rel}: missing (id {cid} in {s})" for rel in clip_files(cid) if rel not in present]
    return problems
