"""Landmark smoothing: the exact banded solve and the paper's Adam reach the same minimum."""
import numpy as np
import pytest

from flame_fit.smoothing import (smooth_landmarks, smooth_landmarks_adam, smooth_landmarks_exact,
                                 smoothing_objective)


def _tracks(T=60, K=68, seed=0, hz=0.4):
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 30.0
    truth = 512 + 80 * np.sin(2 * np.pi * hz * t)[:, None, None] + rng.normal(0, 60, (1, K, 2))
    obs = truth + rng.normal(0, 2.0, truth.shape)
    return truth, obs.astype(np.float32)


def test_exact_equals_adam_and_is_the_minimum():
    _, obs = _tracks()
    obs = obs.astype(np.float64)
    ok = np.ones(len(obs), bool)
    ok[[5, 6, 30]] = False
    xe = smooth_landmarks_exact(obs, ok, 1.0, 10.0)
    xa, iters = smooth_landmarks_adam(obs, ok, 1.0, 10.0)
    assert xe.shape == obs.shape and xe.dtype == obs.dtype
    assert iters > 1
    assert np.abs(xa - xe).max() < 0.05
    fe = smoothing_objective(xe, obs, ok, 1.0, 10.0)
    fa = smoothing_objective(xa, obs, ok, 1.0, 10.0)
    assert fe <= fa * (1 + 1e-6)
    # the gradient of E vanishes at the exact solution
    x = xe.astype(np.float64).reshape(len(obs), -1)
    y = obs.astype(np.float64).reshape(len(obs), -1)
    grad = 2 * ok[:, None] * (x - y)
    d = np.diff(x, axis=0)
    grad[:-1] -= 2 * 10.0 * d
    grad[1:] += 2 * 10.0 * d
    assert np.abs(grad).max() < 1e-3


def test_failed_frames_get_no_data_term():
    truth, obs = _tracks(40)
    ok = np.ones(40, bool)
    ok[20] = False
    garbage = obs.copy()
    garbage[20] = -1e4              # what a failed detector may leave behind
    np.testing.assert_allclose(smooth_landmarks_exact(garbage, ok), smooth_landmarks_exact(obs, ok),
                               atol=1e-3)
    # a gap is bridged linearly (the minimum of a first-difference penalty)
    ok2 = np.ones(40, bool)
    ok2[10:15] = False
    xs = smooth_landmarks_exact(garbage, ok2 & ok, 1.0, 10.0)
    steps = np.diff(xs[9:16].astype(np.float64), axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[:1], steps.shape), atol=1e-3)


def test_smoothing_reduces_noise_and_jitter():
    truth, obs = _tracks(120, seed=4, hz=0.2)
    ok = np.ones(120, bool)
    xs = smooth_landmarks(obs, ok, 1.0, 10.0)
    err_before = np.sqrt(np.mean((obs - truth) ** 2))
    err_after = np.sqrt(np.mean((xs - truth) ** 2))
    assert err_after < 0.85 * err_before
    jit = lambda a: np.abs(np.diff(a, 2, axis=0)).mean()  # noqa: E731
    assert jit(xs) < jit(obs) / 4


def test_no_detection_at_all_is_an_error():
    _, obs = _tracks(10)
    with pytest.raises(ValueError):
        smooth_landmarks_exact(obs, np.zeros(10, bool))
    with pytest.raises(ValueError):
        smooth_landmarks(obs, np.ones(10, bool), method="fourier")
