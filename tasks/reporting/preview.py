"""A side-by-side MP4 to judge a segment's fit at a glance (`singinghead preview SUBJECT SONG SEGMENT`).

Left: the portrait frame with the smoothed detected landmarks (green) and the refined model's
projected landmarks (red). Right: the refined head mesh, shaded, seen from the same camera
(flame_fit.render, headless). Like the paper's Fig. 5.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from flame_fit.refine import RefineParams, clean_landmarks, project_landmarks_px
from flame_fit.render import render_mesh
from tasks.common.atomic import atomic_path
from tasks.common.errors import PipelineInputError
from tasks.faces.landmarks import iter_rgb_frames

log = logging.getLogger("singinghead")

DETECTED = (40, 220, 60)     # RGB
MODEL = (235, 50, 40)


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
    """Write the side-by-side MP4 (2*panel x panel, H.264) and return the number of frames written.

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
    written = 0
    chunk = 16
    verts = None
    with atomic_path(out) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")  # the temp name keeps .mp4, but say it
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 2 * panel, panel, "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast"}
            for t, rgb in enumerate(iter_rgb_frames(video, max_frames=T)):
                if t % chunk == 0:
                    verts = posed_vertices(model, motion, t, min(t + chunk, T))
                left = cv2.resize(rgb, (panel, panel), interpolation=cv2.INTER_AREA)
                left = np.ascontiguousarray(left)
                draw_landmarks(left, smoothed[t] * scale, DETECTED, radius)
                draw_landmarks(left, fitted[t] * scale, MODEL, radius)
                right = render_mesh(verts[t % chunk], faces, motion["cam"][t], panel)
                frame = av.VideoFrame.from_ndarray(np.concatenate([left, right], axis=1), format="rgb24")
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
