"""The paper's 3D metrics as pure functions, one clip at a time.

Each function follows one method of SingingHead's official `metrics/metric_3d/metrics.py`
(`MetricCalculator`) or `metrics/metric_3d/beat_align_score.py`, with the same reduction order,
the same units (FLAME units: metres for vertices, radians for axis-angle) and the same regions.
The official code reduces a batch (bs, nsample, nframe, ...); here a function takes one clip
(S samples, T frames) and returns the clip's value. `evaluate.py` averages clip values; with all
clips the same length (as in the official batches, 240 frames) that mean equals the official
value computed on one batch holding every clip, because each official reduction is a plain mean
over equally sized per-clip groups.

Shapes: S samples, T frames, V vertices, R region vertices, D features.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.signal import argrelextrema

from tasks.dataset.flame_pickle import FlamePickleError, load_pickle_dict

# ----------------------------------------------------------------------------- mesh metrics


def lip_vertex_error(pred: torch.Tensor, gt: torch.Tensor, lip: torch.Tensor) -> tuple[float, float]:
    """LVE of one clip: (mean over samples, min over samples).

    pred (S,T,V,3), gt (T,V,3), lip (R,) vertex ids. Per sample: for each frame the largest lip
    vertex distance, averaged over frames; then the mean or the min of that over samples
    (official `calculate_lve`: norm -> max over vertices -> mean over frames -> mean|min over
    samples).
    """
    d = torch.linalg.vector_norm(pred[:, :, lip] - gt[None, :, lip], dim=-1)    # (S,T,R)
    per_sample = d.max(dim=-1).values.mean(dim=-1)                              # (S,)
    return per_sample.mean().item(), per_sample.min().item()


def face_vertex_error(pred: torch.Tensor, gt: torch.Tensor, face: torch.Tensor) -> tuple[float, float]:
    """FVE ('ve') of one clip: (mean over samples, min over samples).

    pred (S,T,V,3), gt (T,V,3), face (R,). Official `calculate_ve`: per-vertex distance, reduced
    over samples *per vertex and frame* (mean, or min: each vertex may take its min from a
    different sample), then averaged over frames and vertices.
    """
    d = torch.linalg.vector_norm(pred[:, :, face] - gt[None, :, face], dim=-1)  # (S,T,R)
    return d.mean(dim=0).mean().item(), d.min(dim=0).values.mean().item()


def upper_face_dynamics_deviation(pred: torch.Tensor, gt: torch.Tensor, upper: torch.Tensor) -> float:
    """FDD of one clip (official `calculate_fdd`, after CodeTalker).

    pred (S,T,V,3), gt (T,V,3), upper (R,) = forehead then eye_region ids (concatenated as the
    official code does, so vertices in both count twice). Per vertex, the squared distance from the
    origin |v|^2 over time; its standard deviation over frames (unbiased, as torch.std); averaged
    over vertices (and samples). FDD = gt - pred (signed: positive when the prediction moves less).
    """
    def mean_std(x):                                     # (..., T, R, 3) -> mean of std over T
        return torch.std((x ** 2).sum(dim=-1), dim=-2).mean()
    return (mean_std(gt[:, upper]) - mean_std(pred[:, :, upper])).item()


# ----------------------------------------------------------------------------- parameter metrics
def pose_distance(pred_pose: torch.Tensor, gt_pose: torch.Tensor) -> tuple[float, float]:
    """Pose distance of one clip on global+neck axis-angle: (mean over samples, min over samples).

    pred_pose (S,T,6), gt_pose (T,6) = motion[..., 50:56]. Per frame the L2 norm of the 6-vector
    difference; 'mean' averages it over samples and frames (official `compute_meandist_pose`),
    'min' averages over frames then takes the closest sample (`compute_mindst_pose`).
    """
    d = torch.linalg.vector_norm(pred_pose - gt_pose[None], dim=-1)            # (S,T)
    return d.mean().item(), d.mean(dim=1).min().item()


def diversity(pred: torch.Tensor) -> float:
    """Diversity of one clip's samples (official `compute_diversity`).

    pred (S,T,D) (or (S,T,...)): each sample flattened to one vector, the mean Euclidean distance
    over all sample pairs (torch.nn.functional.pdist); 0.0 with one sample.
    """
    if pred.shape[0] == 1:
        return 0.0
    return torch.nn.functional.pdist(pred.reshape(pred.shape[0], -1)).mean().item()


# ----------------------------------------------------------------------------- beat alignment
SIGMA2 = 9.0          # official BA: exp(-d^2 / 2 / 9), i.e. sigma = 3 frames
SMOOTH_SIGMA = 5      # gaussian_filter(velocity, 5)


def audio_beats(audio: np.ndarray, sr: int, length: int | None = None) -> np.ndarray:
    """Beat frame indices of an audio clip, official `get_mb` / `extract_audio_beat` (from Bailando).

    audio (N,) float at `sr`. HPSS, onset strength of the percussive part (median aggregate),
    `librosa.beat.beat_track` on it; indices are onset-envelope frames (librosa's default hop of
    512 samples, i.e. 31.25 per second at 16 kHz, used as is against 30 fps motion frames exactly
    as the official code does), keeping those < `length`.
    """
    import librosa  # heavy import, only when beat alignment is computed

    audio = np.asarray(audio, dtype=np.float32)
    _, percussive = librosa.effects.hpss(audio)
    onset_env = librosa.onset.onset_strength(y=percussive, aggregate=np.median, sr=sr)
    _, beats = librosa.beat.beat_track(onset_envelope=onset_env, sr=sr)
    one_hot = np.zeros(len(onset_env), dtype=bool)
    one_hot[np.asarray(beats, dtype=np.int64)] = True
    if length is not None:
        one_hot = one_hot[:length]
    return np.flatnonzero(one_hot)


def motion_beats(motion: np.ndarray) -> tuple[np.ndarray, int]:
    """Kinematic beats of a motion (official `calc_db`): (indices, number of velocity frames).

    motion (T,J,3) landmarks or (T,D) pose (treated as one D-vector per frame, as the official
    `calc_ba_score_batch` does by adding an axis). Velocity = mean over J of the per-point
    frame-to-frame distance (T-1,), Gaussian-smoothed (sigma 5 frames); beats are its strict local
    minima (scipy argrelextrema, np.less).
    """
    m = np.asarray(motion, dtype=np.float64)
    if m.ndim == 2:
        m = m[:, None, :]
    vel = np.mean(np.sqrt(np.sum((m[1:] - m[:-1]) ** 2, axis=2)), axis=1)
    vel = gaussian_filter(vel, SMOOTH_SIGMA)
    return argrelextrema(vel, np.less)[0], len(vel)


def beat_alignment(music: np.ndarray, motion: np.ndarray) -> float:
    """BA score (official `BA`): mean over music beats b of exp(-min_m (m - b)^2 / (2*9)).

    No music beat -> the official code scores against a single beat at frame 0. No motion beat
    (motion without a local velocity minimum) makes the official code fail on an empty min; the
    score is then 0, the limit of exp(-d^2/18) as the distance grows.
    """
    music = np.asarray(music, dtype=np.int64)
    if len(music) == 0:
        music = np.array([0], dtype=np.int64)
    motion = np.asarray(motion, dtype=np.int64)
    if len(motion) == 0:
        return 0.0
    d2 = ((motion[None, :] - music[:, None]) ** 2).min(axis=1)
    return float(np.mean(np.exp(-d2 / 2 / SIGMA2)))


def beat_alignment_score(motion: np.ndarray, audio: np.ndarray, sr: int = 16000,
                         beats: np.ndarray | None = None) -> float:
    """BA of one motion against its audio (official `calc_ba_score`).

    motion (T,68,3) or (T,6); audio (N,) at sr (16 kHz in the official evaluation). `beats`:
    precomputed `audio_beats(audio, sr)` (untruncated) to share across samples of one clip.
    """
    mb, length = motion_beats(motion)
    ab = audio_beats(audio, sr) if beats is None else np.asarray(beats)
    return beat_alignment(ab[ab < length], mb)


# ----------------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Regions:
    """Vertex ids of the metric regions: face (FVE, face diversity), lip (LVE), upper_face (FDD)."""

    face: np.ndarray
    lip: np.ndarray
    upper_face: np.ndarray
    source: str

    def tensors(self, device) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(getattr(self, k), dtype=torch.long, device=device)
                for k in ("face", "lip", "upper_face")}


FLAME_MASK_KEYS = ("face", "lips", "forehead", "eye_region")


def load_flame_masks(path: str | Path, n_vertices: int) -> Regions:
    """Regions from FLAME's published FLAME_masks.pkl (a Python 2 pickle of int index arrays).

    As the official MetricCalculator: face = 'face', lip = 'lips', upper_face =
    concatenate('forehead', 'eye_region') (no de-duplication: the two share vertices).
    """
    d = load_pickle_dict(path, encoding="latin1")
    fix = ("use FLAME_masks.pkl from the FLAME website (or metrics/metric_3d/FLAME/ of the "
           "SingingHead repository) with the FLAME 2020 model")
    missing = [k for k in FLAME_MASK_KEYS if k not in d]
    if missing:
        raise FlamePickleError(path, f"lacks the regions {missing}", fix)
    arrs = {}
    for k in FLAME_MASK_KEYS:
        a = np.asarray(d[k])
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or len(a) == 0:
            raise FlamePickleError(path, f"region {k!r} is not a 1-D integer index array", fix)
        if a.min() < 0 or a.max() >= n_vertices:
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise FlamePickleError(path, f"region {k!r} indexes vertex {bad}, the head model "
                                   f"has {n_vertices} vertices", fix)
        arrs[k] = a.astype(np.int64)
    return Regions(face=arrs["face"], lip=arrs["lips"],
                   upper_face=np.concatenate([arrs["forehead"], arrs["eye_region"]]),
                   source=f"FLAME_masks.pkl ({Path(path).name})")


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test: poly (K,2) closed implicitly, pts (N,2) -> (N,) bool.

    A point on the boundary gets the side of the point moved right by a tiny d and up by a far
    tinier d^2 (half-open, as [x0, x1) x [y0, y1) for a rectangle): polygons that share an edge
    split its points between them, none counted twice.
    """
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xi)).sum(axis=1) % 2 == 1


