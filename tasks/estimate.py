"""Per-frame stage: `EstimateFrames(subject, song, segment)` and `SubjectShape(subject)` (`[emoca]`).

The plain code is `tasks.estimation.frames` (landmark tracking, EMOCA or the weight-free fit, the
mean shape). `EstimateFrames` writes `frames/segment_NNN.npz` and its `.json` record;
`SubjectShape` the subject's mean monocular shape over every usable segment of every song.
"""
from __future__ import annotations

from pathlib import Path

import luigi

from tasks import config
from tasks.base import SegmentTask, SubjectTask
from tasks.common.errors import PipelineInputError
from tasks.common.settings import DatasetSettings, EmocaSettings, recorded_params
from tasks.crop import CropPortraits
from tasks.devices import gpu_resources, torch_device
from tasks.estimation.frames import estimate_video, write_frames, write_mean_shape
from tasks.head_model import head_model_for_task


class EstimateFrames(SegmentTask):
    """Landmarks and per-frame FLAME estimates of one portrait segment."""
    STAGE = "estimate"  # the name `rerun --from` and the dataset manifest use

    @property
    def resources(self):
        return gpu_resources()

    def requires(self):
        return CropPortraits(subject=self.subject, song=self.song)

    def output(self):
        return luigi.LocalTarget(str(self.layout.frames_npz(self.subject, self.song, self.segment)))

    def run(self):
        emoca, dataset = config.read(EmocaSettings), config.read(DatasetSettings)
        lay = self.layout
        seg = lay.find_segment(self.subject, self.song, self.segment)
        device = torch_device()
        arrays, record = estimate_video(
            lay.portrait_dir(self.subject, self.song) / seg["video"], head_model=head_model_for_task(lay, device),
            emoca=emoca, device=device, expected_frames=int(seg["end_frame"]) - int(seg["start_frame"]),
            task=self)
        record.update({"subject": self.subject, "song": self.song, "segment": self.segment,
                       "config": recorded_params(emoca, dataset)})
        write_frames(Path(self.output().path), lay.frames_record(self.subject, self.song, self.segment),
                     arrays, record)


class SubjectShape(SubjectTask):
    """The subject's mean monocular FLAME shape over all usable segments of all songs."""
    STAGE = "estimate"  # the name `rerun --from` and the dataset manifest use

    def requires(self):
        return {song: CropPortraits(subject=self.subject, song=song)
                for song in self.layout.list_songs(self.subject)}

    def output(self):
        return luigi.LocalTarget(str(self.layout.monocular_shape_npz(self.subject)))

    def dynamic_requires(self) -> list[EstimateFrames]:
        """The per-segment tasks `run` yields: every usable segment of the songs whose crop has
        written segments.json (all of them once `requires()` is complete)."""
        lay = self.layout
        min_frames = config.read(DatasetSettings).min_sequence_frames
        return [EstimateFrames(subject=self.subject, song=song, segment=int(seg["index"]))
                for song in lay.list_songs(self.subject) if lay.segments_json(self.subject, song).is_file()
                for seg in lay.usable_segments(self.subject, song, min_frames)]

    def run(self):
        tasks = self.dynamic_requires()
        if not tasks:
            raise PipelineInputError(self.layout.subject_out(self.subject),
                                     "no portrait segment is long enough for per-frame estimation",
                                     "check the crop stage's segments.json files or lower "
                                     "[dataset] min_sequence_seconds")
        yield tasks
        write_mean_shape(Path(self.output().path), [Path(t.output().path) for t in tasks])
