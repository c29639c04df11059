"""Report stage: statistics of the assembled dataset as `dataset/report/index.html`.

The plain code is `tasks.reporting.page.build_report` (figures in `tasks.reporting.figures`).
"""
from __future__ import annotations

import luigi

from tasks.assemble import AssembleDataset
from tasks.base import StageTask
from tasks.reporting.page import build_report


class DatasetReport(StageTask):
    """Statistics of the assembled dataset: `dataset/report/index.html`."""

    def requires(self):
        return AssembleDataset()

    def output(self):
        return luigi.LocalTarget(str(self.layout.report_dir() / "index.html"))

    def run(self):
        lay = self.layout
        build_report(lay.dataset_root(), lay.report_dir(), lay, task=self)
