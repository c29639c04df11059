"""An MP4 to judge a segment's fit at a glance (`singinghead preview SUBJECT SONG SEGMENT`).

Top: the portrait frame with the refined head mesh drawn over it (shaded, semi-transparent, with its
outline; flame_fit.render, headless, through the same orthographic camera), the smoothed detected
landmarks (green) and the refined model's projected landmarks (red), and a legend for them. Below:
the fit's per-frame figures over the whole segment, head yaw and jaw opening in degrees, with the
current frame marked and its values printed. Where the mesh sits off the face, or the yaw or the jaw
lags what the video shows, a person sees it.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from scipy.spatial.transform import Rotation

from flame_fit.refine import RefineParams, clean_landmarks, project_landmarks_px
from flame_fit.render import render_mesh_mask
from tasks.common.atomic import atomic_path
from tasks.common.errors import PipelineInputError
from tasks.faces.landmarks import iter_rgb_frames

log = logging.getLogger("singinghead")

DETECTED = (40, 220, 60)     # RGB
MODEL = (235, 50, 40)
MESH_TINT = (0.45, 0.70, 1.0)    # light blue: stands out on skin
MESH_ALPHA = 0.45                # mesh share of an overlaid pixel
MESH_OUTLINE = (120, 190, 255)
LEGEND = (("detected landmarks", DETECTED), ("model landmarks", MODEL), ("fitted mesh", MESH_OUTLINE))
YAW_COLOR = (255, 200, 60)
JAW_COLOR = (230, 110, 230)
STRIP_FRACTION = 0.36            # height of the figures under the portrait, x panel
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def preview_size(panel: int) -> tuple[int, int]:
    """(width, height) of the preview's frames for a portrait panel of `panel` pixels."""
    return panel, panel + strip_height(panel)


def strip_height(panel: int) -> int:
    """Height of the figure strip: two rows, even (H.264 4:2:0)."""
    return max(32, 4 * round(panel * STRIP_FRACTION / 4))


def head_yaw_deg(global_orient: np.ndarray, neck_pose: np.ndarray) -> np.ndarray:
    """Yaw (T,) in degrees of the head's whole rotation R_global @ R_neck (axis-angle (T,3) each): the
    first angle of its intrinsic y-x-z Euler decomposition (turn left/right about the vertical)."""
    r = Rotation.from_rotvec(np.asarray(global_orient, np.float64)) * Rotation.from_rotvec(
        np.asarray(neck_pose, np.float64))
    return np.degrees(r.as_euler("YXZ")[:, 0])


def jaw_opening_deg(jaw_pose: np.ndarray) -> np.ndarray:
    """Jaw opening (T,) in degrees: the jaw rotation about the model's x axis (FLAME opens with +x)."""
    return np.degrees(np.asarray(jaw_pose, np.float64)[:, 0])


def overlay_mesh(portrait: np.ndarray, shaded: np.ndarray, mask: np.ndarray,
                 alpha: float = MESH_ALPHA) -> np.ndarray:
    """The portrait (H,W,3) uint8 with the shaded mesh (H,W,3) blended in where `mask` (H,W) and its
    outline drawn; a new array."""
    out = portrait.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * shaded[mask].astype(np.float32)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    out[edge] = MESH_OUTLINE
    return out


