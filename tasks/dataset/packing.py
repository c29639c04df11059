"""Release of the assembled dataset in one of three formats, with checksums (`tasks.dataset.verify`).

`[release] format`:

    tarballs (default)                   SingingHead-000.tar ...  the published tree under SingingHead/:
                                         split lists, video_seqs, flame_seqs, audio_seqs, bgm_seqs, plus
                                         README.md (data card), manifest.json, metadata.csv, shapes/;
                                         SingingHead-sequences-000.tar ... sequences/ (skippable)
    zips                                 the official files: train.txt val.txt test.txt, video_seqs.zip
                                         flame_seqs.zip audio_seqs.zip bgm_seqs.zip (files at each zip's
                                         root), the extras in singinghead_extras.zip
    webdataset                           train-000000.tar ... val-/test-: each clip's files share its id
                                         as key (<id>.mp4 .pkl .vocal.wav .bgm.wav .json); split lists;
                                         the extras in SingingHead-extras-000.tar ...

Every format also has, at the top: README.md (the data card), manifest.json (the dataset's),
release_manifest.json (every archive and every member with size and sha256) and SHA256SUMS
(`sha256sum -c` format over every other file of the folder), written last.

Archives are deterministic: members sorted, fixed mtime, uid/gid 0, empty user/group names,
mode 0644, no pax time records in tars; zips with a fixed date, fixed creator system and every
member STORED (mp4/wav/pkl barely compress, and deflate output differs between zlib builds), zip64
where a member or the archive needs it. The same dataset gives the same bytes on any machine. A
shard is closed before it would exceed `[release] shard_bytes` (a single larger unit gets a shard
of its own); a clip's files are one unit, so they never straddle two shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tasks.common.atomic import atomic_dir, file_sha256, json_dumps, write_bytes_atomic, write_json_atomic
from tasks.common.bounded import read_bounded
from tasks.common.errors import PipelineInputError
from tasks.dataset.card import data_card
from tasks.dataset.metadata import read_metadata

FIXED_MTIME = 1577836800  # 2020-01-01T00:00:00Z
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
TAR_ENCODING = "utf-8"  # member names are written as UTF-8 whatever the machine's locale
FORMATS = ("tarballs", "zips", "webdataset")
SPLIT_FILES = ("train.txt", "val.txt", "test.txt")
CLIP_FOLDERS = ("video_seqs", "flame_seqs", "audio_seqs", "bgm_seqs")
EXTRA_FILES = ("metadata.csv", "manifest.json")
CARD = "README.md"
SUMS = "SHA256SUMS"
RELEASE_MANIFEST = "release_manifest.json"
_MAX_OWN_FILE_BYTES = 64 << 20       # SHA256SUMS / release_manifest.json read when checking ownership


def check_release_folder_is_ours(out: Path) -> None:
    """Packing replaces `out` as a whole, so `out` must be absent, empty or a release this pipeline
    wrote: nothing in it but SHA256SUMS, release_manifest.json and the files they list (either may be
    gone: a rerun deletes SHA256SUMS).  A folder of the user's ([paths] release_dir pointed at it) is
    refused, never emptied."""
    out = Path(out)
    if not os.path.lexists(out):
        return
    fix = ("point [paths] release_dir at a new or empty folder (or move those files out): the release "
           "folder is replaced as a whole, so only an empty one or one the pipeline wrote is used")
    if out.is_symlink() or not out.is_dir():
        raise PipelineInputError(out, "release_dir is not a plain folder", fix)
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    listed = set()
    text = _read_small(out / SUMS)
    if text is not None:
        listed |= {line.split("  ", 1)[1] for line in text.splitlines() if "  " in line}
    text = None if set(entries) <= listed | {SUMS} else _read_small(out / RELEASE_MANIFEST)
    if text is not None:
        try:
            rel = json.loads(text)
            listed |= {a["file"] for a in rel.get("shards", [])} | {f["path"] for f in rel.get("top_level", [])}
            listed.add(RELEASE_MANIFEST)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):  # proves nothing: refused
            pass
    foreign = [e for e in entries if e not in listed | {SUMS}]
    if RELEASE_MANIFEST not in listed or foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PipelineInputError(out, "release_dir holds files the pipeline did not write"
                                 + (f" ({shown})" if foreign else " (no release_manifest.json)"), fix)


def _read_small(path: Path) -> str | None:
    """The text of a regular file (not a link) of at most _MAX_OWN_FILE_BYTES; None otherwise."""
    if path.is_symlink():
        return None
    try:
        return read_bounded(path, _MAX_OWN_FILE_BYTES, path.name).decode("utf-8", "replace")
    except PipelineInputError:
        return None


EXTRAS_ZIP = "singinghead_extras.zip"
# WebDataset member suffix per modality: the key is the clip id (ids hold no dot)
WDS_SUFFIX = {"video_seqs": ".mp4", "flame_seqs": ".pkl", "audio_seqs": ".vocal.wav", "bgm_seqs": ".bgm.wav"}
WDS_JSON = ".json"


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


# ----------------------------------------------------------------------------- members
@dataclass(frozen=True)
class Member:
    """One archive member: its name inside the archive and its bytes (a file, or bytes made here)."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size

    def open(self):
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")


