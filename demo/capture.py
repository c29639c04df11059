"""`singinghead demo-capture`: a synthetic capture in the raw/ layout that exercises the pipeline.

Each subject is scikit-image's astronaut photograph (NASA, public domain; the second subject is
mirrored and re-tinted) composited onto a textured studio background along a smooth head path
(sway, yaw, pitch, roll, scale), with one fast sideways excursion (so the crop stage must
re-segment) and a span where a lyric sheet covers the face (no face visible). The mouth opens with
the sung vocal's loudness: the jaw and lower lip are warped down around the photo's Dlib 68
landmarks, precomputed per quantised opening level. Video is written like an Azure Kinect
recording (MJPEG `COLOR` track, a raw 16-bit `DEPTH` track placed first, calibration attachment,
K4A tags, microsecond pts not starting at 0); audio comes from `demo.audio`.

The ground truth (head path, true landmarks, mouth opening, true accompaniment) is written outside
raw/, under `--truth` (default demo_truth/), for evaluating later stages.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import importlib.util
import json
import logging
import time
import os
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import dlib
import numpy as np
from matplotlib import cbook
from PIL import Image
from scipy.signal import resample_poly
from skimage import data

from demo import audio as demo_audio
from demo.scan import write_demo_scan
from flame_fit.procedural import GENERATOR_VERSION as HEAD_GENERATOR_VERSION
from tasks.common.atomic import atomic_dir, json_dumps, remove_stale_temps, save_npz_atomic, write_json_atomic
from tasks.media.audio_io import write_wav
from tasks.common.errors import PipelineInputError
from tasks.common.progress import Progress

log = logging.getLogger("singinghead.demo")

GENERATOR_VERSION = 1
VOCAL_SR = 48000          # the microphone's rate
ORIGINAL_SR = 44100       # the released song's rate (different on purpose)
MOUTH_LEVELS = 16
TIME_BASE = Fraction(1, 1_000_000)
JPEG_QUALITY = 90
# Face height (eyebrows to chin) at 3840x2160; smaller frames scale it with their height.
FACE_HEIGHT_4K = 620.0
DEPTH_SIZE_4K = (320, 288)  # NFOV 2x2 binned

_TITLES = {
    "art": ["moonlit-aria", "silver-lieder"], "country": ["take-me-home", "dusty-road"],
    "hip-hop": ["city-lights", "block-by-block"], "rock": ["thunder-line", "broken-amp"],
    "folk": ["river-song", "old-oak"], "rnb": ["slow-burn", "velvet-night"],
    "theater": ["curtain-call", "on-my-own-stage"], "march": ["forward-together", "brass-parade"],
}
_LANGUAGES = ("english", "chinese")


# ----------------------------------------------------------------------------- the face asset
def dlib_model_paths() -> tuple[Path, Path]:
    """(shape_predictor_68, folder) from the installed face_recognition_models package.

    Found with find_spec rather than imported: the package's __init__ imports pkg_resources.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise PipelineInputError("face_recognition_models", "the package holding Dlib's 68-landmark model "
                                 "is not installed", "pip install face_recognition_models")
    folder = Path(spec.origin).parent / "models"
    p = folder / "shape_predictor_68_face_landmarks.dat"
    if not p.is_file():
        raise PipelineInputError(p, "Dlib's 68-landmark model is missing",
                                 "reinstall face_recognition_models")
    return p, folder


_DLIB_LOCK = threading.Lock()
_DLIB = {}


def dlib_models():
    """(frontal detector, 68-landmark predictor), loaded once per process."""
    with _DLIB_LOCK:
        if not _DLIB:
            _DLIB["det"] = dlib.get_frontal_face_detector()
            _DLIB["sp"] = dlib.shape_predictor(str(dlib_model_paths()[0]))
        return _DLIB["det"], _DLIB["sp"]


def dlib_landmarks(rgb: np.ndarray, upsample: int = 1) -> np.ndarray | None:
    """68 landmarks (68,2) float64 of the largest face Dlib finds in `rgb` (H,W,3) uint8, or None."""
    det, sp = dlib_models()
    rects = det(rgb, upsample)
    if not rects:
        return None
    r = max(rects, key=lambda r: r.width() * r.height())
    s = sp(rgb, dlib.rectangle(r.left(), r.top(), r.right(), r.bottom()))
    return np.array([[p.x, p.y] for p in s.parts()], dtype=np.float64)


@dataclass
class FaceAsset:
    """A cut-out head: `rgba` (H,W,4) uint8 per mouth level, landmarks (68,2) in patch pixels."""
    levels: list            # MOUTH_LEVELS arrays (H,W,4) uint8, level 0 = the photo as is
    landmarks: np.ndarray   # (68,2) landmarks of the closed mouth
    level_landmarks: np.ndarray  # (MOUTH_LEVELS,68,2) where the warp moves each landmark
    anchor: np.ndarray      # (2,) head centre used as the path's reference point (landmark mean)
    face_height: float      # eyebrows to chin, patch pixels
    rgb: np.ndarray         # (H,W,3) uint8 the face crop (closed mouth), e.g. for a scan's texture


