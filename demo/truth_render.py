"""Exact renders of the head model for the truth capture: ray casting + barycentric texture lookup.

Camera model (scaled orthographic, the pipeline's own camera family):
    u = u0 + f * X,    v = v0 - f * Y          (frame pixels, pixel centres at +0.5)
for a posed model-space point (X, Y, Z) (FLAME frame: metres, y up, face towards +z); the camera
looks down -z, so the head's global orientation is its rotation relative to the camera. `f` is
pixels per model unit, (u0, v0) the frame position of the model origin; a frame's camera is the
row `[f, u0, v0]`. It maps onto the portrait/EMOCA camera `cam = [s, tx, ty]` of a square crop
box with corner (bx, by) and side S (source pixels) as
    s = 2 f / S,   tx = (2 (u0 - bx) / S - 1) / s,   ty = (1 - 2 (v0 - by) / S) / s
(`portrait_camera`), so every frame is explained exactly by the model the pipeline fits; no
perspective is left for an orthographic fit to absorb.

Visibility is exact: one ray per pixel (open3d's Embree ray caster) along -z, the nearest hit's
triangle and barycentric coordinates select the texture point (bilinear), and a soft Lambert
term shades it. Only the pixels of the projected head's bounding box are cast.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d

from demo.scan import face_texture
from flame_fit.geometry import vertex_normals

SKIN = np.array([224, 172, 140], np.float64)
HAIR = np.array([58, 40, 30], np.float64)
CAVITY = np.array([60, 22, 25], np.float64)
# texture layout (like demo.scan): the frontal projection fills uv [0.1, 0.9]; solid patches
# in the border band give side and scalp colours
FACE_UV = (0.1, 0.9)
PATCH_UV = {"skin": (0.04, 0.04), "hair": (0.96, 0.04)}


@dataclass
class TexturedHead:
    """Per-corner texture coordinates of the model's faces and the texture image."""
    corner_uv: np.ndarray    # (F,3,2) in [0,1], v up
    texture: np.ndarray      # (S,S,3) uint8 RGB
    tex_landmarks: np.ndarray  # (68,2) texture pixels where the model's neutral landmarks sit


def _uv_map(points: np.ndarray, lmk: np.ndarray, eye: float) -> np.ndarray:
    """Frontal projection of model points (N,3) to uv (N,2), v up."""
    lo = lmk[:, :2].mean(axis=0) - 1.5 * eye
    a, b = FACE_UV
    return a + (b - a) * (points[:, :2] - lo) / (3.0 * eye)


