"""Rerun one subject from a stage: `singinghead rerun --subject S012 [--from STAGE]`.

Luigi decides what to run by which outputs exist, and deleting an upstream output does not make
downstream outputs stale by itself (luigi#2043, no built-in force: #595). So a rerun deletes the
subject's outputs of the chosen stage and of every stage downstream of it, plus the outputs that
depend on every subject (assembled dataset, report, release, build summary), and then builds
`BuildSingingHead` again: Luigi reruns exactly the missing work. Other subjects' files are never
opened for writing. The plain Luigi equivalent is in docs/scale_out.md.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from tasks.config import override_paths
from tasks import layout

log = logging.getLogger("singinghead")

STAGES = ("validate", "crop", "bgm", "audio", "estimate", "shape", "refine")
# stage -> the stages that read its outputs (the per-subject part of the DAG in ARCHITECTURE.md)
DOWNSTREAM = {
    "validate": ("crop", "bgm"),
    "crop": ("audio", "estimate"),
    "bgm": ("audio",),
    "audio": (),
    "estimate": ("shape", "refine"),
    "shape": ("refine",),
    "refine": (),
}


def stages_from(stage: str) -> list[str]:
    """`stage` and everything downstream of it, in DAG order."""
    if stage not in DOWNSTREAM:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    todo, seen = [stage], set()
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo += DOWNSTREAM[s]
    return [s for s in STAGES if s in seen]


def _songs(subject: str) -> list[str]:
    """Songs of the capture plus any song folder left under processed/ (a song since removed from raw/)."""
    songs = set(layout.list_songs(subject))
    out = layout.subject_out(subject)
    if out.is_dir():
        songs |= {p.name for p in out.iterdir() if p.is_dir() and (p / "portrait").exists()}
    return sorted(songs)


def stage_outputs(subject: str, stage: str) -> list[Path]:
    """Every file or folder `stage` writes for `subject` (paths from tasks.layout)."""
    songs = _songs(subject)
    if stage == "validate":
        return [layout.validation_report(subject)]
    if stage == "crop":
        return [layout.portrait_dir(subject, s) for s in songs]
    if stage == "bgm":
        return [p for s in songs for p in (layout.bgm_wav(subject, s), layout.bgm_record(subject, s))]
    if stage == "audio":
        return [layout.segment_audio_dir(subject, s) for s in songs]
    if stage == "estimate":
        return [layout.frames_npz(subject, s, 0).parent for s in songs] + [
            layout.monocular_shape_npz(subject)
        ]
    if stage == "shape":
        return [layout.shape_dir(subject)]
    if stage == "refine":
        return [layout.motion_npz(subject, s, 0).parent for s in songs]
    raise ValueError(f"unknown stage {stage!r}")


def shared_outputs() -> list[Path]:
    """Outputs that depend on every subject."""
    return [
        layout.dataset_root(),
        layout.report_dir(),
        layout.release_root(),
        layout.build_summary_json(),
    ]


def paths_to_remove(subject: str, from_stage: str) -> list[Path]:
    paths = [p for st in stages_from(from_stage) for p in stage_outputs(subject, st)]
    return paths + [layout.subject_done(subject)] + shared_outputs()


def remove_outputs(paths: list[Path], dry_run: bool = False) -> list[Path]:
    """Delete the existing ones among `paths`; returns those (that would be) removed."""
    removed = []
    for p in paths:
        if not (p.exists() or p.is_symlink()):
            continue
        removed.append(p)
        if dry_run:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return removed


def build_everything(workers: int = 1) -> bool:
    """luigi.build(BuildSingingHead) with the local scheduler; True on success."""
    import luigi

    import pipeline  # lazily: tasks must not import pipeline at module level

    result = luigi.build(
        [pipeline.BuildSingingHead()], local_scheduler=True, workers=workers, detailed_summary=True
    )
    print(result.summary_text, file=sys.stderr)
    return result.status in (luigi.LuigiStatusCode.SUCCESS, luigi.LuigiStatusCode.SUCCESS_WITH_RETRY)


def rerun(
    subjects: list[str],
    from_stage: str = "validate",
    build=build_everything,
    dry_run: bool = False,
    workers: int = 1,
) -> tuple[list[Path], bool]:
    """Remove `subjects`' outputs from `from_stage` on and the shared outputs, then `build(workers)`.

    Returns (removed paths, build succeeded). `build=None` only removes.
    """
    known = set(layout.list_subjects())
    unknown = [s for s in subjects if s not in known and not layout.subject_out(s).exists()]
    if unknown:
        raise ValueError(
            f"unknown subject(s) {unknown}: not in {layout.raw_root()} nor {layout.processed_root()}"
        )
    paths: list[Path] = []
    for s in subjects:
        paths += [p for p in paths_to_remove(s, from_stage) if p not in paths]
    removed = remove_outputs(paths, dry_run=dry_run)
    for p in removed:
        log.debug("%s %s", "would remove" if dry_run else "removed", p)
    if dry_run or build is None:
        return removed, True
    return removed, bool(build(workers))
