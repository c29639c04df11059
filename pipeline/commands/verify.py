"""`verify-release`: every file listed, present and matching; every archive member safe.

The verdict line says what was checked (clips, files, bytes); the next one gives a release folder's
fingerprint (the sha256 of SHA256SUMS, which names every file's sha256: one value to compare with
the one the release was announced with).
"""
from __future__ import annotations

from pathlib import Path

from tasks.common.errors import PipelineInputError
from tasks.dataset.verify import release_fingerprint, verify_release


def checked_files(folder: Path) -> tuple[int, int]:
    """(regular files, their bytes) of a release folder or an extracted tree, links not followed."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def verify(args) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise PipelineInputError(folder, "is not a folder", "give the release folder (its shards and SHA256SUMS)")
    stats: dict = {}
    problems = verify_release(folder, stats)
    for p in problems:
        print(f"FAIL {p}")
    n_files, n_bytes = checked_files(folder)
    checked = f"{stats.get('clips', 0)} clip(s), {n_files} file(s), {n_bytes} bytes"
    print(f"verify-release {args.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}: {checked}")
    fingerprint = release_fingerprint(folder)
    if fingerprint:
        print(f"release fingerprint {fingerprint} (sha256 of SHA256SUMS): compare it with the one the "
              "release's publisher announced; an edited release with regenerated sums verifies but has "
              "another")
    else:
        print("no SHA256SUMS (an extracted tree): no release fingerprint")
    return 0 if not problems else 1
