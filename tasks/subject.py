"""Everything one subject contributes to the dataset, as one Luigi task.

`SubjectOutputs` is what the dataset assembly depends on per subject; `pipeline.BuildSubject`
is the user-facing root for one subject. Refinement tasks are dynamic dependencies because the
number of segments is only known once the crop stage has run.
"""
from __future__ import annotations

import luigi

from tasks import layout
from tasks.common.atomic import write_json_atomic
from tasks.bgm import SeparateBGM
from tasks.config import dataset
from tasks.crop import CropPortraits
from tasks.refine import RefineMotion
from tasks.scan_fit import FitScanShape
from tasks.segment_audio import SegmentAudio


class SubjectOutputs(luigi.Task):
    subject = luigi.Parameter()

    def requires(self):
        songs = layout.list_songs(self.subject)
        reqs = {"scan_shape": FitScanShape(subject=self.subject)}
        for song in songs:
            reqs[f"crop/{song}"] = CropPortraits(subject=self.subject, song=song)
            reqs[f"bgm/{song}"] = SeparateBGM(subject=self.subject, song=song)
            reqs[f"audio/{song}"] = SegmentAudio(subject=self.subject, song=song)
        return reqs

    def output(self):
        return luigi.LocalTarget(str(layout.subject_done(self.subject)))

    def run(self):
        cfg = dataset()
        plan = layout.usable_plan(self.subject, cfg.fps, cfg.min_sequence_seconds)
        yield [RefineMotion(subject=self.subject, song=song, segment=seg["index"]) for song, seg in plan]
        sequences = []
        for song, seg in plan:
            sequences.append({
                "song": song, "segment": seg["index"],
                "start_frame": seg["start_frame"], "end_frame": seg["end_frame"],
                "frames": seg["end_frame"] - seg["start_frame"],
                "video": str(layout.portrait_dir(self.subject, song) / seg["video"]),
                "motion": str(layout.motion_npz(self.subject, song, seg["index"])),
                "motion_qc": str(layout.motion_qc(self.subject, song, seg["index"])),
            })
        all_segments = sum(len(layout.load_segments(self.subject, s)) for s in layout.list_songs(self.subject))
        write_json_atomic(self.output().path, {
            "subject": self.subject, "sequences": sequences,
            "segments_total": all_segments, "segments_too_short": all_segments - len(sequences),
            "min_sequence_seconds": cfg.min_sequence_seconds,
        })