def landmark_regions(v_template: np.ndarray, landmarks: np.ndarray, lbs_weights: np.ndarray) -> Regions:
    """Fallback regions for a head model without FLAME_masks.pkl (the procedural stand-in).

    v_template (V,3) metres, y up, face towards +z; landmarks (68,3) the static iBUG landmarks of
    the template; lbs_weights (V,5) (joints root, neck, jaw, eyes). Built from the landmarks so it
    follows the model's own geometry, in the spirit of FLAME's masks:
      lip        vertices at most 1 cm behind the rearmost outer lip landmark (48-59) and inside
                 their contour grown by 15 % about its centre;
      face       front vertices (z at or above the jaw contour's lowest z) inside the polygon of the
                 jaw contour (0-16) closed at forehead height;
      forehead   face vertices above the highest brow landmark (17-26);
      eye_region face vertices from one brow-to-eye height (highest brow landmark to the mean eye
                 landmark, 36-47) below the lowest eye landmark up to the brows' height included,
                 across the brows' width (edges included);
      eyeballs (vertices more than half skinned to the eye joints) are in no region, and no other
      landmark (nose 27-35, inner lips 60-67) plays a part.
      upper_face forehead then eye_region, concatenated as the official code does.
    Not FLAME's regions: numbers on it are for tests and demos, not comparable to the paper's.
    """
    v = np.asarray(v_template, dtype=np.float64)
    L = np.asarray(landmarks, dtype=np.float64)
    eyeball = np.asarray(lbs_weights)[:, 3:5].sum(axis=1) > 0.5
    contour, brows, eyes, lips = L[0:17], L[17:27], L[36:48], L[48:60]
    y_brow, y_eye = brows[:, 1].max(), eyes[:, 1].mean()
    step = y_brow - y_eye
    y_top = y_brow + 2.0 * step
    poly = np.concatenate([contour[:, :2], [[contour[-1, 0], y_top], [contour[0, 0], y_top]]])
    front = v[:, 2] >= contour[:, 2].min()
    face = front & _inside(poly, v[:, :2]) & ~eyeball
    c = lips[:, :2].mean(axis=0)
    lip_poly = c + 1.15 * (lips[:, :2] - c)
    lip = (v[:, 2] >= lips[:, 2].min() - 0.01) & _inside(lip_poly, v[:, :2]) & ~eyeball
    forehead = face & (v[:, 1] > y_brow)
    eye_region = (face & (v[:, 1] <= y_brow) & (v[:, 1] >= eyes[:, 1].min() - step)
                  & (v[:, 0] >= brows[:, 0].min()) & (v[:, 0] <= brows[:, 0].max()))
    ids = {k: np.flatnonzero(m) for k, m in
           (("face", face), ("lip", lip), ("forehead", forehead), ("eye_region", eye_region))}
    empty = [k for k, a in ids.items() if len(a) == 0]
    if empty:
        raise ValueError(f"landmark-based regions {empty} are empty for this head model; "
                         "give FLAME_masks.pkl instead")
    return Regions(face=ids["face"], lip=ids["lip"],
                   upper_face=np.concatenate([ids["forehead"], ids["eye_region"]]),
                   source="landmark-based fallback regions (not FLAME_masks.pkl)")
