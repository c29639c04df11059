"""The weight-free per-frame estimator (flame_fit.landmark_fit): its camera start, its energy term by term
against a numpy reference of the module doc's formula, and the rules of fit_segment (frames without
landmarks, the reported per-frame error, bad input) on a small procedural head model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from demo.synthetic_motion import MotionSpec, generate_sequence
from flame_fit.landmark_fit import (FitParams, energy_terms, fit_segment, init_camera, landmark_boxes_ndc,
                                    landmark_weights)
from demo.scan import load_procedural_head_model

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- camera start
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), T=st.integers(1, 4))
def test_landmark_box_and_camera_start_put_the_model_box_on_each_frame_box(seed, T):
    rng = np.random.default_rng(seed)
    target = rng.uniform(-0.8, 0.8, (T, 68, 2)) * rng.uniform(0.2, 1.0, (T, 1, 2))
    lo, hi = target.min(1), target.max(1)
    centre_ref = (lo + hi) / 2
    size_ref = np.sqrt((hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1]))
    centre, size = landmark_boxes_ndc(torch.as_tensor(target))
    np.testing.assert_allclose(centre.numpy(), centre_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(size.numpy(), size_ref, rtol=1e-12)

    # the neutral model's landmarks, in model units (metres), off centre
    model = rng.normal(0.0, 0.04, (68, 3)) + [0.01, -0.02, 0.1]
    cam = init_camera(torch.as_tensor(target), torch.as_tensor(model)).numpy()
    assert cam.shape == (T, 3) and (cam[:, 0] > 0).all()
    # the module doc's camera: ndc_x = s (X + tx), ndc_y = -s (Y + ty)
    s, tx, ty = cam[:, 0:1], cam[:, 1:2], cam[:, 2:3]
    px, py = s * (model[None, :, 0] + tx), -s * (model[None, :, 1] + ty)
    np.testing.assert_allclose((px.min(1) + px.max(1)) / 2, centre_ref[:, 0], atol=1e-9)
    np.testing.assert_allclose((py.min(1) + py.max(1)) / 2, centre_ref[:, 1], atol=1e-9)
    np.testing.assert_allclose(np.sqrt((px.max(1) - px.min(1)) * (py.max(1) - py.min(1))), size_ref, rtol=1e-9)


def test_a_degenerate_landmark_box_has_a_small_positive_size():
    target = torch.zeros(1, 68, 2, dtype=torch.float64)      # every landmark on one point
    target[0, :, 0] = torch.linspace(-0.5, 0.5, 68)         # a horizontal line: no height
    _, size = landmark_boxes_ndc(target)
    assert 0 < float(size) < 1e-2


# ----------------------------------------------------------------------------- energy
def test_landmark_weights_are_contour_weight_relative_to_the_others_with_mean_one():
    w = landmark_weights(0.25).numpy()
    assert w.shape == (68,)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w[:17] / w[17], 0.25, rtol=1e-6)
    assert np.ptp(w[:17]) == 0 and np.ptp(w[17:]) == 0


def _energy_reference(proj, target, size, ok, contour_weight, shape, expr, glob, jaw, log_s, trans, p):
    """The module doc's energy in numpy (float64), written out sum by sum."""
    T = len(proj)
    wk = np.where(np.arange(68) < 17, contour_weight, 1.0)
    err = np.array([sum(wk[k] * np.sum((proj[t, k] - target[t, k]) ** 2) for k in range(68)) / wk.sum()
                    / size[t] ** 2 for t in range(T)])
    data = sum(err[t] for t in range(T) if ok[t]) / sum(ok)
    prior = p.w_shape * np.sum(shape ** 2)
    prior += p.w_expr * np.mean([np.sum(expr[t] ** 2) for t in range(T)])
    prior += p.w_jaw * np.mean([jaw[t, 1] ** 2 + jaw[t, 2] ** 2 for t in range(T)])
    # jaw opening outside [0, max_jaw]: squared distance to the interval
    prior += np.mean([(0.0 - j) ** 2 if j < 0 else (j - p.max_jaw) ** 2 if j > p.max_jaw else 0.0
                      for j in jaw[:, 0]])
    prior += np.mean([sum(max(abs(g) - p.max_global, 0.0) ** 2 for g in glob[t]) for t in range(T)])

    def speed(x):
        return np.mean([np.sum((x[t + 1] - x[t]) ** 2) for t in range(T - 1)]) if T > 1 else 0.0

    smooth = p.w_smooth * (speed(expr) + speed(jaw) + speed(glob) + 0.01 * speed(trans) + speed(log_s))
    return data, prior, smooth, err


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), T=st.integers(1, 5))
def test_energy_terms_are_the_documented_energy(seed, T):
    rng = np.random.default_rng(seed)
    # non-default weights, each of a size that shows in its term
    p = FitParams(w_shape=0.3, w_expr=0.7, w_jaw=2.0, contour_weight=0.2, max_jaw=0.4, max_global=0.5,
                  w_smooth=0.9)
    target = rng.uniform(-0.5, 0.5, (T, 68, 2))
    proj = target + rng.normal(0.0, 0.05, (T, 68, 2))
    size = rng.uniform(0.3, 1.2, T)
    ok = rng.random(T) < 0.6
    ok[rng.integers(T)] = True
    shape = rng.normal(size=(1, 7))
    expr = rng.normal(size=(T, 5))
    glob = rng.uniform(-1.0, 1.0, (T, 3))                # beyond max_global on some axes
    jaw = rng.uniform(-0.3, 0.3, (T, 3))
    jaw[:, 0] = rng.choice([-0.2, 0.1, 0.7], T) + rng.uniform(-0.05, 0.05, T)   # below, inside, above
    log_s = rng.normal(0.0, 0.3, (T, 1))
    trans = rng.normal(0.0, 3.0, (T, 2))                  # large: its 1e-2 weight shows
    ref = _energy_reference(proj, target, size, ok, p.contour_weight, shape[0], expr, glob, jaw, log_s, trans, p)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    got = energy_terms(t(proj), t(target), t(size), t(ok.astype(float)), landmark_weights(p.contour_weight),
                       t(shape), t(expr), t(glob), t(jaw), t(log_s), t(trans), p)
    for name, g, r in zip(("data", "prior", "smooth", "err"), got, ref):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-6, atol=1e-12, err_msg=name)


