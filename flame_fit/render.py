"""A small headless renderer: a head mesh seen through the orthographic portrait camera, shaded.

Rays are cast with open3d's RaycastingScene (Embree, CPU, no display or GL context needed), one per
pixel along the camera's viewing direction; the hit's interpolated vertex normal is lit with a
Lambert model (a key light from the upper left of the camera plus ambient). The camera is the
pipeline's `cam = [s, tx, ty]` over a square portrait of `size` pixels (ARCHITECTURE.md).
"""
from __future__ import annotations

import numpy as np
import open3d as o3d

from flame_fit.geometry import vertex_normals


def pixel_rays(cam: np.ndarray, size: int, depth: float) -> np.ndarray:
    """Rays (size*size, 6) = origin xyz + direction xyz in model space, row-major over pixels.

    Pixel centre (u+0.5, v+0.5) -> NDC -> model x = ndc_x/s - tx, y = -ndc_y/s - ty (the inverse of
    flame_fit.camera.orth_project); rays start at z = depth and look down -z (FLAME faces +z).
    """
    s, tx, ty = (float(c) for c in cam)
    c = (np.arange(size) + 0.5) * (2.0 / size) - 1.0
    ndc_x, ndc_y = np.meshgrid(c, c)
    x = ndc_x / s - tx
    y = -ndc_y / s - ty
    rays = np.zeros((size * size, 6), np.float32)
    rays[:, 0] = x.ravel()
    rays[:, 1] = y.ravel()
    rays[:, 2] = depth
    rays[:, 5] = -1.0
    return rays


def render_mesh(vertices: np.ndarray, faces: np.ndarray, cam: np.ndarray, size: int,
                color=(0.80, 0.72, 0.66), background=(0.12, 0.12, 0.14),
                light=(-0.4, 0.5, 1.0), ambient: float = 0.25) -> np.ndarray:
    """Shaded image (size, size, 3) uint8 RGB of the mesh through the camera.

    vertices (V,3) model space (posed), faces (F,3), cam (3,) = [s, tx, ty].
    """
    return render_mesh_mask(vertices, faces, cam, size, color, background, light, ambient)[0]


def render_mesh_mask(vertices: np.ndarray, faces: np.ndarray, cam: np.ndarray, size: int,
                     color=(0.80, 0.72, 0.66), background=(0.12, 0.12, 0.14),
                     light=(-0.4, 0.5, 1.0), ambient: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """`render_mesh`'s image (size, size, 3) uint8 and the pixels the mesh covers (size, size) bool."""
    v = np.asarray(vertices, np.float32)
    f = np.asarray(faces, np.uint32)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(f))
    depth = float(v[:, 2].max()) + 1.0
    hit = scene.cast_rays(o3d.core.Tensor(pixel_rays(cam, size, depth)))
    prim = hit["primitive_ids"].numpy().astype(np.int64)
    valid = np.isfinite(hit["t_hit"].numpy())
    img = np.empty((size * size, 3), np.float64)
    img[:] = background
    if valid.any():
        uv = hit["primitive_uvs"].numpy()[valid].astype(np.float64)
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)         # (N,3)
        vn = vertex_normals(v, f.astype(np.int64))
        n = (vn[f[prim[valid]].astype(np.int64)] * bary[..., None]).sum(axis=1)         # (N,3)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        # the camera looks down -z: a normal facing away means an inward-wound face; light both sides
        n *= np.where(n[:, 2:3] < 0, -1.0, 1.0)
        ldir = np.asarray(light, np.float64)
        ldir /= np.linalg.norm(ldir)
        lambert = np.clip(n @ ldir, 0.0, 1.0)
        shade = ambient + (1.0 - ambient) * lambert
        img[valid] = shade[:, None] * np.asarray(color)[None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(size, size, 3), valid.reshape(size, size)
