"""The crop segmenter's timing rules as properties (tasks.faces.segmenter): the check (Dlib landmarks +
MTCNN on the portrait) runs on every `every`-th frame of a segment counted from its start and on its last
frame; a face-less stretch is searched every `every` frames; recorder gaps of up to MAX_REPEAT_GAP (15)
frames inside a segment are filled with repeats, longer ones end the segment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks import config
from tasks.common.settings import CropSettings
from tasks.faces.segmenter import (EDGE, FACE_PROB, FOREHEAD_OUT, MAX_REPEAT_GAP, MISSING, NOFACE, OK,
                                   SegmentSink, Segmenter, best_face, edge_verdict, face_box, landmarks_near_edge,
                                   square_box)


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
@example(gap=MAX_REPEAT_GAP, at=7)
@example(gap=MAX_REPEAT_GAP + 1, at=7)
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


@settings(max_examples=60, deadline=None)
@given(lost=st.integers(1, 30), extra=st.integers(0, 12), tail=st.integers(1, 10), every=st.integers(1, 8))
def test_a_face_back_before_the_end_is_found_at_its_first_frame(lost, extra, tail, every):
    """The face is gone over [lost, back) (at least `every` frames, so a check sees it) and the stream
    ends `tail` frames after it is back, often between two detection tries: the last frame is tried
    and the walk back finds the first one."""
    back = lost + every + extra
    n, sink, _, _ = _run(range(back + tail), present=lambda t: not lost <= t < back, every=every)
    assert n == back + tail
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, lost), (back, n)]
    assert sink.dropped == dict.fromkeys(range(lost, back), NOFACE)


def test_landmarks_in_any_border_band_touch_the_box():
    """Each of the four bands (edge_fraction x the box's width or height) counts, and only the band: a
    wide box, so that a band taken from the wrong side's size shows."""
    box = (100, 50, 500, 250)              # 400 x 200: bands 40 px left/right, 20 px top/bottom at 0.1
    inner = np.array([[300.0, 150.0]])
    band = {"left": [139, 150], "right": [461, 150], "top": [300, 69], "bottom": [300, 231]}
    clear = {"left": [141, 150], "right": [459, 150], "top": [300, 71], "bottom": [300, 229]}
    on = {"left": [140, 150], "right": [460, 150], "top": [300, 70], "bottom": [300, 230]}   # at the band's edge
    for side in band:
        assert landmarks_near_edge(np.vstack([inner, [band[side]]]), box, 0.1), side
        assert not landmarks_near_edge(np.vstack([inner, [clear[side]]]), box, 0.1), side
        assert not landmarks_near_edge(np.vstack([inner, [on[side]]]), box, 0.1), side   # "closer than"


@settings(max_examples=150, deadline=None)
@given(w=st.integers(64, 1999), h=st.integers(64, 1999), fx=st.floats(0.0, 1.0), fy=st.floats(0.0, 1.0),
       fw=st.floats(2.0, 900.0), fh=st.floats(2.0, 900.0), margin=st.floats(0.0, 1.0))
@example(w=100, h=100, fx=0.5, fy=0.5, fw=0.4, fh=0.4, margin=0.0)        # a speck: the 2 px minimum
def test_square_box_is_even_inside_the_frame_and_as_centred_as_it_can_be(w, h, fx, fy, fw, fh, margin):
    """Any face box, any frame (odd sizes too): the crop is a square with even corners inside the frame,
    of side max(face w, h) x (1 + 2 margin) rounded to even and capped at the frame's shorter side
    (rounded down to even), centred on the face unless that leaves the frame, then against the border."""
    cx, cy = fx * w, fy * h
    face = [cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2]
    x0, y0, x1, y1 = (int(v) for v in square_box(face, margin, w, h))
    side = x1 - x0
    assert y1 - y0 == side and all(v % 2 == 0 for v in (x0, y0, x1, y1))
    assert 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h
    want = max(face[2] - face[0], face[3] - face[1]) * (1 + 2 * margin)
    assert side == min(max(2, 2 * round(want / 2)), min(w, h) - min(w, h) % 2)
    # centre: the face's, moved the least that keeps the square inside (2 px: even corners)
    for lo, hi, c, size in ((x0, x1, cx, w), (y0, y1, cy, h)):
        assert abs((lo + hi) / 2 - min(max(c, side / 2), size - side / 2)) <= 2.0


def _run_verdicts(n, verdict, every=6, missing=()):
    """Every detection finds a box; the check's verdict is verdict(t). Returns (sink, detected)."""
    detected, sink = [], Sink()

    def detect(t):
        detected.append(t)
        return np.array([0, 0, 10, 10])

    Segmenter(detect, lambda t, box: (t, box), lambda t, p: verdict(t), sink, every).run(
        (t, t) for t in range(n) if t not in missing)
    return sink, detected


@settings(max_examples=40, deadline=None)
@given(lost=st.integers(1, 40), extra=st.integers(0, 12), every=st.integers(1, 8), tail=st.integers(0, 4))
def test_a_face_lost_after_the_last_check_ends_the_segment_at_the_first_faceless_frame(lost, extra, every, tail):
    """The face is gone from `lost` on, whether or not a check frame comes before the end (or before a
    long recorder gap): the frames since the last check are checked too, the segment ends at `lost`, the
    rest is dropped, and the next detection is tried `every` frames after the failing frame."""
    n = lost + 1 + extra
    gap = MAX_REPEAT_GAP + 1 if tail else 0
    missing = set(range(n, n + gap))
    sink, detected = _run_verdicts(n + gap + tail, lambda t: NOFACE if t >= lost else OK, every, missing)
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, lost)]
    assert {t: r for t, r in sink.dropped.items() if r != MISSING} == dict.fromkeys(
        [t for t in range(lost, n + gap + tail) if t not in missing], NOFACE)
    assert lost not in detected[1:]                         # the failed check was the try at `lost`


