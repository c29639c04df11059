"""Rerun one subject from a stage: `singinghead rerun --subject S012 [--from STAGE]`.

Luigi decides what to run by which outputs exist, and deleting an upstream output does not make
downstream outputs stale by itself (luigi#2043, no built-in force: #595). So a rerun deletes the
outputs of the subject's tasks of the chosen stage and of every task downstream of them (the
shared dataset, report, release and build summary included), then builds `BuildSingingHead`
again: Luigi reruns exactly the missing work. Which tasks those are is read off the DAG
(`pipeline.registry`), never from a list kept here; other subjects' files are never touched.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import luigi
from luigi.task import flatten

from pipeline import BuildSingingHead
from pipeline.registry import downstream, stage_names, stage_of, task_graph, topological
from tasks.common.errors import PipelineInputError
from tasks.common.names import check_name, remove_inside
from tasks.layout import Layout

log = logging.getLogger("singinghead")


def subject_of(task: luigi.Task) -> str | None:
    return task.param_kwargs.get("subject")


def rerun_tasks(graph: dict, subject: str, from_stage: str) -> list[luigi.Task]:
    """`subject`'s tasks of `from_stage` and every task downstream of them, in DAG order."""
    names = stage_names(graph)
    if from_stage not in names:
        raise PipelineInputError(from_stage, "is not a stage of this pipeline", f"choose one of {', '.join(names)}")
    start = {t for t in graph if stage_of(t) == from_stage and subject_of(t) == subject}
    if not start:
        return []
    hit = downstream(graph, start)
    return [t for t in topological(graph) if t in hit]


def output_paths(tasks: list[luigi.Task]) -> list[Path]:
    return [Path(o.path) for t in tasks for o in flatten(t.output()) if hasattr(o, "path")]


def check_subjects(subjects: list[str], lay: Layout) -> None:
    known = set(lay.list_subjects())
    for s in subjects:
        check_name(s, "subject")
        if s not in known and not lay.subject_out(s).is_dir():
            raise PipelineInputError(s, f"is not a subject of {lay.raw} nor of {lay.processed}",
                                     "give a subject folder name of the capture")


def remove_outputs(paths: list[Path], lay: Layout, dry_run: bool = False) -> list[Path]:
    """Delete the existing ones among `paths` (each inside the processed or release root)."""
    removed = []
    for p in paths:
        root = lay.release if p.is_relative_to(lay.release) else lay.processed
        if not (p.exists() or p.is_symlink()):
            continue
        removed.append(p)
        # "removed" is only ever said of what is gone: a delete that names another file than the
        # output (a relative root joined twice did, issue 17) must fail, not report success.
        if not dry_run and not (remove_inside(root, p) and not os.path.lexists(p)):
            raise RuntimeError(f"{p}: the guarded delete under {root} did not remove it")
    return removed


def plan_rerun(subjects: list[str], from_stage: str, lay: Layout) -> list[Path]:
    """The output paths a rerun of `subjects` from `from_stage` deletes (existing or not)."""
    check_subjects(subjects, lay)
    graph = task_graph(BuildSingingHead())
    paths: list[Path] = []
    for s in subjects:
        paths += [p for p in output_paths(rerun_tasks(graph, s, from_stage)) if p not in paths]
    return paths