# Crop of the astronaut photo (rows, cols) holding hair, face and a bit of neck.
_CROP = (slice(4, 232), slice(136, 318))


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _mouth_warp(rgb: np.ndarray, lm: np.ndarray, opening: float, max_drop: float):
    """Open the mouth: move jaw and lower lip down by opening*max_drop; darken the gap.

    rgb (H,W,3) uint8, lm (68,2). Returns (warped (H,W,3) uint8, moved landmarks (68,2)).
    The displacement is vertical only, so the forward map y -> y + d(x, y) is inverted per column
    by interpolation (monotone because d grows and then decays slowly along y).
    """
    h, w = rgb.shape[:2]
    drop = opening * max_drop
    if drop <= 0:
        return rgb.copy(), lm.copy()
    xc = lm[62, 0]
    upper = lm[[61, 62, 63], 1].mean()           # inner upper lip
    lower = lm[[65, 66, 67], 1].mean()           # inner lower lip
    chin = lm[8, 1]
    fh = chin - lm[19:25, 1].mean()
    mouth_half = (lm[54, 0] - lm[48, 0]) / 2
    jaw_half = (lm[12, 0] - lm[4, 0]) / 2

    def weight(x, y):
        wx = 1.0 - _smoothstep((np.abs(x - xc) - 0.3 * mouth_half) / (jaw_half - 0.3 * mouth_half))
        ramp = _smoothstep((y - upper) / max(lower - upper, 1.0))
        decay = 1.0 - _smoothstep((y - chin - 0.08 * fh) / (0.4 * fh))
        return wx * ramp * decay

    ys = np.arange(h, dtype=np.float64)
    map_y = np.empty((h, w), np.float32)
    for x in range(w):
        fwd = ys + drop * weight(float(x), ys)
        map_y[:, x] = np.interp(ys, fwd, ys)
    map_x = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)).copy()
    out = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    moved = lm.copy()
    moved[:, 1] += drop * weight(lm[:, 0], lm[:, 1])
    # The gap between the lips: dark mouth cavity below a strip of upper teeth.
    gap_top = lm[[60, 61, 62, 63, 64], :].copy()
    gap_top[:, 1] += 0.35 * (lower - upper)
    gap_bottom = moved[[64, 65, 66, 67, 60], :]
    poly = np.concatenate([gap_top, gap_bottom[1:4]], axis=0)
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [np.round(poly * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.8) * min(1.0, drop / (0.25 * max_drop)) * 0.9
    cavity = np.array([60, 22, 25], np.float32)
    out = (out * (1 - mask[..., None]) + cavity * mask[..., None]).round().astype(np.uint8)
    return out, moved


def _head_alpha(shape, lm: np.ndarray) -> np.ndarray:
    """Soft head-and-neck mask (H,W) uint8 around the landmarks (hair reaches above the brows)."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    cx = lm[:, 0].mean()
    fw = lm[16, 0] - lm[0, 0]
    brow = lm[17:27, 1].min()
    chin = lm[8, 1]
    fh = chin - brow
    # Hair: an ellipse over the upper head; face: the jaw outline closed over the brows; neck below.
    cv2.ellipse(mask, (int(round(cx)), int(round(brow - 0.05 * fh))), (int(0.78 * fw), int(0.74 * fh)),
                0, 180, 360, 255, -1)
    cv2.ellipse(mask, (int(round(cx)), int(round(brow - 0.05 * fh))), (int(0.78 * fw), int(0.45 * fh)),
                0, 0, 180, 255, -1)
    jaw = np.concatenate([lm[0:17], lm[[26, 17]] - [0, 0.1 * fh]], axis=0)
    cv2.fillPoly(mask, [np.round(jaw).astype(np.int32)], 255)
    cv2.ellipse(mask, (int(round(cx)), int(round(chin + 0.15 * fh))), (int(0.3 * fw), int(0.4 * fh)),
                0, 0, 360, 255, -1)
    return cv2.GaussianBlur(mask, (0, 0), 1.5)


# The face photographs that ship inside installed packages (nothing is downloaded), by name:
# (loader of the whole RGB image, crop (rows, cols) holding hair, face and some neck, credit).
def _grace_hopper() -> np.ndarray:
    # matplotlib's own sample data (mpl-data/sample_data), read through the package, not a path of ours
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


PHOTOS = {
    "astronaut": (data.astronaut, _CROP, "scikit-image's astronaut photograph (NASA, public domain)"),
    "hopper": (_grace_hopper, (slice(40, 420), slice(110, 420)),
               "matplotlib's Grace Hopper photograph (U.S. Navy, public domain)"),
}


def subject_photo(variant: int, photo: str = "astronaut") -> np.ndarray:
    """The face crop (H,W,3) uint8 RGB of a shipped photo (PHOTOS); odd variants mirrored, later ones
    re-tinted."""
    if photo not in PHOTOS:
        raise PipelineInputError(photo, "unknown demo photo", f"pick one of {', '.join(PHOTOS)}")
    load, crop, _ = PHOTOS[photo]
    photo = np.ascontiguousarray(load()[crop])
    if variant % 2:
        photo = np.ascontiguousarray(photo[:, ::-1])
    if variant:
        hsv = cv2.cvtColor(photo, cv2.COLOR_RGB2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + 4 * variant) % 180
        hsv[..., 2] = np.clip(hsv[..., 2] * (1.0 - 0.06 * variant), 0, 255)
        photo = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return photo


def face_asset(variant: int = 0) -> FaceAsset:
    """The astronaut's head, cut out, with its mouth pre-warped for each opening level.

    variant 0: the photo; variant 1: mirrored and re-tinted (a second 'subject').
    """
    photo = subject_photo(variant)
    lm = dlib_landmarks(photo, upsample=2)
    if lm is None:
        raise RuntimeError("Dlib found no face in the astronaut photo (scikit-image data changed?)")
    fh = float(lm[8, 1] - lm[19:25, 1].mean())
    alpha = _head_alpha(photo.shape[:2], lm)
    levels, moved = [], []
    for k in range(MOUTH_LEVELS):
        warped, m = _mouth_warp(photo, lm, k / (MOUTH_LEVELS - 1), max_drop=0.2 * fh)
        levels.append(np.dstack([warped, alpha]))
        moved.append(m)
    return FaceAsset(levels=levels, landmarks=lm, level_landmarks=np.stack(moved), anchor=lm.mean(axis=0),
                     face_height=fh, rgb=photo)


# ----------------------------------------------------------------------------- head path
@dataclass
class HeadPath:
    """Per video frame (T,): centre (T,2) px, face height (T,) px, yaw/pitch/roll (T,) rad, visibility."""
    center: np.ndarray
    scale: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    face_visible: np.ndarray
    excursion: tuple[int, int]   # [start, end) frames of the fast sideways move
    faceless: tuple[int, int]    # [start, end) frames where the face is covered


def head_path(n_frames: int, fps: float, width: int, height: int, face_px: float, seed: int,
              events_s: tuple[float, float] | None = None) -> HeadPath:
    """A smooth singing head path with one fast excursion (~40 %) and a covered span (~70 %), or
    starting at `events_s` = (excursion, covered span) seconds when given.

    Sway stays within about +-0.2 face heights so ordinary motion does not force re-segmentation;
    the excursion moves the head sideways by about 1.3 face heights within 0.3 s and back, holding
    for ~0.8 s, far enough that landmarks reach a crop box's border.
    """
    rng = np.random.default_rng([seed, 505])
    t = np.arange(n_frames) / fps
    ph = rng.random(8) * 2 * np.pi
    fr = 0.08 + 0.25 * rng.random(8)
    def wave(i, mult=1.0):
        return np.sin(2 * np.pi * fr[i] * mult * t + ph[i])

    # the truth capture's head also turns (+-30 degrees), which moves its landmarks sideways as much
    # as the sway: with fixed event times its sway is halved so that a segment can last 8 s
    sway = 1.0 if events_s is None else 0.5
    cx = width * 0.5 + sway * face_px * (0.13 * wave(0) + 0.05 * wave(1, 2.3))
    cy = height * 0.47 + face_px * (0.06 * wave(2) + 0.03 * wave(3, 1.7))
    scale = face_px * (1.0 + 0.05 * np.sin(2 * np.pi * fr[4] * 0.6 * t + ph[4]))
    yaw = 0.28 * np.sin(2 * np.pi * fr[5] * t + ph[5]) + 0.05 * np.sin(2 * np.pi * 0.9 * t + ph[6])
    pitch = 0.09 * np.sin(2 * np.pi * fr[6] * 1.4 * t + ph[7])
    roll = 0.07 * np.sin(2 * np.pi * fr[7] * 1.1 * t + ph[0] + 1.0)

    # Excursion: rise 0.3 s, hold 0.8 s, return 0.4 s.
    e0 = int(round(0.4 * n_frames)) if events_s is None else int(round(events_s[0] * fps))
    # with fixed event times (the truth capture's demo timeline) the move out and the return are snaps
    # (1 frame each): the crop stage's next box is then placed on a head at rest, not on one still
    # moving; a box placed mid-move could hold both ends and swallow the excursion (procedural head v2
    # cut one song that way and left it one 8 s clip)
    timing = (0.3, 0.8, 0.4) if events_s is None else (0.034, 1.4, 0.034)
    rise, hold, back = (int(round(s * fps)) for s in timing)
    e1 = min(n_frames, e0 + rise + hold + back)
    bump = np.zeros(n_frames)
    k = np.arange(n_frames) - e0
    bump += _smoothstep(k / rise) * (k >= 0)
    bump -= _smoothstep((k - rise - hold) / back) * (k >= rise + hold)
    side = 1.0 if rng.random() < 0.5 else -1.0
    # 1.3 face heights: with the crop stage's default box (MTCNN box + 0.6 per side) the jaw line
    # then crosses the box border. The head stays inside the frame (0.75 face heights of margin).
    room = (width - 0.75 * face_px) - cx[e0:e1].max() if side > 0 else cx[e0:e1].min() - 0.75 * face_px
    amp = min(1.3 * face_px, max(room, 0.0))
    cx = cx + side * amp * bump

    h_len = int(round(1.5 * fps))
    h0 = max(int(round(0.7 * n_frames)) if events_s is None else int(round(events_s[1] * fps)),
             e1 + int(round(0.5 * fps)))
    h0 = min(h0, n_frames - h_len - 1)
    h1 = h0 + h_len
    visible = np.ones(n_frames, bool)
    visible[max(h0, 0):h1] = False
    return HeadPath(center=np.stack([cx, cy], 1), scale=scale, yaw=yaw, pitch=pitch, roll=roll,
                    face_visible=visible, excursion=(e0, e1), faceless=(h0, h1))


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch), camera axes x right, y down, z forward."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ ry @ rx


def face_homography(asset: FaceAsset, center, scale, yaw, pitch, roll, focal: float) -> np.ndarray:
    """3x3 map from patch pixels to frame pixels: the photo as a plane rotated in front of a camera.

    The plane point of patch pixel p is ((p - anchor) * scale / face_height, 0); it is rotated,
    pushed to depth `focal` and projected with focal length `focal` about `center`.
    """
    z = scale / asset.face_height
    s = np.array([[z, 0, -z * asset.anchor[0]], [0, z, -z * asset.anchor[1]], [0, 0, 1.0]])
    r = _rotation(yaw, pitch, roll)
    k = np.array([[focal, 0, center[0]], [0, focal, center[1]], [0, 0, 1.0]])
    return k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, focal]]) @ s


def _project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = np.c_[pts, np.ones(len(pts))] @ h.T
    return q[:, :2] / q[:, 2:3]


# ----------------------------------------------------------------------------- frames
def studio_background(width: int, height: int, seed: int, base_bgr=None) -> np.ndarray:
    """A textured backdrop (H,W,3) uint8 BGR: gradient, soft blotches and fine grain around a base
    colour (random unless `base_bgr` (3,) is given).

    The grain matters: flat generated frames decode 2-3x faster than real footage.
    """
    rng = np.random.default_rng([seed, 606])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.array(rng.uniform(90, 170, 3), np.float32)
    if base_bgr is not None:
        base = np.asarray(base_bgr, np.float32).reshape(3)
    grad = (0.25 * xx / width - 0.2 * yy / height)[..., None] * np.array(rng.uniform(40, 90, 3), np.float32)
    small = rng.standard_normal((max(height // 64, 2), max(width // 64, 2), 3)).astype(np.float32)
    blot = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) * 12.0
    mid = rng.standard_normal((max(height // 6, 2), max(width // 6, 2), 3)).astype(np.float32)
    mid = cv2.resize(mid, (width, height), interpolation=cv2.INTER_LINEAR) * 5.0
    grain = rng.standard_normal((height, width, 1)).astype(np.float32) * 3.0
    img = base + grad + blot + mid + grain
    return np.clip(img, 0, 255).astype(np.uint8)


def lyric_sheet(w: int, h: int, seed: int) -> np.ndarray:
    """A paper sheet with printed lines (h,w,3) uint8 BGR, held in front of the face."""
    rng = np.random.default_rng([seed, 707])
    sheet = np.full((h, w, 3), 232, np.uint8)
    sheet = np.clip(sheet.astype(np.int16) + rng.integers(-6, 7, (h, w, 1)), 0, 255).astype(np.uint8)
    line_h = max(h // 24, 2)
    y = 2 * line_h
    while y < h - 2 * line_h:
        x = int(0.08 * w)
        while x < 0.9 * w:
            word = int(rng.integers(2, 7)) * max(w // 60, 1)
            end = (min(x + word, int(0.92 * w)), y + max(line_h // 2, 1))
            cv2.rectangle(sheet, (x, y), end, (40, 40, 40), -1)
            x += word + max(w // 50, 1)
        y += int(1.6 * line_h)
    return sheet


class FrameRenderer:
    """Draws frame t: background, the head patch at its mouth level, or the sheet over it.

    Keeps one working frame per thread and restores only the last drawn rectangle from the
    cached background, so the per-frame cost is the patch region plus the JPEG encode.
    """

    def __init__(self, background: np.ndarray, asset: FaceAsset, path: HeadPath, levels: np.ndarray,
                 focal: float, sheet: np.ndarray):
        self.bg, self.asset, self.path, self.levels = background, asset, path, levels
        self.focal, self.sheet = focal, sheet
        self.patches = [cv2.cvtColor(p, cv2.COLOR_RGBA2BGRA) for p in asset.levels]
        self._local = threading.local()

    def homography(self, t: int) -> np.ndarray:
        p = self.path
        return face_homography(self.asset, p.center[t], p.scale[t], p.yaw[t], p.pitch[t], p.roll[t],
                               self.focal)

    def _work(self):
        if not hasattr(self._local, "frame"):
            self._local.frame = self.bg.copy()
            self._local.dirty = None
        return self._local

    def render(self, t: int) -> np.ndarray:
        """Frame t (H,W,3) uint8 BGR; valid until this thread's next call."""
        w = self._work()
        frame = w.frame
        if w.dirty is not None:
            y0, y1, x0, x1 = w.dirty
            frame[y0:y1, x0:x1] = self.bg[y0:y1, x0:x1]
            w.dirty = None
        hgt, wid = frame.shape[:2]
        if self.path.face_visible[t]:
            patch = self.patches[int(self.levels[t])]
            hm = self.homography(t)
            ph, pw = patch.shape[:2]
            corners = _project(hm, np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float64))
            x0, y0 = np.floor(corners.min(0)).astype(int) - 1
            x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, wid), min(y1, hgt)
            if x1 > x0 and y1 > y0:
                shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
                warped = cv2.warpPerspective(patch, shift @ hm, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                # uint8 alpha blend with OpenCV's saturating ops: several times faster than float
                # blending (cv2.blendLinear) on a 4K head patch; the rounding error is at most 1.
                a = cv2.extractChannel(warped, 3)
                a3 = cv2.merge([a, a, a])
                fg = cv2.multiply(cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR), a3, scale=1.0 / 255)
                roi = frame[y0:y1, x0:x1]
                frame[y0:y1, x0:x1] = cv2.add(fg, cv2.multiply(roi, cv2.bitwise_not(a3), scale=1.0 / 255))
                w.dirty = (y0, y1, x0, x1)
        else:
            sh, sw = self.sheet.shape[:2]
            cx, cy = self.path.center[t]
            x0, y0 = int(round(cx - sw / 2)), int(round(cy - 0.45 * sh))
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + sw, wid), min(y0 + sh, hgt)
            if xb > xa and yb > ya:
                frame[ya:yb, xa:xb] = self.sheet[ya - y0:yb - y0, xa - x0:xb - x0]
                w.dirty = (ya, yb, xa, xb)
        return frame

    def true_landmarks(self, t: int) -> np.ndarray:
        """(68,2) where the shown face's landmarks land in frame t (NaN when covered)."""
        if not self.path.face_visible[t]:
            return np.full((68, 2), np.nan)
        return _project(self.homography(t), self.asset.level_landmarks[int(self.levels[t])])


