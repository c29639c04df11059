"""The DAG's roots: `luigi --module pipeline BuildSingingHead` (everything) and `BuildSubject`.

    luigi --module pipeline BuildSingingHead --local-scheduler
    luigi --module pipeline BuildSubject --subject S001 --local-scheduler

    luigi --module pipeline CropPortraits --subject S001 --song 001_art_x --local-scheduler

Every task class of the DAG runs from this module. Importing it from Python (and so from the
`singinghead` command, which lives in this package) stays light: it registers the roots and every
`luigi.cfg` section (so `--paths-raw-dir`, `--crop-landmark-every`, ... parse), but not the
stages, which pull in torch, open3d and demucs; each root imports its stages when Luigi first
asks for them, so `singinghead --help` answers at once. When Luigi's command line loads it
(`luigi --module pipeline X`), it imports every stage (`stage_modules`), so that any task class
of the DAG can be named, and a bad input is logged as one line instead of a traceback.
"""
from __future__ import annotations

import logging
import sys
import time

import luigi

import tasks.config  # registers the luigi.cfg sections for Luigi's parser
# importing pipeline.timings registers its PROCESSING_TIME handler for every worker
from pipeline.timings import read_stage_timings
from tasks.base import StageTask, SubjectTask
from tasks.common.atomic import write_json_atomic
from tasks.common.errors import CaptureInvalid, PipelineInputError

__all__ = ["BuildSingingHead", "BuildSubject", "stage_modules"]


def stage_modules() -> tuple:
    """Import the stages (every task class the roots reach: the modules of the roots' direct
    requirements import the rest) and return the modules of the roots' requirements."""
    import tasks.release  # deferred: torch, open3d, demucs (see the module docstring)
    import tasks.report
    import tasks.subject
    return tasks.release, tasks.report, tasks.subject


class BuildSubject(SubjectTask, luigi.WrapperTask):
    """Every per-subject stage for one subject (crop, BGM, audio, per-frame, scan fit, refinement)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layout.check_capture([self.subject])   # an unknown subject: one line, before any work
        tasks.config.read_all()                      # a refused luigi.cfg value: one line, before any work

    def requires(self):
        return stage_modules()[2].SubjectOutputs(subject=self.subject)


class BuildSingingHead(StageTask):
    """raw/ -> every subject -> assembled dataset -> statistics report -> release tarballs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layout.check_capture()   # a missing or empty capture: one line, before any work
        tasks.config.read_all()       # a refused luigi.cfg value: one line, before any work

    def requires(self):
        release, report, _ = stage_modules()
        return {"release": release.PackRelease(), "report": report.DatasetReport()}

    def output(self):
        return luigi.LocalTarget(str(self.layout.build_summary_json()))

    def run(self):
        from tasks.dataset.verify import verify_release
        lay = self.layout
        # The release is what a lab ships: check it end to end before calling the build done.
        problems = verify_release(lay.release_root())
        if problems:
            raise RuntimeError(f"release {lay.release_root()} failed verification:\n  "
                               + "\n  ".join(problems[:50]))
        summary = {
            "release_verified": True,
            "release": str(lay.release_root()),
            "report": str(lay.report_dir() / "index.html"),
            "dataset": str(lay.dataset_root()),
            "stage_seconds": read_stage_timings(lay.processed),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json_atomic(self.output().path, summary)
        print(format_summary(summary))   # the build's result: stdout, the logs go to stderr


def format_summary(summary: dict) -> str:
    lines = ["", "SingingHead build finished.",
             f"  dataset : {summary['dataset']}",
             f"  release : {summary['release']} (verified: checksums, split ids, shapes, frame counts)",
             f"  report  : {summary['report']}",
             "  time per stage (seconds, summed over tasks, this run and earlier resumed runs):"]
    for stage, sec in sorted(summary["stage_seconds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {stage:<20s} {sec:9.1f}")
    return "\n".join(lines)


def _loaded_by_luigi_command_line() -> bool:
    """Whether Luigi's command-line parser is importing this module (`luigi --module pipeline`,
    also `python -m luigi` and `luigi.run([...])`): its `_attempt_load_module` is on the stack.
    Luigi has no hook for this; the frame is the one place that tells it from `import pipeline`."""
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_code.co_name == "_attempt_load_module"
                and frame.f_globals.get("__name__") == "luigi.cmdline_parser"):
            return True
        frame = frame.f_back
    return False


class _OneLineInputErrors(logging.Filter):
    """For the `luigi` command: the project's input errors, raised where a root task is created
    (before any work) and logged by Luigi as "Uncaught exception" with a traceback, become one line
    with the fix, as `singinghead` prints them; every other exception keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (PipelineInputError, CaptureInvalid)):
            record.msg, record.args, record.exc_info, record.exc_text = str(exc), None, None, None
        return True


if _loaded_by_luigi_command_line():
    stage_modules()
    logging.getLogger("luigi-interface").addFilter(_OneLineInputErrors())