def _sha256_stream(f, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while b := f.read(chunk):
        h.update(b)
    return h.hexdigest()


def _member_record(m: Member) -> dict:
    with m.open() as f:
        return {"path": m.name, "size": m.size, "sha256": _sha256_stream(f)}


def tar_member_size(size: int, name: str) -> int:
    """Bytes a member takes in our tars: its header block(s) (a pax header too where the name needs one)
    and its data padded to 512-byte blocks."""
    header = len(tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, "surrogateescape"))
    return header + (size + 511) // 512 * 512


def tar_file_size(members_bytes: int) -> int:
    """Size of a tar whose members take `members_bytes`: tarfile ends the archive with two zero blocks and
    pads it to a whole 10,240-byte record (tarfile.RECORDSIZE)."""
    return -(-(members_bytes + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, FIXED_MTIME, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def write_tar(path: Path, members: list[Member]) -> list[dict]:
    """One deterministic uncompressed tar of `members` in the given order; returns their records."""
    records = []
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding=TAR_ENCODING) as tar:
        for m in members:
            with m.open() as f:
                tar.addfile(tarinfo(m.name, m.size), f)
            records.append(_member_record(m))
    return records


def write_zip(path: Path, members: list[Member]) -> list[dict]:
    """One deterministic zip (STORED, fixed dates, zip64 as needed) of `members` in the given order."""
    records = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for m in members:
            info = zipfile.ZipInfo(m.name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # unix, whatever machine packs it
            info.external_attr = (0o100644 << 16)  # a regular file, rw-r--r--
            info.file_size = m.size  # lets zipfile choose zip64 headers up front
            with m.open() as src, zf.open(info, "w", force_zip64=m.size >= zipfile.ZIP64_LIMIT) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            records.append(_member_record(m))
    return records


def plan_shards(units: list[list[Member]], shard_bytes: int) -> list[list[Member]]:
    """Group units (in order) into shards whose tar file stays within `shard_bytes`; a unit whose own tar
    would exceed it gets a shard of its own. Sizes are exact: see tar_member_size and tar_file_size."""
    shards, cur, cur_size = [], [], 0  # cur_size: bytes of the members, before the tar's end and padding
    for unit in units:
        size = sum(tar_member_size(m.size, m.name) for m in unit)
        if cur and tar_file_size(cur_size + size) > shard_bytes:
            shards.append(cur)
            cur, cur_size = [], 0
        cur += unit
        cur_size += size
    if cur:
        shards.append(cur)
    return shards


# ----------------------------------------------------------------------------- what goes in
def extras_units(root: Path, card: bytes, include_sequences: bool) -> tuple[list[Member], list[list[Member]]]:
    """(card + metadata.csv + manifest.json + shapes, [one unit per sequence]), names relative to root."""
    meta = [Member(CARD, data=card)]
    meta += [Member(f, root / f) for f in EXTRA_FILES if (root / f).exists()]
    meta += [Member(f"shapes/{p.name}", p) for p in sorted((root / "shapes").glob("*.npy"))]
    seqs = []
    if include_sequences and (root / "sequences").is_dir():
        for d in sorted(p for p in (root / "sequences").iterdir() if p.is_dir()):
            files = sorted(f for f in d.iterdir() if f.is_file())
            seqs.append([Member(f"sequences/{d.name}/{f.name}", f) for f in files])
    return meta, seqs


def clip_json(row: dict, fps: float, sample_rate: int) -> bytes:
    """A clip's WebDataset `.json`: its metadata.csv row plus the rates."""
    keep = {k: v for k, v in row.items() if k not in ("kind", "video_method")}
    for k in ("subject_number", "song_number", "segment", "source_segment", "clip", "frames",
              "seq_start_frame", "start_frame", "end_frame"):
        if str(keep.get(k, "")).lstrip("-").isdigit():
            keep[k] = int(keep[k])
    keep.update({"fps": fps, "sample_rate": sample_rate})
    return json_dumps(keep).encode()


def _archive_record(path: Path, part: str, files: list[dict]) -> dict:
    return {"file": path.name, "part": part, "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "files": files}


def _status(task, message: str) -> None:
    """Tell the Luigi visualiser (a task run outside a worker has no status callback)."""
    if callable(getattr(task, "set_status_message", None)):
        task.set_status_message(message)


def _prefixed(members: list[Member], prefix: str) -> list[Member]:
    return [Member(f"{prefix}/{m.name}", m.path, m.data) for m in members]


def _tar_shards(tmp: Path, units: list[list[Member]], shard_bytes: int, fname, part: str, task) -> list[dict]:
    out = []
    for k, members in enumerate(plan_shards(units, shard_bytes)):
        f = fname(k)
        files = write_tar(tmp / f, members)
        out.append(_archive_record(tmp / f, part, files))
        _status(task, f"packed {f}")
    return out


def _pack_tarballs(root, tmp, name, shard_bytes, meta, seqs, ids, task) -> list[dict]:
    all_ids = sorted({i for v in ids.values() for i in v})
    head = [Member(s, root / s) for s in SPLIT_FILES] + meta
    units = [head] + [[Member(f, root / f) for f in clip_files(cid)] for cid in all_ids]
    units = [_prefixed(u, name) for u in units]
    out = _tar_shards(tmp, units, shard_bytes, lambda k: f"{name}-{k:03d}.tar", "clips", task)
    if seqs:
        out += _tar_shards(tmp, [_prefixed(u, name) for u in seqs], shard_bytes,
                           lambda k: f"{name}-sequences-{k:03d}.tar", "sequences", task)
    return out


def _pack_zips(root, tmp, meta, seqs, ids, task) -> list[dict]:
    all_ids = sorted({i for v in ids.values() for i in v})
    out = []
    for k, folder in enumerate(CLIP_FOLDERS):
        members = [Member(Path(clip_files(cid)[k]).name, root / clip_files(cid)[k]) for cid in all_ids]
        f = f"{folder}.zip"
        files = write_zip(tmp / f, members)
        out.append(_archive_record(tmp / f, folder, files))
        _status(task, f"packed {f}")
    members = sorted(meta + [m for u in seqs for m in u], key=lambda m: m.name)
    files = write_zip(tmp / EXTRAS_ZIP, members)
    out.append(_archive_record(tmp / EXTRAS_ZIP, "extras", files))
    return out


def _pack_webdataset(root, tmp, name, shard_bytes, meta, seqs, ids, manifest, task) -> list[dict]:
    ds = manifest.get("dataset", {})
    rows = {r["id"]: r for r in read_metadata(root) if r.get("kind") == "clip"}
    out = []
    for split in ("train", "val", "test"):
        units = []
        for cid in sorted(ids.get(split, [])):
            unit = [Member(f"{cid}{WDS_SUFFIX[f.split('/')[0]]}", root / f) for f in clip_files(cid)]
            unit.append(Member(f"{cid}{WDS_JSON}", data=clip_json(rows.get(cid, {"id": cid}), ds.get("fps"),
                                                                   ds.get("sample_rate"))))
            units.append(sorted(unit, key=lambda m: m.name))
        out += _tar_shards(tmp, units, shard_bytes, lambda k, s=split: f"{s}-{k:06d}.tar", split, task)
    extras = [_prefixed(meta, name)] + [_prefixed(u, name) for u in seqs]
    out += _tar_shards(tmp, extras, shard_bytes, lambda k: f"{name}-extras-{k:03d}.tar", "extras", task)
    return out


# ----------------------------------------------------------------------------- the release
def pack_release(
    root: Path,
    out: Path,
    name: str,
    shard_bytes: int,
    include_sequences: bool = True,
    task=None,
    fmt: str = "tarballs",
) -> dict:
    """Pack the dataset at `root` into `out` (replaced as a whole) in format `fmt`; returns the release
    manifest (what release_manifest.json holds)."""
    root, out = Path(root), Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"[release] format must be one of {FORMATS}, got {fmt!r}")
    if not (root / "manifest.json").exists():
        raise FileNotFoundError(f"{root}/manifest.json: the dataset is not assembled (run AssembleDataset)")
    manifest = json.loads((root / "manifest.json").read_text())
    ids = read_ids(root)
    card = data_card(manifest, fmt, name).encode("utf-8")
    meta, seqs = extras_units(root, card, include_sequences)
    check_release_folder_is_ours(out)
    with atomic_dir(out) as tmp:
        if fmt == "tarballs":
            archives = _pack_tarballs(root, tmp, name, shard_bytes, meta, seqs, ids, task)
        elif fmt == "zips":
            archives = _pack_zips(root, tmp, meta, seqs, ids, task)
        else:
            archives = _pack_webdataset(root, tmp, name, shard_bytes, meta, seqs, ids, manifest, task)
        top = [CARD, "manifest.json"] + ([] if fmt == "tarballs" else list(SPLIT_FILES))
        write_bytes_atomic(tmp / CARD, card)
        for f in top[1:]:
            shutil.copyfile(root / f, tmp / f)
        ds = manifest.get("dataset", {})
        rel_manifest = {
            "name": name,
            "format": fmt,
            "shard_bytes": shard_bytes,
            "compression": "none",
            "dataset": {k: ds.get(k) for k in ("fps", "clip_frames", "sample_rate", "audio")},
            "ids": ids,
            "shards": archives,
            "top_level": [{"path": f, "size": (tmp / f).stat().st_size, "sha256": file_sha256(tmp / f)}
                          for f in sorted(top)],
        }
        write_json_atomic(tmp / RELEASE_MANIFEST, rel_manifest)
        names = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != SUMS)
        write_bytes_atomic(tmp / SUMS, "".join(f"{file_sha256(tmp / f)}  {f}\n" for f in names).encode())
    return rel_manifest
