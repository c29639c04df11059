"""Check a release folder (any `[release] format`) or an extracted/assembled dataset folder.

`verify_release` is what `singinghead verify-release` runs; every problem is one line. A release
folder (it holds SHA256SUMS or archives) is checked without blind spots:

  * SHA256SUMS exists, is well-formed and lists every file of the folder; each listed file is
    present and matches; anything unlisted (a stray shard, a folder, a link) is a problem;
  * every member of every archive in the folder, listed or not, is a regular file with a safe
    relative name (no absolute name, no `..`, no link or device), appears once, and matches the
    size and sha256 that release_manifest.json records; members it does not record are problems;
  * contents: the split lists hold plain, unique, disjoint ids; every clip has its files (and its
    `.json` in WebDataset shards) and every clip file belongs to a listed clip; pkl shapes (1,100),
    (T,50), (T,9) with T the clip's frames; wavs 16-bit PCM at the dataset rate with the samples
    those frames span; mp4s with T frames.

An extracted or assembled dataset folder (train.txt, no SHA256SUMS) gets the content checks.
Archives are read member by member, so memory stays at one clip file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from tasks.common.bounded import (MAX_CLIP_FILE_BYTES, MAX_RELEASE_JSON_BYTES, MAX_RELEASE_MEMBER_BYTES,
                                  read_bounded)
from tasks.common.errors import PipelineInputError
from tasks.dataset.members import tar_member_problem, unsafe_name
from tasks.dataset.packing import (CLIP_FOLDERS, EXTRAS_ZIP, RELEASE_MANIFEST, SPLIT_FILES, SUMS, WDS_JSON,
                                   WDS_SUFFIX, clip_files)
from tasks.media import clips as C
from tasks.media.video_io import count_frames

_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_WDS_SHARD = re.compile(r"^(train|val|test)-\d+\.tar$")
_CLIP_FILE = {
    "video_seqs": re.compile(r"^(.+)\.mp4$"),
    "flame_seqs": re.compile(r"^(.+)\.pkl$"),
    "audio_seqs": re.compile(r"^(.+)\.wav$"),
    "bgm_seqs": re.compile(r"^(.+)_bgm\.wav$"),
}
_CHUNK = 1 << 20


@dataclass
class Params:
    """What a clip must look like: frames per clip, audio rate (None: any), fps."""

    frames: int = 240
    sr: int | None = None
    fps: float = 30.0


@dataclass
class Seen:
    """What the walk over the release found, by path inside the dataset tree."""

    where: dict[str, str] = field(default_factory=dict)      # rel -> archive:member or file path
    small: dict[str, bytes] = field(default_factory=dict)    # split lists
    wds_keys: dict[str, set[str]] = field(default_factory=dict)  # WebDataset key -> suffixes
    wds_split: dict[str, str] = field(default_factory=dict)  # WebDataset key -> split of its shard
    clips: int = 0                                            # clip ids listed in the split files


# ----------------------------------------------------------------------------- content
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
            if not all(np.isfinite(np.asarray(d[k], np.float64)).all() for k in want):
                return "pkl holds NaN or infinite values"
        elif rel.endswith(".wav"):
            info = sf.info(io.BytesIO(data))
            want = C.expected_samples(frames, info.samplerate, fps)
            if sr_fps[0] and info.samplerate != sr_fps[0]:
                return f"sample rate {info.samplerate}, the dataset's is {sr_fps[0]}"
            if abs(info.frames - want) > 1:
                return f"{info.frames} samples, {frames} frames need {want}"
            if info.format != "WAV" or info.subtype != "PCM_16":
                return f"{info.format}/{info.subtype}, expected 16-bit PCM WAV"
        elif rel.endswith(".mp4"):
            n = count_frames(io.BytesIO(data))
            if n != frames:
                return f"{n} video frames, expected {frames}"
    except Exception as e:  # any unreadable file is a finding, not a crash
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def _check_wds_json(where: str, key: str, data: bytes, frames: int) -> str | None:
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return f"{where}: unreadable JSON ({e})"
    if not isinstance(d, dict) or d.get("id") != key:
        return f"{where}: its 'id' is {d.get('id') if isinstance(d, dict) else None!r}, the key is {key!r}"
    if d.get("frames") not in (None, frames):
        return f"{where}: says {d.get('frames')} frames, a clip has {frames}"
    return None


def _dataset_params(manifest_bytes: bytes | None, problems: list[str] | None = None) -> Params:
    """Clip frames, sample rate and fps from a dataset or release manifest, else the published
    defaults; values of the wrong type are a problem (when `problems` is given) and the default."""
    try:
        ds = json.loads(manifest_bytes).get("dataset", {}) if manifest_bytes else {}
    except (ValueError, AttributeError):
        ds = {}
    ds = ds if isinstance(ds, dict) else {}
    out = Params()
    for key, attr, ok in (("clip_frames", "frames", lambda v: isinstance(v, int) and 0 < v <= 10**7),
                          ("sample_rate", "sr", lambda v: isinstance(v, int) and 0 < v <= 10**7),
                          ("fps", "fps", lambda v: isinstance(v, (int, float)) and 0 < v <= 10**4)):
        v = ds.get(key)
        if v is None:
            continue
        if ok(v) and not isinstance(v, bool):
            setattr(out, attr, float(v) if attr == "fps" else v)
        elif problems is not None:
            problems.append(f"manifest: dataset.{key} is {str(v)[:40]!r}, not a positive number")
    return out


def _clip_of(rel: str) -> str | None:
    """'bgm_seqs/id1_2_0_0_bgm.wav' -> 'id1_2_0_0' (None when the name is no clip file's)."""
    folder, _, fname = rel.partition("/")
    m = _CLIP_FILE[folder].match(fname) if folder in _CLIP_FILE and "/" not in fname else None
    return m.group(1) if m else None


def _check_contents(seen: Seen, frames: int, problems: list[str], label: str) -> None:
    """Split lists, every clip's files, no clip file outside the splits, WebDataset keys complete."""
    if not any(s in seen.small for s in SPLIT_FILES):
        problems.append(f"{label}: no train.txt/val.txt/test.txt found")
        return
    split_of: dict[str, str] = {}
    for s in SPLIT_FILES:
        if s not in seen.small:
            problems.append(f"{s}: missing")
            continue
        try:
            ids = seen.small[s].decode("utf-8").split()
        except UnicodeDecodeError:
            problems.append(f"{s}: not UTF-8 text")
            continue
        split = s.removesuffix(".txt")
        for cid in ids:
            if not _ID.match(cid):
                problems.append(f"{s}: {cid[:60]!r} is not a plain clip id")
                continue
            if cid in split_of:
                problems.append(f"{cid}: listed in {split_of[cid]}.txt and {s}"
                                if split_of[cid] != split else f"{cid}: listed twice in {s}")
                continue
            split_of[cid] = split
            problems += [f"{rel}: missing (id {cid} in {s})"
                         for rel in clip_files(cid) if rel not in seen.where]
            if cid in seen.wds_keys and WDS_JSON not in seen.wds_keys[cid]:
                problems.append(f"{cid}{WDS_JSON}: missing from the WebDataset shards (id {cid} in {s})")
            if cid in seen.wds_split and seen.wds_split[cid] != split:
                problems.append(f"{cid}: in a {seen.wds_split[cid]} shard but listed in {s}")
    seen.clips = len(split_of)
    if not split_of:
        problems.append(f"{label}: no clips (the split lists are empty): a release without data never "
                        "verifies; check the capture and the build's log")
    for rel in sorted(seen.where):
        if rel.split("/")[0] in CLIP_FOLDERS:
            cid = _clip_of(rel)
            if cid is None:
                problems.append(f"{seen.where[rel]}: not a clip file name")
            elif cid not in split_of:
                problems.append(f"{seen.where[rel]}: clip {cid} is in no split list")


# ----------------------------------------------------------------------------- archives
def _tar_members(path: Path, problems: list[str]) -> Iterator[tuple[str, int, object]]:
    """(name, size, file object) of each safe regular member; unsafe ones become problems."""
    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed only: the loader reads members in place
            seen: set[str] = set()
            for m in tar:
                why = tar_member_problem(m, seen)
                if why:
                    problems.append(f"{path.name}:{m.name}: {why}")
                    continue
                yield m.name, m.size, tar.extractfile(m)
    except (tarfile.TarError, OSError, EOFError, zipfile.BadZipFile) as e:
        problems.append(f"{path.name}: unreadable tar ({e})")


def _zip_members(path: Path, problems: list[str]) -> Iterator[tuple[str, int, object]]:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0xFFFF
                why = unsafe_name(info.filename.rstrip("/") if info.is_dir() else info.filename)
                if not why and info.is_dir():
                    why = "a folder entry"
                if not why and mode and not stat.S_ISREG(mode):
                    why = "a symbolic link or special file"
                if not why and info.flag_bits & 0x1:
                    why = "an encrypted member"
                if why:
                    problems.append(f"{path.name}:{info.filename}: {why} (a release holds regular files with "
                                    "relative names only)")
                    continue
                with zf.open(info) as f:
                    yield info.filename, info.file_size, f
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as e:
        problems.append(f"{path.name}: unreadable zip ({e})")


def _logical(archive: str, member: str, name: str) -> tuple[str | None, str | None, str | None]:
    """(path inside the dataset tree, WebDataset key suffix, problem) of an archive member."""
    if archive.endswith(".zip"):
        stem = archive[:-4]
        if stem in CLIP_FOLDERS:
            if "/" in member:
                return None, None, f"{archive}:{member}: not at the zip's root"
            return f"{stem}/{member}", None, None
        if archive == EXTRAS_ZIP:
            return member, None, None
        return None, None, f"{archive}: not a zip of this release"
    if member.startswith(f"{name}/"):
        return member[len(name) + 1:], None, None
    if _WDS_SHARD.match(archive) and "/" not in member and "." in member:
        key, suffix = member.split(".", 1)
        suffix = "." + suffix
        for folder, suf in WDS_SUFFIX.items():
            if suffix == suf:
                return clip_files(key)[CLIP_FOLDERS.index(folder)], suffix, None
        if suffix == WDS_JSON:
            return None, suffix, None
        return None, None, f"{archive}:{member}: not a clip file of a WebDataset shard"
    return None, None, f"{archive}:{member}: outside {name}/"


class _TooLarge(Exception):
    pass


def _read_member(f, size: int, keep: bool) -> tuple[str, bytes | None, int]:
    """(sha256, bytes if `keep`, bytes read) of a member, read in chunks: the hash streams, and
    reading stops (_TooLarge) past MAX_CLIP_FILE_BYTES when kept, MAX_RELEASE_MEMBER_BYTES else,
    whatever the archive declared."""
    limit = MAX_CLIP_FILE_BYTES if keep else MAX_RELEASE_MEMBER_BYTES
    h, parts, n = hashlib.sha256(), [], 0
    while b := f.read(_CHUNK):
        h.update(b)
        n += len(b)
        if n > limit:
            raise _TooLarge(f"holds more than {limit} bytes (at most {limit} are read)")
        if keep:
            parts.append(b)
    return h.hexdigest(), b"".join(parts) if keep else None, n


def _check_archives(folder: Path, archives: list[Path], rel_manifest: dict | None, params: Params,
                    seen: Seen, problems: list[str]) -> None:
    name = (rel_manifest or {}).get("name") or "SingingHead"
    if not isinstance(name, str):
        problems.append(f"{RELEASE_MANIFEST}: 'name' is {str(name)[:40]!r}, not a folder name")
        name = "SingingHead"
    recorded = _recorded_members(rel_manifest, problems)
    for path in archives:
        members = _zip_members(path, problems) if path.suffix == ".zip" else _tar_members(path, problems)
        listed = recorded.get(path.name)
        got: set[str] = set()
        for member, size, f in members:
            where = f"{path.name}:{member}"
            if member in got:
                problems.append(f"{where}: appears twice in the archive")
                continue
            got.add(member)
            rel, suffix, why = _logical(path.name, member, name)
            if why:
                problems.append(why)
            keep = suffix == WDS_JSON or (rel is not None and (rel in SPLIT_FILES or
                                                               rel.split("/")[0] in CLIP_FOLDERS))
            limit = MAX_CLIP_FILE_BYTES if keep else MAX_RELEASE_MEMBER_BYTES
            if size > limit:     # the declared size, checked before anything is inflated
                problems.append(f"{where}: declares {size} bytes, more than a release file of its kind holds "
                                f"(at most {limit}); not read")
                continue
            try:
                sha, data, n = _read_member(f, size, keep)
            except _TooLarge as e:
                problems.append(f"{where}: {e}")
                continue
            except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
                problems.append(f"{where}: unreadable ({e})")
                if path.suffix == ".tar":
                    break  # a tar cannot be read past a broken member: one line, not one per member
                continue
            if rel_manifest is not None:
                rec = (listed or {}).get(member)
                if rec is None:
                    problems.append(f"{where}: not recorded in {RELEASE_MANIFEST} (a stray member)")
                elif rec.get("sha256") != sha or rec.get("size") not in (None, n):
                    problems.append(f"{where}: checksum mismatch (corrupted or changed)")
            if suffix is not None:
                key = member.split(".", 1)[0]
                seen.wds_keys.setdefault(key, set()).add(suffix)
                seen.wds_split[key] = _WDS_SHARD.match(path.name).group(1)
                if suffix == WDS_JSON:
                    p = _check_wds_json(where, key, data, params.frames)
                    if p:
                        problems.append(p)
            if rel is None:
                continue
            if rel in seen.where:
                problems.append(f"{rel}: in both {seen.where[rel]} and {where}")
                continue
            seen.where[rel] = where
            if rel in SPLIT_FILES:
                seen.small[rel] = data
            elif rel.split("/")[0] in CLIP_FOLDERS and _clip_of(rel):
                p = check_clip_file(rel, data, params.frames, (params.sr, params.fps))
                if p:
                    problems.append(f"{where}: {p}")
        if listed is not None:
            problems += [f"{path.name}:{m}: recorded in {RELEASE_MANIFEST} but missing from the archive"
                         for m in sorted(set(listed) - got)]
    if rel_manifest is not None:
        have = {p.name for p in archives}
        problems += [f"{a}: recorded in {RELEASE_MANIFEST} but missing" for a in sorted(set(recorded) - have)]


def _recorded_members(rel_manifest: dict | None, problems: list[str]) -> dict[str, dict[str, dict]]:
    """{archive: {member: {'sha256', 'size'}}} from release_manifest.json's 'shards'; entries of the
    wrong type are problems (and left out, so their archives' members show up as not recorded)."""
    recorded: dict[str, dict[str, dict]] = {}
    shards = (rel_manifest or {}).get("shards", [])
    if not isinstance(shards, list):
        problems.append(f"{RELEASE_MANIFEST}: 'shards' is a {type(shards).__name__}, not a list")
        return recorded
    for k, shard in enumerate(shards):
        files = shard.get("files", []) if isinstance(shard, dict) else None
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and isinstance(files, list)):
            problems.append(f"{RELEASE_MANIFEST}: shards[{k}] is not {{'file': name, 'files': [...]}}")
            continue
        entries = recorded.setdefault(shard["file"], {})
        for f in files:
            size = f.get("size") if isinstance(f, dict) else None
            if (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                    and (size is None or (isinstance(size, int) and not isinstance(size, bool)))):
                entries[f["path"]] = f
            else:
                problems.append(f"{RELEASE_MANIFEST}: shards[{k}] ({shard['file'][:60]}) records "
                                f"{str(f)[:60]!r}, not {{'path', 'sha256', 'size'}}")
    return recorded


