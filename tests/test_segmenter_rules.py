"""The crop segmenter's timing rules as properties (tasks.faces.segmenter): the check (Dlib landmarks +
MTCNN on the portrait) runs on every `every`-th frame of a segment counted from its start and on its last
frame; a face-less stretch is searched every `every` frames; recorder gaps of up to MAX_REPEAT_GAP (15)
frames inside a segment are filled with repeats, longer ones end the segment."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import config
from tasks.common.settings import CropSettings
from tasks.faces.segmenter import MAX_REPEAT_GAP, MISSING, NOFACE, OK, SegmentSink, Segmenter


class Sink(SegmentSink):
    def __init__(self):
        super().__init__()
        self.segments, self.frames = [], {}

    def start(self, seg):
        self.frames[seg.index] = []

    def frame(self, seg, prepared, index, repeated):
        super().frame(seg, prepared, index, repeated)
        self.frames[seg.index].append((index, repeated))

    def end(self, seg):
        self.segments.append(seg)


def _run(indices, present=lambda t: True, every=6, max_gap=MAX_REPEAT_GAP):
    checked, detected, sink = [], [], Sink()

    def detect(t):
        detected.append(t)
        return np.array([0, 0, 10, 10]) if present(t) else None

    def check(t, prepared):
        checked.append(t)
        return OK if present(t) else NOFACE

    n = Segmenter(detect, lambda t, box: (t, box), check, sink, every, max_gap).run((t, t) for t in indices)
    return n, sink, checked, detected


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 90), every=st.integers(1, 10))
def test_checks_land_on_every_nth_frame_and_the_last(n, every):
    _, sink, checked, detected = _run(range(n), every=every)
    want = list(range(0, n, every))
    if want[-1] != n - 1:
        want.append(n - 1)  # the frames after the last check are checked at the end
    assert checked == want
    assert detected == [0]
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, n)]


def test_the_shipped_rate_checks_frames_0_6_12():
    every = config.read(CropSettings).landmark_every  # luigi.cfg as shipped
    assert every == CropSettings().landmark_every == 6
    _, _, checked, _ = _run(range(61), every=every)
    assert checked == list(range(0, 61, 6))


@settings(max_examples=40, deadline=None)
@given(absent=st.integers(1, 60), every=st.integers(1, 8))
def test_without_a_face_a_detection_is_tried_every_nth_frame(absent, every):
    n = absent + 20
    _, sink, _, detected = _run(range(n), present=lambda t: t >= absent, every=every)
    found = next(k for k, t in enumerate(detected) if t >= absent)
    assert detected[:found] == list(range(0, absent, every))  # the tries before the face is back
    assert detected[found] == (absent + every - 1) // every * every  # the first try after it
    # the face is found again at its first frame (the walk back over the held frames finds it)
    assert [s.start_frame for s in sink.segments] == [absent]
    assert sorted(sink.dropped) == list(range(absent))


@settings(max_examples=40, deadline=None)
@given(gap=st.integers(1, 2 * MAX_REPEAT_GAP), at=st.integers(1, 40))
def test_gaps_up_to_15_frames_are_repeated_longer_ones_split(gap, at):
    assert MAX_REPEAT_GAP == 15  # the documented 0.5 s at 30 fps
    indices = [t for t in range(at + gap + 30) if not at <= t < at + gap]
    n, sink, _, _ = _run(indices)
    missing = list(range(at, at + gap))
    if gap <= 15:
        assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, n)]
        assert sink.segments[0].repeated_frames == missing
        assert [i for i, rep in sink.frames[0] if rep] == missing
        assert not sink.dropped
    else:
        assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, at), (at + gap, n)]
        assert sink.dropped == dict.fromkeys(missing, MISSING)
