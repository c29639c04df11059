"""Reading files we did not write, bounded: regular files only, sizes checked on the bytes read.

A capture, a release or a prediction folder may hold a FIFO (opening it waits for a writer that
never comes), a link to /dev/zero (endless bytes, `st_size` 0) or a file far larger than its kind
ever is. Every read of such a file goes through `read_bounded` (or, for libraries that open the
path themselves, `check_regular_file` first), so no read blocks or grows memory past `limit`.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tasks.common.errors import PipelineInputError

MiB = 1 << 20
GiB = 1 << 30
# Limits by kind of file; each is far above what such a file holds in a real capture or release.
MAX_JSON_BYTES = 1 * MiB          # subject.json / song.json / landmarks.json / scan.json
MAX_PIPELINE_JSON_BYTES = 64 * MiB  # JSON records a stage wrote (segments.json, ...), re-read
MAX_SIDECAR_BYTES = 1 * GiB       # a scan's mesh, .mtl and texture images
MAX_PICKLE_BYTES = 256 * MiB      # predictions, flame_seqs clips, FLAME_masks.pkl
MAX_MODEL_BYTES = 16 * GiB        # model checkpoints handed by path to torch.load
MAX_MEDIA_BYTES = 256 * GiB       # videos and audio handed by path to PyAV / soundfile
MAX_CLIP_FILE_BYTES = 512 * MiB   # one release clip file (mp4, wav, pkl) or split list, held in memory
MAX_RELEASE_MEMBER_BYTES = 64 * GiB  # any release member, hashed as a stream (never held)
MAX_RELEASE_JSON_BYTES = 256 * MiB   # release_manifest.json / manifest.json / SHA256SUMS
FIX = "replace it with the regular file it should be (not a link to a device, a FIFO or a folder)"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_kind(path: Path, mode: int, fix: str) -> PipelineInputError:
    target = os.path.realpath(path)
    via = f" (it resolves to {target})" if target != str(Path(path).absolute()) else ""
    return PipelineInputError(path, f"is {_kind(mode)}{via}, not a regular file", fix)


def check_regular_file(path: str | Path, limit: int, what: str = "file", fix: str = FIX) -> int:
    """Size in bytes of `path` after resolving links; PipelineInputError unless it is a regular file
    of at most `limit` bytes. Uses stat only (never opens), so a FIFO cannot block it."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise PipelineInputError(path, f"cannot read {what} ({e.strerror or e})", fix) from e
    if not stat.S_ISREG(st.st_mode):
        raise _refuse_kind(path, st.st_mode, fix)
    if st.st_size > limit:
        raise PipelineInputError(path, f"{what} is {st.st_size} bytes, more than such a file holds "
                                 f"(at most {limit})", fix)
    return st.st_size


def read_bounded(path: str | Path, limit: int, what: str = "file", fix: str = FIX) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; PipelineInputError naming `path` otherwise.

    Opened with O_NONBLOCK (a FIFO opens at once instead of waiting for a writer, then is refused
    by fstat), and at most limit + 1 bytes are read whatever `st_size` says (a file that grows,
    or a filesystem that reports 0)."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise PipelineInputError(path, f"cannot read {what} ({e.strerror or e})", fix) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse_kind(path, st.st_mode, fix)
        if st.st_size > limit:
            raise PipelineInputError(path, f"{what} is {st.st_size} bytes, more than such a file holds "
                                     f"(at most {limit})", fix)
        parts, n = [], 0
        while n <= limit:
            b = os.read(fd, min(limit + 1 - n, 4 * MiB))
            if not b:
                break
            parts.append(b)
            n += len(b)
        if n > limit:
            raise PipelineInputError(path, f"{what} holds more than {limit} bytes (it grew while read)", fix)
        return b"".join(parts)
    except OSError as e:
        raise PipelineInputError(path, f"cannot read {what} ({e.strerror or e})", fix) from e
    finally:
        os.close(fd)


class DuplicateKey(ValueError):
    pass


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json `object_pairs_hook` refusing a key given twice (json would keep the last silently)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(f"the key {k!r} is given twice")
        out[k] = v
    return out


def read_json_bounded(path: str | Path, limit: int = MAX_PIPELINE_JSON_BYTES, what: str = "JSON file"):
    """json.loads of a bounded read, refusing duplicate keys; errors name the file."""
    data = read_bounded(path, limit, what)
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    except (ValueError, RecursionError) as e:     # JSONDecodeError, UnicodeDecodeError, DuplicateKey
        raise PipelineInputError(path, f"{what} is not valid JSON ({str(e)[:200]})",
                                 "fix the file (a JSON linter shows where)") from e
