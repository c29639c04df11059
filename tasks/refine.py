"""Refine stage: `RefineMotion(subject, song, segment)`, per-frame estimates -> smooth 3D motion (`[refine]`).

The plain code is `tasks.estimation.motion` (on flame_fit.refine). Writes `motion/segment_NNN.npz`
(the motion contract) and `motion/segment_NNN_qc.json`. The frame rate comes from the crop stage's
`segments.json`, the one place that records it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import luigi

from tasks import config
from tasks.base import SegmentTask
from tasks.common.settings import CropSettings, RefineSettings, recorded_params
from tasks.devices import gpu_resources, torch_device
from tasks.estimate import EstimateFrames
from tasks.estimation.motion import refine_params, refine_segment, segments_fps, write_motion
from tasks.head_model import head_model_for_task
from tasks.scan_fit import FitScanShape

log = logging.getLogger("singinghead")


class RefineMotion(SegmentTask):
    """The refined motion of one usable portrait segment."""
    STAGE = "refine"  # the name `rerun --from` and the dataset manifest use

    @property
    def resources(self):
        return gpu_resources()

    def requires(self):
        return {"frames": EstimateFrames(subject=self.subject, song=self.song, segment=self.segment),
                "shape": FitScanShape(subject=self.subject)}

    def output(self):
        return luigi.LocalTarget(str(self.layout.motion_npz(self.subject, self.song, self.segment)))

    def run(self):
        refine, crop = config.read(RefineSettings), config.read(CropSettings)
        lay = self.layout
        device = torch_device()
        head_model = head_model_for_task(self.layout, device)
        motion, qc = refine_segment(lay.frames_npz(self.subject, self.song, self.segment),
                                    lay.scan_shape_npy(self.subject), head_model,
                                    refine_params(refine, crop.output_size),
                                    segments_fps(lay.segments_json(self.subject, self.song)), device, task=self)
        qc.update({"subject": self.subject, "song": self.song, "segment": int(self.segment),
                   "config": recorded_params(refine, crop)})
        if qc["head_model"].get("kind") != "real":
            log.warning("RefineMotion %s/%s/%d: fitted with the STAND-IN %s", self.subject, self.song,
                        self.segment, qc["head_model"].get("name"))
        log.info("RefineMotion %s/%s/%d: landmark RMSE %.2f -> %.2f px, %d iterations, %.2f s", self.subject,
                 self.song, self.segment, qc["landmark_rmse_px"]["before"], qc["landmark_rmse_px"]["after"],
                 qc["iterations"], qc["seconds"]["total"])
        write_motion(Path(self.output().path), lay.motion_qc(self.subject, self.song, self.segment), motion, qc)
