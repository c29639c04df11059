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

Visibility is exact: one sample per pixel centre along -z, the nearest triangle's barycentric
coordinates select the texture point (bilinear), and a soft Lambert term on the interpolated normal
shades it. Only the pixels of the projected head's bounding box are touched. `render_head` does this
with a z-buffer rasterizer compiled by numba (hand-written because it is about 20x faster than casting
one Embree ray per pixel and numpy's per-pixel gathers, and just as exact: for an orthographic
camera the ray through a pixel centre hits the nearest triangle whose projection contains it, at the
2D barycentric coordinates); `render_head_raycast` is the open3d ray caster it replaced, kept as the
reference the tests and bench/demo_capture.py compare it with.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba
import numpy as np
import open3d as o3d
import scipy.sparse
import scipy.sparse.linalg
from scipy import ndimage
from skimage.draw import polygon

from demo.scan import face_outline, warp_face_photo
from flame_fit.geometry import vertex_normals

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


def photo_skin_colour(low: np.ndarray, face: np.ndarray, tex_lmk: np.ndarray) -> np.ndarray:
    """The skin tone (3,) in [0, 1] the head continues: the per-channel median of the photo's local mean
    colour `low` (S,S,3) along the rim of the face mask (S,S) bool below the eyes (the cheeks and
    the jaw, not the hair or a hat above the brows); tex_lmk (68,2) texture pixels. The face's own
    edge, so the skin beyond it continues it, and the photo's shading inside stays as it was."""
    rim = face & ~ndimage.binary_erosion(face, border_value=0)
    rows = np.arange(face.shape[0])[:, None]
    return np.median(low[rim & (rows > tex_lmk[36:48, 1].max())], axis=0)


