"""Crop stage's plain code: the 4K colour track -> face-stable portrait segment videos.

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
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from tasks.common.atomic import remove_stale_temps, write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.names import check_write_path
from tasks.common.progress import Progress
from tasks.common.settings import CropSettings, recorded_params
from tasks.faces import face_models
from tasks.faces.face_models import detect_faces, predict_landmarks
from tasks.faces.segmenter import (CHECK_SIZE, FACE_PROB, FOREHEAD, LANDMARK_SIZE, MAX_REPEAT_GAP, NOFACE,
                                   Segment, Segmenter, SegmentSink, best_face, edge_verdict, square_box)
from tasks.media.video_io import (PortraitWriter, frame_planes, is_full_range, iter_frames, probe_video,
                                  x264_threads)

log = logging.getLogger("singinghead")

QUEUE_FRAMES = 8         # encoder queue depth (8 x 1.5 MB at 1024^2)
DETECT_MIN_FACE = 20     # px at the detection scale: detect_faces' (MTCNN's) default min_face_size


def segment_video_name(index: int) -> str:
    return f"segment_{index:03d}.mp4"


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

    def __init__(self, cfg: CropSettings, frame_w: int, frame_h: int, device=None):
        self.cfg, self.w, self.h, self.device = cfg, frame_w, frame_h, device
        self.detections = 0
        self.faces_found = 0
        self.checks = 0

    def detect(self, frame):
        """MTCNN on the frame scaled to [crop] detect_width -> square crop box, or None."""
        self.detections += 1
        dw = min(int(self.cfg.detect_width), self.w)
        dh = int(round(self.h * dw / self.w / 2)) * 2
        rgb = frame.to_ndarray(width=dw, height=dh, format="rgb24")
        boxes, probs = detect_faces(rgb, device=self.device, min_face_size=DETECT_MIN_FACE)
        face = best_face(boxes, probs)
        if face is None:
            return None
        self.faces_found += 1
        return square_box(face * (self.w / dw), float(self.cfg.margin), self.w, self.h)

    def smallest_face_px(self) -> int:
        """The smallest face height (video pixels) `detect` finds: MTCNN's default 20 px minimum at
        the [crop] detect_width scale."""
        return int(np.ceil(DETECT_MIN_FACE * self.w / min(int(self.cfg.detect_width), self.w)))

    def prepare(self, frame, box) -> np.ndarray:
        return crop_to_i420(frame, box, int(self.cfg.output_size))

    def check(self, frame, i420: np.ndarray) -> str:
        """Is the face still there (else NOFACE), are its 68 landmarks clear of the portrait border
        (else EDGE) and is its forehead inside the portrait (else FOREHEAD_OUT)?"""
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
        return edge_verdict(lm, (0, 0, LANDMARK_SIZE, LANDMARK_SIZE), float(self.cfg.edge_fraction))


class _Encoder(threading.Thread):
    """Runs the H.264 encoder beside the decode loop, fed through a bounded queue.

    Commands: ("open", path), ("frame", i420), ("close", None), ("abort", None), ("stop", None).
    An encoder error is kept in `error`; the thread then drains the queue so the producer never
    blocks, and the producer re-raises it at its next put.
    """

    def __init__(self, size: int, fps: Fraction, cfg: CropSettings):
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
        self.encoder.put("open", self.out_dir / segment_video_name(seg.index))

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
                          "video": segment_video_name(seg.index),
                          "repeated_frames": [int(i) for i in seg.repeated_frames],
                          "cut_reason": seg.cut_reason})


def _progress_frames(frames: Iterator, progress) -> Iterator:
    for idx, frame in frames:
        if progress is not None:
            progress.update(1)
        yield idx, frame


def _no_face(video, checks: FaceChecks, frame_count: int, cfg: CropSettings) -> None:
    """The error of a video in which no portrait segment starts: no face, or never a steady one."""
    px = checks.smallest_face_px()
    if checks.faces_found == 0:
        problem = (f"no face was found in any of its {frame_count} frames (faces smaller than about {px} px "
                   f"high are not found in this {checks.w}x{checks.h} video)")
    else:
        problem = (f"a face was found in {checks.faces_found} of {checks.detections} detection attempts "
                   f"but never stayed whole in the portrait long enough to start a segment "
                   f"({frame_count} frames)")
    raise PipelineInputError(video, problem, "check that this is the take's colour video and the singer "
                             f"faces the camera, the face at least {px} px high (move the camera closer or "
                             f"record at 2160p; [crop] detect_width {int(cfg.detect_width)} sets the "
                             "detector's resolution)")


def crop_video(video: str | Path, out_dir: str | Path, cfg: CropSettings,
               task=None, device=None) -> dict:
    """Cut one capture video into portrait segments under out_dir; returns (and writes last)
    the segments.json content. Stale temporaries and segment videos of an earlier, unfinished
    run are removed first, so nothing half-written survives into a finished output."""
    out_dir = check_write_path(out_dir)     # no link out of processed/: files here are deleted below
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
    if not sink.rows:
        _no_face(video, checks, frame_count, cfg)
    for row in sink.rows:
        n = encoder.frames_written.get(str(out_dir / row["video"]))
        if n != row["end_frame"] - row["start_frame"]:
            raise RuntimeError(f"{out_dir / row['video']}: wrote {n} frames for span "
                               f"[{row['start_frame']}, {row['end_frame']})")
    params = recorded_params(cfg)
    params["crop"]["threads"] = x264_threads(cfg.threads)   # what x264 actually used
    params["fixed"] = {"face_prob": FACE_PROB, "check_size": CHECK_SIZE, "landmark_size": LANDMARK_SIZE,
                       "max_repeat_gap": MAX_REPEAT_GAP, "forehead": FOREHEAD, "encoder": "libx264", "pix_fmt": "yuv420p",
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