def release_fingerprint(folder: Path) -> str | None:
    """sha256 of the release's SHA256SUMS, which pins every file of it: the value to compare with
    the one its publisher announced (a release edited with regenerated sums has another)."""
    try:
        return hashlib.sha256(read_bounded(Path(folder) / SUMS, MAX_RELEASE_JSON_BYTES, SUMS)).hexdigest()
    except PipelineInputError:
        return None


# ----------------------------------------------------------------------------- SHA256SUMS
def _read_sums(folder: Path, problems: list[str]) -> dict[str, str] | None:
    """{file name: sha256} of SHA256SUMS, or None (with the problem) when it cannot be trusted."""
    p = folder / SUMS
    if p.is_symlink() or not p.is_file():
        problems.append(f"{SUMS}: {'a link or folder' if p.exists() or p.is_symlink() else 'missing'} in "
                        f"{folder} (a release lists every file in it; re-download it or rebuild the release)")
        return None
    try:
        text = read_bounded(p, MAX_RELEASE_JSON_BYTES, SUMS).decode("utf-8")
    except PipelineInputError as e:
        problems.append(f"{SUMS}: {e.problem}")
        return None
    except UnicodeDecodeError as e:
        problems.append(f"{SUMS}: unreadable ({type(e).__name__})")
        return None
    sums: dict[str, str] = {}
    bad = []
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _SUM_LINE.match(line)
        fname = m.group(2) if m else None
        if not m:
            bad.append(f"{SUMS} line {k}: malformed (want '<64 hex digits>  <file name>', got {line[:80]!r})")
        elif "/" in fname or "\\" in fname or fname in (".", "..", SUMS):
            bad.append(f"{SUMS} line {k}: {fname[:80]!r} is not a file of the release folder")
        elif fname in sums:
            bad.append(f"{SUMS} line {k}: {fname} listed twice")
        else:
            sums[fname] = m.group(1).lower()
    if bad:
        problems += bad
        return None
    if not sums:
        problems.append(f"{SUMS}: empty (it must list every file of the release)")
        return None
    return sums


