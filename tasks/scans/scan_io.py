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
UNITS_FIX = ('write scan/scan.json as {"units": "mm"} (one of mm, cm, m, in), or delete it to infer the '
             'units from the head\'s size')
INFER_FIX = ('declare the scan\'s units in scan/scan.json as {"units": "mm"} (one of mm, cm, m, in), '
             'or set [scan_fit] units = free in luigi.cfg to fit the scale')
# A head measures 0.15-0.25 m across; front to back at the eyes (nose bridge to the back of the head,
# hair included) adults measure about 0.17-0.23 m, the generated demo heads 0.20-0.24 m. The
# accepted range leaves room for hair and scan noise and still cannot hold two of the units:
# neighbouring units differ by 2.54x (cm, in) or more, the range spans 2.3x.
HEAD_LENGTH_RANGE_M = (0.13, 0.30)
# vertices within this x the outer-eye-corner distance of the line through the eyes count
_HEAD_AXIS_RADIUS = 0.3
_HEAD_LANDMARKS = (36, 39, 42, 45, 48, 54)       # eye corners, mouth corners


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
        raise PipelineInputError(path, f"cannot read the scan's units ({type(e).__name__}: {e})",
                                 UNITS_FIX) from e
    if not isinstance(units, str) or units not in METRES_PER_UNIT:
        raise PipelineInputError(path, f"unknown units {units!r}", UNITS_FIX)
    return METRES_PER_UNIT[units], units


def scan_landmarks_path(scan_path: Path) -> Path:
    """Where hand-placed landmarks of a scan live: landmarks.json next to it."""
    return Path(scan_path).parent / SCAN_LANDMARKS


def head_length(vertices: np.ndarray, landmarks: np.ndarray, valid: np.ndarray | None = None) -> float | None:
    """The head's length front to back at the eyes, in scan units, or None when it cannot be measured.

    The face's forward direction is the normal of the eye axis (landmark 36 -> 45) and the line from
    the mouth corners' middle to the eyes' middle; the length is the extent along it of the scan's
    vertices (N, 3) within 0.3 outer-eye-corner distances of the line through the eyes' middle (the
    nose bridge in front, the back of the head behind). landmarks (68, 3) in scan units; valid (68,)
    bool (automatic landmarks can miss). None: a needed landmark is missing, the landmarks are
    degenerate, or the scan has no surface in front of or behind the eyes along that line.
    """
    lmk = np.asarray(landmarks, np.float64)
    ok = np.ones(len(lmk), bool) if valid is None else np.asarray(valid, bool)
    if not all(ok[i] for i in _HEAD_LANDMARKS) or not np.all(np.isfinite(lmk[list(_HEAD_LANDMARKS)])):
        return None
    across = lmk[45] - lmk[36]
    eye_dist = float(np.linalg.norm(across))
    eyes = lmk[[36, 39, 42, 45]].mean(axis=0)
    up = eyes - (lmk[48] + lmk[54]) / 2
    forward = np.cross(across, up)
    norm = float(np.linalg.norm(forward))
    if eye_dist <= 0 or norm <= 1e-9 * eye_dist * float(np.linalg.norm(up)) or not np.isfinite(norm):
        return None
    forward = forward / norm
    d = np.asarray(vertices, np.float64) - eyes
    along = d @ forward
    off_axis = np.linalg.norm(d - along[:, None] * forward, axis=1)
    near = along[off_axis < _HEAD_AXIS_RADIUS * eye_dist]
    if len(near) == 0 or near.max() <= 0 or near.min() >= 0:
        return None
    return float(near.max() - near.min())


def units_fitting(length: float, head_range: tuple | None = None) -> list[str]:
    """The units (of METRES_PER_UNIT) in which a head `length` scan units long is a head: within
    `head_range` (m; default HEAD_LENGTH_RANGE_M)."""
    lo, hi = HEAD_LENGTH_RANGE_M if head_range is None else head_range
    return [name for name, metres in METRES_PER_UNIT.items() if lo <= length * metres <= hi]


@dataclasses.dataclass(frozen=True)
class ScanUnits:
    """How the scan's units were settled. source: 'declared' (scan.json), 'inferred' (from the head's
    length) or 'free' (the scale is fitted); scale: scan -> model (metres per scan unit) or None."""
    source: str
    unit: str | None
    scale: float | None
    head_length: float | None = None       # scan units, measured front to back at the eyes

    def record(self) -> dict:
        """What the fit's report.json keeps about the units."""
        out = {"source": self.source, "unit": self.unit, "metres_per_scan_unit": self.scale}
        if self.head_length is not None:
            out["head_length_scan_units"] = round(self.head_length, 6)
            if self.scale is not None:
                out["head_length_m"] = round(self.head_length * self.scale, 4)
            out["head_length_range_m"] = list(HEAD_LENGTH_RANGE_M)
        return out

    def describe(self) -> str:
        """One line for the log and the report's 'scale'."""
        if self.source == "declared":
            return f"fixed by the declared units ({self.unit}, {SCAN_UNITS})"
        if self.source == "inferred":
            return (f"fixed by the inferred units ({self.unit}: no {SCAN_UNITS}; the head measures "
                    f"{self.head_length * self.scale:.3f} m front to back in {self.unit}, the only unit "
                    f"that makes it {HEAD_LENGTH_RANGE_M[0]}-{HEAD_LENGTH_RANGE_M[1]} m)")
        return f"fitted ([scan_fit] units = free, no {SCAN_UNITS})"


def scan_units(scan_path: Path, vertices: np.ndarray, landmarks: np.ndarray, mode: str = "infer",
               valid: np.ndarray | None = None) -> ScanUnits:
    """The scan's units: declared in scan.json, else the one unit that makes the head a head
    (`head_length`), else a fitted scale when `mode` is 'free'.

    vertices (N, 3) and landmarks (68, 3) in scan units, valid (68,) bool or None. mode: the
    `[scan_fit] units` setting, 'infer' or 'free' (declared units win either way). Raises
    PipelineInputError naming the scan when the units are undeclared and no unit, or more than
    one, makes the head 0.13-0.30 m long (mode 'infer').
    """
    scale, unit = declared_scale(scan_path)
    if scale is not None:
        return ScanUnits("declared", unit, scale)
    if mode == "free":
        return ScanUnits("free", None, None)
    if mode != "infer":
        raise ValueError(f"[scan_fit] units must be 'infer' or 'free', not {mode!r}")
    length = head_length(vertices, landmarks, valid)
    if length is None:
        raise PipelineInputError(scan_path, "the scan declares no units and its head cannot be measured "
                                 "(eye and mouth landmarks missing, or no surface in front of and behind "
                                 "the eyes)", INFER_FIX)
    fits = units_fitting(length)
    if len(fits) != 1:
        sizes = ", ".join(f"{length * m:.3g} m in {u}" for u, m in METRES_PER_UNIT.items())
        what = "none of" if not fits else "more than one of (" + ", ".join(fits) + ") among"
        raise PipelineInputError(scan_path, f"the scan declares no units and its head measures {length:.4g} "
                                 f"scan units front to back ({sizes}): {what} mm, cm, m, in makes it a "
                                 f"head ({HEAD_LENGTH_RANGE_M[0]}-{HEAD_LENGTH_RANGE_M[1]} m)", INFER_FIX)
    return ScanUnits("inferred", fits[0], METRES_PER_UNIT[fits[0]], length)
