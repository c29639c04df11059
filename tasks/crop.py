"""Crop stage: the 4K colour track -> face-stable 1024x1024 portrait segments.

A segment starts where MTCNN finds a face (on a frame downscaled to `[crop] detect_width`); the
box grows by `[crop] margin` per side, becomes a square in source pixels kept inside the frame,
and stays fixed for the whole segment. Every `[crop] landmark_every` frames the portrait is
checked: MTCNN on a small thumbnail (is a face still there?) and Dlib's 68 landmarks (is any
landmark closer to the portrait border than `[crop] edge_fraction` of its size?). When a check
fails, the frames since the last good check are re-checked in order, so the segment ends exactly
at the first failing frame: an edge failure starts a new segment there with a fresh detection, a
missing face skips frames (trying a detection every `landmark_every` frames) until one appears.

Speed: decoding the 4K MJPEG and encoding the H.264 output are the real costs. The crop works on
the decoded YUV planes while the frame is cache-hot (no RGB conversion of the 4K frame: the Y
plane is cropped and resized, the 4:2:2 chroma planes straight to 4:2:0), and a second thread
runs the encoder, fed through a small bounded queue (PyAV releases the GIL in both codecs).
Memory stays bounded: at most `landmark_every` + 1 decoded frames are held, whatever the length.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import luigi
import numpy as np

from tasks import layout
from tasks.common.atomic import remove_stale_temps, write_json_atomic
from tasks.config import crop as crop_config
from tasks.common.provenance import recorded_params

log = logging.getLogger("singinghead")

# Fixed choices of this stage, recorded in segments.json next to the [crop] section.
FACE_PROB = 0.9          # MTCNN probability for "a face is there"
CHECK_SIZE = 160         # portrait thumbnail for the per-check MTCNN run (face is ~45 % of it)
LANDMARK_SIZE = 256      # portrait downscale for Dlib's 68 landmarks
MAX_REPEAT_GAP = 15      # recorder-dropped frames up to this many are filled by repeating (0.5 s)
QUEUE_FRAMES = 8         # encoder queue depth (8 x 1.5 MB at 1024^2)

OK, EDGE, NOFACE = "ok", "edge", "no face"


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
    check(item, prepared) -> OK | EDGE | NOFACE (run every `every` frames, and on the frames
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
        self.last_fail = None         # NOFACE or EDGE: why the last search try failed
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

    def _close(self, end: int) -> None:
        self.seg.end_frame = end
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
        self._close(bad.index)
        if bad.verdict == NOFACE:
            self.sink.drop(bad.index, NOFACE)
            rest = rest[1:]
            self.cursor = bad.index + 1
            self.last_try, self.last_fail = bad.index, NOFACE
        else:   # edge: a fresh detection on the failing frame itself
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
            self._close(idx - gap)
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
        self._close(self.cursor)
        return False


MISSING = "frames missing from the recording"


# ----------------------------------------------------------------------------- frames -> portraits
# BT.601 full range (JPEG) -> limited range (what H.264 players assume), as lookup tables.
_LUT_Y = np.clip(np.round(16 + np.arange(256) * 219 / 255), 0, 255).astype(np.uint8)
_LUT_C = np.clip(np.round(128 + (np.arange(256) - 128) * 224 / 255), 0, 255).astype(np.uint8)
_PLANAR = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p"}


def _resize(plane: np.ndarray, size: int) -> np.ndarray:
    # INTER_LINEAR is ~4x faster than INTER_AREA; for the usual 1.2-2x shrink it aliases little.
    # Beyond 2x, INTER_AREA averages properly.
    interp = cv2.INTER_AREA if plane.shape[0] > 2 * size else cv2.INTER_LINEAR
    return cv2.resize(plane, (size, size), interpolation=interp)


def crop_to_i420(frame, box, size: int) -> np.ndarray:
    """Crop a decoded frame to box and scale it to a size x size I420 buffer (BT.601 limited range).

    frame: av.VideoFrame (planar YUV is cropped plane by plane without an RGB round trip; other
    formats are converted to yuv444p first). box: (4,) even ints [x0, y0, x1, y1] in source
    pixels. Returns (size * 3 // 2, size) uint8: Y (size, size), then U and V (size/2, size/2).
    """
    from tasks.media.video_io import frame_planes, is_full_range
    if frame.format.name not in _PLANAR:
        frame = frame.reformat(format="yuv444p")
    full = is_full_range(frame)
    planes = frame_planes(frame)
    x0, y0, x1, y1 = (int(v) for v in box)
    out = np.empty((size * 3 // 2, size), np.uint8)
    h, w = planes[0].shape
    y = _resize(planes[0][y0:y1, x0:x1], size)
    out[:size] = cv2.LUT(y, _LUT_Y) if full else y
    half = size // 2
    for k, plane in enumerate(planes[1:3]):
        sy, sx = h // plane.shape[0], w // plane.shape[1]   # chroma subsampling factors
        c = _resize(plane[y0 // sy:y1 // sy, x0 // sx:x1 // sx], half)
        if full:
            c = cv2.LUT(c, _LUT_C)
        out[size + k * half // 2: size + (k + 1) * half // 2] = c.reshape(half // 2, size)
    return out


def i420_thumbnail_rgb(i420: np.ndarray, size: int) -> np.ndarray:
    """(S*3/2, S) I420 -> (size, size, 3) RGB, downscaled plane by plane before the conversion."""
    s = i420.shape[1]
    half = s // 2
    y = cv2.resize(i420[:s], (size, size), interpolation=cv2.INTER_AREA)
    q = (size // 2, size // 2)
    u = cv2.resize(i420[s:s + half // 2].reshape(half, half), q, interpolation=cv2.INTER_AREA)
    v = cv2.resize(i420[s + half // 2:].reshape(half, half), q, interpolation=cv2.INTER_AREA)
    small = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(size * 3 // 2, size)
    return cv2.cvtColor(small, cv2.COLOR_YUV2RGB_I420)


class FaceChecks:
    """detect / prepare / check for the Segmenter, on PyAV frames, with the shipped models."""

    def __init__(self, cfg: crop_config, frame_w: int, frame_h: int, device=None):
        self.cfg, self.w, self.h, self.device = cfg, frame_w, frame_h, device
        self.detections = 0
        self.checks = 0

    def detect(self, frame):
        """MTCNN on the frame scaled to [crop] detect_width -> square crop box, or None."""
        from tasks.faces.face_models import detect_faces
        self.detections += 1
        dw = min(int(self.cfg.detect_width), self.w)
        dh = int(round(self.h * dw / self.w / 2)) * 2
        rgb = frame.to_ndarray(width=dw, height=dh, format="rgb24")
        boxes, probs = detect_faces(rgb, device=self.device)
        face = best_face(boxes, probs)
        if face is None:
            return None
        return square_box(face * (self.w / dw), float(self.cfg.margin), self.w, self.h)

    def prepare(self, frame, box) -> np.ndarray:
        return crop_to_i420(frame, box, int(self.cfg.output_size))

    def check(self, frame, i420: np.ndarray) -> str:
        """Is the face still there, and are its 68 landmarks clear of the portrait border?"""
        from tasks.faces.face_models import detect_faces, predict_landmarks
        self.checks += 1
        thumb = i420_thumbnail_rgb(i420, CHECK_SIZE)
        # The face fills ~1/(1+2*margin) of the portrait when the segment starts; searching only
        # for faces of at least half that size skips most of MTCNN's image pyramid.
        min_face = max(12, int(0.5 * CHECK_SIZE / (1.0 + 2.0 * float(self.cfg.margin))))
        boxes, probs = detect_faces(thumb, device=self.device, min_face_size=min_face)
        face = best_face(boxes, probs)
        if face is None:
            return NOFACE
        s = i420.shape[1]
        gray = cv2.resize(i420[:s], (LANDMARK_SIZE, LANDMARK_SIZE), interpolation=cv2.INTER_AREA)
        lm = predict_landmarks(gray, face * (LANDMARK_SIZE / CHECK_SIZE))
        if landmarks_near_edge(lm, (0, 0, LANDMARK_SIZE, LANDMARK_SIZE), float(self.cfg.edge_fraction)):
            return EDGE
        return OK


class _Encoder(threading.Thread):
    """Runs the H.264 encoder beside the decode loop, fed through a bounded queue.

    Commands: ("open", path), ("frame", i420), ("close", None), ("abort", None), ("stop", None).
    An encoder error is kept in `error`; the thread then drains the queue so the producer never
    blocks, and the producer re-raises it at its next put.
    """

    def __init__(self, size: int, fps: Fraction, cfg: crop_config):
        super().__init__(name="portrait-encoder", daemon=True)
        self.size, self.fps, self.cfg = size, fps, cfg
        self.q: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.error: BaseException | None = None
        self.frames_written: dict[str, int] = {}

    def put(self, cmd: str, arg=None) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((cmd, arg))

    def run(self) -> None:
        from tasks.media.video_io import PortraitWriter
        writer = None
        while True:
            cmd, arg = self.q.get()
            if cmd == "stop":
                break
            if self.error is not None:
                continue
            try:
                if cmd == "open":
                    writer = PortraitWriter(arg, self.size, self.fps, crf=self.cfg.crf,
                                            preset=self.cfg.preset,
                                            keyframe_interval=self.cfg.keyframe_interval,
                                            threads=self.cfg.threads).__enter__()
                elif cmd == "frame":
                    writer.write_i420(arg)
                elif cmd == "close":
                    self.frames_written[str(writer.path)] = writer.frames
                    w, writer = writer, None
                    w.__exit__(None, None, None)
                elif cmd == "abort" and writer is not None:
                    w, writer = writer, None
                    err = RuntimeError("crop aborted")
                    w.__exit__(RuntimeError, err, None)
            except BaseException as e:  # noqa: BLE001 - handed to the producer thread
                self.error = e
                if writer is not None:
                    try:
                        writer.__exit__(type(e), e, e.__traceback__)
                    except BaseException:  # noqa: BLE001 - the first error is the one to report
                        pass
                    writer = None


class _VideoSink(SegmentSink):
    """Segments -> segment_NNN.mp4 files through the encoder thread, plus the report rows."""

    def __init__(self, out_dir: Path, encoder: _Encoder, progress=None):
        super().__init__()
        self.out_dir, self.encoder, self.progress = out_dir, encoder, progress
        self.rows: list[dict] = []
        self.count = 0

    def start(self, seg: Segment) -> None:
        self.count = 0
        self.encoder.put("open", self.out_dir / f"{layout.segment_name(seg.index)}.mp4")

    def frame(self, seg: Segment, prepared, index: int, repeated: bool) -> None:
        super().frame(seg, prepared, index, repeated)
        self.encoder.put("frame", prepared)
        self.count += 1

    def end(self, seg: Segment) -> None:
        self.encoder.put("close")
        assert self.count == seg.end_frame - seg.start_frame, (self.count, seg)
        self.rows.append({"index": seg.index, "start_frame": int(seg.start_frame),
                          "end_frame": int(seg.end_frame),
                          "box": [int(v) for v in seg.box],
                          "video": f"{layout.segment_name(seg.index)}.mp4",
                          "repeated_frames": [int(i) for i in seg.repeated_frames]})


def _progress_frames(frames: Iterator, progress) -> Iterator:
    for idx, frame in frames:
        if progress is not None:
            progress.update(1)
        yield idx, frame


def crop_video(video: str | Path, out_dir: str | Path, cfg: crop_config | None = None,
               task=None, device=None) -> dict:
    """Cut one capture video into portrait segments under out_dir; returns (and writes last)
    the segments.json content. Stale temporaries and segment videos of an earlier, unfinished
    run are removed first, so nothing half-written survives into a finished output."""
    from tasks.faces import face_models
    from tasks.common.progress import Progress
    from tasks.media.video_io import iter_frames, probe_video, x264_threads
    cfg = cfg or crop_config()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # segments.json goes first: while it exists, the folder counts as finished (Luigi's test).
    (out_dir / "segments.json").unlink(missing_ok=True)
    remove_stale_temps(out_dir)
    for old in sorted(out_dir.glob("segment_*.mp4")):
        old.unlink()
    info = probe_video(video)
    if cfg.output_size % 4:
        raise ValueError(f"[crop] output_size must be a multiple of 4, got {cfg.output_size}")
    checks = FaceChecks(cfg, info.width, info.height, device=device)
    encoder = _Encoder(int(cfg.output_size), info.fps, cfg)
    encoder.start()
    progress = Progress(task, info.frame_count, f"crop {Path(video).parent.name}")
    sink = _VideoSink(out_dir, encoder, progress)
    ok = False
    try:
        segmenter = Segmenter(checks.detect, checks.prepare, checks.check, sink, int(cfg.landmark_every))
        frame_count = segmenter.run(_progress_frames(iter_frames(video), progress))
        ok = True
    finally:
        if not ok:
            try:
                encoder.q.put(("abort", None))
            except Exception:  # noqa: BLE001
                pass
        encoder.q.put(("stop", None))
        encoder.join()
        progress.close()
    if encoder.error is not None:
        raise encoder.error
    for row in sink.rows:
        n = encoder.frames_written.get(str(out_dir / row["video"]))
        if n != row["end_frame"] - row["start_frame"]:
            raise RuntimeError(f"{out_dir / row['video']}: wrote {n} frames for span "
                               f"[{row['start_frame']}, {row['end_frame']})")
    params = recorded_params(cfg)
    params["crop"]["threads"] = x264_threads(cfg.threads)   # what x264 actually used
    params["fixed"] = {"face_prob": FACE_PROB, "check_size": CHECK_SIZE, "landmark_size": LANDMARK_SIZE,
                       "max_repeat_gap": MAX_REPEAT_GAP, "encoder": "libx264", "pix_fmt": "yuv420p",
                       "color": "bt601 limited range"}
    report = {
        "segments": sink.rows,
        "params": params,
        "models": face_models.model_records(),
        "source": {k: v for k, v in info.as_dict().items() if k != "path"} | {"path": str(video)},
        "fps": float(info.fps),
        "frame_count": int(frame_count),
        "dropped": sink.dropped_ranges(),
        "detections": checks.detections,
        "checks": checks.checks,
    }
    write_json_atomic(out_dir / "segments.json", report)
    log.info("%s: %d segment(s), %d frame(s), %d dropped", video, len(sink.rows), frame_count,
             len(sink.dropped))
    return report


# ----------------------------------------------------------------------------- Luigi
class CropPortraits(luigi.Task):
    """One song's colour track -> portrait/segment_NNN.mp4 + portrait/segments.json."""

    subject = luigi.Parameter()
    song = luigi.Parameter()

    def requires(self):
        from tasks.validate import ValidateCapture
        return ValidateCapture(subject=self.subject)

    def output(self):
        return luigi.LocalTarget(str(layout.segments_json(self.subject, self.song)))

    def run(self):
        # Face checks run on the CPU on purpose: the images are small (160-960 px), so a GPU
        # gains little, crop workers then hold no GPU context next to the GPU stages, and boxes
        # (hence portrait bytes) are the same on machines with and without a GPU.
        crop_video(layout.color_video_path(self.subject, self.song),
                   layout.portrait_dir(self.subject, self.song), crop_config(), task=self, device="cpu")