def _is_archive(p: Path) -> bool:
    return p.suffix in (".tar", ".zip")


def _verify_release_folder(folder: Path, seen: Seen) -> list[str]:
    problems: list[str] = []
    sums = _read_sums(folder, problems)
    if sums is None:
        return problems
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    for p in entries:
        if p.name == SUMS:
            continue
        if p.is_symlink():
            problems.append(f"{p.name}: a symbolic link (a release holds regular files only)")
        elif p.is_dir():
            problems.append(f"{p.name}/: a folder (a release folder holds files only; not in {SUMS})")
        elif not p.is_file():
            problems.append(f"{p.name}: not a regular file")
        elif p.name not in sums:
            problems.append(f"{p.name}: not listed in {SUMS} (a stray file: remove it or re-download the "
                            "release)")
    for fname, h in sorted(sums.items()):
        p = folder / fname
        if not p.is_file() or p.is_symlink():
            if not p.exists() and not p.is_symlink():
                problems.append(f"{fname}: listed in {SUMS} but missing")
        elif _file_sha256(p) != h:
            problems.append(f"{fname}: checksum mismatch (corrupted or changed)")
    rel_manifest, rm_bytes = None, None
    rm = folder / RELEASE_MANIFEST
    if not rm.is_file():
        problems.append(f"{RELEASE_MANIFEST}: missing (it records every archive member's checksum)")
    else:
        try:
            rm_bytes = read_bounded(rm, MAX_RELEASE_JSON_BYTES, RELEASE_MANIFEST)
            rel_manifest = json.loads(rm_bytes)
            if not isinstance(rel_manifest, dict):
                raise ValueError("not a JSON object")
        except PipelineInputError as e:
            problems.append(f"{RELEASE_MANIFEST}: {e.problem}")
            rel_manifest = None
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            problems.append(f"{RELEASE_MANIFEST}: unreadable ({str(e)[:200]})")
            rel_manifest = None
    manifest_bytes = rm_bytes if rel_manifest is not None else _small(folder / "manifest.json", problems)
    params = _dataset_params(manifest_bytes, problems)
    for s in SPLIT_FILES:  # zips and WebDataset keep the split lists at the top
        if (folder / s).is_file() and not (folder / s).is_symlink():
            seen.where[s], seen.small[s] = s, _small(folder / s, problems) or b""
    archives = [p for p in entries if p.is_file() and not p.is_symlink() and _is_archive(p)]
    _check_archives(folder, archives, rel_manifest, params, seen, problems)
    _check_contents(seen, params.frames, problems, str(folder))
    return problems


