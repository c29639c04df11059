"""Release tarballs of the assembled dataset, their checksums, and a verifier.

    release/
      SingingHead-000.tar ...            the published layout: split lists, video_seqs, flame_seqs,
                                         audio_seqs, bgm_seqs, plus manifest.json, metadata.csv, shapes/
      SingingHead-sequences-000.tar ...  sequences/ (uncut segments), separate so users can skip them
      release_manifest.json              every shard and every file inside it (path, size, sha256)
      manifest.json                      the dataset manifest (tool version, models, stand-ins, parameters)
      SHA256SUMS                         `sha256sum -c` format over the files above; written last

Tars are uncompressed (mp4 and wav barely compress; `tar xf` needs no codec) and deterministic:
members in a fixed order, mtime fixed, uid/gid 0, empty user/group names, mode 0644, PAX format
without time records, so the same dataset gives byte-identical tarballs. A shard is closed before
it would exceed `[release] shard_bytes` (a single larger file gets a shard of its own); each
clip's four files stay in one shard, so any shard is usable alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import luigi
import numpy as np

from tasks.media import clips as C
from tasks import layout
from tasks.common.atomic import atomic_dir, file_sha256, write_bytes_atomic, write_json_atomic
from tasks.config import override_paths, release

log = logging.getLogger("singinghead")

FIXED_MTIME = 1577836800  # 2020-01-01T00:00:00Z
SPLIT_FILES = ("train.txt", "val.txt", "test.txt")
CLIP_FOLDERS = ("video_seqs", "flame_seqs", "audio_seqs", "bgm_seqs")


def clip_files(cid: str) -> list[str]:
    """The four published files of one clip, relative to the dataset root."""
    return [
        f"video_seqs/{cid}.mp4",
        f"flame_seqs/{cid}.pkl",
        f"audio_seqs/{cid}.wav",
        f"bgm_seqs/{cid}_bgm.wav",
    ]


def read_ids(root: Path) -> dict[str, list[str]]:
    return {
        s.removesuffix(".txt"): (root / s).read_text().split() for s in SPLIT_FILES if (root / s).exists()
    }


# ----------------------------------------------------------------------------- packing
def release_units(root: Path, include_sequences: bool = True) -> dict[str, list[list[str]]]:
    """{part: [unit, ...]}: a unit is a list of relative paths that must share a shard."""
    root = Path(root)
    meta = [f for f in SPLIT_FILES + ("metadata.csv", "manifest.json") if (root / f).exists()]
    meta += sorted(f"shapes/{p.name}" for p in (root / "shapes").glob("*.npy"))
    ids = sorted({i for v in read_ids(root).values() for i in v})
    parts = {"": [meta] + [clip_files(cid) for cid in ids]}
    if include_sequences and (root / "sequences").is_dir():
        parts["sequences"] = [
            sorted(f"sequences/{d.name}/{f.name}" for f in d.iterdir() if f.is_file())
            for d in sorted((root / "sequences").iterdir())
            if d.is_dir()
        ]
    return parts


def tar_member_size(size: int) -> int:
    return 512 + (size + 511) // 512 * 512


def plan_shards(root: Path, units: list[list[str]], shard_bytes: int) -> list[list[str]]:
    """Group units into shards whose tar size stays within `shard_bytes` where possible."""
    shards, cur, cur_size = [], [], 1024  # a tar ends with two 512-byte zero blocks
    for unit in units:
        size = sum(tar_member_size((root / f).stat().st_size) for f in unit)
        if cur and cur_size + size > shard_bytes:
            shards.append(cur)
            cur, cur_size = [], 1024
        cur += unit
        cur_size += size
    if cur:
        shards.append(cur)
    return shards


def tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, FIXED_MTIME, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def write_tar(path: Path, root: Path, members: list[str], prefix: str) -> list[dict]:
    """Write one deterministic tar of `members` (relative to root) under `prefix/`; returns file records."""
    records = []
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in members:
            src = root / rel
            size = src.stat().st_size
            with open(src, "rb") as f:
                tar.addfile(tarinfo(f"{prefix}/{rel}", size), f)
            records.append({"path": f"{prefix}/{rel}", "size": size, "sha256": file_sha256(src)})
    return records


def pack_release(
    root: Path, out: Path, name: str, shard_bytes: int, include_sequences: bool = True, task=None
) -> dict:
    """Pack the dataset at `root` into shards under `out` (replaced as a whole); returns the release
    manifest."""
    root, out = Path(root), Path(out)
    if not (root / "manifest.json").exists():
        raise FileNotFoundError(f"{root}/manifest.json: the dataset is not assembled (run AssembleDataset)")
    parts = release_units(root, include_sequences)
    shards_meta = []
    with atomic_dir(out) as tmp:
        for part, units in parts.items():
            for k, members in enumerate(plan_shards(root, units, shard_bytes)):
                fname = f"{name}-{part + '-' if part else ''}{k:03d}.tar"
                files = write_tar(tmp / fname, root, members, name)
                shards_meta.append(
                    {
                        "file": fname,
                        "part": part or "clips",
                        "sha256": file_sha256(tmp / fname),
                        "bytes": (tmp / fname).stat().st_size,
                        "files": files,
                    }
                )
                if task is not None:
                    task.set_status_message(f"packed {fname}")
        (tmp / "manifest.json").write_bytes((root / "manifest.json").read_bytes())
        rel_manifest = {
            "name": name,
            "shard_bytes": shard_bytes,
            "compression": "none",
            "ids": read_ids(root),
            "shards": shards_meta,
        }
        write_json_atomic(tmp / "release_manifest.json", rel_manifest)
        sums = [(s["sha256"], s["file"]) for s in shards_meta]
        sums += [(file_sha256(tmp / f), f) for f in ("manifest.json", "release_manifest.json")]
        write_bytes_atomic(
            tmp / "SHA256SUMS", "".join(f"{h}  {f}\n" for h, f in sorted(sums, key=lambda x: x[1])).encode()
        )
    return rel_manifest


class PackRelease(luigi.Task):
    """Tar shards of the assembled dataset with SHA256SUMS, under `[paths] release_dir`."""

    def requires(self):
        from tasks.assemble import AssembleDataset

        return AssembleDataset()

    def output(self):
        return luigi.LocalTarget(str(layout.release_root() / "SHA256SUMS"))

    def run(self):
        cfg = release()
        pack_release(
            layout.dataset_root(),
            layout.release_root(),
            cfg.name,
            cfg.shard_bytes,
            include_sequences=cfg.include_sequences,
            task=self,
        )


# ----------------------------------------------------------------------------- verifying
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
            import soundfile as sf

            info = sf.info(io.BytesIO(data))
            want = C.expected_samples(frames, info.samplerate, fps)
            if sr_fps[0] and info.samplerate != sr_fps[0]:
                return f"sample rate {info.samplerate}, the dataset's is {sr_fps[0]}"
            if abs(info.frames - want) > 1:
                return f"{info.frames} samples, {frames} frames need {want}"
        elif rel.endswith(".mp4"):
            from tasks.media.video_io import count_frames

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


# ----------------------------------------------------------------------------- CLI
