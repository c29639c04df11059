"""A long recorder gap right after the face was lost, before any check saw it (tasks.faces.segmenter):
the segment still ends at the first faceless frame, the frame after the gap is handled once, in order,
and a face there starts the next segment at it. Each index is framed at most once.

(The detector here finds a box on every frame, as a full-frame detection may where the portrait check
then finds no face: the walk back then replays frames from before the gap, and the gap's frames are
reported missing twice, which the sink's {index: reason} record absorbs.)"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.faces.segmenter import MAX_REPEAT_GAP, MISSING, NOFACE, OK, Segmenter, SegmentSink


class Sink(SegmentSink):
    def __init__(self):
        super().__init__()
        self.segments, self.frames = [], []

    def frame(self, seg, prepared, index, repeated):
        super().frame(seg, prepared, index, repeated)
        self.frames.append(index)

    def end(self, seg):
        self.segments.append((seg.start_frame, seg.end_frame))


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
    assert sink.segments == [(0, lost), (after, end)]
    assert sink.frames == list(range(lost)) + list(range(after, end))
    assert sink.dropped == {**dict.fromkeys(range(lost, n), NOFACE),
                            **dict.fromkeys(range(n, after), MISSING)}