def encode_jpeg(bgr: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Baseline JPEG with 4:2:2 chroma, like the Kinect's MJPEG colour stream."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def depth_frame(renderer: FrameRenderer, t: int, size: tuple[int, int], frame_size: tuple[int, int]) -> bytes:
    """A coarse depth image (gray16be, mm): wall at 2.5 m, head (or sheet) at about 1.2 m."""
    dw, dh = size
    img = np.full((dh, dw), 2500, np.uint16)
    cx, cy = renderer.path.center[t]
    sx, sy = dw / frame_size[0], dh / frame_size[1]
    r = renderer.path.scale[t]
    cv2.ellipse(img, (int(cx * sx), int(cy * sy)), (max(int(0.55 * r * sx), 1), max(int(0.8 * r * sy), 1)),
                0, 0, 360, 1200 if renderer.path.face_visible[t] else 900, -1)
    return img.astype(">u2").tobytes()


def calibration_json(width: int, height: int, focal: float, depth_size) -> bytes:
    """A Kinect-style calibration attachment (normalised Brown-Conrady intrinsics, no distortion)."""
    def cam(loc, w, h, f):
        return {"Location": loc, "Purpose": "CALIBRATION_CameraPurposePhotogrammetry",
                "Intrinsics": {"ModelType": "CALIBRATION_LensDistortionModelBrownConrady",
                               "ModelParameterCount": 14,
                               "ModelParameters": [0.5, 0.5, f / w, f / h] + [0.0] * 10},
                "SensorWidth": w, "SensorHeight": h,
                "Rt": {"Rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1], "Translation": [0, 0, 0]}}
    dw, dh = depth_size
    cams = [cam("CALIBRATION_CameraLocationD0", dw, dh, focal * dw / width),
            cam("CALIBRATION_CameraLocationPV0", width, height, focal)]
    obj = {"CalibrationInformation": {"Cameras": cams,
                                      "Metadata": {"Generator": "singinghead demo-capture (synthetic)"}}}
    return json_dumps(obj).encode()


def write_kinect_mkv(path: Path, renderer: FrameRenderer, n_frames: int, fps: int, width: int, height: int,
                     seed: int, workers: int = 2, progress: Progress | None = None) -> dict:
    """Mux the colour (JPEG packets) and depth (raw) tracks like k4arecorder; returns track info.

    Frames are rendered and JPEG-encoded on `workers` threads (OpenCV releases the GIL) and muxed
    in order; muxing pre-encoded JPEG bytes keeps the frames byte-exact and fast.
    """
    depth_size = DEPTH_SIZE_4K if width >= 1920 else (DEPTH_SIZE_4K[0] // 2, DEPTH_SIZE_4K[1] // 2)
    rng = np.random.default_rng([seed, 808])
    pts0 = 200_000 + 1000 * int(rng.integers(0, 100))          # whole ms: matroska stores 1 ms ticks
    start_offset_ns = 1_000_000_000 + 1_000_000 * int(rng.integers(0, 1000))
    # bitexact: no random segment UID or writing-app version, so reruns give the same bytes.
    container = av.open(str(path), "w", format="matroska",
                        options={"fflags": "+bitexact", "allow_raw_vfw": "1"})
    try:
        container.metadata["K4A_START_OFFSET_NS"] = str(start_offset_ns)
        container.metadata["K4A_DEPTH_DELAY_NS"] = "0"
        container.metadata["K4A_WIRED_SYNC_MODE"] = "STANDALONE"
        container.metadata["K4A_DEVICE_SERIAL_NUMBER"] = f"DEMO{seed:08d}"
        # DEPTH first, as k4arecorder does when depth is enabled: readers must pick COLOR by title.
        depth = container.add_stream("rawvideo", rate=fps)
        depth.width, depth.height = depth_size
        depth.pix_fmt = "gray16be"
        depth.time_base = TIME_BASE
        depth.metadata["title"] = "DEPTH"
        depth.metadata["K4A_DEPTH_MODE"] = "NFOV_2X2BINNED"
        color = container.add_stream("mjpeg", rate=fps)
        color.width, color.height = width, height
        color.pix_fmt = "yuvj422p"
        color.time_base = TIME_BASE
        color.metadata["title"] = "COLOR"
        color.metadata["K4A_COLOR_MODE"] = f"MJPG_{height}P"
        container.add_attachment("calibration.json", "application/octet-stream",
                                 calibration_json(width, height, renderer.focal, depth_size))

        def job(t):
            return encode_jpeg(renderer.render(t)), depth_frame(renderer, t, depth_size, (width, height))

        frame_us = 1_000_000 / fps
        jpeg_bytes = 0
        with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending = collections.deque()
            nxt = 0
            for t in range(n_frames):
                while nxt < n_frames and len(pending) < 3 * max(1, workers):
                    pending.append(pool.submit(job, nxt))
                    nxt += 1
                jpg, dep = pending.popleft().result()
                pts = pts0 + int(round(t * frame_us))
                for stream, data, key in ((depth, dep, True), (color, jpg, True)):
                    pkt = av.Packet(data)
                    pkt.stream = stream
                    pkt.pts = pkt.dts = pts
                    pkt.duration = int(round(frame_us))
                    pkt.time_base = TIME_BASE
                    pkt.is_keyframe = key
                    container.mux(pkt)
                jpeg_bytes += len(jpg)
                if progress is not None:
                    progress.update(1)
    finally:
        container.close()
    return {"first_pts_us": pts0, "k4a_start_offset_ns": start_offset_ns, "depth_size": list(depth_size),
            "mean_jpeg_bytes": jpeg_bytes / max(n_frames, 1)}


# ----------------------------------------------------------------------------- per song / subject
def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def plan_capture(n_subjects: int, n_songs: int, seed: int) -> list[dict]:
    """Subjects and their songs: ids, metadata, genre (all 8 genres cycled in a seeded order)."""
    rng = np.random.default_rng([seed, 909])
    genres = [demo_audio.GENRES[i] for i in rng.permutation(len(demo_audio.GENRES))]
    subjects, k = [], 0
    for i in range(n_subjects):
        sid = f"S{i + 1:03d}"
        songs = []
        for j in range(n_songs):
            genre = genres[k % len(genres)]
            title = _TITLES[genre][(k // len(genres)) % len(_TITLES[genre])]
            offset = round(0.2 + 0.4 * float(rng.random()), 3)
            songs.append({"song_id": f"{k + 1:03d}_{genre}_{_slug(title)}",
                          "title": title.replace("-", " ").title(), "genre": genre,
                          "language": _LANGUAGES[k % len(_LANGUAGES)], "audio_offset_s": offset,
                          "seed": int(rng.integers(0, 2**31 - 1))})
            k += 1
        subjects.append({"subject_id": sid, "gender": "female", "professional": i % 2 == 0,
                         "notes": "synthetic demo subject: scikit-image's astronaut photograph (NASA, public "
                                  "domain)" + (", mirrored and re-tinted" if i % 2 else ""),
                         "variant": i, "songs": songs})
    return subjects


def song_audio(song: dict, n_frames: int, fps: float) -> tuple:
    """The demo song's audio for `n_frames` video frames: (plan, vocal (N,) at VOCAL_SR, mic noise
    (N,), original (M, 2) at ORIGINAL_SR, its vocal part, its accompaniment part, loudness per
    video frame (n_frames,))."""
    seed, genre, offset = song["seed"], song["genre"], song["audio_offset_s"]
    plan = demo_audio.song_plan(genre, seed)
    # The song runs on the vocal's clock; video time v is vocal time v + offset, so the microphone
    # file holds `offset` seconds before the first video frame and ends with the last one.
    audio_s = n_frames / fps + offset
    vocal = demo_audio.synth_vocal(audio_s, VOCAL_SR, seed, genre, plan=plan)
    acc = demo_audio.synth_accompaniment(audio_s, ORIGINAL_SR, seed, genre, plan=plan)
    vocal_44 = resample_poly(vocal.astype(np.float64), 147, 160)[: len(acc)]
    vocal_44 = np.pad(vocal_44, (0, len(acc) - len(vocal_44)))
    original, vocal_part, acc_part = demo_audio.mix_original(vocal_44, acc, vocal_gain_db=1.0)
    mic_noise = np.random.default_rng([seed, 111]).standard_normal(len(vocal)).astype(np.float32) * 3e-4
    loud = demo_audio.loudness_envelope(vocal, VOCAL_SR, fps, n_frames, start_s=offset)
    return plan, vocal, mic_noise, original, vocal_part, acc_part, loud


def write_song_folder(song_dir: Path, song: dict, vocal: np.ndarray, original: np.ndarray, renderer,
                      n_frames: int, fps: int, width: int, height: int, workers: int,
                      progress: Progress | None) -> dict:
    """One raw/ song folder, atomically: song.json, vocal.wav (VOCAL_SR, 24 bit), original.wav
    (ORIGINAL_SR, 16 bit) and color.mkv rendered by `renderer`; returns the video's track info."""
    with atomic_dir(song_dir) as tmp:
        write_json_atomic(tmp / "song.json", {"title": song["title"], "genre": song["genre"],
                                              "language": song["language"],
                                              "audio_offset_s": song["audio_offset_s"]})
        write_wav(tmp / "vocal.wav", vocal, VOCAL_SR, "PCM_24")
        write_wav(tmp / "original.wav", original, ORIGINAL_SR, "PCM_16")
        return write_kinect_mkv(tmp / "color.mkv", renderer, n_frames, fps, width, height, song["seed"],
                                workers=workers, progress=progress)


def make_song(song_dir: Path, truth_dir: Path, song: dict, asset: FaceAsset, background: np.ndarray,
              width: int, height: int, seconds: float, fps: int, workers: int, params: dict,
              progress: Progress | None = None) -> dict:
    """Write one song folder (song.json, color.mkv, vocal.wav, original.wav) and its truth."""
    seed, genre, offset = song["seed"], song["genre"], song["audio_offset_s"]
    n_frames = int(round(seconds * fps))
    plan, vocal, mic_noise, original, vocal_part, acc_part, loud = song_audio(song, n_frames, fps)
    levels = np.round(loud * (MOUTH_LEVELS - 1)).astype(np.int64)

    face_px = FACE_HEIGHT_4K * height / 2160.0
    path = head_path(n_frames, fps, width, height, face_px, seed)
    focal = 10.0 * face_px               # camera ~10 face heights away: mild perspective on yaw
    sheet = lyric_sheet(int(2.0 * face_px), int(2.6 * face_px), seed)
    renderer = FrameRenderer(background, asset, path, levels, focal, sheet)

    video = write_song_folder(song_dir, song, vocal + mic_noise, original, renderer, n_frames, fps, width,
                              height, workers, progress)

    landmarks = np.stack([renderer.true_landmarks(t) for t in range(n_frames)]).astype(np.float32)
    truth = {
        "audio_offset_s": offset, "fps": fps, "frames": n_frames, "width": width, "height": height,
        "excursion_frames": list(path.excursion), "faceless_frames": list(path.faceless),
        "genre": genre, "bpm": plan.bpm, "key_midi": plan.key_midi, "mouth_levels": MOUTH_LEVELS,
        "face_height_px": face_px, "focal_px": focal, "vocal_sr": VOCAL_SR, "original_sr": ORIGINAL_SR,
        "video": video, "params": params, "song": song,
        "alignment": "video frame t is vocal/original time t/fps + audio_offset_s; accompaniment.wav and "
                     "vocal_clean.wav share original.wav's timeline; original = vocal_clean + accompaniment",
        "conventions": {"center": "frame pixels of the head anchor (mean of the 68 landmarks)",
                        "scale": "face height (eyebrows to chin) in pixels before rotation",
                        "yaw_pitch_roll": "radians, R = Rz(roll) Ry(yaw) Rx(pitch), camera x right, "
                                          "y down, z forward",
                        "landmarks": "true Dlib-68 positions in frame pixels, NaN where no face is visible"},
    }
    with atomic_dir(truth_dir) as tmp:
        save_npz_atomic(tmp / "truth.npz", {
            "face_visible": path.face_visible, "center": path.center.astype(np.float32),
            "scale": path.scale.astype(np.float32), "yaw": path.yaw.astype(np.float32),
            "pitch": path.pitch.astype(np.float32), "roll": path.roll.astype(np.float32),
            "mouth_open": (levels / (MOUTH_LEVELS - 1)).astype(np.float32), "loudness": loud,
            "landmarks": landmarks})
        write_wav(tmp / "accompaniment.wav", acc_part, ORIGINAL_SR, "FLOAT")
        write_wav(tmp / "vocal_clean.wav", vocal_part[:, 0], ORIGINAL_SR, "FLOAT")
        write_json_atomic(tmp / "truth.json", truth)
    return {"song_id": song["song_id"], "genre": genre, "frames": n_frames, "audio_offset_s": offset,
            "excursion_frames": list(path.excursion), "faceless_frames": list(path.faceless),
            "mean_jpeg_bytes": video["mean_jpeg_bytes"]}


def _song_is_current(song_dir: Path, truth_dir: Path, params: dict) -> bool:
    needed = [song_dir / n for n in ("song.json", "color.mkv", "vocal.wav", "original.wav")]
    tj = truth_dir / "truth.json"
    if not all(p.is_file() for p in needed) or not tj.is_file() or not (truth_dir / "truth.npz").is_file():
        return False
    try:
        return json.loads(tj.read_text())["params"] == json.loads(json_dumps(params))
    except Exception:
        return False


def make_demo_capture(out: Path, truth: Path, width: int = 3840, height: int = 2160, seconds: float = 20.0,
                      n_subjects: int = 2, n_songs: int = 2, seed: int = 0, fps: int = 30,
                      workers: int | None = None, force: bool = False, with_scan: bool = True,
                      task=None) -> dict:
    """Write a demo capture under `out` (raw/ layout) and its ground truth under `truth`.

    Deterministic for a seed: rerunning gives the same bytes. Songs whose files already exist with
    the same parameters are kept unless `force`. Each subject gets a scan/ from
    `demo.scan.write_demo_scan` when that module is installed and `with_scan`.
    Returns a summary of what was written.
    """
    out, truth = Path(out), Path(truth)
    if width % 2 or height % 2 or width < 160 or height < 90:
        raise PipelineInputError(f"{width}x{height}", "demo frame size must be even and at least 160x90 "
                                 "(4:2:2 chroma halves the width)", "pick e.g. 640x360 or 3840x2160")
    if seconds < 4.0:
        raise PipelineInputError(f"{seconds}s", "demo songs need at least 4 s for the excursion and the "
                                 "face-less span", "give 6 s or more (singinghead demo-capture --seconds 6)")
    workers = workers or min(2, os.cpu_count() or 1)
    subjects = plan_capture(n_subjects, n_songs, seed)
    n_frames = int(round(seconds * fps))
    total = n_frames * n_subjects * n_songs
    progress = Progress(task, total, "demo frames", lines=task is None)
    summary = {"out": str(out), "truth": str(truth), "width": width, "height": height, "fps": fps,
               "seconds": seconds, "seed": seed, "subjects": []}
    try:
        for subj in subjects:
            sid = subj["subject_id"]
            sdir = out / sid
            write_json_atomic(sdir / "subject.json",
                              {k: subj[k] for k in ("subject_id", "gender", "professional", "notes")})
            # A killed earlier run may have left temporaries that would look like songs.
            for folder in (sdir, sdir / "songs", truth / sid):
                remove_stale_temps(folder)
            cache = {}

            def asset_and_background(variant=subj["variant"], cache=cache):
                # Built on first need only, so an up-to-date capture is checked in seconds.
                if not cache:
                    cache["asset"] = face_asset(variant)
                    cache["bg"] = studio_background(width, height, seed * 1000 + variant)
                return cache["asset"], cache["bg"]
            if with_scan:
                # metric in mm and declared, like a light-stage export with scale bars (undeclared
                # arbitrary units are refused unless [scan_fit] units = free)
                stamp = {"generator_version": GENERATOR_VERSION, "seed": seed, "variant": subj["variant"],
                         "scan_units": "mm", "head_generator_version": HEAD_GENERATOR_VERSION}
                stamp_path = truth / sid / "demo_subject.json"
                current = (sdir / "scan").is_dir() and stamp_path.is_file() and \
                    json.loads(stamp_path.read_text()) == stamp
                if force or not current:
                    log.info("writing demo scan for %s (demo.scan)", sid)
                    with atomic_dir(sdir / "scan") as scan_tmp:
                        write_demo_scan(scan_tmp, truth / sid, seed * 1000 + subj["variant"],
                                        asset_and_background()[0].rgb, units="mm")
                    write_json_atomic(stamp_path, stamp)
            songs = []
            for song in subj["songs"]:
                params = {"generator_version": GENERATOR_VERSION, "width": width, "height": height,
                          "seconds": seconds, "fps": fps, "seed": seed, "subject": sid, "song": song}
                song_dir = sdir / "songs" / song["song_id"]
                truth_dir = truth / sid / song["song_id"]
                if not force and _song_is_current(song_dir, truth_dir, params):
                    log.info("demo song %s/%s is up to date", sid, song["song_id"])
                    progress.skip(n_frames)
                    songs.append({"song_id": song["song_id"], "genre": song["genre"], "skipped": True})
                    continue
                log.info("writing demo song %s/%s (%dx%d, %.1f s)", sid, song["song_id"], width, height,
                         seconds)
                t0 = time.monotonic()
                asset, background = asset_and_background()
                songs.append(make_song(song_dir, truth_dir, song, asset, background, width, height, seconds,
                                       fps, workers, params, progress))
                el = time.monotonic() - t0
                log.info("demo song %s/%s: %d frames in %.1f s (%.1f frames/s, %.2f MB JPEG per frame)", sid,
                         song["song_id"], n_frames, el, n_frames / el, songs[-1]["mean_jpeg_bytes"] / 1e6)
            summary["subjects"].append({"subject_id": sid, "scan": with_scan, "songs": songs})
    finally:
        progress.close()
    return summary
