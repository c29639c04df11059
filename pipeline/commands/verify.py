"""`verify-release`: every file listed, present and matching; every archive member safe."""
from __future__ import annotations

from pathlib import Path

from tasks.common.errors import PipelineInputError
from tasks.dataset.verify import verify_release


def verify(args) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise PipelineInputError(folder, "is not a folder", "give the release folder (its shards and SHA256SUMS)")
    problems = verify_release(folder)
    for p in problems:
        print(f"FAIL {p}")
    print(f"verify-release {args.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else 1
