"""68 3D landmarks of a coloured scan without annotations: ray-cast renders of the scan, MTCNN +
Dlib on the renders, each landmark lifted to 3D through its ray's hit on the scan."""
from __future__ import annotations

import dataclasses

import numpy as np

from flame_fit.geometry import SurfaceIndex
from flame_fit.scan_fit import apply_similarity, invert_similarity, umeyama
from tasks.common.errors import PipelineInputError
from tasks.faces import face_models
from tasks.scans.render import View, lift, make_view, render
from tasks.scans.scan_io import LANDMARK_FIX, N_LANDMARKS, SCAN_FIX, Scan


def _sphere_directions() -> np.ndarray:
    """The 26 directions to the faces, edges and corners of a cube (unit)."""
    d = np.array([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)
                  if (x, y, z) != (0, 0, 0)], np.float64)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _perpendicular(f: np.ndarray) -> np.ndarray:
    a = np.array([0.0, 0.0, 1.0]) if abs(f[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = a - (a @ f) * f
    return u / np.linalg.norm(u)


def _detect_landmarks(rgb: np.ndarray):
    """(box (4,), probability, landmarks (68, 2)) of the best face in an RGB render, or None."""
    boxes, probs = face_models.detect_faces(rgb, device="cpu")
    if len(boxes) == 0:
        return None
    # Dlib gives integer pixel indices; +0.5 puts them at pixel centres, where the rays go
    return boxes[0], float(probs[0]), face_models.predict_landmarks(rgb, boxes[0]).astype(np.float64) + 0.5


def _rolled(view: View) -> View:
    """The same camera rolled so that `np.rot90(image)` (90 degrees counter-clockwise) is its image."""
    return dataclasses.replace(view, up=view.right, right=-view.up)


@dataclasses.dataclass
class AutoLandmarks:
    landmarks: np.ndarray     # (68, 3) scan units, NaN where a ray missed
    valid: np.ndarray         # (68,) bool
    image: np.ndarray         # the final frontal render (S, S, 3) uint8
    landmarks_2d: np.ndarray  # (68, 2) on that render
    probability: float
    residual: float           # RMS of the static landmarks against the reference after a similarity
    views_tried: int


def _coarse_views(scan: Scan, index: SurfaceIndex, tile: int, progress=None
                  ) -> list[tuple[float, View, np.ndarray]]:
    """MTCNN faces on renders from 26 directions x 4 rolls, as (probability, view, box (4,)),
    best first. The 104 tiles go through the detector as one mosaic: a detector call costs
    far more than the pixels of one small tile."""
    lo, hi = scan.vertices.min(axis=0), scan.vertices.max(axis=0)
    center, half = (lo + hi) / 2, 0.55 * float(np.linalg.norm(hi - lo))
    views, tiles = [], []
    for f in _sphere_directions():
        view = make_view(center, f, _perpendicular(f), half, tile)
        rgb, _, _ = render(scan, index, view)
        for k in range(4):
            views.append(view)
            tiles.append(np.rot90(rgb, k))
            view = _rolled(view)
        if progress is not None:
            progress.update(1)
    pad = tile // 8
    cell = tile + 2 * pad
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    mosaic = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[r * cell + pad:r * cell + pad + tile, c * cell + pad:c * cell + pad + tile] = t
    boxes, probs = face_models.detect_faces(mosaic, device="cpu")
    found = []
    for box, prob in zip(boxes, probs):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        r, c = int(cy // cell), int(cx // cell)
        i = r * cols + c
        if i >= len(views):
            continue
        off = np.array([c * cell + pad, r * cell + pad] * 2, np.float64)
        found.append((float(prob), views[i], np.asarray(box, np.float64) - off))
    return sorted(found, key=lambda x: -x[0])


def _landmarks_in_view(scan: Scan, index: SurfaceIndex, view: View, reference: np.ndarray):
    """Render, detect, predict and lift: (rgb, box, prob, lmk2d (68, 2), lmk3d (68, 3), rms, similarity)
    or None. rms: static-landmark RMS against `reference` after a similarity (reference units)."""
    rgb, _, _ = render(scan, index, view)
    det = _detect_landmarks(rgb)
    if det is None:
        return None
    box, prob, lmk2d = det
    pts = lift(index, view, lmk2d)
    ok = np.all(np.isfinite(pts), axis=1)
    ok[:17] = False
    if ok.sum() < 20:
        return None
    sim = umeyama(pts[ok], reference[ok])
    err = np.linalg.norm(apply_similarity(pts[ok], *sim) - reference[ok], axis=1)
    return rgb, box, prob, lmk2d, pts, float(np.sqrt(np.mean(err ** 2))), sim


def _frontal_view(reference: np.ndarray, sim, size: int, half_eyes: float) -> View:
    """The camera looking at the face straight on (the model's +z), model up = image up."""
    si, ri, ti = invert_similarity(*sim)
    face_center = apply_similarity(reference[17:].mean(axis=0, keepdims=True), si, ri, ti)[0]
    eye = float(np.linalg.norm(reference[36] - reference[45])) * si
    return make_view(face_center, ri @ np.array([0.0, 0.0, 1.0]), ri @ np.array([0.0, 1.0, 0.0]),
                     half_eyes * eye, size)


def find_landmarks_auto(scan: Scan, reference: np.ndarray, tile: int = 128, size: int = 384,
                        candidates: int = 3, refinements: int = 2, progress=None) -> AutoLandmarks:
    """68 3D landmarks of a coloured scan without annotations.

    1. MTCNN on renders from 26 directions x 4 rolls (one mosaic); 2. for the `candidates` most
    probable faces, a zoomed render, Dlib landmarks lifted to 3D through their rays, and a
    similarity to the model's reference landmarks (68, 3, model frame): the candidate whose
    static landmarks fit best wins; 3. `refinements` times: re-render exactly frontally as that
    similarity says and lift again (Dlib is most accurate on frontal faces).
    """
    if not scan.has_color:
        raise PipelineInputError(scan.path, "the scan has neither a texture nor vertex colours, "
                                 "so its landmarks "
                                 "cannot be found automatically", LANDMARK_FIX + "; or " + SCAN_FIX)
    index = SurfaceIndex(scan.vertices, scan.faces)
    found = _coarse_views(scan, index, tile, progress)
    tried = 4 * len(_sphere_directions())
    if not found:
        raise PipelineInputError(scan.path, "no face found on renders of the scan from 26 directions",
                                 LANDMARK_FIX + " (or check that the texture shows the face)")
    best = None
    for prob, view, box in found[:candidates]:
        # zoom on the detection: centre on its ray's hit, about twice the box wide
        o = lift(index, view, np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]))[0]
        scale = 2 * view.half_extent / view.size
        centre = o if np.all(np.isfinite(o)) else view.center
        half = 1.0 * max(box[2] - box[0], box[3] - box[1]) * scale
        zoom = dataclasses.replace(view, center=centre, half_extent=half, size=size)
        res = _landmarks_in_view(scan, index, zoom, reference)
        tried += 1
        if res is not None and (best is None or res[5] < best[5]):
            best = res
    if best is None:
        raise PipelineInputError(scan.path, "faces were detected on the renders but no landmarks "
                                 "could be lifted "
                                 "onto the scan", LANDMARK_FIX)
    for _ in range(refinements):
        res = _landmarks_in_view(scan, index, _frontal_view(reference, best[6], size, 1.3), reference)
        tried += 1
        if res is None:
            break
        best = res
    rgb, box, prob, lmk2d, pts, rms, sim = best
    valid = np.all(np.isfinite(pts), axis=1)
    # drop landmarks whose lift lands far from where the similarity puts them (ray through a hole)
    err = np.full(N_LANDMARKS, np.inf)
    err[valid] = np.linalg.norm(apply_similarity(pts[valid], *sim) - reference[valid], axis=1)
    eye = float(np.linalg.norm(reference[36] - reference[45]))
    valid &= err < max(5 * float(np.median(err[17:][valid[17:]])), 0.1 * eye)
    return AutoLandmarks(landmarks=pts, valid=valid, image=rgb, landmarks_2d=lmk2d, probability=prob,
                         residual=rms, views_tried=tried)
