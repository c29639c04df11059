"""Release tarballs of the assembled dataset and their checksums (`tasks.dataset.verify` checks them).

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

import tarfile
from pathlib import Path

from tasks.common.atomic import atomic_dir, file_sha256, write_bytes_atomic, write_json_atomic

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
