"""Reading a light-stage scan: the mesh (OBJ/PLY, textured or vertex-coloured, any units) with
trimesh, its 68 hand-placed 3D landmarks from `scan/landmarks.json` and its declared units from
`scan/scan.json` when there are ones."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import numpy as np
import trimesh
import trimesh.resolvers

from tasks.capture.raw_layout import SCAN_LANDMARKS, SCAN_UNITS
from tasks.common.bounded import MAX_JSON_BYTES, MAX_SIDECAR_BYTES, no_duplicate_keys, read_bounded
from tasks.common.errors import PipelineInputError

log = logging.getLogger("singinghead")

N_LANDMARKS = 68
SCAN_FIX = ("export the scan from Metashape as OBJ (with its .mtl and texture image) "
            "or as PLY with vertex colours")
LANDMARK_FIX = ("write scan/landmarks.json as {\"landmarks\": [[x, y, z], ...]} "
                "with 68 points in iBUG order, "
                "in the scan's own coordinates")


@dataclasses.dataclass
class Scan:
    path: Path
    vertices: np.ndarray                   # (N, 3) float64, scan units
    faces: np.ndarray                      # (F, 3) int64
    corner_uv: np.ndarray | None = None    # (F, 3, 2) texture coordinates per triangle corner
    texture: np.ndarray | None = None      # (H, W, 3) uint8
    vertex_colors: np.ndarray | None = None  # (N, 3) uint8

    @property
    def has_color(self) -> bool:
        return self.texture is not None or self.vertex_colors is not None


def load_scan(path: Path) -> Scan:
    """Read an OBJ or PLY scan with trimesh (texture through the OBJ's .mtl, or vertex colours).

    Raises PipelineInputError when the file cannot be read or holds no triangles.
    """
    path = Path(path)
    # Read here, bounded, and handed to trimesh as bytes; the .mtl and texture images it asks for
    # come through `_BoundedResolver`, so no file of the scan folder is opened unbounded.
    data = read_bounded(path, MAX_SIDECAR_BYTES, "the scan", SCAN_FIX)
    resolver = _BoundedResolver(str(path))
    try:
        mesh = trimesh.load(io.BytesIO(data), file_type=path.suffix.lstrip(".").lower(), force="mesh",
                            process=False, resolver=resolver)
    except PipelineInputError:
        raise
    except Exception as e:  # trimesh raises many kinds on a damaged file
        raise PipelineInputError(path, f"cannot read the scan ({type(e).__name__}: {e})", SCAN_FIX) from e
    if resolver.refused:
        raise resolver.refused[0]
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) < 3:
        raise PipelineInputError(path, "the scan holds no triangle mesh", SCAN_FIX)
    vertices = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    if not np.all(np.isfinite(vertices)):
        raise PipelineInputError(path, "the scan has non-finite vertex coordinates", SCAN_FIX)
    if not has_area(vertices, faces):
        raise PipelineInputError(path, f"all {len(faces)} triangles of the scan have zero area (a degenerate "
                                 "mesh: its vertices coincide or lie on a line), nothing to fit", SCAN_FIX)
    scan = Scan(path=path, vertices=vertices, faces=faces)
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
        image = getattr(getattr(visual, "material", None), "image", None)
        if image is None:
            base = getattr(getattr(visual, "material", None), "baseColorTexture", None)
            image = base
        if image is not None and len(visual.uv) == len(vertices):
            scan.texture = np.asarray(image.convert("RGB"), np.uint8)
            scan.corner_uv = np.asarray(visual.uv, np.float64)[faces]
        else:
            log.warning("%s: texture coordinates but no readable texture image; treating as untextured", path)
    elif getattr(visual, "kind", None) == "vertex":
        vc = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
        if len(vc) == len(vertices):
            scan.vertex_colors = vc
    return scan


def has_area(vertices: np.ndarray, faces: np.ndarray, rel: float = 1e-10) -> bool:
    """Whether any triangle of vertices (N, 3), faces (F, 3) has an area above `rel` x the squared
    bounding-box diagonal (indices outside the vertices count as no area)."""
    faces = faces[(faces >= 0).all(axis=1) & (faces < len(vertices)).all(axis=1)]
    if len(faces) == 0:
        return False
    tri = vertices[faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    diag2 = float(np.sum((vertices.max(axis=0) - vertices.min(axis=0)) ** 2))
    return bool(diag2 > 0 and area2.max() > rel * diag2)


class _BoundedResolver(trimesh.resolvers.FilePathResolver):
    """trimesh's resolver for the files an OBJ names (.mtl, textures), inside the scan's folder,
    each read through `read_bounded` (a FIFO or /dev/zero there is refused, not read forever)."""

    def __init__(self, source: str):
        super().__init__(source)
        self.refused: list[PipelineInputError] = []

    def get(self, name: str) -> bytes:
        for candidate in (name.strip(), name.strip().lstrip("/"), Path(name).name):
            try:
                p = self.absolute(candidate)
            except ValueError:
                continue
            if p.exists():
                try:
                    return read_bounded(p, MAX_SIDECAR_BYTES, "a file the scan refers to", SCAN_FIX)
                except PipelineInputError as e:
                    self.refused.append(e)      # trimesh swallows errors of its assets: raised after
                    raise
        self.absolute(name)
        raise FileNotFoundError(name)


def load_scan_landmarks(path: Path) -> np.ndarray:
    """68 3D landmarks (68, 3) float64 from landmarks.json: a list of [x, y, z] or
    {"landmarks": [...]}. Raises PipelineInputError on anything else."""
    path = Path(path)
    try:
        data = json.loads(read_bounded(path, MAX_JSON_BYTES, "landmarks.json", LANDMARK_FIX).decode("utf-8"),
                          object_pairs_hook=no_duplicate_keys)
        pts = data["landmarks"] if isinstance(data, dict) else data
        arr = np.asarray(pts, dtype=np.float64)
    except Exception as e:
        raise PipelineInputError(path, f"cannot read the landmarks ({type(e).__name__}: {e})",
                                 LANDMARK_FIX) from e
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise PipelineInputError(path, f"landmarks have shape {arr.shape}, expected (68, 3)", LANDMARK_FIX)
    if arr.shape[0] != N_LANDMARKS:
        raise PipelineInputError(path, f"has {arr.shape[0]} landmarks, expected 68 (iBUG order)",
                                 LANDMARK_FIX)
    if not np.all(np.isfinite(arr)):
        raise PipelineInputError(path, "landmarks contain non-finite values", LANDMARK_FIX)
    return arr


# Light-stage scans are metric; scan/scan.json {"units": "mm"} declares the unit, which fixes the
# scan -> model scale (model units: metres for FLAME and the procedural model).
METRES_PER_UNIT = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254}
UNITS_FIX = 'write scan/scan.json as {"units": "mm"} (one of mm, cm, m, in), or delete it to fit the scale'


def declared_scale(scan_path: Path) -> tuple[float | None, str | None]:
    """(scan -> model scale, unit name) from scan/scan.json next to the scan, or (None, None).

    Raises PipelineInputError for an unreadable file or an unknown unit."""
    path = Path(scan_path).parent / SCAN_UNITS
    if not path.exists():
        return None, None
    try:
        data = json.loads(read_bounded(path, MAX_JSON_BYTES, "scan.json", UNITS_FIX).decode("utf-8"),
                          object_pairs_hook=no_duplicate_keys)
        units = data["units"]
    except PipelineInputError:
        raise
    except Exception as e:
        raise PipelineInputError(path, f"cannot read the scan's units ({type(e).__name__}: {e})", UNITS_FIX) from e
    if not isinstance(units, str) or units not in METRES_PER_UNIT:
        raise PipelineInputError(path, f"unknown units {units!r}", UNITS_FIX)
    return METRES_PER_UNIT[units], units


def scan_landmarks_path(scan_path: Path) -> Path:
    """Where hand-placed landmarks of a scan live: landmarks.json next to it."""
    return Path(scan_path).parent / SCAN_LANDMARKS
