"""Scan-fit stage: the subject's shape from the light-stage scan, `FitScanShape(subject)`.

The plain code is `tasks.scans` (scan reading, automatic landmarks, the fit driver and its
picture; the optimisation itself is flame_fit.scan_fit). Writes processed/<subject>/shape/:
shape.npy (written last), alignment.json, report.json and fit.png. Without a scan the shape is the
monocular mean.
"""
from __future__ import annotations

import dataclasses
import logging

import luigi

from flame_fit.scan_fit import ScanFitConfig
from tasks import config
from tasks.base import SubjectTask
from tasks.common.errors import PipelineInputError
from tasks.common.settings import ScanFitSettings, recorded_params
from tasks.devices import gpu_resources, torch_device
from tasks.estimate import SubjectShape
from tasks.head_model import head_model_for_task
from tasks.scans.fit import bad_fit_reasons, fit_subject_scan, read_monocular_shape, write_shape_dir

log = logging.getLogger("singinghead")


class FitScanShape(SubjectTask):
    """The subject's FLAME shape (100,): fitted to the scan, or the monocular mean without one."""
    STAGE = "shape"  # the name `rerun --from` and the dataset manifest use

    fit_config = ScanFitConfig()     # class-level so tests can shorten the fit

    @property
    def resources(self):
        return gpu_resources()

    def requires(self):
        return SubjectShape(subject=self.subject)

    def output(self):
        return luigi.LocalTarget(str(self.layout.scan_shape_npy(self.subject)))

    def run(self):
        lay = self.layout
        scan_path = lay.scan_path(self.subject)
        mono_path = lay.monocular_shape_npz(self.subject)
        init = read_monocular_shape(mono_path)
        out_dir = lay.shape_dir(self.subject)
        if scan_path is None:
            if init is None:
                raise PipelineInputError(mono_path, "no scan and no monocular shape for this subject",
                                         "add raw/<subject>/scan/head.obj or run the per-frame stage first")
            report = {"source": "no scan: monocular mean shape", "landmark_source": None,
                      "monocular_shape": str(mono_path)}
            log.info("FitScanShape %s: no scan: monocular mean shape", self.subject)
            write_shape_dir(out_dir, init, report, None, None)
            return
        device = torch_device()
        model, rec = head_model_for_task(self.layout, device)
        settings = config.read(ScanFitSettings)
        fit_config = dataclasses.replace(self.fit_config, sigma_landmark=settings.landmark_sigma_mm * 1e-3)
        files, png = fit_subject_scan(scan_path, model, rec, init, device, fit_config, task=self,
                                      units_mode=settings.units)
        files["report"]["source"] = "scan fit"
        files["report"]["settings"] = recorded_params(settings)
        reasons = bad_fit_reasons(files["report"], files["shape"], settings)
        if reasons and settings.on_bad_fit != "flag":
            raise PipelineInputError(scan_path, "the scan fit did not fit this scan: " + "; ".join(reasons),
                                     "check the scan (a whole, non-degenerate head mesh), its landmarks.json "
                                     "(68 iBUG points on this scan) and scan.json's units; or set [scan_fit] "
                                     "on_bad_fit = flag to ship the shape flagged")
        if reasons:
            log.warning("FitScanShape %s: FLAGGED: %s", scan_path, "; ".join(reasons))
            files["report"]["flagged"] = reasons
        write_shape_dir(out_dir, files["shape"], files["report"], files["alignment"], png)