def test_a_one_frame_segment_has_no_smoothness_term():
    p = FitParams()
    one = lambda n, v=0.3: torch.full((1, n), v, dtype=torch.float64)  # noqa: E731
    *_, smooth, _ = energy_terms(one(68 * 2).reshape(1, 68, 2), one(68 * 2, 0.1).reshape(1, 68, 2),
                                 one(1, 0.5)[0], one(1, 1.0)[0], landmark_weights(p.contour_weight),
                                 one(5), one(5), one(3), one(3), one(1), one(2), p)
    assert float(smooth) == 0.0


# ----------------------------------------------------------------------------- fit_segment
@pytest.fixture(scope="module")
def model():
    return load_procedural_head_model(seed=0, n_vertices=1500)


SIZE = 256


@pytest.fixture(scope="module")
def exact(model):
    """Six frames of exact landmarks (the model's own, projected) of a known sequence."""
    spec = MotionSpec(frames=6, image_size=SIZE, landmark_noise_px=0.0, landmark_outlier_rate=0.0,
                      landmark_fail_rate=0.0, neck_deg=0.0)
    return generate_sequence(model, spec, seed=4).truth["landmarks"]


def _project_px(model, out) -> np.ndarray:
    """The fitted parameters' landmarks in portrait pixels, with the module doc's camera in numpy."""
    T = len(out["cam"])
    with torch.no_grad():
        lmk = model.landmarks(torch.as_tensor(out["shape"])[None].expand(T, -1),
                              torch.as_tensor(out["expression"]), torch.as_tensor(out["global_orient"]),
                              None, torch.as_tensor(out["jaw_pose"])).double().numpy()
    s, tx, ty = (out["cam"][:, k:k + 1].astype(np.float64) for k in range(3))
    ndc = np.stack([s * (lmk[..., 0] + tx), -s * (lmk[..., 1] + ty)], axis=-1)
    return (ndc + 1.0) * SIZE / 2


