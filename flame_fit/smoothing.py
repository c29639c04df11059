"""Temporal smoothing of 2D landmark tracks (the paper's second refinement step).

Objective over the smoothed tracks x (T, K, 2), observations y (T, K, 2), detection flags ok (T,):

    E(x) = w_d * sum_t ok_t ||x_t - y_t||^2  +  w_s * sum_t ||x_{t+1} - x_t||^2

Frames whose detection failed get no data term, so the smoothness term fills them in (linearly
between good neighbours, the minimum of a first-difference penalty). The paper minimises E with
Adam (`smooth_landmarks_adam`); E is quadratic and its normal equations are tridiagonal in time,
so `smooth_landmarks_exact` solves them directly for all K*2 coordinate tracks in one banded
solve (LAPACK pbtrs via scipy), which is exact and far faster. The exact solve is the default.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import solveh_banded

from flame_fit.outliers import interpolate_frames


def smoothing_objective(x: np.ndarray, obs: np.ndarray, ok: np.ndarray,
                        w_data: float, w_smooth: float) -> float:
    """E(x) above. x, obs: (T, ...), ok: (T,) bool. Returns a float (float64 arithmetic)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(obs, np.float64).reshape(len(obs), -1)
    okf = np.asarray(ok, np.float64)[:, None]
    data = float(np.sum(okf * (x - y) ** 2))
    smooth = float(np.sum(np.diff(x, axis=0) ** 2))
    return w_data * data + w_smooth * smooth


def _check(obs: np.ndarray, ok: np.ndarray, w_data: float, w_smooth: float
           ) -> tuple[np.ndarray, np.ndarray]:
    # w_data > 0 keeps the system definite; w_smooth = 0 is "no smoothing" (handled by the callers)
    if not (np.isfinite(w_data) and w_data > 0):
        raise ValueError(f"landmark data weight w_data = {w_data!r}: must be a finite number > 0")
    if not (np.isfinite(w_smooth) and w_smooth >= 0):
        raise ValueError(f"landmark smoothing weight w_smooth = {w_smooth!r}: must be a finite number >= 0 "
                         "(0: no smoothing)")
    obs = np.asarray(obs)
    ok = np.asarray(ok, dtype=bool)
    if ok.shape != (len(obs),):
        raise ValueError(f"landmark_ok has shape {ok.shape}, expected ({len(obs)},)")
    if len(obs) and not ok.any():
        raise ValueError("no frame has a landmark detection: nothing to smooth towards")
    # a NaN in a detected frame would turn every frame of the banded solve into NaN, silently
    detected = np.flatnonzero(ok)
    bad = detected[~np.isfinite(obs[detected]).all(axis=tuple(range(1, obs.ndim)))]
    if len(bad):
        raise ValueError(f"{len(bad)} frame(s) marked as detected hold non-finite landmarks (first: "
                         f"frame {int(bad[0])}): mark them failed (landmark_ok False)")
    return obs, ok


def smooth_landmarks_exact(obs: np.ndarray, ok: np.ndarray, w_data: float = 1.0,
                           w_smooth: float = 10.0) -> np.ndarray:
    """Exact minimiser of E by one banded (tridiagonal, symmetric positive definite) solve.

    obs: (T, K, 2) detections (any trailing shape), ok: (T,) bool. Returns (T, K, 2) in obs's dtype.
    The system (w_d diag(ok) + w_s D^T D) x = w_d diag(ok) y is positive definite whenever one
    frame is ok, since D^T D (the path-graph Laplacian) only misses constants.
    w_smooth = 0 is no smoothing: the ok frames keep their detections and the others are bridged
    linearly (the limit of the minimiser as w_s -> 0; at 0 itself E leaves them free and the system
    is singular).
    """
    obs, ok = _check(obs, ok, w_data, w_smooth)
    T = len(obs)
    if T <= 1:
        return obs.copy()
    if w_smooth == 0:
        return interpolate_frames(obs, ~ok)
    y = obs.reshape(T, -1).astype(np.float64)
    okf = ok.astype(np.float64)
    lap_diag = np.full(T, 2.0)
    lap_diag[[0, -1]] = 1.0
    ab = np.zeros((2, T))
    ab[0, 1:] = -w_smooth                      # superdiagonal (upper form: first entry unused)
    ab[1] = w_data * okf + w_smooth * lap_diag
    # a failed frame may hold anything (NaN where the tracker had nothing to hold): 0 * NaN would be NaN
    rhs = w_data * np.where(ok[:, None], y, 0.0)
    x = solveh_banded(ab, rhs, check_finite=False)
    return x.reshape(obs.shape).astype(obs.dtype)


def smooth_landmarks_adam(obs: np.ndarray, ok: np.ndarray, w_data: float = 1.0, w_smooth: float = 10.0,
                          lr: float = 0.5, max_iters: int = 20000, tolerance: float = 1e-10,
                          target: float | None = None, device: str | torch.device = "cpu"
                          ) -> tuple[np.ndarray, int]:
    """Minimise E with Adam, as the paper does (kept for comparison with the exact solve).

    obs: (T, K, 2), ok: (T,) bool. Starts from the detections (failed frames interpolated).
    Stops when the objective reaches `target` (when given), or when its relative decrease over
    50 iterations falls below `tolerance` after the step size has been halved down to lr/1000.
    Returns (x (T, K, 2) in obs's dtype, iterations). w_smooth = 0: the failed frames have no gradient
    and keep their interpolated start, as in the exact solve.
    """
    obs, ok = _check(obs, ok, w_data, w_smooth)
    T = len(obs)
    if T <= 1:
        return obs.copy(), 0
    dev = torch.device(device)
    # failed frames may hold NaN: their values never enter the loss (0 * NaN would)
    y = torch.as_tensor(np.where(ok[:, None], obs.reshape(T, -1), 0.0), dtype=torch.float64, device=dev)
    okf = torch.as_tensor(ok, dtype=torch.float64, device=dev)[:, None]
    x0 = interpolate_frames(obs.reshape(T, -1).astype(np.float64), ~ok)
    x = torch.tensor(x0, dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr)
    window, prev, it = 50, None, 0
    for it in range(1, max_iters + 1):
        opt.zero_grad(set_to_none=True)
        loss = w_data * (okf * (x - y) ** 2).sum() + w_smooth * ((x[1:] - x[:-1]) ** 2).sum()
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if target is not None and value <= target:
            break
        if it % window == 0:
            # Adam hovers around the minimum at a step-size-dependent distance: halve the step
            # when progress stalls, stop once it is small and progress has stopped.
            if prev is not None and prev - value <= tolerance * abs(prev):
                group = opt.param_groups[0]
                if group["lr"] <= lr * 1e-3 and target is None:
                    break
                group["lr"] = max(group["lr"] * 0.5, lr * 1e-3)
            prev = value
    return x.detach().cpu().numpy().reshape(obs.shape).astype(obs.dtype), it


def smooth_landmarks(obs: np.ndarray, ok: np.ndarray, w_data: float = 1.0, w_smooth: float = 10.0,
                     method: str = "exact") -> np.ndarray:
    """Smoothed landmark tracks (T, K, 2); `method` is "exact" (default) or "adam"."""
    if method == "exact":
        return smooth_landmarks_exact(obs, ok, w_data, w_smooth)
    if method == "adam":
        return smooth_landmarks_adam(obs, ok, w_data, w_smooth)[0]
    raise ValueError(f"unknown smoothing method {method!r} (exact | adam)")
