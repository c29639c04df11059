"""Point-to-surface geometry for fitting a mesh to a scan: closest points through a BVH,
differentiable surface points, a robust kernel and the face-region selection.

Closest points come from open3d's `RaycastingScene` (an Embree BVH; exact point-to-triangle
distance, multithreaded) instead of a brute-force search. The optimiser then keeps each scan
point's (triangle, barycentric) correspondence fixed for a few iterations and re-evaluates the
surface point from the current vertices, so the distance stays differentiable in the shape.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
import open3d as o3d
import torch


def _scene(vertices: np.ndarray, faces: np.ndarray) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)))
    return scene


class SurfaceIndex:
    """A BVH over one triangle mesh for closest-point, distance and ray queries.

    vertices: (V, 3) float, faces: (F, 3) int, in any (consistent) units.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int64)
        self.scene = _scene(self.vertices, self.faces)

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closest surface point of each query point.

        points: (N, 3). Returns face_ids (N,) int64, bary (N, 3) float32 (weights of the
        triangle's three corners) and the closest points (N, 3) float64.
        """
        ans = self.scene.compute_closest_points(
            o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32)))
        ids = ans["primitive_ids"].numpy().astype(np.int64)
        uv = ans["primitive_uvs"].numpy().astype(np.float32)
        # open3d's (u, v): point = (1 - u - v) * a + u * b + v * c
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
        return ids, bary, ans["points"].numpy().astype(np.float64)

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Unsigned distance (N,) of each point to the surface."""
        d = self.scene.compute_distance(o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32)))
        return d.numpy().astype(np.float64)

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
        """Ray hits: origins, directions (N, 3) -> {'t_hit' (N,) inf when missed,
        'primitive_ids' (N,), 'bary' (N, 3), 'normals' (N, 3)}."""
        rays = np.concatenate([origins, directions], axis=1).astype(np.float32)
        ans = self.scene.cast_rays(o3d.core.Tensor(np.ascontiguousarray(rays)))
        uv = ans["primitive_uvs"].numpy()
        ids = ans["primitive_ids"].numpy().astype(np.int64)
        t = ans["t_hit"].numpy().astype(np.float64)
        ids[~np.isfinite(t)] = -1
        return {"t_hit": t, "primitive_ids": ids,
                "bary": np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1),
                "normals": ans["primitive_normals"].numpy().astype(np.float64)}


def points_on_faces(vertices: torch.Tensor, faces: torch.Tensor, face_ids: torch.Tensor,
                    bary: torch.Tensor) -> torch.Tensor:
    """Surface points from (triangle, barycentric) pairs, differentiable in the vertices.

    vertices (V, 3), faces (F, 3) long, face_ids (N,) long, bary (N, 3) -> (N, 3).
    """
    tri = vertices[faces[face_ids]]                       # (N, 3 corners, 3)
    return (tri * bary.unsqueeze(-1)).sum(dim=1)


def face_normals_at(vertices: torch.Tensor, faces: torch.Tensor, face_ids: torch.Tensor) -> torch.Tensor:
    """Unit normals (N, 3) of the triangles `face_ids` (N,) of the mesh (V, 3), (F, 3)."""
    tri = vertices[faces[face_ids]]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def geman_mcclure(sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure kernel of squared residuals: sq / (sq + sigma^2), in [0, 1).

    Quadratic for residuals well below sigma, flat beyond a few sigma, so points on hair,
    shoulders or across holes stop pulling on the fit instead of dominating it.
    """
    s2 = sigma * sigma
    return sq / (sq + s2)


def face_region_mask(points: np.ndarray, landmarks: np.ndarray, radius: float,
                     forward: np.ndarray | None = None, behind: float | None = None) -> np.ndarray:
    """Which points belong to the face: within `radius` of some landmark and, when `forward`
    (3,) is given, no further than `behind` behind the rearmost landmark along it (in front of
    the ears; the back of the head and the hair stay out).

    points (N, 3), landmarks (L, 3), same units. Returns (N,) bool.
    """

    d, _ = cKDTree(np.asarray(landmarks, dtype=np.float64)).query(np.asarray(points, dtype=np.float64), k=1)
    mask = d < radius
    if forward is not None:
        f = np.asarray(forward, dtype=np.float64)
        f = f / np.linalg.norm(f)
        depth = points @ f
        limit = (landmarks @ f).min() - (behind if behind is not None else 0.0)
        mask &= depth > limit
    return mask


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a mesh (V, 3), (F, 3)."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