def test_fit_segment_fits_exact_landmarks_and_bridges_frames_without_them(model, exact):
    ok = np.array([False, True, True, False, True, False])
    garbage = exact.copy()
    garbage[~ok] = np.nan                                   # what a failed detection leaves
    out = fit_segment(model, garbage, ok, SIZE, FitParams())
    T = len(ok)
    want = {"shape": (100,), "expression": (T, 50), "global_orient": (T, 3), "jaw_pose": (T, 3), "cam": (T, 3),
            "rmse_px": (T,)}
    assert {k: out[k].shape for k in want} == want
    assert all(out[k].dtype == np.float32 for k in want) and isinstance(out["loss"], float)
    # the reported error is the fitted landmarks' RMS distance (pixels) where there are landmarks
    assert np.isnan(out["rmse_px"][~ok]).all()
    fitted = _project_px(model, out)
    rmse = np.sqrt(((fitted - exact) ** 2).sum(-1).mean(-1))
    np.testing.assert_allclose(out["rmse_px"][ok], rmse[ok], rtol=1e-3, atol=1e-3)
    # the default 100 Adam steps stop short of the minimum (FitParams.optimizer): about 3.7 px off in a
    # 256 px portrait (the camera start alone: 8 px)
    assert rmse[ok].max() < 5.0, rmse
    # frames without landmarks: linear in time between the nearest frames with landmarks, held at the ends
    for k in ("expression", "global_orient", "jaw_pose", "cam"):
        v = out[k].astype(np.float64)
        np.testing.assert_allclose(v[0], v[1], atol=1e-7, err_msg=k)
        np.testing.assert_allclose(v[3], (v[2] + v[4]) / 2, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(v[5], v[4], atol=1e-7, err_msg=k)
    # what a failed detection left behind is never looked at
    other = exact.copy()
    other[~ok] = 1e6
    again = fit_segment(model, other, ok, SIZE, FitParams())
    for k in want:
        np.testing.assert_array_equal(again[k], out[k], err_msg=k)


def test_fit_segment_each_stage_lowers_the_energy_and_lbfgs_lowers_it_further(model, exact):
    """From the camera start (no steps), the rigid stage alone (camera and global pose), both stages
    (FitParams' defaults), and L-BFGS for the full stage (FitParams.optimizer) with the same 100 steps
    (0.86x the default's loss on head v3; 60 steps were enough on v2, whose nose was 3x deeper)."""
    ok = np.ones(len(exact), bool)
    loss = {name: fit_segment(model, exact, ok, SIZE, p)["loss"] for name, p in {
        "start": FitParams(rigid_iters=0, iters=0),
        "rigid": FitParams(iters=0),
        "default": FitParams(),
        "lbfgs": FitParams(iters=100, optimizer="lbfgs")}.items()}
    assert loss["rigid"] < 0.5 * loss["start"], loss
    assert loss["default"] < 0.5 * loss["rigid"], loss
    assert loss["lbfgs"] < 0.9 * loss["default"], loss


def test_fit_segment_refuses_bad_input(model, exact):
    ok = np.ones(len(exact), bool)
    with pytest.raises(ValueError, match="want"):
        fit_segment(model, exact[:, :60], ok, SIZE)
    with pytest.raises(ValueError, match="want"):
        fit_segment(model, exact, ok[:-1], SIZE)
    with pytest.raises(ValueError, match="no frame"):
        fit_segment(model, exact, np.zeros(len(exact), bool), SIZE)
    with pytest.raises(ValueError, match="'adam' or 'lbfgs'"):
        FitParams(optimizer="LBFGS")


def test_the_rigid_stage_fits_camera_and_pose_to_the_landmarks_alone(model, exact):
    """The priors come with the full stage: after the rigid stage alone, a pose limit of 0 radians (which
    the head's 5-10 degree turns exceed) changes nothing but the reported energy."""
    ok = np.ones(len(exact), bool)
    free = fit_segment(model, exact, ok, SIZE, FitParams(iters=0))
    tight = fit_segment(model, exact, ok, SIZE, FitParams(iters=0, max_global=0.0))
    assert np.abs(free["global_orient"]).max() > 0.05
    for k in ("global_orient", "cam", "rmse_px"):
        np.testing.assert_array_equal(tight[k], free[k], err_msg=k)
    assert tight["loss"] > free["loss"]


def test_fit_params_defaults_are_the_documented_ones():
    """The stand-in's settings (recorded with its output; bench/fit_oracle.py measured them): 40 rigid and
    100 full Adam steps (not converged, on purpose: FitParams.optimizer), the contour at 0.1, the jaw
    opening in [0, 0.5] rad, the global pose free up to 1.2 rad."""
    assert FitParams().as_dict() == {
        "rigid_iters": 40, "iters": 100, "lr": 0.04, "w_shape": 1e-4, "w_expr": 2e-4, "w_jaw": 0.1,
        "contour_weight": 0.1, "max_jaw": 0.5, "max_global": 1.2, "w_smooth": 3e-2, "optimizer": "adam",
        "seed": 0}


def test_fit_segment_refuses_landmarks_or_flags_of_other_shapes(model, exact):
    ok = np.ones(len(exact), bool)
    for lm, flags in ((np.concatenate([exact, exact[..., :1]], axis=-1), ok),   # (T,68,3)
                      (exact, np.ones(len(exact) + 1, bool)),                     # one flag too many
                      (exact, ok[:, None])):                                       # (T,1)
        with pytest.raises(ValueError, match=r"^landmarks .* want \(T,68,2\) / \(T,\)$"):
            fit_segment(model, lm, flags, SIZE)


def test_one_frame_with_landmarks_is_enough_and_every_parameter_is_fitted(model, exact):
    """A segment where the detector found the face once: that frame is fitted (shape, expression, jaw,
    pose and camera all move from their start) and the other frames hold its values."""
    ok = np.zeros(len(exact), bool)
    ok[2] = True
    garbage = exact.copy()
    garbage[~ok] = np.nan
    out = fit_segment(model, garbage, ok, SIZE, FitParams(rigid_iters=5, iters=10))
    for k in ("shape", "expression", "jaw_pose", "global_orient"):
        assert np.abs(out[k]).max() > 1e-3, k                  # all start at zero
    for k in ("expression", "global_orient", "jaw_pose", "cam"):
        np.testing.assert_array_equal(out[k], np.repeat(out[k][2:3], len(ok), axis=0), err_msg=k)
    assert np.isfinite(out["rmse_px"][2]) and np.isnan(out["rmse_px"][~ok]).all()
