"""`run`, `release`, `rerun` and `stages`: the commands that build (part of) the DAG."""
from __future__ import annotations

import contextlib
import sys

import pipeline
from pipeline.build import build, config_overrides
from pipeline.commands.common import describe_run, layout_of, path_overrides, stand_in_warning
from pipeline.progress import BuildProgress
from pipeline.registry import family_table, format_table, task_graph
from pipeline.rerun import plan_rerun, remove_outputs
from tasks.common.build_lock import build_lock
from tasks.release import PackRelease


def _build(roots, args) -> int:
    """Build `roots()`. Logs (what is read, Luigi's lines, progress) go to stderr once; the plan and
    the outcome go to stdout, so that a script can capture them."""
    description = describe_run(args)
    print(description, file=sys.stderr)
    with config_overrides(path_overrides(args)):
        pending = [t for t in task_graph(roots()) if not t.complete()]
    print(f"{len(pending)} task(s) to run (more once the crop has counted the segments)")
    sys.stdout.flush()
    with BuildProgress(pending=pending):
        result = build(roots, workers=args.workers, overrides=path_overrides(args))
    warning = stand_in_warning(description)
    if warning:
        print(warning, file=sys.stderr)
    print(f"build {'succeeded' if result.ok else 'FAILED'}: Luigi status {result.status}")
    return 0 if result.ok else 1


def run(args) -> int:
    subject = args.subject
    # before any work (also where Luigi hands back a root created earlier in this process)
    layout_of(args).check_capture([subject] if subject else None)
    return _build(lambda: pipeline.BuildSubject(subject=subject) if subject else pipeline.BuildSingingHead(), args)


def release(args) -> int:
    layout_of(args).check_capture()   # a missing or empty capture: one line, before any work
    code = _build(lambda: PackRelease(), args)
    if code == 0:
        print(f"release: {layout_of(args).release}")
    return code


def rerun(args) -> int:
    lay = layout_of(args)
    with config_overrides(path_overrides(args)):
        paths = plan_rerun(args.subject, args.from_stage, lay)
    # under the build lock: never delete outputs a running build is writing or reading
    with build_lock(lay.processed) if not args.dry_run else contextlib.nullcontext():
        removed = remove_outputs(paths, lay, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} output(s) of {', '.join(args.subject)} from stage {args.from_stage} on")
        for p in removed:
            print(f"  {p}")
        if args.dry_run or args.no_build:
            return 0
        return _build(lambda: pipeline.BuildSingingHead(), args)


def stages(args) -> int:
    lay = layout_of(args)
    with config_overrides(path_overrides(args)):
        graph = task_graph(pipeline.BuildSingingHead())
    print(format_table(family_table(graph, relative_to=lay.processed)))
    return 0
