"""`verify-release`: every file listed, present and matching; every archive member safe.

The last line says what was checked: clips, files, bytes and, for a release folder, its
fingerprint (the sha256 of SHA256SUMS, which names every file's sha256: one value to compare with
the one the release was announced with).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from tasks.common.errors import PipelineInputError
from tasks.dataset.packing import SUMS
from tasks.dataset.verify import verify_release


def checked_files(folder: Path) -> tuple[int, int]:
    """(regular files, their bytes) of a release folder or an extracted tree, links not followed."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def fingerprint(folder: Path) -> str | None:
    """sha256 of the release's SHA256SUMS (None for an extracted tree, which has none)."""
    sums = folder / SUMS
    if not sums.is_file() or sums.is_symlink():
        return None
    return hashlib.sha256(sums.read_bytes()).hexdigest()


def verify(args) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise PipelineInputError(folder, "is not a folder", "give the release folder (its shards and SHA256SUMS)")
    stats: dict = {}
    problems = verify_release(folder, stats)
    for p in problems:
        print(f"FAIL {p}")
    n_files, n_bytes = checked_files(folder)
    fp = fingerprint(folder)
    checked = (f"{stats.get('clips', 0)} clip(s), {n_files} file(s), {n_bytes} bytes, "
               + (f"fingerprint sha256(SHA256SUMS) {fp}" if fp else "no SHA256SUMS (an extracted tree)"))
    print(f"verify-release {args.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}: {checked}")
    return 0 if not problems else 1
