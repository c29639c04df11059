"""Errors a user can act on: each names the file at fault and what to do about it."""
from __future__ import annotations

from pathlib import Path


class PipelineInputError(RuntimeError):
    """Bad input: `path` is the file at fault, `fix` says what the user should do."""

    def __init__(self, path: str | Path, problem: str, fix: str = ""):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        msg = f"{self.path}: {problem}"
        if fix:
            msg += f" -- fix: {fix}"
        super().__init__(msg)


class CaptureInvalid(RuntimeError):
    """Validation found problems; `problems` is the full list, each with its path and fix."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        lines = [f"capture validation failed with {len(problems)} problem(s):"]
        lines += [f"  - {p['path']}: {p['problem']}" + (f" -- fix: {p['fix']}" if p.get("fix") else "")
                  for p in problems]
        super().__init__("\n".join(lines))


class OutputWriteError(PipelineInputError):
    """An output could not be written (read-only folder, full disk): names the final path, not
    only the hidden temporary beside it."""


class ModelFileError(PipelineInputError):
    """A configured model file or folder is missing, unreadable or of the wrong layout."""
