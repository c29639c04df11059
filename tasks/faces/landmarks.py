"""Dlib 68 landmarks on every portrait frame, tracking the face box from frame to frame.

Per frame, the box for Dlib comes from the previous frame's landmarks (mapped to the detector's box
convention, calibrated at the last MTCNN detection). MTCNN runs again only when tracking fails:
the new landmarks' box is implausible (size change, jump, off-frame) or the landmarks fit the
face's rigid point layout badly (Procrustes residual of brows, nose and eyes against a reference
taken at the last detection). A frame where MTCNN finds no face either is flagged
`ok = False`, confidence 0, and holds the last landmarks (so downstream crops stay finite).

Output per segment: landmarks (T, 68, 2) float32 portrait pixels, ok (T,) bool, confidence (T,)
float32 in [0, 1], boxes (T, 4) float32 [x0, y0, x1, y1] (the box given to Dlib).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

from tasks.common.errors import PipelineInputError
from tasks.faces import face_models
from tasks.media.video_io import open_video

log = logging.getLogger("singinghead")

# Brows, nose, eyes: the 68-point layout's near-rigid part (jaw and mouth move when singing).
RIGID = np.r_[17:48]

DetectFn = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]
PredictFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TrackParams:
    max_jump: float = 0.25          # centre move between frames, fraction of the box size
    max_scale_change: float = 0.25  # |log(size ratio)| between frames
    max_residual: float = 0.12      # rigid-point Procrustes residual, fraction of the rigid span
    min_det_prob: float = 0.9       # MTCNN probability to accept a (re)detection
    reference_rate: float = 0.05    # how fast the rigid reference follows tracked frames
    detect_width: int = 512         # MTCNN sees the frame downscaled to this width (a portrait's
                                    # face is ~half the frame, far above MTCNN's 20 px minimum)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrackResult:
    landmarks: np.ndarray   # (T, 68, 2) float32
    ok: np.ndarray          # (T,) bool
    confidence: np.ndarray  # (T,) float32
    boxes: np.ndarray       # (T, 4) float32
    detections: int = 0     # MTCNN runs
    stats: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- geometry
def landmark_box(lmk: np.ndarray) -> np.ndarray:
    """(68, 2) -> (4,) [x0, y0, x1, y1] bounding box."""
    return np.concatenate([lmk.min(0), lmk.max(0)]).astype(np.float64)


def box_centre_size(box: np.ndarray) -> tuple[np.ndarray, float]:
    b = np.asarray(box, dtype=np.float64)
    return (b[:2] + b[2:]) / 2, float(np.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1e-6)))


def normalise_points(p: np.ndarray) -> np.ndarray:
    """(N, 2) -> centred and scaled to unit RMS radius."""
    p = p - p.mean(0)
    return p / max(np.sqrt((p ** 2).sum(1).mean()), 1e-9)


def normalise_rigid(lmk: np.ndarray) -> np.ndarray:
    """(68, 2) -> (31, 2) rigid points, centred and scaled to unit RMS radius."""
    return normalise_points(np.asarray(lmk, dtype=np.float64)[RIGID])


def procrustes_residual(lmk: np.ndarray, reference: np.ndarray) -> float:
    """RMS distance of the rigid points to `reference` (normalised, (31, 2)) after the best
    rotation; both at unit RMS radius, so the value is a fraction of the rigid span."""
    p = normalise_rigid(lmk)
    u, _, vt = np.linalg.svd(p.T @ reference)
    r = u @ vt
    return float(np.sqrt(((p @ r - reference) ** 2).sum(1).mean()))


def box_from_landmarks(lmk: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Detector-convention box for the next frame from this frame's landmarks.

    calib (4,): the detector box's edges relative to the landmark box, in units of its size
    (measured at the last detection), so Dlib sees the same kind of box it saw there.
    """
    lb = landmark_box(lmk)
    w, h = lb[2] - lb[0], lb[3] - lb[1]
    return lb + calib * np.array([w, h, w, h])


