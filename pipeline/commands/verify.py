"""`verify-release`: every file listed, present and matching; every archive member safe."""
from __future__ import annotations

from pathlib import Path

from tasks.common.errors import PipelineInputError
from tasks.dataset.verify import release_fingerprint, verify_release


def verify(args) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise PipelineInputError(folder, "is not a folder", "give the release folder (its shards and SHA256SUMS)")
    problems = verify_release(folder)
    for p in problems:
        print(f"FAIL {p}")
    print(f"verify-release {args.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    fingerprint = release_fingerprint(folder)
    if fingerprint:
        print(f"release fingerprint {fingerprint} (sha256 of SHA256SUMS): compare it with the one the "
              "release's publisher announced; an edited release with regenerated sums verifies but has "
              "another")
    return 0 if not problems else 1
