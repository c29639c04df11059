"""Overall progress of a build: tasks done of total, the current stage, elapsed and remaining time.

On a terminal a progress bar; without one (a batch job, a log file), one line per finished task.
Luigi's events arrive in the process that runs the task, so with `--workers` > 1 only the
scheduling side (the total) is seen here; each task still reports its own progress to Luigi.
"""
from __future__ import annotations

import logging
import sys
import time

import luigi
from tqdm import tqdm

log = logging.getLogger("singinghead")


def format_eta(done: int, total: int, elapsed: float) -> str:
    """'~3m20s left' from the mean time per finished task so far ('' before the first one)."""
    if done <= 0 or total <= done:
        return ""
    left = elapsed / done * (total - done)
    m, s = divmod(int(round(left)), 60)
    return f"~{m}m{s:02d}s left" if m else f"~{s}s left"


class BuildProgress:
    """Context manager that listens to Luigi's events for the duration of a build."""

    def __init__(self, stream=None, bar: bool | None = None, pending: list[luigi.Task] | None = None):
        """`pending`: the tasks known up front to need running (the total grows as more appear)."""
        self.stream = stream or sys.stderr
        self.to_run: set[str] = {t.task_id for t in pending or []}
        self.done: set[str] = set()
        self.current = ""
        self.t0 = time.monotonic()
        show = self.stream.isatty() if bar is None else bar
        self.bar = tqdm(total=len(self.to_run), desc="build", unit="task", file=self.stream) if show else None

    # Luigi calls these with the task as first argument.
    def _missing(self, task):
        self.to_run.add(task.task_id)
        if self.bar is not None:
            self.bar.total = len(self.to_run)
            self.bar.refresh()

    def _start(self, task):
        self.current = task.task_family
        if self.bar is not None:
            self.bar.set_postfix_str(self.current)

    def _success(self, task):
        if task.task_id in self.done:
            return
        self.done.add(task.task_id)
        self.to_run.add(task.task_id)
        n, total = len(self.done), len(self.to_run)
        elapsed = time.monotonic() - self.t0
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(1)
        else:
            print(f"progress: {n}/{total} tasks done, last {task.task_family}, "
                  f"elapsed {elapsed:.0f}s {format_eta(n, total, elapsed)}".rstrip(), file=self.stream)

    def __enter__(self):
        self._handlers = [(luigi.Event.DEPENDENCY_MISSING, self._missing), (luigi.Event.START, self._start),
                          (luigi.Event.SUCCESS, self._success)]
        for event, fn in self._handlers:
            luigi.Task.event_handler(event)(fn)
        return self

    def __exit__(self, *exc):
        for event, fn in self._handlers:
            luigi.Task.remove_event_handler(event, fn)
        if self.bar is not None:
            self.bar.close()
        return False
