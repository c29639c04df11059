"""Crop segmenter edges (tasks.faces.segmenter): segments are numbered 0, 1, 2, ...; a long recorder gap
right after the face was lost, before any check saw it, still ends the segment at the first faceless frame,
the frame after the gap is handled once, in order, and a face there starts the next segment at it; a short
gap right after a long one is still filled; the face box is the landmarks plus every lifted brow point.

(In the long-gap test the detector finds a box on every frame, as a full-frame detection may where the
portrait check then finds no face: the walk back then replays frames from before the gap, and the gap's
frames are reported missing twice, which the sink's {index: reason} record absorbs.)"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.faces.segmenter import (EDGE, FOREHEAD, MAX_REPEAT_GAP, MISSING, NOFACE, OK, Segmenter,
                                   SegmentSink, face_box)


class Sink(SegmentSink):
    def __init__(self):
        super().__init__()
        self.segments, self.frames, self.indices, self.repeated = [], [], [], []

    def frame(self, seg, prepared, index, repeated):
        super().frame(seg, prepared, index, repeated)
        self.frames.append(index)

    def end(self, seg):
        self.segments.append((seg.start_frame, seg.end_frame))
        self.indices.append(seg.index)
        self.repeated.append(seg.repeated_frames)


@settings(max_examples=40, deadline=None)
@given(every=st.integers(2, 8), data=st.data())
@example(every=6, data=None)
def test_a_face_lost_just_before_a_long_gap_and_back_after_it(every, data):
    # frames 0..n-1 recorded, the face gone from `lost` (after the last check, so unchecked), then a gap
    # of MAX_REPEAT_GAP + 1 frames, then `tail` frames with the face back
    if data is None:
        lost, extra, tail = 7, 0, 3
    else:
        last_check = data.draw(st.integers(0, 4)) * every
        lost = last_check + data.draw(st.integers(1, every - 1))
        extra = data.draw(st.integers(0, every - 1 - (lost - last_check)))   # no check frame in [lost, n)
        tail = data.draw(st.integers(1, 12))
    n = lost + 1 + extra
    after = n + MAX_REPEAT_GAP + 1
    end = after + tail
    present = lambda t: not lost <= t < after                      # noqa: E731
    sink = Sink()
    Segmenter(lambda t: np.array([0, 0, 10, 10]), lambda t, box: t,
              lambda t, p: OK if present(t) else NOFACE, sink, every).run(
        (t, t) for t in range(end) if not n <= t < after)
    assert sink.segments == [(0, lost), (after, end)] and sink.indices == [0, 1]
    assert sink.frames == list(range(lost)) + list(range(after, end))
    assert sink.dropped == {**dict.fromkeys(range(lost, n), NOFACE),
                            **dict.fromkeys(range(n, after), MISSING)}


def test_a_one_frame_gap_right_after_a_long_one_is_repeated():
    # frames 10..29 missing (a long gap: the segment ends), 30 starts a new one, 31 missing (repeated)
    indices = [t for t in range(41) if not (10 <= t < 30 or t == 31)]
    sink = Sink()
    n = Segmenter(lambda t: np.array([0, 0, 10, 10]), lambda t, box: t, lambda t, p: OK, sink, 6).run(
        (t, t) for t in indices)
    assert n == 41 and sink.segments == [(0, 10), (30, 41)] and sink.indices == [0, 1]
    assert sink.repeated == [[], [31]] and sink.frames == list(range(10)) + list(range(30, 41))
    assert sink.dropped == dict.fromkeys(range(10, 30), MISSING)


def _face_box_by_hand(lm):
    up = lm[17:27].mean(axis=0) - lm[8]                 # chin -> mean of the 10 brow points
    pts = np.concatenate([lm, lm[17:27] + FOREHEAD * up])
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tilt=st.floats(-1.2, 1.2))
@example(seed=0, tilt=0.9)
def test_the_face_box_holds_every_landmark_and_every_lifted_brow_point(seed, tilt):
    # a face-like layout (brows above the chin, 68 points) turned by `tilt` radians, jittered
    rng = np.random.default_rng(seed)
    lm = np.column_stack([np.linspace(-60, 60, 68), np.full(68, 20.0)])
    lm[17:27] = np.column_stack([np.linspace(-50, 50, 10), -40 + 8 * np.abs(np.linspace(-1, 1, 10))])
    lm[8] = (0.0, 80.0)
    lm += rng.normal(scale=4.0, size=lm.shape)
    c, s = np.cos(tilt), np.sin(tilt)
    lm = lm @ np.array([[c, s], [-s, c]]) + 200.0
    np.testing.assert_allclose(face_box(lm), _face_box_by_hand(lm), rtol=0, atol=1e-9)


def _segment(indices, verdict=lambda t: OK, every=6):
    sink = Sink()
    n = Segmenter(lambda t: np.array([0, 0, 10, 10]), lambda t, box: t, lambda t, p: verdict(t), sink,
                  every).run((t, t) for t in indices)
    return n, sink


def test_an_empty_stream_has_no_frames_and_no_segments():
    n, sink = _segment([])
    assert n == 0 and sink.segments == [] and sink.dropped == {}


def test_two_short_gaps_one_frame_apart_are_both_repeated():
    n, sink = _segment([t for t in range(20) if t not in (5, 7)])
    assert n == 20 and sink.segments == [(0, 20)] and sink.repeated == [[5, 7]]
    assert sink.frames == list(range(20)) and sink.dropped == {}


def test_a_frame_missing_right_after_a_face_lost_on_a_check_is_reported_missing():
    # the check at 12 finds no face; frame 13 was never recorded
    n, sink = _segment([t for t in range(20) if t != 13], verdict=lambda t: OK if t < 12 else NOFACE)
    assert n == 20 and sink.segments == [(0, 12)]
    assert sink.dropped == {12: NOFACE, 13: MISSING, **dict.fromkeys(range(14, 20), NOFACE)}


@pytest.mark.parametrize("verdict", [EDGE, NOFACE])
def test_frames_failing_after_the_last_check_are_all_accounted_for_at_the_end(verdict):
    # checks at 0, 6, 12; frames 14..17 fail and the stream ends at 17 before the next check
    n, sink = _segment(range(18), verdict=lambda t: OK if t < 14 else verdict)
    assert n == 18 and sink.segments == [(0, 14)] and sink.frames == list(range(14))
    assert sink.dropped == dict.fromkeys(range(14, 18), verdict)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
@example(seed=41)  # point 27, lifted, would widen the box: it must not count
def test_the_face_box_of_scattered_points_holds_exactly_the_landmarks_and_the_lifted_brows(seed):
    # no face layout at all: any of the 68 points may be the extreme one (the nose's 27 next to the brows)
    lm = np.random.default_rng(seed).uniform(0, 100, size=(68, 2))
    np.testing.assert_allclose(face_box(lm), _face_box_by_hand(lm), rtol=0, atol=1e-9)
