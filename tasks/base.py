"""What every stage task shares: checked subject/song/segment parameters and the layout; every
`run` confined to the layout's output folders and holding the processed/ build lock."""
from __future__ import annotations

import contextlib
import functools
import inspect
import multiprocessing

import luigi
import luigi.interface

from tasks.common.build_lock import build_lock
from tasks.common.names import check_name, write_roots
from tasks.layout import Layout, check_not_reserved


class NameParameter(luigi.Parameter):
    """A subject or song id: one plain folder name that no processed/ output of the layout uses,
    checked when the task is instantiated."""

    def __init__(self, *args, what: str = "subject", **kwargs):
        super().__init__(*args, **kwargs)
        self.what = what

    def normalize(self, x):
        return check_not_reserved(check_name(x, self.what), self.what)


def _confined(run):
    """`run` with writes confined to processed/ and the release folder (`write_roots`) and the build
    lock held: a task run outside `pipeline.build.build` (the `luigi` command) takes it itself,
    exclusive with the local scheduler in Luigi's main process; shared in its forked workers (siblings
    of one build) and under a central scheduler, whose workers luigid keeps from running a task twice."""
    def guards(task):
        lay = task.layout
        shared = multiprocessing.parent_process() is not None or not luigi.interface.core().local_scheduler
        stack = contextlib.ExitStack()
        stack.enter_context(build_lock(lay.processed, shared=shared))
        stack.enter_context(write_roots(lay.processed, lay.release))
        return stack

    if inspect.isgeneratorfunction(run):
        @functools.wraps(run)
        def confined_gen(self):
            with guards(self):
                return (yield from run(self))
        return confined_gen

    @functools.wraps(run)
    def confined(self):
        with guards(self):
            return run(self)
    return confined


class StageTask(luigi.Task):
    """A task of the DAG; `layout` is `[paths]` as configured when it is asked for."""

    def __init_subclass__(cls, **kwargs):
        # Every stage's run is confined without each stage remembering to do it.
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _confined(cls.__dict__["run"])

    @property
    def layout(self) -> Layout:
        return Layout.from_config()


class SubjectTask(StageTask):
    subject = NameParameter(what="subject")


class SongTask(SubjectTask):
    song = NameParameter(what="song")


class SegmentTask(SongTask):
    segment = luigi.IntParameter()
