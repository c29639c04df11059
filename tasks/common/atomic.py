"""Atomic, deterministic writes: a file appears under its final name complete or not at all.

Luigi's own `temporary_path()` drops the file extension (luigi#3128), which breaks writers that
infer the format from the suffix (PyAV, soundfile); these helpers keep it.

Every final path is checked with `tasks.common.names.check_write_path` against the active write roots
(a stage's processed/ and release folder), so no write follows a symbolic link out of them.
Temporaries are named `.<name>.tmp-<pid>@<host>-<random>`: a stale one (a killed writer's) is told
from a live writer's by its pid and host, and only stale ones are ever cleaned up.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from tasks.common.errors import OutputWriteError
from tasks.common.names import check_write_path

# A fixed zip timestamp keeps .npz bytes identical across reruns (np.savez stamps the wall clock).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:40] or "host"
# `.<name>.tmp-<pid>@<host>-<8 hex>[suffix]` (and `.old-` for a replaced folder on its way out); the
# older form `.<name>.tmp-<pid>-<hex>` (no host) is still recognised, as stale.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]+?)-[0-9a-f]{8}"
                      r"|\d+-[0-9a-f]+|[0-9a-f]{8})(?:\.[^.]*)?$")


def _writer_tag() -> str:
    return f"{os.getpid()}@{_HOST}-{uuid.uuid4().hex[:8]}"


def _tmp_sibling(final: Path, suffix: str | None = None) -> Path:
    suffix = final.suffix if suffix is None else suffix
    return final.with_name(f".{final.stem}.tmp-{_writer_tag()}{suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # someone else's live process
        return True
    return True


def is_stale_temp(name: str) -> bool:
    """Whether `name` is one of our temporaries whose writer is gone: its pid is not running on this
    host (or it has the older name without pid and host).  A temp of another host is never stale here:
    that writer may be alive on a shared disk."""
    m = _TEMP_RE.match(name)
    if not m:
        return False
    if m.group("pid") is None:
        return True
    return m.group("host") == _HOST and not _pid_alive(int(m.group("pid")))


def _remove_entry(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def remove_stale_siblings(final: Path) -> None:
    """Stale temporaries (and replaced folders) of `final` a killed writer left beside it."""
    for kind in ("tmp", "old"):
        for p in final.parent.glob(f".{glob_escape(final.name)}.{kind}-*"):
            if is_stale_temp(p.name):
                _remove_entry(p)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` (same suffix); rename it over `final` on success.

    On an exception the temporary file is removed and `final` is left as it was.
    """
    final = check_write_path(final)
    tmp = _tmp_sibling(final)
    try:
        with _naming(final, tmp):
            final.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"writer produced no file at {tmp} for {final}")
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` as a whole.

    Temporary folders of `final` that a killed writer left behind are removed first."""
    final = check_write_path(final)
    tmp = final.with_name(f".{final.name}.tmp-{_writer_tag()}")
    with _naming(final, tmp):
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(final)
        tmp.mkdir()
    try:
        with _naming(final, tmp):
            yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{_writer_tag()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _naming(final: Path, tmp: Path) -> Iterator[None]:
    """An OSError while writing `final` (through `tmp`), such as a read-only folder or a full disk,
    becomes an OutputWriteError naming `final`; errors about other files pass unchanged."""
    try:
        yield
    except OSError as e:
        names = {str(final), str(tmp), str(final.parent)}
        name = None if e.filename is None else str(e.filename)
        if name is not None and name not in names and not name.startswith(str(tmp)):
            raise
        raise OutputWriteError(final, f"cannot be written ({e.strerror or e})",
                               f"free disk space or make {final.parent} writable, then run again") from e


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def json_dumps(obj) -> str:
    """Stable JSON text (sorted keys, numpy scalars and arrays converted)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json_atomic(path: str | Path, obj) -> None:
    write_bytes_atomic(path, json_dumps(obj).encode("utf-8"))


def npy_bytes(a: np.ndarray) -> bytes:
    """One array as .npy bytes (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz, readable by np.load, with fixed timestamps and sorted members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def save_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    write_bytes_atomic(path, npz_bytes(arrays))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale_temps(folder: str | Path) -> int:
    """Delete the temporaries a killed writer left in `folder` (`.name.tmp-*`, `.name.old-*`); a
    live writer's (its pid still running on this host) stays.  Returns how many were removed."""
    folder = check_write_path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return 0
    n = 0
    for p in folder.iterdir():
        if p.name.startswith(".") and is_stale_temp(p.name):
            _remove_entry(p)
            n += 1
    return n


def sweep_stale_temps(root: str | Path) -> list[Path]:
    """`remove_stale_temps` in `root` and every folder below it (links not followed): what a killed
    build left anywhere under processed/.  Returns the removed paths."""
    root = Path(root)
    removed = []
    for folder, dirs, files in os.walk(root):
        for name in list(dirs) + files:
            if name.startswith(".") and is_stale_temp(name):
                p = Path(folder) / name
                _remove_entry(p)
                removed.append(p)
                if name in dirs:
                    dirs.remove(name)
    return removed