def draw_legend(img: np.ndarray, items=LEGEND) -> tuple[int, int, int, int]:
    """A dark box in the top-left corner naming each dot colour (label, RGB) (in place); returns the
    box (x0, y0, x1, y1), end exclusive."""
    h = img.shape[0]
    scale = max(0.3, h / 1100)
    line = max(10, int(round(24 * scale / 0.5)))
    width = max(cv2.getTextSize(label, _FONT, scale, 1)[0][0] for label, _ in items) + line + 8
    box = img[2:4 + line * len(items), 2:2 + width]
    box[:] = (0.35 * box).astype(np.uint8)
    for i, (label, color) in enumerate(items):
        y = 2 + line * i + line // 2
        cv2.circle(img, (2 + line // 2, y + 1), max(2, line // 5), color, -1, lineType=cv2.LINE_AA)
        cv2.putText(img, label, (4 + line, y + line // 4), _FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return 2, 2, 2 + box.shape[1], 2 + box.shape[0]


class FigureStrip:
    """The per-frame figures under the portrait: one row per series over all T frames, a cursor.

    series: ((name, unit, values (T,), RGB), ...); width, height: the strip's size in pixels.
    Frame t is at column `column(t)`; a value v of row i at `row(i, v)`.
    """

    def __init__(self, series, width: int, height: int):
        self.series, self.width, self.height = series, width, height
        self.rows = len(series)
        self.row_h = height // self.rows
        self.label_w = max(24, width // 5)
        self.T = len(series[0][2])
        self.ranges = []
        base = np.full((height, width, 3), 24, np.uint8)
        for i, (name, unit, values, color) in enumerate(series):
            v = np.asarray(values, np.float64)
            finite = v[np.isfinite(v)]
            lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
            pad = max(0.1 * (hi - lo), 1.0)
            self.ranges.append((lo - pad, hi + pad))
            top = i * self.row_h
            bottom = top + self.row_h - 1
            cv2.line(base, (self.label_w, bottom), (width - 1, bottom), (70, 70, 70), 1)
            if self.ranges[i][0] < 0 < self.ranges[i][1]:
                y0 = self.row(i, 0.0)
                cv2.line(base, (self.label_w, y0), (width - 1, y0), (60, 60, 60), 1)
            pts = np.stack([self.column(np.arange(self.T)), self.row(i, v)], axis=1)
            ok = np.isfinite(v)
            if ok.sum() >= 2:
                cv2.polylines(base, [pts[ok].astype(np.int32)], False, color, 1, cv2.LINE_AA)
        self.base = base

    def column(self, t):
        """Pixel column of frame t (int or array)."""
        span = self.width - 1 - self.label_w
        return self.label_w + np.round(np.asarray(t) * span / max(self.T - 1, 1)).astype(int)

    def row(self, i: int, value):
        """Pixel row of `value` in series i (a float or an array; higher values higher up)."""
        lo, hi = self.ranges[i]
        top = i * self.row_h + 2
        span = self.row_h - 5
        v = np.asarray(value, np.float64)
        return np.round(top + (hi - np.nan_to_num(v, nan=lo)) / (hi - lo) * span).astype(int)

    def frame(self, t: int) -> np.ndarray:
        """The strip (height, width, 3) uint8 at frame t: the curves, a cursor, the values at t."""
        img = self.base.copy()
        x = int(self.column(t))
        cv2.line(img, (x, 0), (x, self.height - 1), (200, 200, 200), 1)
        scale = max(0.28, self.row_h / 120)
        for i, (name, unit, values, color) in enumerate(self.series):
            y_mid = i * self.row_h + self.row_h // 2
            cv2.putText(img, name, (3, y_mid - 2), _FONT, scale, color, 1, cv2.LINE_AA)
            cv2.putText(img, f"{float(values[t]):+.1f}{unit}", (3, y_mid + int(self.row_h * 0.3)), _FONT,
                        scale, (230, 230, 230), 1, cv2.LINE_AA)
            cv2.circle(img, (x, int(self.row(i, values[t]))), 2, color, -1, lineType=cv2.LINE_AA)
        return img


def draw_landmarks(img: np.ndarray, points: np.ndarray, color, radius: int) -> None:
    """Filled dots at points (68,2) pixel coordinates of img (in place)."""
    for x, y in np.asarray(points, np.float64):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(img, (int(round(x)), int(round(y))), radius, color, -1, lineType=cv2.LINE_AA)


@torch.no_grad()
def posed_vertices(model, motion: dict, start: int, stop: int) -> np.ndarray:
    """Vertices (stop-start, V, 3) of the motion's frames [start, stop)."""
    dev = model.v_template.device
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
    n = stop - start
    out = model(f32(motion["shape"]).reshape(1, -1).expand(n, -1), f32(motion["expression"][start:stop]),
                f32(motion["global_orient"][start:stop]), f32(motion["neck_pose"][start:stop]),
                f32(motion["jaw_pose"][start:stop]))
    return out.vertices.cpu().numpy()


def write_preview(model, motion: dict, frames: dict, video: Path, out: Path, panel: int = 512,
                  portrait_size: int = 1024, smooth_weight: float = 10.0, max_frames: int | None = None,
                  progress=None) -> int:
    """Write the preview MP4 (`preview_size(panel)`, H.264) and return the number of frames written.

    motion: the motion.npz arrays; frames: the frames.npz arrays (landmarks in portrait pixels of
    `portrait_size`); video: the segment's portrait MP4.
    """
    T = len(motion["expression"])
    if max_frames:
        T = min(T, max_frames)
    params = RefineParams(smooth_weight=smooth_weight)
    smoothed, _ = clean_landmarks(np.asarray(frames["landmarks"], np.float64),
                                  np.asarray(frames["landmark_ok"], bool), params)
    fitted = project_landmarks_px(model, motion["shape"], motion["expression"], motion["global_orient"],
                                  motion["neck_pose"], motion["jaw_pose"], motion["cam"], portrait_size)
    scale = panel / float(portrait_size)
    faces = model.faces.cpu().numpy()
    fps = Fraction(float(np.asarray(motion.get("fps", 30.0)))).limit_denominator(1001)
    radius = max(1, panel // 256)
    width, height = preview_size(panel)
    strip = FigureStrip((("yaw", " deg", head_yaw_deg(motion["global_orient"][:T], motion["neck_pose"][:T]),
                          YAW_COLOR),
                         ("jaw open", " deg", jaw_opening_deg(motion["jaw_pose"][:T]), JAW_COLOR)),
                        width, height - panel)
    written = 0
    chunk = 16
    verts = None
    with atomic_path(out) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")  # the temp name keeps .mp4, but say it
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast"}
            for t, rgb in enumerate(iter_rgb_frames(video, max_frames=T)):
                if t % chunk == 0:
                    verts = posed_vertices(model, motion, t, min(t + chunk, T))
                portrait = cv2.resize(rgb, (panel, panel), interpolation=cv2.INTER_AREA)
                shaded, mask = render_mesh_mask(verts[t % chunk], faces, motion["cam"][t], panel,
                                                color=MESH_TINT)
                top = overlay_mesh(portrait, shaded, mask)
                draw_landmarks(top, smoothed[t] * scale, DETECTED, radius)
                draw_landmarks(top, fitted[t] * scale, MODEL, radius)
                draw_legend(top)
                image = np.concatenate([top, strip.frame(t)], axis=0)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                written += 1
                if progress is not None:
                    progress.update(1)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    if written < T:
        log.warning("%s has %d frames, the motion %d: preview stops at %d", video, written, T, written)
    return written


def load_npz(path: Path, what: str, fix: str) -> dict:
    """The arrays of an .npz input, or a PipelineInputError naming it (`what`) and the `fix`."""
    if not path.is_file():
        raise PipelineInputError(path, f"{what} is missing", fix)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def segment_video(portrait_dir: Path, segment: dict) -> Path:
    """The portrait MP4 of one segment of segments.json (`segment`), checked to exist."""
    video = Path(portrait_dir) / segment["video"]
    if not video.is_file():
        raise PipelineInputError(video, "the segment's portrait video is missing",
                                 "delete the song's portrait/ folder and rerun CropPortraits")
    return video
