"""Report stage: statistics of the assembled dataset as `dataset/report/index.html`.

The plain code is `tasks.reporting.page.build_report` (figures in `tasks.reporting.figures`); this
task hands it the paths it reads: the per-segment files through the layout, the crop's portrait
size, and each subject's scan-fit picture (`processed/<subject>/shape/fit.png`), which the report
copies into its own folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import luigi

from tasks import config
from tasks.assemble import AssembleDataset
from tasks.base import StageTask
from tasks.common.settings import CropSettings
from tasks.reporting.page import build_report

SCAN_FIT_PNG = "fit.png"  # drawn by FitScanShape into the subject's shape folder


class DatasetReport(StageTask):
    """Statistics of the assembled dataset: `dataset/report/index.html`."""

    def requires(self):
        return AssembleDataset()

    def output(self):
        return luigi.LocalTarget(str(self.layout.report_dir() / "index.html"))

    def run(self):
        lay = self.layout
        crop = config.read(CropSettings)
        manifest = json.loads(Path(self.input().path).read_text())
        scan_figures = {s: lay.shape_dir(s) / SCAN_FIT_PNG for s in sorted(manifest.get("subjects", {}))}
        build_report(lay.dataset_root(), lay.report_dir(), lay, task=self,
                     portrait_size=crop.output_size, scan_figures=scan_figures)