def test_dropped_ranges_merge_only_adjacent_frames_with_the_same_reason():
    sink = SegmentSink()
    for i in (3, 4, 5, 8, 9):
        sink.drop(i, NOFACE)
    for i in (10, 11):
        sink.drop(i, MISSING)
    sink.drop(12, EDGE)
    sink.drop(13, NOFACE)
    assert sink.dropped_ranges() == [{"start_frame": 3, "end_frame": 6, "reason": NOFACE},
                                     {"start_frame": 8, "end_frame": 10, "reason": NOFACE},
                                     {"start_frame": 10, "end_frame": 12, "reason": MISSING},
                                     {"start_frame": 12, "end_frame": 13, "reason": EDGE},
                                     {"start_frame": 13, "end_frame": 14, "reason": NOFACE}]


@settings(max_examples=40, deadline=None)
@given(good=st.integers(1, 40), every=st.integers(1, 8), tail=st.integers(0, 10))
def test_after_failed_starts_a_segment_starts_at_the_next_try_only(good, every, tail):
    """A fresh detection that fails its check (EDGE: the face at the frame's border) is tried again
    every `every` frames, without a look back (only a face back after NO FACE is looked for in the
    frames between tries); frames before the first passing try are dropped as EDGE, also when the
    stream ends before that try."""
    n = good + tail + 1
    sink, detected = _run_verdicts(n, lambda t: EDGE if t < good else OK, every)
    first = -(-good // every) * every                     # the first try at or after `good`
    assert detected == list(range(0, min(first, n - 1) + 1, every))
    if first < n:
        assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(first, n)]
    else:
        assert sink.segments == []
    assert sink.dropped == dict.fromkeys(range(min(first, n)), EDGE)


def test_a_recorder_gap_while_searching_does_not_delay_the_next_try():
    present = lambda t: t >= 40  # noqa: E731
    missing = set(range(12, 34))
    sink, detected = Sink(), []

    def detect(t):
        detected.append(t)
        return np.array([0, 0, 10, 10]) if present(t) else None

    seg = Segmenter(detect, lambda t, b: (t, b), lambda t, p: OK if present(t) else NOFACE, sink, 6)
    held = []

    def frames():
        for t in range(80):
            if t not in missing:
                held.append(len(seg.held))
                yield t, t

    seg.run(frames())
    assert detected[:4] == [0, 6, 34, 40]                 # the first frame after the gap is a try
    assert max(held) <= 6
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(40, 80)]
    assert sink.dropped == {**dict.fromkeys(range(12), NOFACE), **dict.fromkeys(range(12, 34), MISSING),
                            **dict.fromkeys(range(34, 40), NOFACE)}


