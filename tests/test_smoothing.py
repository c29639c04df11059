"""Landmark smoothing: the exact banded solve and the paper's Adam reach the same minimum."""
import numpy as np
import pytest
import torch

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


def _linear_bridge(obs, ok):
    """Independent reference: each coordinate track through its ok frames by np.interp (ends held)."""
    T = len(obs)
    flat = obs.reshape(T, -1).astype(np.float64)
    t = np.arange(T)
    return np.stack([np.interp(t, t[ok], flat[ok, j]) for j in range(flat.shape[1])], 1).reshape(obs.shape)


def test_zero_smoothing_weight_is_no_smoothing():
    """Regression: w_smooth = 0 with a frame without a data term (a failed detection or a flagged
    outlier) crashed the exact solve (LinAlgError: not positive definite). 0 means no smoothing: the
    ok frames keep their detections, the others are bridged linearly, the limit of w_s -> 0."""
    _, obs = _tracks(30, K=5)
    obs = obs.astype(np.float64)
    ok = np.ones(30, bool)
    ok[[0, 7, 12, 13, 14, 29]] = False
    obs[~ok] = -1e4                                     # garbage where nothing was detected
    ref = _linear_bridge(obs, ok)
    x0 = smooth_landmarks_exact(obs, ok, 1.0, 0.0)
    np.testing.assert_allclose(x0, ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(x0[ok], obs[ok])
    np.testing.assert_allclose(smooth_landmarks(obs, ok, 1.0, 0.0), ref, rtol=0, atol=1e-9)
    # continuous in the weight: a tiny w_s lands next to it
    np.testing.assert_allclose(smooth_landmarks_exact(obs, ok, 1.0, 1e-7), ref, rtol=0, atol=1e-3)
    # the paper's Adam agrees (no gradient on the failed frames: they keep the interpolated start)
    xa, _ = smooth_landmarks_adam(obs, ok, 1.0, 0.0, max_iters=3000)
    np.testing.assert_allclose(xa, ref, rtol=0, atol=1e-2)
    # every frame ok: the detections themselves
    np.testing.assert_array_equal(smooth_landmarks_exact(obs[ok], np.ones(ok.sum(), bool), 1.0, 0.0), obs[ok])


def test_zero_smoothing_weight_through_the_refinement_with_an_outlier():
    """What a lab runs: `[refine] smooth_weight = 0` and a detection the box plot flags."""
    from flame_fit.refine import RefineParams, clean_landmarks
    truth, obs = _tracks(40, K=68)
    obs = obs.astype(np.float64)
    obs[17] += 300.0                                    # a gross jump: flagged as an outlier
    ok = np.ones(40, bool)
    ok[25] = False
    smoothed, outlier = clean_landmarks(obs, ok, RefineParams(smooth_weight=0.0))
    assert outlier[17]
    np.testing.assert_allclose(smoothed, _linear_bridge(obs, ok & ~outlier), rtol=0, atol=1e-9)


@pytest.mark.parametrize("w_data, w_smooth", [(1.0, -0.5), (1.0, float("nan")), (1.0, float("inf")),
                                              (0.0, 10.0), (-1.0, 10.0)])
def test_invalid_weights_are_refused_by_name(w_data, w_smooth):
    _, obs = _tracks(10, K=3)
    ok = np.ones(10, bool)
    name = "w_smooth" if w_data == 1.0 else "w_data"
    for smoother in (smooth_landmarks_exact, smooth_landmarks_adam):
        with pytest.raises(ValueError, match=name):
            smoother(obs, ok, w_data, w_smooth)


def test_objective_by_hand():
    x = np.array([[0.0], [1.0], [3.0]])
    y = np.array([[1.0], [1.0], [1.0]])
    ok = np.array([True, False, True])
    # data: (0-1)^2 + (3-1)^2 = 5 (frame 1 has none); smoothness: 1^2 + 2^2 = 5
    assert smoothing_objective(x, y, ok, 2.0, 3.0) == 25.0
    assert smoothing_objective(x, y, ok, 1.0, 0.0) == 5.0


def test_exact_solution_by_hand():
    # two frames: minimise (x0-y0)^2 + (x1-y1)^2 + w (x1-x0)^2 -> the mean stays, the step shrinks
    # by 1 + 2w: y = (0, 3), w = 1 -> (1, 2)
    x = smooth_landmarks_exact(np.array([[0.0], [3.0]]), np.ones(2, bool), 1.0, 1.0)
    np.testing.assert_allclose(x, [[1.0], [2.0]], rtol=0, atol=1e-12)
    # three frames, the middle one failed, y = (0, *, 6), w_d = 2, w = 1: E = 2 x0^2 + 2 (x2-6)^2 +
    # (x1-x0)^2 + (x2-x1)^2 is stationary at x = (1, 3, 5) (dE/dx0 = 4 - 4, dE/dx1 = -4 + 4)
    x = smooth_landmarks_exact(np.array([[0.0], [99.0], [6.0]]), np.array([True, False, True]), 2.0, 1.0)
    np.testing.assert_allclose(x, [[1.0], [3.0], [5.0]], rtol=0, atol=1e-12)
    # the same by the Adam minimiser
    xa, _ = smooth_landmarks_adam(np.array([[0.0], [99.0], [6.0]]), np.array([True, False, True]), 2.0, 1.0)
    np.testing.assert_allclose(xa, [[1.0], [3.0], [5.0]], rtol=0, atol=1e-3)


def test_one_frame_is_returned_as_is():
    obs = np.array([[[3.0, 4.0]]], np.float32)
    for ok in (np.ones(1, bool),):
        out = smooth_landmarks_exact(obs, ok, 1.0, 10.0)
        assert out is not obs and out.dtype == np.float32
        np.testing.assert_array_equal(out, obs)
        xa, iters = smooth_landmarks_adam(obs, ok, 1.0, 10.0)
        assert iters == 0 and xa is not obs
        np.testing.assert_array_equal(xa, obs)
        np.testing.assert_array_equal(smooth_landmarks(obs, ok, method="adam"), obs)


def test_adam_method_stops_at_its_target_and_on_stalls():
    _, obs = _tracks(20, K=3, seed=1)
    obs = obs.astype(np.float64)
    ok = np.ones(20, bool)
    ok[[4, 11]] = False
    best = smoothing_objective(smooth_landmarks_exact(obs, ok, 1.0, 10.0), obs, ok, 1.0, 10.0)
    # through the dispatcher: the Adam minimum, not its iteration count
    xa = smooth_landmarks(obs, ok, 1.0, 10.0, method="adam")
    assert xa.shape == obs.shape
    np.testing.assert_allclose(xa, smooth_landmarks_exact(obs, ok, 1.0, 10.0), rtol=0, atol=0.05)
    # without a target it stops once the step is at its floor and progress stalled, well before max_iters
    _, free_iters = smooth_landmarks_adam(obs, ok, 1.0, 10.0, max_iters=30000)
    assert 50 < free_iters < 30000
    # a target stops it as soon as the objective reaches it
    target = best * 1.05
    x, it = smooth_landmarks_adam(obs, ok, 1.0, 10.0, target=target, max_iters=30000)
    assert it < free_iters
    # the loss before the last step reached the target; the step after it makes it no worse
    assert smoothing_objective(x, obs, ok, 1.0, 10.0) <= target * 1.01


def test_failed_frames_may_hold_nan():
    """Regression: the tracker leaves NaN in frames before its first detection; 0 * NaN made every frame of
    the exact solve (and the Adam loss) NaN. A failed frame's value must not matter at all."""
    _, obs = _tracks(12, K=2)
    obs = obs.astype(np.float64)
    ok = np.ones(12, bool)
    ok[[0, 1, 6]] = False
    finite = smooth_landmarks_exact(obs, ok, 1.0, 3.0)
    for junk in (np.nan, np.inf, -1e300):
        bad = obs.copy()
        bad[~ok] = junk
        np.testing.assert_allclose(smooth_landmarks_exact(bad, ok, 1.0, 3.0), finite, rtol=0, atol=1e-9)
        xa, _ = smooth_landmarks_adam(bad, ok, 1.0, 3.0, max_iters=5)
        xf, _ = smooth_landmarks_adam(obs, ok, 1.0, 3.0, max_iters=5)
        np.testing.assert_array_equal(xa, xf)


def test_defaults_and_shape_checks():
    _, obs = _tracks(15, K=2, seed=3)
    obs = obs.astype(np.float64)
    ok = np.ones(15, bool)
    ok[4] = False
    ref = smooth_landmarks_exact(obs, ok, 1.0, 10.0)
    np.testing.assert_array_equal(smooth_landmarks_exact(obs, ok), ref)              # w_d = 1, w_s = 10
    np.testing.assert_array_equal(smooth_landmarks(obs, ok), ref)
    np.testing.assert_array_equal(smooth_landmarks(obs, ok, method="adam"),            # the dispatcher: Adam
                                  smooth_landmarks_adam(obs, ok, 1.0, 10.0)[0])
    np.testing.assert_array_equal(smooth_landmarks_adam(obs, ok, max_iters=3)[0],
                                  smooth_landmarks_adam(obs, ok, 1.0, 10.0, max_iters=3)[0])
    for method in ("abc", "", "exactly"):
        with pytest.raises(ValueError, match="unknown smoothing method"):
            smooth_landmarks(obs, ok, method=method)
    for wrong in (np.ones(14, bool), np.ones(16, bool), np.ones((15, 1), bool)):
        for f in (smooth_landmarks_exact, smooth_landmarks_adam):
            with pytest.raises(ValueError, match="landmark_ok has shape"):
                f(obs, wrong)
    for f in (smooth_landmarks_exact, smooth_landmarks_adam):
        with pytest.raises(ValueError, match="no frame has a landmark detection"):
            f(obs, np.zeros(15, bool))
    empty = np.zeros((0, 68, 2))
    assert smooth_landmarks_exact(empty, np.zeros(0, bool)).shape == (0, 68, 2)
    xa, it = smooth_landmarks_adam(empty, np.zeros(0, bool))
    assert xa.shape == (0, 68, 2) and it == 0


def _adam_reference(obs, ok, w_d, w_s, lr, n_steps):
    """n_steps plain torch Adam steps from the interpolated start, the objective written out here."""
    T = len(obs)
    y = torch.as_tensor(obs.reshape(T, -1), dtype=torch.float64)
    okf = torch.as_tensor(ok, dtype=torch.float64)[:, None]
    start = y.clone()
    good = np.flatnonzero(ok)
    for j in range(start.shape[1]):
        start[:, j] = torch.as_tensor(np.interp(np.arange(T), good, obs.reshape(T, -1)[good, j]))
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(n_steps):
        opt.zero_grad()
        (w_d * (okf * (x - y) ** 2).sum() + w_s * ((x[1:] - x[:-1]) ** 2).sum()).backward()
        opt.step()
    return x.detach().numpy().reshape(obs.shape)


def test_adam_takes_exactly_max_iters_steps_at_the_default_rate():
    _, obs = _tracks(10, K=2, seed=5)
    obs = obs.astype(np.float64)
    ok = np.ones(10, bool)
    ok[3] = False
    for n in (1, 5):
        x, it = smooth_landmarks_adam(obs, ok, 1.0, 10.0, max_iters=n)
        assert it == n
        np.testing.assert_allclose(x, _adam_reference(obs, ok, 1.0, 10.0, 0.5, n), rtol=0, atol=1e-12)
    x, it = smooth_landmarks_adam(obs, ok, 1.0, 10.0, max_iters=0)
    assert it == 0
    np.testing.assert_allclose(x, _adam_reference(obs, ok, 1.0, 10.0, 0.5, 0), rtol=0, atol=1e-12)
    # two frames are smoothed too (the hand solution (1, 2) of y = (0, 3), w = 1)
    xa, it = smooth_landmarks_adam(np.array([[0.0], [3.0]]), np.ones(2, bool), 1.0, 1.0)
    assert it > 0
    np.testing.assert_allclose(xa, [[1.0], [2.0]], atol=1e-3)


def test_adam_stall_schedule_on_an_optimal_start():
    """A start that is already the minimum never improves: every 50-iteration check is a stall, the step
    is halved at checks 2..11 (0.5 / 2^10 < 0.5e-3, so the 10th halving lands on the floor lr/1000) and
    the check after that stops it: iteration 12 x 50 = 600."""
    obs = np.full((6, 3, 2), 7.0)
    x, it = smooth_landmarks_adam(obs, np.ones(6, bool), 1.0, 10.0)
    assert it == 600
    np.testing.assert_array_equal(x, obs)
    # a target stops it at once when the loss is there already (value <= target, also when equal)
    x, it = smooth_landmarks_adam(obs, np.ones(6, bool), 1.0, 10.0, target=0.0)
    assert it == 1


def test_adam_stops_on_50_iteration_checks():
    _, obs = _tracks(20, K=3, seed=1)
    obs = obs.astype(np.float64)
    ok = np.ones(20, bool)
    _, it = smooth_landmarks_adam(obs, ok, 1.0, 10.0)
    assert it % 50 == 0 and 600 <= it < 20000
