"""What produced an output: parameters, model files and whether a model is real or a stand-in.

Every stage writes `model_record(...)` and `settings.recorded_params(...)` next to its output; the dataset
manifest gathers them, so a release always says which results came from stand-ins.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from tasks.common.atomic import file_sha256

log = logging.getLogger("singinghead")


def model_record(name: str, real: bool, files: list[str | Path] | None = None, **extra) -> dict:
    """{'name', 'kind': 'real' | 'stand-in', 'files': [{'path', 'sha256'}], ...}.

    A stand-in is logged loudly once per call so nobody mistakes it for the real model.
    """
    rec = {"name": name, "kind": "real" if real else "stand-in",
           "files": [{"path": str(f), "sha256": cached_sha256(f)} for f in (files or []) if Path(f).is_file()]}
    rec.update(extra)
    if not real:
        log.warning("STAND-IN MODEL in use: %s (not the real model; results are for testing the "
                    "pipeline, not for a dataset release)", name)
    return rec


def cached_sha256(path: str | Path) -> str:
    """sha256 of a model file, hashed once per process while its size and mtime stay the same.

    Checkpoints are hundreds of MB and every per-segment task records them.
    """
    st = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)
