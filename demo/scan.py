"""A generated light-stage scan with a known shape, for the demo capture, the tests and the benchmark.

The head model with a random identity shape is densified, given surface noise, holes, a hair
cap over the scalp and shoulders below the neck, moved into arbitrary scan units and a random
pose, and textured by projecting a face photo frontally, warped so that the photo's Dlib
landmarks land on the model's projected landmarks (so the automatic landmarks can find it).
The truth (shape and the model -> scan similarity) goes to a separate folder.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import trimesh.creation
import trimesh.remesh
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from skimage import data
from skimage.draw import polygon
from skimage.transform import PiecewiseAffineTransform, SimilarityTransform, warp

from flame_fit.flame import load_flame
from flame_fit.geometry import vertex_normals
from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from flame_fit.scan_fit import neutral_mesh
from tasks.capture.raw_layout import SCAN_UNITS
from tasks.faces import face_models
from tasks.common.atomic import atomic_path, save_npz_atomic, write_bytes_atomic, write_json_atomic
from tasks.scans.scan_io import METRES_PER_UNIT

log = logging.getLogger("singinghead")

TRUTH_FILE = "scan_truth.npz"
TEXTURE_FILE = "head_texture.png"
SKIN = np.array([224, 172, 140], np.uint8)
HAIR = np.array([58, 40, 30], np.uint8)
CLOTH = np.array([40, 70, 130], np.uint8)
# solid colour patches in the texture's border band (u, v), away from the face projection
_PATCH_UV = {"skin": (0.04, 0.04), "hair": (0.96, 0.04), "cloth": (0.04, 0.96)}
_FACE_UV_RANGE = (0.1, 0.9)


@functools.lru_cache(maxsize=4)
def _photo_landmarks_cached(key: str, shape: tuple, data: bytes) -> np.ndarray:
    rgb = np.frombuffer(data, np.uint8).reshape(shape)
    boxes, _ = face_models.detect_faces(rgb, device="cpu")
    if len(boxes) == 0:
        raise ValueError("no face found in the texture photo")
    return face_models.predict_landmarks(rgb, boxes[0]).astype(np.float64)


def photo_landmarks(rgb: np.ndarray) -> np.ndarray:
    """Dlib 68 landmarks (68, 2) of the most probable MTCNN face in a photo (H, W, 3) uint8."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    key = hashlib.sha1(rgb.tobytes()).hexdigest()
    return _photo_landmarks_cached(key, rgb.shape, rgb.tobytes())


def default_face_photo() -> np.ndarray:
    """The astronaut portrait shipped with scikit-image (public domain, NASA)."""
    return data.astronaut()


def _estimate(cls, src: np.ndarray, dst: np.ndarray):
    """skimage transform fitted to src -> dst (`from_estimate` on skimage >= 0.26, else `estimate`)."""
    if hasattr(cls, "from_estimate"):
        tf = cls.from_estimate(src, dst)
        if not tf:
            raise ValueError(f"{cls.__name__} could not be estimated from the landmarks")
        return tf
    tf = cls()
    if not tf.estimate(src, dst):
        raise ValueError(f"{cls.__name__} could not be estimated from the landmarks")
    return tf


def warp_face_photo(photo: np.ndarray, photo_lmk: np.ndarray, tex_lmk: np.ndarray, size: int,
                    eye_px: float) -> np.ndarray:
    """The photo warped so its landmarks land on `tex_lmk`: (size, size, 3) float64 in [0, 1], -1 where
    the photo does not reach. photo (H, W, 3) uint8, photo_lmk / tex_lmk (68, 2) pixels (x, y),
    eye_px: outer eye-corner distance in texture pixels."""
    # anchors around the face keep the piecewise warp smooth beyond the landmark hull
    sim = _estimate(SimilarityTransform, tex_lmk, photo_lmk)
    centre = tex_lmk[17:].mean(axis=0)
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = centre + 1.5 * eye_px * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    src = np.concatenate([tex_lmk, ring])
    dst = np.concatenate([photo_lmk, sim(ring)])
    pwa = _estimate(PiecewiseAffineTransform, src, dst)
    return warp(photo.astype(np.float64) / 255.0, pwa, output_shape=(size, size), order=1,
                mode="constant", cval=-1.0)


def face_outline(tex_lmk: np.ndarray, eye_px: float, brow_raise: float = 0.35) -> np.ndarray:
    """The face region's outline (27, 2) texture pixels: the jaw contour, closed over the brows
    raised towards the forehead by `brow_raise` eye-corner distances."""
    brows = tex_lmk[17:27][::-1].copy()
    brows[:, 1] -= brow_raise * eye_px
    return np.concatenate([tex_lmk[0:17], brows])


