"""Generated singing-like head sequences with known truth, for the refinement's tests and benchmark.

A sequence is a smooth head motion (most rotation in the global orientation, a small neck motion,
a jaw that opens and closes with syllables, slowly varying expression, a slowly drifting camera),
its true 2D landmarks on a square portrait frame, and what the per-frame stage would deliver:
landmarks with pixel noise and gross errors, and per-frame parameter estimates with noise and gross
errors, in the layout of `frames/segment_NNN.npz`. Like EMOCA, the per-frame estimate has no neck:
its global orientation holds the whole head rotation (global composed with neck).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from flame_fit.refine import project_landmarks_px


@dataclass
class MotionSpec:
    """What to generate. Angles in degrees, noise in the units named."""
    frames: int = 240
    fps: float = 30.0
    image_size: int = 1024
    face_fraction: float = 0.45          # landmark extent / image width
    global_deg: tuple = (12.0, 7.0, 4.0)  # yaw-ish (y), pitch (x), roll (z) amplitudes
    neck_deg: float = 0.6                # small neck motion amplitude per axis
    jaw_open_rad: float = 0.18           # peak jaw opening
    syllable_hz: tuple = (2.0, 4.5)
    expression_scale: float = 0.8
    shape_scale: float = 0.6
    landmark_noise_px: float = 2.0
    landmark_outlier_rate: float = 0.05
    landmark_fail_rate: float = 0.02     # detections flagged as failed (landmark_ok False)
    estimate_rot_noise_deg: float = 2.0
    estimate_jaw_noise: float = 0.005       # radians (0.3 deg)
    estimate_expression_noise: float = 0.05
    estimate_cam_noise: float = 0.01     # relative scale noise; translation noise in NDC / s
    estimate_outlier_rate: float = 0.05


@dataclass
class SyntheticSequence:
    truth: dict       # shape (100,), expression (T,50), global_orient, neck_pose, jaw_pose, cam (T,3),
    #                   landmarks (T,68,2) portrait px
    frames: dict                         # the frames/segment_NNN.npz arrays (float32, landmark_ok bool)
    injected: dict = field(default_factory=dict)   # name -> (T,) bool: frames given gross errors
    spec: MotionSpec = field(default_factory=MotionSpec)


def smooth_noise(rng: np.random.Generator, T: int, dims: int, fps: float, freqs: tuple = (0.1, 0.8),
                 n_terms: int = 4) -> np.ndarray:
    """Sum of `n_terms` sinusoids per dimension with random frequencies in `freqs` Hz and phases,
    scaled to unit RMS. Returns (T, dims)."""
    t = np.arange(T) / fps
    f = rng.uniform(*freqs, size=(n_terms, dims))
    ph = rng.uniform(0, 2 * np.pi, size=(n_terms, dims))
    a = rng.uniform(0.5, 1.0, size=(n_terms, dims))
    x = (a[None] * np.sin(2 * np.pi * f[None] * t[:, None, None] + ph[None])).sum(axis=1)
    return x / np.sqrt((x ** 2).mean(axis=0, keepdims=True) + 1e-12)


def syllables(rng: np.random.Generator, T: int, fps: float, hz: tuple) -> np.ndarray:
    """Jaw opening envelope in [0, 1]: rectified sine with a slowly varying syllable rate. (T,)"""
    wobble = smooth_noise(rng, T, 1, fps, (0.05, 0.3), 2)[:, 0].clip(-1, 1)
    rate = hz[0] + (hz[1] - hz[0]) * 0.5 * (1 + wobble)
    phase = 2 * np.pi * np.cumsum(rate) / fps / 2.0        # a rectified sine opens twice per period
    return np.abs(np.sin(phase + rng.uniform(0, np.pi)))


def compose(global_orient: np.ndarray, neck_pose: np.ndarray) -> np.ndarray:
    """Axis-angle of R_global @ R_neck, the head's whole rotation. (T,3), (T,3) -> (T,3)."""
    r = Rotation.from_rotvec(global_orient) * Rotation.from_rotvec(neck_pose)
    return r.as_rotvec()


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between axis-angle rotations, degrees. (T,3), (T,3) -> (T,)."""
    rel = Rotation.from_rotvec(a).inv() * Rotation.from_rotvec(b)
    return np.degrees(rel.magnitude())


def _fit_camera(model, shape, size_fraction: float) -> tuple[float, np.ndarray]:
    """Scale s and translation t that put the neutral face's landmarks at `size_fraction` of the
    image width, centred. Returns (s, t (2,))."""
    with torch.no_grad():
        dev = model.v_template.device
        z = torch.zeros(1, 3, device=dev)
        lmk = model.landmarks(torch.as_tensor(shape[None], dtype=torch.float32, device=dev),
                              torch.zeros(1, model.n_expr, device=dev), z, z, z)[0].cpu().numpy()
    width = lmk[:, 0].max() - lmk[:, 0].min()
    s = 2.0 * size_fraction / width
    centre = 0.5 * (lmk[:, :2].max(0) + lmk[:, :2].min(0))
    return float(s), -centre


def _gross(rng, n: int, rate: float) -> np.ndarray:
    k = int(round(rate * n))
    mask = np.zeros(n, bool)
    mask[rng.choice(n, k, replace=False)] = True
    return mask


def generate_sequence(model, spec: MotionSpec | None = None, seed: int = 0) -> SyntheticSequence:
    """A sequence with known truth and its simulated per-frame observations (see module doc)."""
    spec = spec or MotionSpec()
    rng = np.random.default_rng(seed)
    T, fps, size = spec.frames, spec.fps, spec.image_size
    n_expr = int(model.n_expr)

    shape = (spec.shape_scale * rng.standard_normal(model.n_shape)).astype(np.float64)
    amp = np.radians(np.array([spec.global_deg[1], spec.global_deg[0], spec.global_deg[2]]))  # x, y, z
    global_orient = amp * smooth_noise(rng, T, 3, fps, (0.05, 0.5)) / np.sqrt(2)
    global_orient += np.radians(0.5) * smooth_noise(rng, T, 3, fps, (1.0, 2.0), 2)  # nodding with the beat
    neck_pose = np.radians(spec.neck_deg) * smooth_noise(rng, T, 3, fps, (0.1, 0.5)) / np.sqrt(2)
    jaw = np.zeros((T, 3))
    jaw[:, 0] = 0.02 + spec.jaw_open_rad * syllables(rng, T, fps, spec.syllable_hz)
    decay = 1.0 / (1.0 + np.arange(n_expr) / 5.0)
    expression = spec.expression_scale * decay * smooth_noise(rng, T, n_expr, fps, (0.1, 1.5))
    s0, t0 = _fit_camera(model, shape, spec.face_fraction)
    cam = np.zeros((T, 3))
    cam[:, 0] = s0 * (1.0 + 0.03 * smooth_noise(rng, T, 1, fps, (0.05, 0.3), 2)[:, 0])
    cam[:, 1:] = t0 + (0.03 / s0) * smooth_noise(rng, T, 2, fps, (0.05, 0.4), 2)

    truth = {"shape": shape, "expression": expression, "global_orient": global_orient, "neck_pose": neck_pose,
             "jaw_pose": jaw, "cam": cam}
    truth["landmarks"] = project_landmarks_px(model, shape, expression, global_orient, neck_pose, jaw, cam,
                                              size)

    # detections: pixel noise, gross errors (a shifted and distorted face), failed detections
    lmk = truth["landmarks"] + rng.normal(0, spec.landmark_noise_px, truth["landmarks"].shape)
    lmk_bad = _gross(rng, T, spec.landmark_outlier_rate)
    nb = int(lmk_bad.sum())
    lmk[lmk_bad] += rng.uniform(-40, 40, (nb, 1, 2)) + rng.normal(0, 8.0, (nb, 68, 2))
    failed = _gross(rng, T, spec.landmark_fail_rate) & ~lmk_bad
    lmk[failed] = 0.0
    ok = ~failed

    # per-frame estimates: EMOCA-style (head rotation all in global), noisy, with gross errors
    head = compose(global_orient, neck_pose)
    rot_noise = np.radians(spec.estimate_rot_noise_deg) * rng.standard_normal((T, 3))
    est_global = (Rotation.from_rotvec(rot_noise) * Rotation.from_rotvec(head)).as_rotvec()
    est_jaw = jaw + spec.estimate_jaw_noise * rng.standard_normal((T, 3))
    est_expr = expression + spec.estimate_expression_noise * rng.standard_normal(expression.shape)
    est_cam = cam.copy()
    est_cam[:, 0] *= 1.0 + spec.estimate_cam_noise * rng.standard_normal(T)
    est_cam[:, 1:] += spec.estimate_cam_noise / s0 * rng.standard_normal((T, 2))
    injected = {"landmarks": lmk_bad, "failed": failed}
    for name, arr, big in (("global_orient", est_global, None), ("jaw_pose", est_jaw, 0.4),
                           ("expression", est_expr, 3.0), ("cam", est_cam, None)):
        bad = _gross(rng, T, spec.estimate_outlier_rate)
        injected[name] = bad
        nb = int(bad.sum())
        if name == "global_orient":      # a flipped or wildly wrong head pose
            axis = rng.normal(size=(nb, 3))
            axis /= np.linalg.norm(axis, axis=1, keepdims=True)
            flip = Rotation.from_rotvec(axis * np.radians(rng.uniform(25, 60, (nb, 1))))
            arr[bad] = (flip * Rotation.from_rotvec(arr[bad])).as_rotvec()
        elif name == "cam":              # a face box on the wrong scale / place
            arr[bad, 0] *= rng.choice([0.6, 1.5], nb)
            arr[bad, 1:] += rng.uniform(-0.3, 0.3, (nb, 2)) / s0
        else:
            arr[bad] += big * rng.standard_normal((nb, arr.shape[1]))

    px_min, px_max = lmk.min(axis=1), lmk.max(axis=1)
    frames = {
        "landmarks": lmk.astype(np.float32), "landmark_ok": ok,
        "confidence": np.where(ok, 0.99, 0.0).astype(np.float32),
        "boxes": np.concatenate([px_min, px_max], axis=1).astype(np.float32),
        "shape": (shape + 0.2 * rng.standard_normal((T, model.n_shape))).astype(np.float32),
        "expression": est_expr.astype(np.float32), "global_orient": est_global.astype(np.float32),
        "jaw_pose": est_jaw.astype(np.float32), "cam": est_cam.astype(np.float32),
    }
    return SyntheticSequence(truth=truth, frames=frames, injected=injected, spec=spec)