def harmonic_fill(values: np.ndarray, known: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Solve Laplace's equation for the pixels of `inside` (h,w) bool that are not `known` (h,w) bool,
    with `values` (h,w,C) fixed where known (Dirichlet); returns (h,w,C), `values` elsewhere.

    The smoothest field that takes the given values on the region's rim: the colour correction of
    Poisson image blending (Perez et al. 2003). A sparse direct solve (scipy), exact and deterministic.
    """
    out = values.astype(np.float64).copy()
    free = inside & ~known
    idx = -np.ones(free.shape, np.int64)
    idx[free] = np.arange(int(free.sum()))
    n = int(free.sum())
    if n == 0:
        return out
    ys, xs = np.nonzero(free)
    rows, cols, data = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    rhs = np.zeros((n, values.shape[2]))
    h, w = free.shape
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        yy, xx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
        nb = idx[yy, xx]
        inner = nb >= 0
        rows.append(np.flatnonzero(inner))
        cols.append(nb[inner])
        data.append(np.full(int(inner.sum()), -1.0))
        # a neighbour outside the free set holds its fixed value (outside `inside`: Neumann, itself)
        rim = ~inner & known[yy, xx]
        rhs[rim] += out[yy[rim], xx[rim]]
        self_ = ~inner & ~known[yy, xx]
        data[0][self_] -= 1.0
    a = scipy.sparse.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), (n, n))
    out[free] = scipy.sparse.linalg.spsolve(a.tocsc(), rhs).reshape(n, -1)
    return out


def skin_texture(photo: np.ndarray, photo_lmk: np.ndarray, tex_lmk: np.ndarray, size: int, eye_px: float,
                 step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The photo's face on skin that continues it without a seam: (texture (S,S,3) uint8, skin (3,) uint8).

    The photo is warped so its landmarks land on `tex_lmk` (68,2 texture pixels); the face region
    (demo.scan.face_outline, its contour pulled 5 % towards the face so that no background or hair
    of the photo at its edge comes along) keeps the photo, and everything else is the skin tone of
    the face's edge (photo_skin_colour). Poisson blending joins them: a smooth colour
    correction, harmonic inside the region's core and cancelling the difference between the photo's
    local mean colour and the skin tone on the core's rim, is added to the photo, which then fades
    into the skin tone over a band along the region's edge (where the photo darkens towards its own
    silhouette or catches hair). The texture has no painted outline for a detector to follow: a
    face's outline comes from the geometry (silhouette and shading) alone. The correction is
    smooth, so it is solved on a grid `step` times coarser and upsampled.
    """
    warped = warp_face_photo(photo, photo_lmk, tex_lmk, size, eye_px)
    centre = tex_lmk[27:36].mean(axis=0)
    outline = face_outline(tex_lmk, eye_px, brow_raise=0.3)
    outline = centre + 0.95 * (outline - centre)
    face = np.zeros((size, size), bool)
    rr, cc = polygon(outline[:, 1], outline[:, 0], shape=(size, size))
    face[rr, cc] = True
    face &= ~np.any(warped < 0, axis=2)
    # the photo's low frequencies over the face only (normalised convolution: no background leaks in)
    sigma = 0.08 * eye_px
    wsum = ndimage.gaussian_filter(face.astype(np.float64), sigma)
    low = np.stack([ndimage.gaussian_filter(np.where(face, warped[..., k], 0.0), sigma)
                    for k in range(3)], axis=-1)
    low /= np.maximum(wsum, 1e-6)[..., None]
    # the core: the face less a band along its edge, where the photo darkens towards its own
    # silhouette or catches hair; the band crossfades from the core's photo to the skin tone
    band = 0.12 * eye_px
    depth = ndimage.distance_transform_edt(face)
    core = depth > band
    skin = photo_skin_colour(low, core, tex_lmk)
    # coarse grid: the correction skin - low on the core's rim, harmonic inside
    small = core[step // 2::step, step // 2::step]
    rim = small & ~ndimage.binary_erosion(small, border_value=0)
    corr = np.zeros(small.shape + (3,))
    corr[rim] = skin - low[step // 2::step, step // 2::step][rim]
    corr = harmonic_fill(corr, rim, small)
    # the rim's values extended outwards (nearest), then upsampled
    _, (iy, ix) = ndimage.distance_transform_edt(~small, return_indices=True)
    corr = cv2.resize(corr[iy, ix], (size, size), interpolation=cv2.INTER_LINEAR)
    x = np.clip(depth / band, 0, 1)
    alpha = (x * x * (3 - 2 * x))[..., None]
    tex = alpha * (np.clip(warped, 0, 1) + corr) + (1 - alpha) * skin
    return (np.clip(tex, 0, 1) * 255 + 0.5).astype(np.uint8), (skin * 255 + 0.5).astype(np.uint8)


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
    texture, skin = skin_texture(photo, photo_lmk, tex_px, size,
                                 eye_px=(FACE_UV[1] - FACE_UV[0]) * size / 3.0)
    # mouth cavity between the inner lips, feathered by a pixel or two
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(tex_px[60:68] * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
    mask = cv2.GaussianBlur(mask, (0, 0), max(size / 1024, 0.5))[..., None]
    texture = (texture * (1 - mask) + CAVITY * mask).round().astype(np.uint8)
    for name, colour in (("skin", skin), ("hair", HAIR)):
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


def render_head_raycast(frame: np.ndarray, vertices: np.ndarray, faces: np.ndarray, head: TexturedHead,
                cam, light=(-0.3, 0.4, 1.0), ambient: float = 0.55) -> np.ndarray | None:
    """Draw the posed head into `frame` (H,W,3) uint8 RGB in place; returns the drawn mask region
    as (y0, y1, x0, x1) or None when the head is outside the frame.

    vertices (V,3) posed model points, faces (F,3), cam [f, u0, v0] (module docstring).
    """
    h, w = frame.shape[:2]
    f, u0, v0 = (float(c) for c in cam)
    box = head_box(vertices, cam, w, h)
    if box is None:
        return None
    y0, y1, x0, x1 = box
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


# ----------------------------------------------------------------------------- the fast renderer
@numba.njit(cache=True, nogil=True)
def _rasterize(px, depth, faces, x0, y0, prim, bary, zbuf):  # pragma: no cover - compiled
    """Z-buffer of the triangles over the box whose top-left pixel is (x0, y0).

    px (V,2) frame pixels, depth (V,) larger = nearer (the camera looks down -z), faces (F,3);
    prim (h,w) int32 set to -1, bary (h,w,2) float64, zbuf (h,w) float64 set to -inf are filled:
    the nearest triangle at each pixel centre and the (u, v) weights of its 2nd and 3rd corner.
    """
    h, w = prim.shape
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay, bx, by, cx, cy = px[a, 0], px[a, 1], px[b, 0], px[b, 1], px[c, 0], px[c, 1]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0.0:
            continue
        # pixel centres x0 + i + 0.5 inside the triangle's box
        i0 = max(int(np.ceil(min(ax, bx, cx) - 0.5)) - x0, 0)
        i1 = min(int(np.floor(max(ax, bx, cx) - 0.5)) - x0, w - 1)
        j0 = max(int(np.ceil(min(ay, by, cy) - 0.5)) - y0, 0)
        j1 = min(int(np.floor(max(ay, by, cy) - 0.5)) - y0, h - 1)
        za, zb, zc = depth[a], depth[b], depth[c]
        inv = 1.0 / area
        # u, v are affine in the pixel centre (qx, qy): u = u_x qx + u_y qy + u_0, same for v
        ux, uy = (cy - ay) * inv, -(cx - ax) * inv
        vx, vy = -(by - ay) * inv, (bx - ax) * inv
        for j in range(j0, j1 + 1):
            qy = y0 + j + 0.5 - ay
            for i in range(i0, i1 + 1):
                qx = x0 + i + 0.5 - ax
                u = qx * ux + qy * uy
                v = qx * vx + qy * vy
                if u < 0.0 or v < 0.0 or u + v > 1.0:
                    continue
                z = (1.0 - u - v) * za + u * zb + v * zc
                if z > zbuf[j, i]:
                    zbuf[j, i] = z
                    prim[j, i] = f
                    bary[j, i, 0] = u
                    bary[j, i, 1] = v


@numba.njit(cache=True, nogil=True)
def _shade(out, prim, bary, faces, corner_uv, texture, normals, light, ambient):  # pragma: no cover
    """Paint the rasterized pixels of `out` (h,w,3) uint8: bilinear texture at the interpolated
    uv times ambient + (1 - ambient) max(0, n.l) of the interpolated, normalised normal."""
    h, w = prim.shape
    th, tw = texture.shape[0], texture.shape[1]
    for j in range(h):
        for i in range(w):
            f = prim[j, i]
            if f < 0:
                continue
            b1, b2 = bary[j, i, 0], bary[j, i, 1]
            b0 = 1.0 - b1 - b2
            uu = b0 * corner_uv[f, 0, 0] + b1 * corner_uv[f, 1, 0] + b2 * corner_uv[f, 2, 0]
            vv = b0 * corner_uv[f, 0, 1] + b1 * corner_uv[f, 1, 1] + b2 * corner_uv[f, 2, 1]
            x = min(max(uu * tw - 0.5, 0.0), tw - 1.0)
            y = min(max((1.0 - vv) * th - 0.5, 0.0), th - 1.0)
            xi, yi = int(np.floor(x)), int(np.floor(y))
            xj, yj = min(xi + 1, tw - 1), min(yi + 1, th - 1)
            fx, fy = x - xi, y - yi
            n0 = b0 * normals[faces[f, 0], 0] + b1 * normals[faces[f, 1], 0] + b2 * normals[faces[f, 2], 0]
            n1 = b0 * normals[faces[f, 0], 1] + b1 * normals[faces[f, 1], 1] + b2 * normals[faces[f, 2], 1]
            n2 = b0 * normals[faces[f, 0], 2] + b1 * normals[faces[f, 1], 2] + b2 * normals[faces[f, 2], 2]
            norm = max(np.sqrt(n0 * n0 + n1 * n1 + n2 * n2), 1e-12)
            lam = (n0 * light[0] + n1 * light[1] + n2 * light[2]) / norm
            shade = ambient + (1.0 - ambient) * min(max(lam, 0.0), 1.0)
            for k in range(3):
                col = ((1.0 - fy) * ((1.0 - fx) * texture[yi, xi, k] + fx * texture[yi, xj, k])
                       + fy * ((1.0 - fx) * texture[yj, xi, k] + fx * texture[yj, xj, k]))
                out[j, i, k] = np.uint8(min(max(np.rint(col * shade), 0.0), 255.0))


def head_box(vertices: np.ndarray, cam, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) frame pixels the posed head (V,3) can cover under cam, or None if off frame."""
    px = project(vertices, cam)
    x0, y0 = np.floor(px.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(px.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(y0), int(y1), int(x0), int(x1)


def render_head(frame: np.ndarray, vertices: np.ndarray, faces: np.ndarray, head: TexturedHead,
                cam, light=(-0.3, 0.4, 1.0), ambient: float = 0.55) -> tuple | None:
    """Draw the posed head into `frame` (H,W,3) uint8 in place (the texture's channel order);
    returns the touched region (y0, y1, x0, x1) or None when the head is outside the frame.

    vertices (V,3) posed model points, faces (F,3) int64, cam [f, u0, v0] (module docstring).
    Same samples and shading as `render_head_raycast`.
    """
    h, w = frame.shape[:2]
    box = head_box(vertices, cam, w, h)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    verts = np.asarray(vertices, np.float64)
    px = project(verts, cam)
    prim = np.full((y1 - y0, x1 - x0), -1, np.int32)
    bary = np.empty((y1 - y0, x1 - x0, 2), np.float64)   # read only where prim >= 0
    zbuf = np.full((y1 - y0, x1 - x0), -np.inf)
    faces = np.ascontiguousarray(faces, np.int64)
    _rasterize(np.ascontiguousarray(px), np.ascontiguousarray(verts[:, 2]), faces, x0, y0, prim, bary, zbuf)
    if not (prim >= 0).any():
        return None
    ldir = np.asarray(light, np.float64) / np.linalg.norm(light)
    _shade(frame[y0:y1, x0:x1], prim, bary, faces, np.ascontiguousarray(head.corner_uv, np.float64),
           np.ascontiguousarray(head.texture), vertex_normals(verts, faces), ldir, float(ambient))
    return box
