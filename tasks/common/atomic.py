"""Atomic, deterministic writes: a file appears under its final name complete or not at all.

Luigi's own `temporary_path()` drops the file extension (luigi#3128), which breaks writers that
infer the format from the suffix (PyAV, soundfile); these helpers keep it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from tasks.common.errors import OutputWriteError

# A fixed zip timestamp keeps .npz bytes identical across reruns (np.savez stamps the wall clock).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _tmp_sibling(final: Path, suffix: str | None = None) -> Path:
    suffix = final.suffix if suffix is None else suffix
    return final.with_name(f".{final.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` (same suffix); rename it over `final` on success.

    On an exception the temporary file is removed and `final` is left as it was.
    """
    final = Path(final)
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
    """Yield a temporary folder beside `final`; on success it replaces `final` as a whole."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with _naming(final, tmp):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        with _naming(final, tmp):
            yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
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
    """Delete temporaries a killed run left behind (`.name.tmp-*`); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.glob(".*.tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n