def face_texture(photo: np.ndarray, photo_lmk: np.ndarray, tex_lmk: np.ndarray, size: int,
                 eye_px: float) -> np.ndarray:
    """Warp the photo's face so its landmarks land on `tex_lmk`, over a skin-coloured texture.

    photo (H, W, 3) uint8, photo_lmk / tex_lmk (68, 2) pixels (x, y), eye_px: outer eye-corner
    distance in texture pixels. Returns (size, size, 3) uint8.
    """
    warped = warp_face_photo(photo, photo_lmk, tex_lmk, size, eye_px)
    # the face mask: jaw contour plus the brows raised towards the forehead, feathered
    outline = face_outline(tex_lmk, eye_px)
    mask = np.zeros((size, size), np.float64)
    rr, cc = polygon(outline[:, 1], outline[:, 0], shape=(size, size))
    mask[rr, cc] = 1.0
    mask = ndimage.gaussian_filter(mask, sigma=0.06 * eye_px)
    mask[np.any(warped < 0, axis=2)] = 0.0
    skin = SKIN.astype(np.float64) / 255.0
    tex = mask[..., None] * np.clip(warped, 0, 1) + (1 - mask[..., None]) * skin
    out = (np.clip(tex, 0, 1) * 255 + 0.5).astype(np.uint8)
    for name, colour in (("skin", SKIN), ("hair", HAIR), ("cloth", CLOTH)):
        u, v = _PATCH_UV[name]
        cx, cy = int(u * size), int((1 - v) * size)
        r = max(2, int(0.03 * size))
        out[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = colour
    return out


def _subdivide(vertices: np.ndarray, faces: np.ndarray, times: int) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(times):
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    return np.asarray(vertices, np.float64), np.asarray(faces, np.int64)


def _torso(eye: float, neck_bottom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shoulders: the upper part of a flat ellipsoid below the neck (model units)."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    v = np.asarray(sphere.vertices) * np.array([2.4, 1.1, 1.2]) * eye
    v = v + neck_bottom + np.array([0.0, -0.7 * eye, -0.15 * eye])
    f = np.asarray(sphere.faces)
    keep = v[f].mean(axis=1)[:, 1] > neck_bottom[1] - 1.0 * eye
    return v, f[keep]


def random_scan_pose(rng: np.random.Generator, head_size: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale (arbitrary scan units), rotation and translation model -> scan, like a Metashape export:
    an arbitrary up axis, any yaw, a few degrees of tilt, an offset origin."""
    unit = float(rng.choice([1000.0, 100.0, 39.37, 7.5]))      # mm, cm, inches, "chunk" units
    scale = unit * float(rng.uniform(0.95, 1.05))
    up_axes = [np.eye(3), Rotation.from_euler("x", 90, degrees=True).as_matrix()]   # y-up or z-up
    base = up_axes[int(rng.integers(0, 2))]
    yaw = Rotation.from_euler("y", float(rng.uniform(-180, 180)), degrees=True).as_matrix()
    tilt = Rotation.from_euler("xz", rng.normal(0, 6, size=2), degrees=True).as_matrix()
    rot = base @ yaw @ tilt
    t = rng.uniform(-3, 3, size=3) * head_size * scale
    return scale, rot, t


def build_demo_scan(model, seed: int, face_rgb: np.ndarray | None = None, subdivisions: int = 1,
                    texture_size: int = 512, shape: np.ndarray | None = None,
                    units_per_model_unit: float | None = None) -> dict:
    """Geometry, texture and truth of one generated scan (see the module docstring).

    Returns {'vertices' (N, 3) scan units, 'faces' (F, 3), 'corner_uv' (F, 3, 2), 'texture'
    (T, T, 3) uint8, 'truth': {'shape' (100,), 'scale', 'R' (3, 3), 't' (3,) model -> scan,
    'landmarks' (68, 3) scan units, 'vertices_model' (V, 3), 'faces_model' (F, 3)}}.
    `shape` (100,) replaces the random identity (a given subject's head); `units_per_model_unit`
    fixes the scan's scale (e.g. 1000: a metric scan in mm of a model in metres) instead of a
    random unit.
    """

    rng = np.random.default_rng(seed)
    # FLAME's shape coefficients are unit-variance; stay within 2 sigma
    random_shape = np.clip(rng.normal(0.0, 1.0, 100), -2.0, 2.0).astype(np.float32)
    random_shape[20:] *= 0.5
    shape = random_shape if shape is None else np.asarray(shape, np.float32).reshape(100)
    device = next(model.buffers()).device
    verts_m, lmk_m = neutral_mesh(model, shape, device)
    faces_m = model.faces.detach().cpu().numpy().astype(np.int64)
    eye = float(np.linalg.norm(lmk_m[36] - lmk_m[45]))

    v, f = _subdivide(verts_m, faces_m, subdivisions)
    normals = vertex_normals(v, f)
    # surface noise along the normal (0.3 mm at FLAME scale)
    v = v + normals * rng.normal(0.0, 0.0033 * eye, size=(len(v), 1))

    centroid = v[f].mean(axis=1)
    brow_y = lmk_m[17:27, 1].mean()
    front_z = lmk_m[17:, 2].min()
    scalp = (centroid[:, 1] > brow_y + 0.55 * eye) | (
        (centroid[:, 2] < front_z - 0.45 * eye) & (centroid[:, 1] > lmk_m[33, 1]))
    # holes: three patches away from the face landmarks
    d_face, _ = cKDTree(lmk_m[17:]).query(centroid)
    candidates = np.flatnonzero((d_face > 0.55 * eye) & ~scalp)
    holes = np.zeros(len(f), bool)
    if len(candidates):
        for c in rng.choice(candidates, size=min(3, len(candidates)), replace=False):
            holes |= np.linalg.norm(centroid - centroid[c], axis=1) < float(rng.uniform(0.1, 0.18)) * eye
    keep_face = ~scalp & ~holes

    # hair cap: the scalp pushed outwards by about a centimetre, a separate sheet as in a scan
    cap_f = f[scalp]
    cap_vids = np.unique(cap_f)
    cap_v = v[cap_vids] + normals[cap_vids] * (0.11 * eye + rng.normal(0, 0.01 * eye, (len(cap_vids), 1)))
    remap = -np.ones(len(v), np.int64)
    remap[cap_vids] = np.arange(len(cap_vids))
    cap_f = remap[cap_f]

    neck_bottom = np.array([0.0, verts_m[:, 1].min(), verts_m[:, 2].mean()])
    torso_v, torso_f = _torso(eye, neck_bottom)

    # texture coordinates: the head's frontal projection for front-facing triangles
    xy = v[:, :2]
    lo = lmk_m[:, :2].mean(axis=0) - 1.5 * eye
    span = 3.0 * eye
    a, b = _FACE_UV_RANGE
    uv = np.empty((len(v), 2))
    uv[:, 0] = a + (b - a) * (xy[:, 0] - lo[0]) / span
    uv[:, 1] = a + (b - a) * (xy[:, 1] - lo[1]) / span
    head_f = f[keep_face]
    front = ((normals[head_f][:, :, 2] > 0.2).all(axis=1)
             & (uv[head_f] > a).all(axis=(1, 2)) & (uv[head_f] < b).all(axis=(1, 2)))
    corner_uv = uv[head_f].copy()
    corner_uv[~front] = _PATCH_UV["skin"]

    size = texture_size
    tex_px = lambda p: np.stack([(a + (b - a) * (p[:, 0] - lo[0]) / span) * size,  # noqa: E731
                                 (1 - (a + (b - a) * (p[:, 1] - lo[1]) / span)) * size], axis=1)
    photo = default_face_photo() if face_rgb is None else np.asarray(face_rgb, np.uint8)[..., :3]
    try:
        photo_lmk = photo_landmarks(photo)
    except ValueError:
        # a texture must show a face the detectors find, or the automatic landmarks have nothing
        log.warning("demo scan: no face found in the given photo; texturing with the astronaut portrait")
        photo = default_face_photo()
        photo_lmk = photo_landmarks(photo)
    texture = face_texture(photo, photo_lmk, tex_px(lmk_m[:, :2]), size, eye_px=eye / span * (b - a) * size)

    # assemble: head (kept part), hair cap, torso
    n_head = len(v)
    all_v = np.concatenate([v, cap_v, torso_v])
    all_f = np.concatenate([head_f, cap_f + n_head, torso_f + n_head + len(cap_v)])
    all_uv = np.concatenate([corner_uv, np.broadcast_to(_PATCH_UV["hair"], (len(cap_f), 3, 2)),
                             np.broadcast_to(_PATCH_UV["cloth"], (len(torso_f), 3, 2))])
    # drop vertices no triangle uses (the removed scalp and holes)
    used = np.unique(all_f)
    remap = -np.ones(len(all_v), np.int64)
    remap[used] = np.arange(len(used))
    all_v, all_f = all_v[used], remap[all_f]

    head_size = float(np.linalg.norm(verts_m.max(axis=0) - verts_m.min(axis=0)))
    scale, rot, t = random_scan_pose(rng, head_size)
    if units_per_model_unit is not None:
        t = t / scale * float(units_per_model_unit)
        scale = float(units_per_model_unit)
    to_scan = lambda p: scale * p @ rot.T + t  # noqa: E731
    return {"vertices": to_scan(all_v), "faces": all_f, "corner_uv": all_uv, "texture": texture,
            "truth": {"shape": shape, "scale": np.float64(scale), "R": rot, "t": t,
                      "landmarks": to_scan(lmk_m), "vertices_model": verts_m, "faces_model": faces_m}}


def obj_text(vertices: np.ndarray, faces: np.ndarray, corner_uv: np.ndarray, mtl_name: str,
             material: str = "scan") -> str:
    """Wavefront OBJ text with per-corner texture coordinates (written by hand: trimesh's
    exporter merges and reorders vertices, and a scan export keeps its own order)."""
    uv_flat = corner_uv.reshape(-1, 2)
    uv_unique, uv_index = np.unique(np.round(uv_flat, 6), axis=0, return_inverse=True)
    uv_index = uv_index.reshape(-1, 3)
    buf = io.StringIO()
    buf.write(f"# generated demo scan (SingingHead)\nmtllib {mtl_name}\n")
    np.savetxt(buf, vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(buf, uv_unique, fmt="vt %.6f %.6f")
    buf.write(f"usemtl {material}\n")
    fv = np.concatenate([faces[:, :, None] + 1, uv_index[:, :, None] + 1], axis=2).reshape(-1, 6)
    np.savetxt(buf, fv, fmt="f %d/%d %d/%d %d/%d")
    return buf.getvalue()


def load_procedural_head_model(seed: int = 0, n_vertices: int | None = None):
    """A fresh procedural head model, written to a temporary folder and loaded the way `[flame]` loads it
    (n_vertices None: the generator's default)."""
    kw = {} if n_vertices is None else {"n_vertices": n_vertices}
    with tempfile.TemporaryDirectory() as folder:
        write_procedural_head_model(folder, seed=seed, **kw)
        return load_flame(Path(folder) / MODEL_FILE, Path(folder) / EMBEDDING_FILE).eval()


@functools.lru_cache(maxsize=1)
def procedural_head_model():
    """The procedural head model (seed 0, what `[flame]` uses when empty), built in memory on the CPU."""
    return load_procedural_head_model(seed=0)


def write_demo_scan(scan_dir: Path, truth_dir: Path, seed: int, face_rgb: np.ndarray | None = None,
                    write_landmarks: bool = False, model=None, subdivisions: int = 1,
                    texture_size: int = 512, shape: np.ndarray | None = None,
                    units: str | None = None) -> Path:
    """Write scan_dir/head.obj + head.mtl + head_texture.png (and landmarks.json when asked)
    and truth_dir/scan_truth.npz (shape, scale, R, t: model -> scan, landmarks in scan units).
    `shape` (100,): the head's identity (default random); `units` ("mm", "cm", "m", "in"): a metric
    scan in those units (model units are metres), declared in scan_dir/scan.json.

    `model` defaults to the procedural head model (`procedural_head_model`).
    Returns the OBJ path.
    """

    if model is None:
        model = procedural_head_model()
    per_metre = None if units is None else 1.0 / METRES_PER_UNIT[units]
    scan = build_demo_scan(model, seed, face_rgb, subdivisions, texture_size, shape=shape,
                           units_per_model_unit=per_metre)
    scan_dir, truth_dir = Path(scan_dir), Path(truth_dir)
    scan_dir.mkdir(parents=True, exist_ok=True)
    truth = scan["truth"]
    save_npz_atomic(truth_dir / TRUTH_FILE, {
        "shape": truth["shape"].astype(np.float32), "scale": np.float64(truth["scale"]),
        "R": truth["R"].astype(np.float64), "t": truth["t"].astype(np.float64),
        "landmarks": truth["landmarks"].astype(np.float64), "seed": np.int64(seed)})
    png = io.BytesIO()
    Image.fromarray(scan["texture"]).save(png, format="PNG")   # PIL writes no timestamp
    write_bytes_atomic(scan_dir / TEXTURE_FILE, png.getvalue())
    write_bytes_atomic(scan_dir / "head.mtl", (
        "newmtl scan\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
        f"illum 1\nmap_Kd {TEXTURE_FILE}\n").encode())
    if units is not None:
        write_json_atomic(scan_dir / SCAN_UNITS, {"units": units})
    if write_landmarks:
        write_json_atomic(scan_dir / "landmarks.json", {
            "landmarks": np.round(truth["landmarks"], 6).tolist(), "order": "iBUG 68", "units": "scan"})
    obj = scan_dir / "head.obj"
    with atomic_path(obj) as tmp:
        tmp.write_text(obj_text(scan["vertices"], scan["faces"], scan["corner_uv"], "head.mtl"))
    return obj


def read_truth(truth_dir: Path) -> dict:
    """scan_truth.npz as a dict of arrays."""
    with np.load(Path(truth_dir) / TRUTH_FILE) as z:
        return {k: z[k] for k in z.files}