def test_best_face_takes_the_first_box_at_or_above_the_probability():
    boxes = np.arange(12.0).reshape(3, 4)
    # detect_faces sorts by probability: the first one kept is taken
    np.testing.assert_array_equal(best_face(boxes, np.array([0.95, 0.99, 0.2])), boxes[0])
    np.testing.assert_array_equal(best_face(boxes, np.array([0.5, 0.9, 0.95])), boxes[1])
    assert best_face(boxes, np.array([0.89, 0.5, 0.1])) is None
    np.testing.assert_array_equal(best_face(boxes, np.array([0.5, 0.6, 0.7]), min_prob=0.7), boxes[2])
    assert FACE_PROB == 0.9


@pytest.mark.parametrize("quarter", [0, 1, 2, 3])
def test_forehead_out_on_every_side(quarter):
    """A face turned by quarter x 90 degrees, moved towards the side its forehead points to: the landmarks
    stay clear of the border band, the forehead leaves the box."""
    lm = np.zeros((68, 2))
    lm[:, 0] = np.linspace(150, 250, 68)
    lm[:, 1] = 150.0
    lm[17:27, 1] = 100.0
    lm[8, 1] = 200.0                           # brows at 100, chin at 200: forehead up to 50
    a = quarter * np.pi / 2
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    turned = (lm - 200.0) @ rot.T + 200.0
    up = rot @ np.array([0.0, -1.0])
    box = (0, 0, 400, 400)
    assert edge_verdict(turned, box, 0.07) == OK
    assert edge_verdict(turned + 70 * up, box, 0.07) == FOREHEAD_OUT
    # the forehead exactly on the border is still inside (the face box is 50 px from it at rest)
    assert edge_verdict(turned + 50 * up, box, 0.07) == OK


@settings(max_examples=30, deadline=None)
@given(every=st.integers(2, 8), data=st.data())
def test_a_stream_too_short_for_a_second_try_still_finds_a_late_face(every, data):
    """No face at frame 0 (the first try), the face from `back` on, and the stream ends before the
    second try: its last frame is tried and the face found from `back`."""
    back = data.draw(st.integers(1, every - 1))
    n = data.draw(st.integers(back + 1, every))
    _, sink, _, _ = _run(range(n), present=lambda t: t >= back, every=every)
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(back, n)]
    assert sink.dropped == dict.fromkeys(range(back), NOFACE)


def test_after_a_filled_gap_the_due_check_runs_on_the_next_real_frame():
    """Frames 5-7 missing (repeated): the check due at 6 runs at 8, the next ones every 6 frames from
    there, and the last frame is checked at the end."""
    _, sink, checked, _ = _run([t for t in range(31) if t not in (5, 6, 7)], every=6)
    assert checked == [0, 8, 14, 20, 26, 30]
    assert sink.segments[0].repeated_frames == [5, 6, 7]


def test_face_box_lifts_each_brow_point_by_half_the_chin_to_brows_distance():
    lm = np.zeros((68, 2))
    lm[:, 0] = np.linspace(150, 250, 68)
    lm[:, 1] = 150.0
    lm[17:27, 1] = [90, 100, 100, 100, 100, 100, 100, 100, 100, 85]   # arched: the outer brow ends highest
    lm[8, 1] = 200.0
    up = lm[17:27].mean(axis=0) - lm[8]                                 # chin -> mean brow
    x0, y0, x1, y1 = face_box(lm)
    assert y0 == pytest.approx(85 + 0.5 * up[1]) and y1 == 200.0
    assert (x0, x1) == (pytest.approx(min(150, (lm[17:27, 0] + 0.5 * up[0]).min())), 250.0)


def test_a_stream_that_starts_late_reports_the_frames_before_it_missing():
    n, sink, _, _ = _run(range(3, 20))
    assert n == 20 and [(s.start_frame, s.end_frame) for s in sink.segments] == [(3, 20)]
    assert sink.dropped == dict.fromkeys(range(3), MISSING)


def test_items_are_passed_through_untouched_and_never_taken_for_indices():
    """The walk back replays (index, item) pairs: items are frames, not indices."""
    present = lambda t: t >= 9  # noqa: E731
    sink, seen = Sink(), []

    def detect(item):
        seen.append(item)
        return np.array([0, 0, 10, 10]) if present(item["t"]) else None

    Segmenter(detect, lambda item, box: (item["t"], box), lambda item, p: OK if present(item["t"]) else NOFACE,
              sink, 6).run((t, {"t": t}) for t in range(30))
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(9, 30)]
    assert [i for i, _ in sink.frames[0]] == list(range(9, 30))
