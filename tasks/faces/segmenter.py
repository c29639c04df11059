"""Face-stable segments: the crop stage's state machine and the geometry it decides with.

A segment starts where MTCNN finds a face; the box grows by a margin per side, becomes a square
in source pixels kept inside the frame, and stays fixed for the whole segment. Every
`landmark_every` frames the portrait is checked (is a face still there? is any landmark closer
to the portrait border than `edge_fraction` of its size, or does the face box with the forehead
above the brows reach outside the portrait?). When a check fails, the frames since
the last good check are re-checked in order, so the segment ends exactly at the first failing
frame: an edge failure starts a new segment there with a fresh detection, a missing face skips
frames (trying a detection every `landmark_every` frames) until one appears.

Plain code: the detector, the portrait maker and the check are passed in
(`tasks.faces.portrait_video` wires the real ones).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

log = logging.getLogger("singinghead")

# Fixed choices of this stage, recorded in segments.json next to the [crop] section.
FACE_PROB = 0.9          # MTCNN probability for "a face is there"
CHECK_SIZE = 160         # portrait thumbnail for the per-check MTCNN run (face is ~45 % of it)
LANDMARK_SIZE = 256      # portrait downscale for Dlib's 68 landmarks
MAX_REPEAT_GAP = 15      # recorder-dropped frames up to this many are filled by repeating (0.5 s)

# Check verdicts (also the reasons of dropped frames): a landmark too close to the portrait
# border, the face box with its forehead reaching outside the portrait, no face at all.
OK, EDGE, FOREHEAD_OUT, NOFACE = "ok", "edge landmark", "forehead out", "no face"

# Why a segment ended (`cut_reason` of each segments.json row): a failed check (EDGE, FOREHEAD_OUT,
# or LOST_FACE: the face the segment followed is no longer found in its portrait), a recorder gap
# longer than MAX_REPEAT_GAP frames (REPEAT_GAP), or the end of the recording (END_OF_VIDEO).
LOST_FACE, REPEAT_GAP, END_OF_VIDEO = "lost face", "repeat gap", "end of video"
CUT_REASONS = (EDGE, FOREHEAD_OUT, LOST_FACE, REPEAT_GAP, END_OF_VIDEO)
UNRECORDED = "not recorded"   # segments.json written before cut reasons were recorded


def cut_reason_of_verdict(verdict: str) -> str:
    """The cut reason of a segment ended by a failed check with this verdict."""
    return LOST_FACE if verdict == NOFACE else verdict


def cut_reason(segment_row: dict) -> str:
    """A segments.json row's cut reason; UNRECORDED for files written before it was recorded."""
    return str(segment_row.get("cut_reason") or UNRECORDED)


# ----------------------------------------------------------------------------- pure geometry
def square_box(face_box, margin: float, frame_w: int, frame_h: int) -> np.ndarray:
    """Square crop box around a face box, in source pixels, kept inside the frame.

    face_box: (4,) [x0, y0, x1, y1]; the square's side is max(w, h) * (1 + 2 * margin) (capped
    at the frame's shorter side), centred on the face and shifted inside the frame. Corners are
    even integers so 4:2:x chroma planes crop on whole samples. Returns (4,) int64 [x0, y0, x1, y1].
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(face_box, dtype=np.float64).reshape(4))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    limit = min(frame_w, frame_h) // 2 * 2
    side = int(min(max(2, round(side / 2) * 2), limit))
    bx = int(round((cx - side / 2) / 2) * 2)
    by = int(round((cy - side / 2) / 2) * 2)
    bx = min(max(bx, 0), (frame_w - side) // 2 * 2)
    by = min(max(by, 0), (frame_h - side) // 2 * 2)
    return np.array([bx, by, bx + side, by + side], dtype=np.int64)


def landmarks_near_edge(landmarks: np.ndarray, box, edge_fraction: float) -> bool:
    """True when any landmark lies closer to the box border than edge_fraction x box size.

    landmarks: (68, 2) in the same pixels as box (4,) [x0, y0, x1, y1]. Points outside the box
    count as touching it.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    margin_x, margin_y = edge_fraction * (x1 - x0), edge_fraction * (y1 - y0)
    return bool(np.any(lm[:, 0] < x0 + margin_x) or np.any(lm[:, 0] > x1 - margin_x)
                or np.any(lm[:, 1] < y0 + margin_y) or np.any(lm[:, 1] > y1 - margin_y))


