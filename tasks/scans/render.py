"""Ray-cast renders of a scan with orthographic cameras: colour images, hit points, lifting pixels to 3D."""
from __future__ import annotations

import dataclasses

import numpy as np

from flame_fit.geometry import SurfaceIndex
from tasks.scans.scan_io import Scan


@dataclasses.dataclass
class View:
    """An orthographic camera: looks along -forward, image x along `right`, image y along -up."""
    center: np.ndarray     # (3,) point at the image centre
    right: np.ndarray      # (3,) unit
    up: np.ndarray         # (3,) unit
    forward: np.ndarray    # (3,) unit, from the subject towards the camera
    half_extent: float     # half image width in scan units
    size: int              # pixels (square)

    def rays(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays through pixel positions px (N, 2) (x, y, pixel centres at +0.5) -> origins, dirs (N, 3)."""
        px = np.asarray(px, np.float64).reshape(-1, 2)
        scale = 2 * self.half_extent / self.size
        a = (px[:, 0] - self.size / 2) * scale
        b = (self.size / 2 - px[:, 1]) * scale
        far = 4 * self.half_extent
        origins = self.center + a[:, None] * self.right + b[:, None] * self.up + far * self.forward
        return origins, np.broadcast_to(-self.forward, origins.shape).copy()

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel positions (N, 2) of 3D points (N, 3)."""
        d = np.asarray(points) - self.center
        scale = self.size / (2 * self.half_extent)
        return np.stack([d @ self.right * scale + self.size / 2, self.size / 2 - d @ self.up * scale], axis=1)


def make_view(center, forward, up, half_extent, size) -> View:
    f = np.asarray(forward, np.float64)
    f = f / np.linalg.norm(f)
    u = np.asarray(up, np.float64)
    u = u - (u @ f) * f
    u = u / np.linalg.norm(u)
    return View(np.asarray(center, np.float64), np.cross(u, f), u, f, float(half_extent), int(size))


def surface_albedo(scan: Scan, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Colour (N, 3) float in [0, 1] at surface points (triangle ids (N,), barycentrics (N, 3))."""
    if scan.texture is not None:
        uv = (scan.corner_uv[face_ids] * bary[:, :, None]).sum(axis=1)
        h, w = scan.texture.shape[:2]
        x = np.clip(uv[:, 0] % 1.0 * (w - 1), 0, w - 1)
        y = np.clip((1 - uv[:, 1] % 1.0) * (h - 1), 0, h - 1)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        t = scan.texture.astype(np.float64) / 255.0
        return ((1 - fy) * ((1 - fx) * t[y0, x0] + fx * t[y0, x1])
                + fy * ((1 - fx) * t[y1, x0] + fx * t[y1, x1]))
    if scan.vertex_colors is not None:
        vc = scan.vertex_colors.astype(np.float64) / 255.0
        return (vc[scan.faces[face_ids]] * bary[:, :, None]).sum(axis=1)
    return np.full((len(face_ids), 3), 0.7)


def render(scan: Scan, index: SurfaceIndex, view: View, shaded_only: bool = False
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view: RGB (S, S, 3) uint8 (albedo x soft Lambert light from the camera),
    hit points (S, S, 3) (NaN where missed) and the hit mask (S, S)."""
    s = view.size
    jj, ii = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5)
    o, d = view.rays(np.stack([jj.ravel(), ii.ravel()], axis=1))
    hit = index.cast(o, d)
    mask = np.isfinite(hit["t_hit"])
    img = np.ones((s * s, 3))
    pts = np.full((s * s, 3), np.nan)
    ids = hit["primitive_ids"][mask]
    pts[mask] = o[mask] + hit["t_hit"][mask, None] * d[mask]
    light = np.abs(hit["normals"][mask] @ view.forward)
    albedo = np.full((len(ids), 3), 0.75) if shaded_only else surface_albedo(scan, ids, hit["bary"][mask])
    img[mask] = albedo * (0.45 + 0.55 * light[:, None])
    return ((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(s, s, 3),
            pts.reshape(s, s, 3), mask.reshape(s, s))


def lift(index: SurfaceIndex, view: View, px: np.ndarray) -> np.ndarray:
    """3D points (N, 3) where rays through pixels px (N, 2) hit the scan; NaN rows on a miss."""
    o, d = view.rays(px)
    hit = index.cast(o, d)
    t = np.where(np.isfinite(hit["t_hit"]), hit["t_hit"], np.nan)
    return o + t[:, None] * d
