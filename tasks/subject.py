"""Everything one subject contributes to the dataset, as one Luigi task.

`SubjectOutputs` is what the dataset assembly depends on per subject; `pipeline.BuildSubject`
is the user-facing root for one subject. Refinement tasks are dynamic dependencies because the
number of segments is only known once the crop stage has run.
"""
from __future__ import annotations

import luigi

from tasks import config
from tasks.base import SubjectTask
from tasks.bgm import SeparateBGM
from tasks.common.atomic import write_json_atomic
from tasks.common.settings import DatasetSettings
from tasks.crop import CropPortraits
from tasks.refine import RefineMotion
from tasks.scan_fit import FitScanShape
from tasks.segment_audio import SegmentAudio


class SubjectOutputs(SubjectTask):

    def requires(self):
        reqs = {"scan_shape": FitScanShape(subject=self.subject)}
        for song in self.layout.list_songs(self.subject):
            reqs[f"crop/{song}"] = CropPortraits(subject=self.subject, song=song)
            reqs[f"bgm/{song}"] = SeparateBGM(subject=self.subject, song=song)
            reqs[f"audio/{song}"] = SegmentAudio(subject=self.subject, song=song)
        return reqs

    def output(self):
        return luigi.LocalTarget(str(self.layout.subject_done(self.subject)))

    def _plan(self, dataset: DatasetSettings) -> list[tuple[str, dict]]:
        """(song, segment) of every usable segment of the songs whose crop has written segments.json
        (all of them once `requires()` is complete)."""
        lay = self.layout
        return [(song, seg) for song in lay.list_songs(self.subject)
                if lay.segments_json(self.subject, song).is_file()
                for seg in lay.usable_segments(self.subject, song, dataset.min_sequence_frames)]

    def _refine_tasks(self, plan: list[tuple[str, dict]]) -> list[RefineMotion]:
        return [RefineMotion(subject=self.subject, song=song, segment=seg["index"]) for song, seg in plan]

    def dynamic_requires(self) -> list[RefineMotion]:
        """The refinement tasks `run` yields, one per usable segment."""
        return self._refine_tasks(self._plan(config.read(DatasetSettings)))

    def run(self):
        dataset = config.read(DatasetSettings)
        lay = self.layout
        plan = self._plan(dataset)
        yield self._refine_tasks(plan)
        sequences = []
        for song, seg in plan:
            sequences.append({
                "song": song, "segment": seg["index"],
                "start_frame": seg["start_frame"], "end_frame": seg["end_frame"],
                "frames": seg["end_frame"] - seg["start_frame"],
                "video": str(lay.portrait_dir(self.subject, song) / seg["video"]),
                "motion": str(lay.motion_npz(self.subject, song, seg["index"])),
                "motion_qc": str(lay.motion_qc(self.subject, song, seg["index"])),
            })
        all_segments = sum(len(lay.load_segments(self.subject, s)) for s in lay.list_songs(self.subject))
        write_json_atomic(self.output().path, {
            "subject": self.subject, "sequences": sequences,
            "segments_total": all_segments, "segments_too_short": all_segments - len(sequences),
            "min_sequence_seconds": dataset.min_sequence_seconds,
        })
