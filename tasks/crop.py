"""Crop stage: the 4K colour track -> face-stable 1024x1024 portrait segments (`[crop]`).

The plain code is `tasks.faces.portrait_video.crop_video` (state machine in
`tasks.faces.segmenter`).
"""
from __future__ import annotations

import luigi

from tasks import config
from tasks.base import SongTask
from tasks.common.settings import CropSettings
from tasks.faces.portrait_video import crop_video
from tasks.validate import ValidateCapture


class CropPortraits(SongTask):
    """One song's colour track -> portrait/segment_NNN.mp4 + portrait/segments.json."""
    STAGE = "crop"  # the name `rerun --from` and the dataset manifest use

    def requires(self):
        return ValidateCapture(subject=self.subject)

    def output(self):
        return luigi.LocalTarget(str(self.layout.segments_json(self.subject, self.song)))

    def run(self):
        lay = self.layout
        # Face checks run on the CPU on purpose: the images are small (160-960 px), so a GPU
        # gains little, crop workers then hold no GPU context next to the GPU stages, and boxes
        # (hence portrait bytes) are the same on machines with and without a GPU.
        crop_video(lay.color_video_path(self.subject, self.song), lay.portrait_dir(self.subject, self.song),
                   config.read(CropSettings), task=self, device="cpu")
