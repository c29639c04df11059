"""The DAG's roots: `luigi --module pipeline BuildSingingHead` (everything) and `BuildSubject`.

    luigi --module pipeline BuildSingingHead --local-scheduler
    luigi --module pipeline BuildSubject --subject S001 --local-scheduler

This module stays light on purpose: importing it registers the roots and every `luigi.cfg`
section (so `--paths-raw-dir`, `--crop-landmark-every`, ... parse), but not the stages, which
pull in torch, open3d and demucs. Each root imports its stages when Luigi first asks for them,
so `singinghead --help` and `luigi --module pipeline --help` answer at once.
"""
from __future__ import annotations

import sys
import time

import luigi

import tasks.config  # noqa: F401 - registers the luigi.cfg sections for Luigi's parser
# importing pipeline.timings registers its PROCESSING_TIME handler for every worker
from pipeline.timings import read_stage_timings
from tasks.base import StageTask, SubjectTask
from tasks.common.atomic import write_json_atomic

__all__ = ["BuildSingingHead", "BuildSubject"]


class BuildSubject(SubjectTask, luigi.WrapperTask):
    """Every per-subject stage for one subject (crop, BGM, audio, per-frame, scan fit, refinement)."""

    def requires(self):
        from tasks.subject import SubjectOutputs  # deferred: see the module docstring
        return SubjectOutputs(subject=self.subject)


class BuildSingingHead(StageTask):
    """raw/ -> every subject -> assembled dataset -> statistics report -> release tarballs."""

    def requires(self):
        from tasks.release import PackRelease  # deferred: see the module docstring
        from tasks.report import DatasetReport
        return {"release": PackRelease(), "report": DatasetReport()}

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
        print(format_summary(summary), file=sys.stderr)


def format_summary(summary: dict) -> str:
    lines = ["", "SingingHead build finished.",
             f"  dataset : {summary['dataset']}",
             f"  release : {summary['release']} (verified: checksums, split ids, shapes, frame counts)",
             f"  report  : {summary['report']}",
             "  time per stage (seconds, summed over tasks, this run and earlier resumed runs):"]
    for stage, sec in sorted(summary["stage_seconds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {stage:<20s} {sec:9.1f}")
    return "\n".join(lines)
