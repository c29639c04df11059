"""The DAG's roots: `luigi --module pipeline BuildSingingHead` (everything) and `BuildSubject`.

    luigi --module pipeline BuildSingingHead --local-scheduler
    luigi --module pipeline BuildSubject --subject S001 --local-scheduler
"""
from __future__ import annotations

import logging
import sys
import time

import luigi

from tasks import layout
from tasks.assemble import AssembleDataset
from tasks.common.atomic import write_json_atomic
from tasks.report import DatasetReport
from tasks.release import PackRelease, verify_release
from tasks.subject import SubjectOutputs
# importing pipeline.timings registers its PROCESSING_TIME handler for every worker
from pipeline.timings import read_stage_timings

log = logging.getLogger("singinghead")

__all__ = ["BuildSingingHead", "BuildSubject", "AssembleDataset", "DatasetReport", "PackRelease"]


class BuildSubject(luigi.WrapperTask):
    """Every per-subject stage for one subject (crop, BGM, audio, per-frame, scan fit, refinement)."""

    subject = luigi.Parameter()

    def requires(self):
        return SubjectOutputs(subject=self.subject)


class BuildSingingHead(luigi.Task):
    """raw/ -> every subject -> assembled dataset -> statistics report -> release tarballs."""

    def requires(self):
        return {"release": PackRelease(), "report": DatasetReport()}

    def output(self):
        return luigi.LocalTarget(str(layout.build_summary_json()))

    def run(self):
        # The release is what a lab ships: check it end to end before calling the build done.
        problems = verify_release(layout.release_root())
        if problems:
            raise RuntimeError(f"release {layout.release_root()} failed verification:\n  "
                               + "\n  ".join(problems[:50]))
        timings = read_stage_timings(layout.processed_root())
        summary = {
            "release_verified": True,
            "release": str(layout.release_root()),
            "report": str(layout.report_dir() / "index.html"),
            "dataset": str(layout.dataset_root()),
            "stage_seconds": timings,
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