def calibrate(det_box: np.ndarray, lmk: np.ndarray) -> np.ndarray:
    lb = landmark_box(lmk)
    w, h = max(lb[2] - lb[0], 1e-6), max(lb[3] - lb[1], 1e-6)
    return (np.asarray(det_box, np.float64) - lb) / np.array([w, h, w, h])


# ----------------------------------------------------------------------------- tracker
class LandmarkTracker:
    """Frame-by-frame Dlib landmarks with MTCNN re-detection on tracking failure."""

    def __init__(self, detect: DetectFn | None = None, predict: PredictFn | None = None,
                 params: TrackParams | None = None):
        if detect is None or predict is None:
            detect = detect or face_models.detect_faces
            predict = predict or face_models.predict_landmarks
        self.detect, self.predict = detect, predict
        self.p = params or TrackParams()
        self.prev: np.ndarray | None = None      # last landmarks (held over failures)
        self.prev_ok = False
        self.calib = np.array([0.0, -0.1, 0.0, 0.0])  # until the first detection calibrates it
        self.reference: np.ndarray | None = None
        self.detections = 0
        self.reasons: dict[str, int] = {}

    def _check(self, lmk: np.ndarray, frame_shape) -> tuple[bool, float, str]:
        """Is `lmk` a plausible continuation of self.prev? Returns (ok, confidence, reason)."""
        if not np.all(np.isfinite(lmk)):
            return False, 0.0, "non-finite"
        h, w = frame_shape[:2]
        c, s = box_centre_size(landmark_box(lmk))
        if s < 8 or not (0 <= c[0] < w and 0 <= c[1] < h):
            return False, 0.0, "off-frame"
        if self.prev is not None and self.prev_ok:
            pc, ps = box_centre_size(landmark_box(self.prev))
            if np.linalg.norm(c - pc) > self.p.max_jump * ps:
                return False, 0.0, "jump"
            if abs(np.log(s / ps)) > self.p.max_scale_change:
                return False, 0.0, "scale"
        if self.reference is None:
            return True, 1.0, ""
        res = procrustes_residual(lmk, self.reference)
        conf = float(np.clip(1.0 - res / self.p.max_residual, 0.0, 1.0))
        if res > self.p.max_residual:
            return False, 0.0, "fit"
        return True, conf, ""

    def _detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
        scale = 1.0
        small = rgb
        if self.p.detect_width and rgb.shape[1] > self.p.detect_width:
            scale = rgb.shape[1] / self.p.detect_width
            small = cv2.resize(rgb, (self.p.detect_width, int(round(rgb.shape[0] / scale))),
                               interpolation=cv2.INTER_AREA)
        boxes, probs = self.detect(small)
        self.detections += 1
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
        probs = np.asarray(probs).reshape(-1)
        keep = probs >= self.p.min_det_prob
        boxes, probs = boxes[keep], probs[keep]
        if len(boxes) == 0:
            return None
        if self.prev is not None:
            # the singer is the face nearest to where the face was
            pc, _ = box_centre_size(landmark_box(self.prev))
            d = [np.linalg.norm(box_centre_size(b)[0] - pc) for b in boxes]
            i = int(np.argmin(d))
        else:
            i = 0  # best probability first (detect_faces sorts)
        box = boxes[i].astype(np.float64)
        return box, self.predict(rgb, box).astype(np.float64), float(probs[i])

    def step(self, rgb: np.ndarray) -> tuple[np.ndarray, bool, float, np.ndarray]:
        """One frame: (landmarks (68,2), ok, confidence, box (4,))."""
        if self.prev is not None and self.prev_ok:
            box = box_from_landmarks(self.prev, self.calib)
            lmk = self.predict(rgb, box).astype(np.float64)
            ok, conf, reason = self._check(lmk, rgb.shape)
            if ok:
                self._accept(lmk)
                return lmk, True, conf, box
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
        found = self._detect(rgb)
        if found is not None:
            box, lmk, prob = found
            c, s = box_centre_size(landmark_box(lmk))
            bc, bs = box_centre_size(box)
            # Dlib always returns 68 points: check they actually sit on the detected face.
            if np.all(np.isfinite(lmk)) and np.linalg.norm(c - bc) < 0.5 * bs and 0.4 < s / bs < 2.5:
                self.calib = calibrate(box, lmk)
                self.reference = normalise_rigid(lmk)
                self._accept(lmk)
                return lmk, True, prob, box
            self.reasons["detection-mismatch"] = self.reasons.get("detection-mismatch", 0) + 1
        else:
            self.reasons["no-face"] = self.reasons.get("no-face", 0) + 1
        self.prev_ok = False
        held = self.prev if self.prev is not None else np.full((68, 2), np.nan)
        box = box_from_landmarks(held, self.calib) if self.prev is not None else np.full(4, np.nan)
        return held, False, 0.0, box

    def _accept(self, lmk: np.ndarray) -> None:
        self.prev, self.prev_ok = lmk, True
        if self.reference is not None:
            # follow slow changes (pose) without letting one frame drag the reference
            p = normalise_rigid(lmk)
            u, _, vt = np.linalg.svd(p.T @ self.reference)
            ref = (1 - self.p.reference_rate) * self.reference + self.p.reference_rate * (p @ (u @ vt))
            self.reference = normalise_points(ref)