def textured_head(vertices: np.ndarray, faces: np.ndarray, landmarks: np.ndarray, photo: np.ndarray,
                  photo_lmk: np.ndarray, size: int = 1024) -> TexturedHead:
    """Texture a neutral head: the photo warped so its Dlib landmarks land on the model's.

    vertices (V,3) neutral mesh at the subject's shape, faces (F,3), landmarks (68,3) its neutral
    landmarks; photo (H,W,3) uint8 with Dlib landmarks photo_lmk (68,2). Front-facing triangles
    take the frontal projection; the scalp takes hair, other triangles skin. The region between
    the inner lips (landmarks 60-67) is painted as a dark mouth cavity: the triangles that the jaw
    stretches there show it, so an opening jaw shows an open mouth the detectors can see.
    """

    eye = float(np.linalg.norm(landmarks[36] - landmarks[45]))
    uv = _uv_map(vertices, landmarks, eye)
    tex_lmk_uv = _uv_map(landmarks, landmarks, eye)
    tex_px = np.stack([tex_lmk_uv[:, 0] * size, (1 - tex_lmk_uv[:, 1]) * size], axis=1)
    texture = face_texture(photo, photo_lmk, tex_px, size, eye_px=eye / (3.0 * eye) * (FACE_UV[1] - FACE_UV[0])
                           * size)
    # mouth cavity between the inner lips, feathered by a pixel or two
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(tex_px[60:68] * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
    mask = cv2.GaussianBlur(mask, (0, 0), max(size / 1024, 0.5))[..., None]
    texture = (texture * (1 - mask) + CAVITY * mask).round().astype(np.uint8)
    for name, colour in (("skin", SKIN), ("hair", HAIR)):
        u, v = PATCH_UV[name]
        cx, cy, r = int(u * size), int((1 - v) * size), max(2, int(0.03 * size))
        texture[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = colour.astype(np.uint8)

    normals = vertex_normals(vertices, faces)
    a, b = FACE_UV
    front = ((normals[faces][:, :, 2] > 0.2).all(axis=1)
             & (uv[faces] > a).all(axis=(1, 2)) & (uv[faces] < b).all(axis=(1, 2)))
    centroid = vertices[faces].mean(axis=1)
    brow_y = landmarks[17:27, 1].mean()
    scalp = (centroid[:, 1] > brow_y + 0.5 * eye) | (
        (centroid[:, 2] < landmarks[17:, 2].min() - 0.45 * eye) & (centroid[:, 1] > landmarks[33, 1]))
    corner_uv = uv[faces].copy()
    corner_uv[~front] = PATCH_UV["skin"]
    corner_uv[scalp & ~front] = PATCH_UV["hair"]
    corner_uv[scalp & front & (centroid[:, 1] > brow_y + 0.75 * eye)] = PATCH_UV["hair"]
    return TexturedHead(corner_uv=corner_uv, texture=texture, tex_landmarks=tex_px)


def portrait_camera(frame_cam: np.ndarray, box) -> np.ndarray:
    """Frame cameras (T,3) [f, u0, v0] -> portrait cameras (T,3) [s, tx, ty] of crop box (4,)
    [x0, y0, x1, y1] (square, source pixels); see the module docstring."""
    c = np.asarray(frame_cam, np.float64).reshape(-1, 3)
    bx, by, bx1, _ = (float(v) for v in box)
    side = bx1 - bx
    s = 2.0 * c[:, 0] / side
    tx = (2.0 * (c[:, 1] - bx) / side - 1.0) / s
    ty = (1.0 - 2.0 * (c[:, 2] - by) / side) / s
    return np.stack([s, tx, ty], axis=1)


def project(points: np.ndarray, cam) -> np.ndarray:
    """Model points (..., 3) -> frame pixels (..., 2) for one camera [f, u0, v0]."""
    f, u0, v0 = (float(c) for c in cam)
    p = np.asarray(points, np.float64)
    return np.stack([u0 + f * p[..., 0], v0 - f * p[..., 1]], axis=-1)


def render_head(frame: np.ndarray, vertices: np.ndarray, faces: np.ndarray, head: TexturedHead,
                cam, light=(-0.3, 0.4, 1.0), ambient: float = 0.55) -> np.ndarray | None:
    """Draw the posed head into `frame` (H,W,3) uint8 RGB in place; returns the drawn mask region
    as (y0, y1, x0, x1) or None when the head is outside the frame.

    vertices (V,3) posed model points, faces (F,3), cam [f, u0, v0] (module docstring).
    """
    h, w = frame.shape[:2]
    f, u0, v0 = (float(c) for c in cam)
    px = project(vertices, cam)
    x0, y0 = np.floor(px.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(px.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    uu, vv = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    n = uu.size
    rays = np.zeros((n, 6), np.float32)
    rays[:, 0] = ((uu - u0) / f).ravel()
    rays[:, 1] = (-(vv - v0) / f).ravel()
    rays[:, 2] = float(vertices[:, 2].max()) + 1.0
    rays[:, 5] = -1.0
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, np.uint32)))
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    hit = np.isfinite(ans["t_hit"].numpy())
    if not hit.any():
        return None
    prim = ans["primitive_ids"].numpy()[hit].astype(np.int64)
    buv = ans["primitive_uvs"].numpy()[hit].astype(np.float64)
    bary = np.stack([1.0 - buv[:, 0] - buv[:, 1], buv[:, 0], buv[:, 1]], axis=1)
    uv = (head.corner_uv[prim] * bary[:, :, None]).sum(axis=1)
    tex = head.texture
    th, tw = tex.shape[:2]
    x = np.clip(uv[:, 0] * tw - 0.5, 0, tw - 1)
    y = np.clip((1 - uv[:, 1]) * th - 0.5, 0, th - 1)
    xi, yi = np.floor(x).astype(int), np.floor(y).astype(int)
    xj, yj = np.minimum(xi + 1, tw - 1), np.minimum(yi + 1, th - 1)
    fx, fy = (x - xi)[:, None], (y - yi)[:, None]
    t = tex.astype(np.float32)
    col = ((1 - fy) * ((1 - fx) * t[yi, xi] + fx * t[yi, xj]) + fy * ((1 - fx) * t[yj, xi] + fx * t[yj, xj]))
    vn = vertex_normals(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    nrm = (vn[faces[prim]] * bary[:, :, None]).sum(axis=1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    ldir = np.asarray(light, np.float64) / np.linalg.norm(light)
    shade = ambient + (1 - ambient) * np.clip(nrm @ ldir, 0, 1)
    region = frame[y0:y1, x0:x1].reshape(-1, 3)
    region[hit] = np.clip(col * shade[:, None], 0, 255).round().astype(np.uint8)
    frame[y0:y1, x0:x1] = region.reshape(y1 - y0, x1 - x0, 3)
    return (y0, y1, x0, x1)