# Forehead height above the brows as a fraction of brows-to-chin (hairline to brows is about a
# third of the face, brows to chin two thirds).
FOREHEAD = 0.5


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """The face's box (4,) [x0, y0, x1, y1] with the forehead: the 68 landmarks plus the brows
    moved up along the chin-to-brows axis by FOREHEAD x that distance (the landmarks stop at the
    brows, so a box of the landmarks alone lets forehead and hair leave the portrait)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    up = lm[17:27].mean(axis=0) - lm[8]
    pts = np.concatenate([lm, lm[17:27] + FOREHEAD * up])
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def edge_verdict(landmarks: np.ndarray, box, edge_fraction: float) -> str:
    """EDGE when a landmark is within edge_fraction x box size of the border, else FOREHEAD_OUT
    when the face box with its forehead (face_box) reaches outside the box, else OK."""
    if landmarks_near_edge(landmarks, box, edge_fraction):
        return EDGE
    fx0, fy0, fx1, fy1 = face_box(landmarks)
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    return FOREHEAD_OUT if (fx0 < x0 or fy0 < y0 or fx1 > x1 or fy1 > y1) else OK


def face_leaves_box(landmarks: np.ndarray, box, edge_fraction: float) -> bool:
    """True when edge_verdict is not OK (an edge landmark or the forehead out)."""
    return edge_verdict(landmarks, box, edge_fraction) != OK


def best_face(boxes: np.ndarray, probs: np.ndarray, min_prob: float = FACE_PROB):
    """The most probable face box with prob >= min_prob, or None."""
    keep = np.flatnonzero(probs >= min_prob)
    if keep.size == 0:
        return None
    return boxes[keep[0]]  # detect_faces sorts by probability


# ----------------------------------------------------------------------------- re-segmentation
@dataclass
class Segment:
    index: int
    start_frame: int
    box: np.ndarray
    end_frame: int = -1
    repeated_frames: list = field(default_factory=list)
    cut_reason: str = ""         # one of CUT_REASONS once the segment is closed


class SegmentSink:
    """What the segmenter drives: open a segment, add one output frame, close it, note drops.

    Subclasses call super() in `frame` and `drop`: the base keeps `dropped` {index: reason},
    and a frame that is replayed into a segment after being dropped leaves that record.
    """

    def __init__(self):
        self.dropped: dict[int, str] = {}

    def start(self, seg: Segment) -> None:
        pass

    def frame(self, seg: Segment, prepared, index: int, repeated: bool) -> None:
        self.dropped.pop(index, None)

    def end(self, seg: Segment) -> None:
        pass

    def drop(self, index: int, reason: str) -> None:
        self.dropped[index] = reason

    def dropped_ranges(self) -> list[dict]:
        """Dropped frames as [{'start_frame', 'end_frame' (exclusive), 'reason'}], merged."""
        out: list[dict] = []
        for i in sorted(self.dropped):
            r = self.dropped[i]
            if out and out[-1]["end_frame"] == i and out[-1]["reason"] == r:
                out[-1]["end_frame"] = i + 1
            else:
                out.append({"start_frame": i, "end_frame": i + 1, "reason": r})
        return out


@dataclass
class _Pending:
    index: int
    item: object
    prepared: object
    repeated: bool = False
    verdict: str | None = None


class Segmenter:
    """Split a frame stream into face-stable segments with fixed crop boxes.

    detect(item) -> crop box (4,) or None (a full detection, run at segment starts);
    prepare(item, box) -> the portrait frame (called as soon as a frame arrives, while hot);
    check(item, prepared) -> OK | EDGE | FOREHEAD_OUT | NOFACE (run every `every` frames, and on the frames
    since the last good check when one fails, to find the first failing frame exactly).

    Invariants: each index in [start, end) of a segment reaches sink.frame exactly once, in
    order (recorder gaps of up to max_gap frames as repeats of the previous frame); every other
    index below the frame count reaches sink.drop once; no frame that failed a check is inside
    a segment. At most `every` + 1 items are held at any time.
    """

    def __init__(self, detect, prepare, check, sink: SegmentSink, every: int, max_gap: int = MAX_REPEAT_GAP):
        self.detect, self.prepare, self.check, self.sink = detect, prepare, check, sink
        self.every, self.max_gap = max(1, int(every)), int(max_gap)
        self.replay: deque = deque()
        self.seg: Segment | None = None
        self.pending: list[_Pending] = []
        self.held: list[tuple[int, object]] = []
        self.cursor = 0               # next index expected (set back when frames are replayed)
        self.next_check = 0
        self.last_try: int | None = None
        self.last_fail = None         # NOFACE, EDGE or FOREHEAD_OUT: why the last search try failed
        self.start_now = False
        self.n_segments = 0
        self.frame_count = 0
        self._det_cache: tuple = (None, None)
        self.prev: _Pending | None = None   # the segment's latest real frame (repeated over gaps)

    # -- helpers
    def _verdict(self, p: _Pending) -> str:
        if p.verdict is None:
            p.verdict = self.check(p.item, p.prepared)
        return p.verdict

    def _flush(self, upto: int | None = None) -> None:
        cut = len(self.pending) if upto is None else upto
        for p in self.pending[:cut]:
            self.sink.frame(self.seg, p.prepared, p.index, p.repeated)
            if p.repeated:
                self.seg.repeated_frames.append(p.index)
        self.pending = self.pending[cut:]

    def _close(self, end: int, reason: str) -> None:
        self.seg.end_frame = end
        self.seg.cut_reason = reason
        self.sink.end(self.seg)
        self.seg = None

    def _fail(self) -> None:
        """The latest check failed: end the segment at the first failing pending frame."""
        real = [i for i, p in enumerate(self.pending) if not p.repeated]
        first_bad = next(i for i in real if self._verdict(self.pending[i]) != OK)
        bad = self.pending[first_bad]
        self._flush(first_bad)
        rest = [p for p in self.pending if not p.repeated]   # bad first; repeats are re-derived
        self.pending = []
        self._close(bad.index, cut_reason_of_verdict(bad.verdict))
        if bad.verdict == NOFACE:
            self.sink.drop(bad.index, NOFACE)
            rest = rest[1:]
            self.cursor = bad.index + 1
            self.last_try, self.last_fail = bad.index, NOFACE
        else:   # edge landmark or forehead out: a fresh detection on the failing frame itself
            self.cursor = bad.index
            self.last_try, self.last_fail = None, None
        for p in reversed(rest):
            self.replay.appendleft((p.index, p.item))

    def _detect(self, idx: int, item):
        # One-entry cache: the walk-back and the start both ask about the same frame.
        if self._det_cache[0] != idx:
            self._det_cache = (idx, self.detect(item))
        return self._det_cache[1]

    def _try_start(self, idx: int, item) -> bool:
        self.last_try = idx
        box = self._detect(idx, item)
        if box is None:
            self.last_fail = NOFACE
            return False
        prepared = self.prepare(item, box)
        v = self.check(item, prepared)
        if v != OK:
            self.last_fail = v
            return False
        self.seg = Segment(index=self.n_segments, start_frame=idx, box=np.asarray(box))
        self.n_segments += 1
        self.sink.start(self.seg)
        self.prev = _Pending(idx, item, prepared, verdict=OK)
        self.pending = [self.prev]
        self._flush()
        self.next_check = idx + self.every
        return True

    def _search(self, idx: int, item) -> None:
        if not self.start_now and self.last_try is not None and idx - self.last_try < self.every:
            self.held.append((idx, item))
            return
        forced, self.start_now = self.start_now, False
        held, self.held = self.held, []
        came_from = self.last_fail
        if forced:
            # Walk-back already found a face here; start (or fail) without looking further back.
            if not self._try_start(idx, item):
                self.sink.drop(idx, self.last_fail)
            return
        # Only a face that reappears after NOFACE is worth a look back into the held frames.
        earliest = len(held)
        if came_from == NOFACE and held and self._detect(idx, item) is not None:
            while earliest > 0 and self._detect(*held[earliest - 1]) is not None:
                earliest -= 1
        if earliest < len(held):
            for h_idx, _ in held[:earliest]:
                self.sink.drop(h_idx, NOFACE)
            for h in reversed(held[earliest:] + [(idx, item)]):
                self.replay.appendleft(h)
            self.cursor = held[earliest][0]
            self.start_now = True
            return
        for h_idx, _ in held:
            self.sink.drop(h_idx, came_from or NOFACE)
        if not self._try_start(idx, item):
            self.sink.drop(idx, self.last_fail)

    # -- the loop
    def run(self, frames: Iterable[tuple[int, object]]) -> int:
        """Consume (index, item) pairs with increasing indices; returns the frame count."""
        source = iter(frames)
        while True:
            if self.replay:
                nxt = self.replay.popleft()
            else:
                nxt = next(source, None)
            if nxt is None:
                if self._finish():
                    continue
                break
            idx, item = nxt
            self.frame_count = max(self.frame_count, idx + 1)
            if self._gap(idx, item):
                continue
            if self.seg is None:
                self._search(idx, item)
                continue
            self.prev = _Pending(idx, item, self.prepare(item, self.seg.box))
            self.pending.append(self.prev)
            if idx >= self.next_check:
                if self._verdict(self.pending[-1]) == OK:
                    self._flush()
                    self.next_check = idx + self.every
                else:
                    self._fail()
        if self.held and self.last_fail == NOFACE:
            # The stream ended between two tries: try its last frame (walking back from it).
            idx, item = self.held.pop()
            self.last_try = None if not self.held else idx - self.every
            self._search(idx, item)
            if self.replay or self.seg is not None:
                return self.run(iter(()))
        for h_idx, _ in self.held:
            self.sink.drop(h_idx, self.last_fail or NOFACE)
        self.held = []
        return self.frame_count

    def _gap(self, idx: int, item) -> bool:
        """Frames the recorder dropped before idx: repeat the last frame over short gaps inside a
        segment, otherwise end the segment and report them as missing. True: item requeued."""
        gap = idx - self.cursor
        if gap <= 0:
            self.cursor = max(self.cursor, idx + 1)
            return False
        if self.seg is not None and gap <= self.max_gap:
            prev = self.prev
            for missing in range(idx - gap, idx):
                self.pending.append(_Pending(missing, prev.item, prev.prepared, repeated=True))
            self.cursor = idx + 1
            return False
        if self.seg is not None:
            if self._unchecked() and self._verdict(self._last_real()) != OK:
                # Replays the frames after the failure, then this one: its gap comes round again.
                self.replay.appendleft((idx, item))
                self._fail()
                return True
            self._flush()
            self._close(idx - gap, REPEAT_GAP)
            self.last_try, self.last_fail = None, None
        for missing in range(idx - gap, idx):
            self.sink.drop(missing, MISSING)
        self.cursor = idx + 1
        return False

    def _unchecked(self) -> bool:
        return any(p.verdict is None and not p.repeated for p in self.pending)

    def _last_real(self) -> _Pending:
        return [p for p in self.pending if not p.repeated][-1]

    def _finish(self) -> bool:
        """End of stream: frames since the last check must pass one too. True if replaying."""
        if self.seg is None:
            return False
        if self._unchecked() and self._verdict(self._last_real()) != OK:
            self._fail()
            return bool(self.replay)
        # trailing repeats (a gap right before the end cannot happen: gaps need a later frame)
        self._flush()
        self._close(self.cursor, END_OF_VIDEO)
        return False


MISSING = "frames missing from the recording"


# ----------------------------------------------------------------------------- frames -> portraits
