"""flame_fit.smoothing rules: a detected frame must hold finite landmarks; Adam's step schedule
(halved at each stalled 50-iteration check, never below lr/1000) written out here as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from flame_fit.smoothing import smooth_landmarks, smooth_landmarks_adam


def _obs(T=8, K=2, seed=0):
    return np.random.default_rng(seed).normal(scale=5.0, size=(T, K, 2))


@pytest.mark.parametrize("method", ["exact", "adam"])
@pytest.mark.parametrize("junk", [np.nan, np.inf])
def test_a_detected_frame_with_non_finite_landmarks_is_refused(method, junk):
    # (a failed frame may hold anything: tests/test_smoothing.py::test_failed_frames_may_hold_nan)
    obs = _obs()
    ok = np.ones(len(obs), bool)
    ok[2] = False
    obs[2] = np.nan
    obs[5, 1, 0] = junk
    obs[7, 0, 1] = junk
    with pytest.raises(ValueError, match=r"2 frame\(s\) marked as detected hold non-finite landmarks "
                                         r"\(first: frame 5\)"):
        smooth_landmarks(obs, ok, 1.0, 10.0, method=method)


def _adam_with_schedule(y, lr, n, w_s=10.0, floor=1e-3):
    """Adam (torch's update, written out in numpy) on E with every frame ok, from x = y; the step is halved
    at iterations 100, 150, ... (every 50-iteration check but the first), never below lr * floor."""
    x, m, v, step = y.copy(), np.zeros_like(y), np.zeros_like(y), lr
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, n + 1):
        d = np.diff(x, axis=0)
        g = 2 * (x - y)
        g[1:] += 2 * w_s * d
        g[:-1] -= 2 * w_s * d
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - (step / (1 - b1 ** t)) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
        if t % 50 == 0 and t >= 100:
            step = max(step * 0.5, lr * floor)
    return x, step


def test_with_a_target_the_step_halves_on_every_stalled_check_and_stops_at_lr_over_1000():
    # tolerance 1: every check after the first is a stall (a loss >= 0 never falls by its whole value);
    # target -1 is never reached, so no stall ends the run. The 10th halving (check 11, iteration 550)
    # lands on the floor lr/1000 (0.5**10 < 1/1000): the step after it is taken at lr/1000, not lr/1024
    obs = _obs(6, 1, seed=3)
    lr, n = 0.5, 551
    got, it = smooth_landmarks_adam(obs, np.ones(6, bool), 1.0, 10.0, lr=lr, max_iters=n, tolerance=1.0,
                                    target=-1.0)
    want, step = _adam_with_schedule(obs.reshape(6, -1), lr, n)
    assert it == n and step == lr / 1000
    np.testing.assert_allclose(got.reshape(6, -1), want, rtol=0, atol=1e-9)
    no_floor, _ = _adam_with_schedule(obs.reshape(6, -1), lr, n, floor=0.0)
    assert np.abs(no_floor - want).max() > 1e-7      # the one step at lr/1000 is visible at this tolerance