def backfill(landmarks: np.ndarray, ok: np.ndarray, boxes: np.ndarray) -> None:
    """Frames before the first good frame hold the first good landmarks (in place)."""
    good = np.flatnonzero(ok)
    if len(good) and good[0] > 0:
        landmarks[:good[0]] = landmarks[good[0]]
        boxes[:good[0]] = boxes[good[0]]


def track_frames(frames, tracker: LandmarkTracker | None = None, on_frame=None) -> TrackResult:
    """Track landmarks over an iterable of RGB frames ((H, W, 3) uint8).

    on_frame(index, rgb, landmarks, ok) is called per frame while the frame is in hand (the
    EMOCA path crops there, so each frame is decoded once). Landmarks handed to it on frames
    before the first detection are NaN; `track_frames` backfills its own output afterwards.
    """
    tracker = tracker or LandmarkTracker()
    lm, ok, conf, boxes = [], [], [], []
    for i, rgb in enumerate(frames):
        l, k, c, b = tracker.step(rgb)
        lm.append(np.asarray(l, np.float32))
        ok.append(k)
        conf.append(c)
        boxes.append(np.asarray(b, np.float32))
        if on_frame is not None:
            on_frame(i, rgb, lm[-1], k)
    if not lm:
        return TrackResult(np.zeros((0, 68, 2), np.float32), np.zeros(0, bool), np.zeros(0, np.float32),
                           np.zeros((0, 4), np.float32), tracker.detections, dict(tracker.reasons))
    res = TrackResult(np.stack(lm), np.array(ok, bool), np.array(conf, np.float32), np.stack(boxes),
                      tracker.detections, dict(tracker.reasons))
    backfill(res.landmarks, res.ok, res.boxes)
    return res


# ----------------------------------------------------------------------------- video
def iter_rgb_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream a portrait video's frames as (H, W, 3) uint8 RGB with PyAV (never all in memory)."""
    path = Path(path)
    fix = "delete the song's portrait/ folder and rerun CropPortraits"
    container = open_video(path)
    try:
        if not container.streams.video:
            raise PipelineInputError(path, "portrait video has no video stream", fix)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
            n += 1
            if max_frames is not None and n >= max_frames:
                return
    except av.error.FFmpegError as e:
        raise PipelineInputError(path, f"portrait video is corrupt or truncated ({e})", fix) from e
    finally:
        container.close()
