"""Box-plot outlier replacement for per-frame parameter series (the paper's first refinement step).

Each parameter group (expression, jaw, global orientation, camera, ...) is a (T, D) series. A frame
is an outlier when its distance to a reference lies outside the box-plot fences
[Q1 - s*IQR, Q3 + s*IQR] of all frames' distances; outliers are replaced by linear interpolation in
time between the nearest good frames (ends take the nearest good frame).

The reference is the group's temporal mean, as in the paper. For landmark tracks the head moves
too much for a mean to be a useful reference, so `running_median_distances` measures each frame
against a temporal running median instead (a detection that jumps away from its neighbours).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter


def distances_to_mean(x: np.ndarray) -> np.ndarray:
    """Euclidean distance of each frame to the temporal mean.

    x: (T, ...) one group's per-frame values. Returns (T,).
    """
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.linalg.norm(flat - flat.mean(axis=0, keepdims=True), axis=1)


def running_median_distances(x: np.ndarray, window: int = 7) -> np.ndarray:
    """Euclidean distance of each frame to a centred running median over `window` frames.

    x: (T, ...). Returns (T,). Used for landmark tracks, whose mean is no reference while the head
    moves. Near either end the window shrinks symmetrically (frame t < window//2 uses frames
    0..2t), so the reference never lags a moving head; the very first and last frames therefore
    have distance 0 and are never flagged (no neighbours on one side to judge them by).
    """
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    T, h = len(flat), window // 2
    if T < 3:
        return np.zeros(T)
    med = median_filter(flat, size=(min(window, T), 1), mode="nearest")
    for t in range(min(h, T)):
        # half-width min(t, T-1-t): a series shorter than the window has frames near both ends
        for u in (t, T - 1 - t):
            k = min(u, T - 1 - u, h)
            med[u] = np.median(flat[u - k: u + k + 1], axis=0)
    return np.linalg.norm(flat - med, axis=1)


def boxplot_outliers(distances: np.ndarray, scale: float = 1.5) -> np.ndarray:
    """Frames whose distance lies outside [Q1 - scale*IQR, Q3 + scale*IQR].

    distances: (T,). Returns (T,) bool, True for outliers.
    """
    d = np.asarray(distances, dtype=np.float64)
    if len(d) < 4:  # quartiles of fewer frames say nothing
        return np.zeros(len(d), dtype=bool)
    q1, q3 = np.percentile(d, [25.0, 75.0])
    iqr = q3 - q1
    return (d < q1 - scale * iqr) | (d > q3 + scale * iqr)


def interpolate_frames(x: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace the `bad` frames of x by linear interpolation in time from the nearest good frames.

    x: (T, ...), bad: (T,) bool. Frames before the first / after the last good frame take that
    frame's value. Returns a new array of x's dtype; x itself is unchanged (all-bad: returned as is).
    """
    x = np.asarray(x)
    bad = np.asarray(bad, dtype=bool)
    out = x.copy()
    if not bad.any() or bad.all():
        return out
    t = np.arange(len(x))
    good = ~bad
    flat = x.reshape(len(x), -1).astype(np.float64)
    fixed = np.empty((int(bad.sum()), flat.shape[1]))
    for j in range(flat.shape[1]):  # np.interp is 1-D; D is small (<= 136)
        fixed[:, j] = np.interp(t[bad], t[good], flat[good, j])
    out.reshape(len(x), -1)[bad] = fixed.astype(x.dtype)
    return out


def replace_outliers(x: np.ndarray, scale: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Box-plot outliers (distance to the temporal mean) replaced by interpolation.

    x: (T, D). Returns (replaced (T, D), outlier mask (T,)).
    """
    bad = boxplot_outliers(distances_to_mean(x), scale)
    return interpolate_frames(x, bad), bad


def replace_group_outliers(groups: dict[str, np.ndarray], scale: float = 1.5
                           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`replace_outliers` on every group independently.

    groups: name -> (T, D). Returns (name -> replaced (T, D), name -> outlier mask (T,)).
    """
    replaced, masks = {}, {}
    for name in sorted(groups):
        replaced[name], masks[name] = replace_outliers(groups[name], scale)
    return replaced, masks


def outlier_fractions(masks: dict[str, np.ndarray]) -> dict[str, float]:
    """name -> fraction of frames flagged."""
    return {name: float(np.mean(m)) if len(m) else 0.0 for name, m in sorted(masks.items())}