def _small(path: Path, problems: list[str], limit: int = MAX_RELEASE_JSON_BYTES) -> bytes | None:
    """A small file of the release read bounded, or None (missing, or a problem recorded)."""
    if not path.exists():
        return None
    try:
        return read_bounded(path, limit, path.name)
    except PipelineInputError as e:
        problems.append(f"{path}: {e.problem}")
        return None


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:  # a regular file of the folder, streamed: no member limit (a zip may pass it)
        return hashlib.file_digest(f, "sha256").hexdigest()


# ----------------------------------------------------------------------------- extracted tree
def _tree_root(folder: Path) -> Path | None:
    for c in [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
        if (c / "train.txt").is_file():
            return c
    return None


def _verify_tree(root: Path, seen: Seen) -> list[str]:
    problems: list[str] = []
    params = _dataset_params(_small(root / "manifest.json", problems), problems)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            problems.append(f"{rel}: a symbolic link (a dataset holds regular files only)")
            continue
        if not p.is_file():
            continue
        if rel in SPLIT_FILES:
            seen.where[rel], seen.small[rel] = rel, _small(p, problems) or b""
        elif rel.split("/")[0] in CLIP_FOLDERS:
            seen.where[rel] = rel
            data = _small(p, problems, MAX_CLIP_FILE_BYTES) if _clip_of(rel) else None
            if data is not None:
                why = check_clip_file(rel, data, params.frames, (params.sr, params.fps))
                if why:
                    problems.append(f"{rel}: {why}")
    _check_contents(seen, params.frames, problems, str(root))
    return problems


def verify_release(folder: Path, stats: dict | None = None) -> list[str]:
    """Every problem found in a release folder (any format) or an extracted/assembled dataset folder.

    A folder with SHA256SUMS or archives is a release; one with train.txt (or a subfolder with it),
    an extracted or assembled dataset. A dataset without clips is a problem. `stats`, when given,
    receives {"clips": the clip ids the split lists hold}.
    """
    seen = Seen()
    problems = _verify_release_or_tree(Path(folder), seen)
    if stats is not None:
        stats["clips"] = seen.clips
    return problems


def _verify_release_or_tree(folder: Path, seen: Seen) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: not a folder"]
    has_archives = any(p.is_file() and _is_archive(p) for p in folder.iterdir())
    if (folder / SUMS).exists() or (folder / SUMS).is_symlink() or has_archives:
        return _verify_release_folder(folder, seen)
    root = _tree_root(folder)
    if root is None:
        return [f"{SUMS}: missing in {folder}: neither a release (SHA256SUMS beside its archives) nor an "
                "extracted dataset (train.txt)"]
    return _verify_tree(root, seen)
