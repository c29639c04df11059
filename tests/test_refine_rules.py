"""The small rules of the motion refinement (flame_fit.refine) against independent references: the QC
measures, the camera units of Eq. 1's smoothness, first and second differences, the hand-written
rotation maths (scipy's Rotation), the contour rows, landmark cleaning, and bad camera input."""
from __future__ import annotations

import configparser
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from flame_fit import lbs as L
from demo.scan import load_procedural_head_model
from demo.synthetic_motion import MotionSpec, generate_sequence
from flame_fit.refine import (NOISE_GROUPS, ROUNDING_NOISE_PX, PoseLandmarks, RefineParams, camera_units,
                              clean_landmarks, compose_np, contour_rows, fit_expression, fit_pose_camera,
                              fits_closely, jitter, landmark_noise_px, landmark_rmse, project_landmarks_px,
                              rodrigues, small_matmul, sq_diff)
from pipeline.build import config_overrides
from tasks import config
from tasks.common.settings import RefineSettings
from tasks.estimation.motion import refine_params


def test_jitter_is_the_mean_absolute_second_difference():
    x = np.array([[0.0, 1.0], [1.0, 1.0], [4.0, 0.0], [9.0, 2.0]])
    # second differences: [2, -1], [2, 3] -> mean |.| = 2
    assert jitter(x) == pytest.approx(2.0)
    assert jitter(x[:2]) == 0.0 and jitter(x[:1]) == 0.0
    assert jitter(np.arange(3.0)) == 0.0                        # a steady drift has no jitter
    assert jitter(np.array([0.0, 1.0, 4.0])) == 2.0             # three frames: one second difference


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_landmark_noise_is_the_standard_deviation_of_white_noise_on_a_moving_face(sigma):
    """Gaussian noise of known s.d. on smooth tracks (a sway, a faster mouth) reads back within 10 %; the
    tracks alone read under 0.1 px (exact landmarks of the truth captures: 0.02); what a failed frame
    holds is never counted, whatever it is."""
    rng = np.random.default_rng(1)
    t = np.arange(300)[:, None, None] / 30.0
    base = 500 + 20 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6, (1, 68, 2)))
    base[:, 48:] += 8 * np.sin(2 * np.pi * 1.5 * t)                                # the mouth
    ok = np.ones(300, bool)
    assert landmark_noise_px(base, ok) < 0.1
    noisy = base + rng.normal(0.0, sigma, base.shape)
    failed = rng.random(300) < 0.3                                                # 30 % failed detections
    ok[failed] = False
    clean = noisy.copy()
    noisy[failed] = 1e4
    assert landmark_noise_px(noisy, ok) == pytest.approx(sigma, rel=0.1)
    clean[failed] = np.nan
    assert landmark_noise_px(clean, ok) == landmark_noise_px(noisy, ok)


def test_landmark_noise_scale_is_exact_on_white_noise():
    """Still points with white noise of s.d. 1.5 px: the median absolute third difference, scaled by
    0.6745 sqrt(20), reads 1.5 px to within 1.5 % (the median of 2 x 10^5 values is that precise; a
    wrong scale such as sqrt(19) or sqrt(21) is 2.5 % off)."""
    rng = np.random.default_rng(7)
    tracks = 300.25 + rng.normal(0.0, 1.5, (1500, 68, 2))
    assert landmark_noise_px(tracks, np.ones(1500, bool)) == pytest.approx(1.5, rel=0.015)


@pytest.mark.parametrize("group", range(3))
def test_landmark_noise_is_the_noisiest_groups(group):
    """A detector steady everywhere but on one group (the contour, the mouth, or brows/nose/eyes) reads
    that group's noise, not the steady majority's median."""
    rng = np.random.default_rng(group)
    tracks = 400.0 + rng.normal(0.0, 0.01, (200, 68, 2))
    tracks[:, NOISE_GROUPS[group]] += rng.normal(0.0, 1.0, tracks[:, NOISE_GROUPS[group]].shape)
    assert landmark_noise_px(tracks, np.ones(200, bool)) == pytest.approx(1.0, rel=0.15)
    assert sorted(i for g in NOISE_GROUPS for i in range(68)[g]) == list(range(68))


def test_landmark_noise_counts_rounding_and_needs_four_good_frames_in_a_row():
    """Whole-pixel points are at least ROUNDING_NOISE_PX off even when they stand still; without four
    consecutive good frames nothing is measured (inf: never fitted closely)."""
    still = np.full((20, 68, 2), 300.0)
    assert landmark_noise_px(still, np.ones(20, bool)) == ROUNDING_NOISE_PX == pytest.approx(0.2887, abs=1e-4)
    assert landmark_noise_px(still + 0.5, np.ones(20, bool)) == 0.0             # sub-pixel: measured as is
    assert landmark_noise_px(still + 0.5, np.arange(20) % 4 != 0) == math.inf
    assert landmark_noise_px(still + 0.5, np.arange(20) % 5 != 0) == 0.0
    assert landmark_noise_px(still + 0.5, np.arange(20) < 3) == math.inf
    assert RefineParams().close_fit_noise_px == 0.0


def test_fits_closely_at_and_below_the_limit_and_never_at_zero():
    assert fits_closely(0.25, 0.25) and fits_closely(0.0, 0.25)
    assert not fits_closely(0.2500001, 0.25) and not fits_closely(math.inf, 0.25)
    assert not fits_closely(0.0, 0.0) and not fits_closely(0.0, -1.0)


def test_landmark_rmse_over_the_masked_frames():
    target = np.zeros((3, 68, 2))
    pred = np.zeros((3, 68, 2))
    pred[0, :, 0] = 3.0                                          # 3 px off everywhere
    pred[1, :, :] = 4.0                                          # sqrt(32) px
    pred[2, :34, 1] = 10.0                                       # half the points 10 px off
    assert landmark_rmse(pred, target) == pytest.approx(math.sqrt((9 + 32 + 50) / 3))
    assert landmark_rmse(pred, target, np.array([True, False, False])) == pytest.approx(3.0)
    assert landmark_rmse(pred, target, np.array([False, True, True])) == pytest.approx(math.sqrt((32 + 50) / 2))
    assert math.isnan(landmark_rmse(pred, target, np.zeros(3, bool)))


def test_camera_units_and_differences():
    cam = torch.tensor([[2.0, 0.1, -0.2], [4.0, 0.3, 0.2], [8.0, 0.6, 0.1]], dtype=torch.float64)
    u = camera_units(cam, 3.0).numpy()
    np.testing.assert_allclose(u, [[math.log(2), 0.3, -0.6], [math.log(4), 0.9, 0.6], [math.log(8), 1.8, 0.3]])
    x = torch.tensor([[0.0], [1.0], [4.0], [9.0], [16.0]], dtype=torch.float64)
    assert float(sq_diff(x)) == 1 + 9 + 25 + 49                  # speeds 1, 3, 5, 7
    assert float(sq_diff(x, order=2)) == 3 * 4                    # accelerations 2, 2, 2
    assert float(sq_diff(torch.arange(5.0)[:, None], order=2)) == 0.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_small_matmul_and_rodrigues_match_references(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 4, 2))
    np.testing.assert_allclose(small_matmul(torch.as_tensor(a), torch.as_tensor(b)).numpy(), a @ b, atol=1e-12)
    a4, b4 = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(2, 5, 4, 2))       # any number of batch axes
    np.testing.assert_allclose(small_matmul(torch.as_tensor(a4), torch.as_tensor(b4)).numpy(), a4 @ b4, atol=1e-12)
    vecs = rng.normal(size=(6, 3)) * rng.uniform(0.0, 3.0, (6, 1))
    got = rodrigues(torch.as_tensor(vecs)).numpy()
    np.testing.assert_allclose(got, Rotation.from_rotvec(vecs).as_matrix(), atol=1e-6)
    # the same values as lbs.batch_rodrigues, epsilon included (float64: 1e-8 shows)
    np.testing.assert_allclose(got, L.batch_rodrigues(torch.as_tensor(vecs)).numpy(), rtol=0, atol=1e-13)
    glob, neck = rng.normal(0, 0.5, (4, 3)), rng.normal(0, 0.5, (4, 3))
    whole = Rotation.from_rotvec(compose_np(glob, neck)).as_matrix()
    np.testing.assert_allclose(whole, Rotation.from_rotvec(glob).as_matrix() @ Rotation.from_rotvec(neck).as_matrix(),
                               atol=1e-9)


def test_contour_rows_follow_deca_table_rule():
    """Yaw in whole degrees clamped to 39: rows 0..39 for yaw 0..39, rows 40..78 for yaw -1..-39."""
    yaws = [0.0, 12.4, 12.6, 20.6, 30.4, 39.0, 55.0, -0.6, -1.0, -20.2, -20.6, -30.4, -39.0, -40.2, -60.0]
    rel = torch.as_tensor(Rotation.from_euler("y", np.array(yaws)[:, None], degrees=True).as_matrix())
    want = [0, 12, 13, 21, 30, 39, 39, 40, 40, 59, 60, 69, 78, 78, 78]
    assert contour_rows(rel).tolist() == want


def test_clean_landmarks_flags_a_gross_frame_once_four_frames_have_landmarks():
    T = 12
    t = np.arange(T, dtype=np.float64)
    track = np.zeros((T, 68, 2))
    track[:, :, 0] = np.linspace(100, 200, 68)[None] + 2.0 * t[:, None]   # a head moving right
    track[:, :, 1] = 300.0
    gross = track.copy()
    gross[6] += 60.0
    params = RefineParams()
    ok = np.ones(T, bool)
    _, outlier = clean_landmarks(gross, ok, params)
    assert outlier[6] and not outlier[:6].any()
    # fewer than four frames with landmarks: nothing to judge a frame by
    few = np.zeros(T, bool)
    few[[5, 6, 7]] = True
    _, outlier = clean_landmarks(gross, few, params)
    assert not outlier.any()
    four = few.copy()
    four[8] = True
    _, outlier = clean_landmarks(gross, four, params)
    assert outlier[6] and not outlier[~four].any()


class _NoModel:
    v_template = torch.zeros(1, 3)


@pytest.fixture(scope="module")
def model():
    return load_procedural_head_model(seed=0, n_vertices=1500)


T3 = 3
ARGS3 = (np.zeros(100), np.zeros((T3, 50)), np.zeros((T3, 3)), np.zeros((T3, 3)))


def test_fit_pose_camera_refuses_a_non_positive_camera_scale_and_a_model_on_another_device(model):
    params = RefineParams(max_iters=1)
    with pytest.raises(ValueError, match="not meta"):
        fit_pose_camera(_NoModel(), *ARGS3, np.ones((T3, 3)), np.zeros((T3, 68, 2)), params, device="meta")
    class _MetaModel:
        v_template = torch.zeros(1, 3, device="meta")
    with pytest.raises(ValueError, match="not cpu"):
        fit_pose_camera(_MetaModel(), *ARGS3, np.ones((T3, 3)), np.zeros((T3, 68, 2)), params, device="cpu")
    for bad in (0.0, -2.0):
        cam = np.ones((T3, 3))
        cam[1, 0] = bad
        with pytest.raises(ValueError, match="camera scale must be positive"):
            fit_pose_camera(model, *ARGS3, cam, np.zeros((T3, 68, 2)), params, device="cpu")
    out = fit_pose_camera(model, *ARGS3, np.ones((T3, 3)), np.full((T3, 68, 2), 512.0), params, device="cpu")
    assert out["iterations"] == 1 and out["global_orient"].shape == (T3, 3) and not out["converged"]


@pytest.mark.parametrize("lr_floor, stop", [(0.125, 25), (0.3, 20)])
def test_fit_pose_camera_halves_the_step_on_each_stall_and_stops_at_the_smallest(model, lr_floor, stop):
    """Every `check_every` iterations (from the second check on, which has a loss to compare with) a
    stall halves the step, not below lr x lr_floor; a stall at that step ends the fit. A tolerance
    nothing passes makes every check a stall: 0.01 -> 0.005 -> 0.0025 -> 0.00125 (floor 0.125), then
    converged at the 5th check; 0.01 -> 0.005 -> 0.003 (floor 0.3), converged at the 4th."""
    params = RefineParams(max_iters=100, tolerance=1e30, lr_floor=lr_floor, check_every=5)
    out = fit_pose_camera(model, *ARGS3, np.ones((T3, 3)), np.full((T3, 68, 2), 512.0), params, device="cpu")
    assert out["converged"] and out["iterations"] == stop
    # a tolerance no stall reaches (the relative decrease is never below -1e30): max_iters, not converged
    out = fit_pose_camera(model, *ARGS3, np.ones((T3, 3)), np.full((T3, 68, 2), 512.0),
                          dataclasses.replace(params, tolerance=-1e30, max_iters=12), device="cpu")
    assert not out["converged"] and out["iterations"] == 12


# [refine]'s values that differ from the library's (the paper's) defaults, measured on Dlib's landmarks
# of the truth captures (luigi.cfg [refine] gives the numbers): (library, pipeline)
PIPELINE_NOT_LIBRARY = {"outlier_scale": (1.5, 3.0), "smooth_weight": (0.3, 2.0), "smooth_order": (1, 2),
                        "lambda_smooth": (12.0, 50.0), "lambda_anchor": (1e-2, 0.3),
                        "close_fit_noise_px": (0.0, 0.25)}


def test_refine_params_defaults_are_the_pipelines_but_the_measured_six():
    """RefineParams (the library's defaults) and [refine] (the pipeline's) agree but for the six values
    chosen on the truth captures, and the module doc's other options are off in both (one round, the
    per-frame jaw)."""
    lib, cfg = dataclasses.asdict(RefineParams()), dataclasses.asdict(RefineSettings())
    assert cfg.keys() <= lib.keys()
    assert {k: (lib[k], cfg[k]) for k in cfg if lib[k] != cfg[k]} == PIPELINE_NOT_LIBRARY
    assert {k: lib[k] for k in lib.keys() - cfg.keys()} == {
        "refit_jaw": False, "refit_contour_weight": 0.0, "refit_rounds": 1, "image_size": 1024, "seed": 0}


def test_the_shipped_refine_section_reaches_the_refinement():
    """luigi.cfg as shipped, read the way RefineMotion reads it, gives RefineParams the pipeline's values
    (not the library's), and a lab's override of each of them gets through too."""
    shipped = configparser.ConfigParser()
    shipped.read(Path(__file__).resolve().parents[1] / "luigi.cfg")
    assert {k: float(shipped["refine"][k]) for k in PIPELINE_NOT_LIBRARY} == {
        k: v for k, (_, v) in PIPELINE_NOT_LIBRARY.items()}              # written out where labs look
    params = dataclasses.asdict(refine_params(config.read(RefineSettings), 512))
    assert {k: params[k] for k in PIPELINE_NOT_LIBRARY} == {k: v for k, (_, v) in PIPELINE_NOT_LIBRARY.items()}
    assert params["image_size"] == 512
    paper = {k: str(lib) for k, (lib, _) in PIPELINE_NOT_LIBRARY.items()}
    with config_overrides(refine=paper):
        params = dataclasses.asdict(refine_params(config.read(RefineSettings), 1024))
    assert {k: params[k] for k in PIPELINE_NOT_LIBRARY} == {k: lib for k, (lib, _) in PIPELINE_NOT_LIBRARY.items()}


def test_fit_expression_leaves_the_contour_out_and_counts_its_steps(model):
    """The re-fit explains the landmarks inside the face with the expression (from a zero start, a small
    anchor), never looks at the 17 contour points, keeps the jaw, and reports L-BFGS's iterations:
    converged only when it stopped before refit_iters steps and before its evaluation budget ran out."""
    spec = MotionSpec(frames=3, landmark_noise_px=0.0, landmark_outlier_rate=0.0, landmark_fail_rate=0.0)
    tr = generate_sequence(model, spec, seed=2).truth
    pose = (tr["jaw_pose"], tr["global_orient"], tr["neck_pose"], tr["cam"])
    params = RefineParams(lambda_anchor=1e-6, refit_iters=40)
    zero = np.zeros_like(tr["expression"])
    out = fit_expression(model, tr["shape"], zero, *pose, tr["landmarks"], params)
    px = lambda e: project_landmarks_px(model, tr["shape"], e, tr["global_orient"], tr["neck_pose"],  # noqa: E731
                                        tr["jaw_pose"], tr["cam"], params.image_size)
    inner = slice(17, 68)
    before = landmark_rmse(px(zero)[:, inner], tr["landmarks"][:, inner])
    after = landmark_rmse(px(out["expression"])[:, inner], tr["landmarks"][:, inner])
    assert after < 0.1 * before, (before, after)
    np.testing.assert_array_equal(out["jaw_pose"], tr["jaw_pose"].astype(np.float32))
    moved = tr["landmarks"].copy()
    moved[:, :17] += 40.0                                      # the contour anywhere: nothing changes
    again = fit_expression(model, tr["shape"], zero, *pose, moved, params)
    np.testing.assert_array_equal(again["expression"], out["expression"])
    assert out["iterations"] == again["iterations"]
    brow = tr["landmarks"].copy()
    brow[:, 17] += 40.0                                        # the first point inside the face counts
    assert np.abs(fit_expression(model, tr["shape"], zero, *pose, brow, params)["expression"]
                  - out["expression"]).max() > 1e-3
    assert out["iterations"] == 40 and not out["converged"]           # 184 steps to converge here
    # 3 steps allow 3 function evaluations, which the first step's line search uses up: stopped, not converged
    short = fit_expression(model, tr["shape"], zero, *pose, tr["landmarks"], dataclasses.replace(params, refit_iters=3))
    assert short["iterations"] == 1 and not short["converged"]
    # 4 steps allow 5 evaluations, used up exactly (5 of 5) after step 2: stopped, not converged
    exact = fit_expression(model, tr["shape"], zero, *pose, tr["landmarks"], dataclasses.replace(params, refit_iters=4))
    assert exact["iterations"] == 2 and not exact["converged"]
    # 2 steps allow 2 evaluations; the first step's line search overshoots them: stopped, not converged
    short = fit_expression(model, tr["shape"], zero, *pose, tr["landmarks"],
                           dataclasses.replace(params, refit_iters=2))
    assert short["iterations"] == 1 and not short["converged"]
    done = fit_expression(model, tr["shape"], zero, *pose, tr["landmarks"], dataclasses.replace(params, lambda_anchor=1e-2))
    assert done["converged"] and done["iterations"] < 40


@pytest.mark.parametrize("rounds, anchor", [(0, 0.0), (3, 0.0), (3, -1.0)])
def test_refine_motion_qc_times_and_rounds_without_a_refit(monkeypatch, rounds, anchor):
    """The QC's seconds are differences of the one clock (outliers and smoothing: start to the end of the
    cleaning; total: start to the end), the re-fit takes 0 s when it is off (lambda_anchor <= 0), and with it
    off extra rounds have nothing to alternate with: Eq. 1 runs once (and at least once: refit_rounds 0).
    The fit and the projections are
    stand-ins here; this test is about the stage's bookkeeping."""
    from flame_fit import refine

    T = 8
    clock = iter([100.0, 103.0, 110.0])                  # start, after cleaning, end
    fake_time = type("Clock", (), {"perf_counter": staticmethod(lambda: next(clock))})
    monkeypatch.setattr(refine, "time", fake_time)
    calls = []

    def fake_fit(model, shape, expression, jaw_pose, glob0, cam0, smoothed, params, device=None):
        calls.append(1)
        return {"global_orient": np.asarray(glob0), "neck_pose": np.zeros((T, 3)), "cam": np.asarray(cam0),
                "iterations": 7, "converged": True, "loss": 1.0, "loss_terms": {}, "seconds": 2.5}

    monkeypatch.setattr(refine, "fit_pose_camera", fake_fit)
    monkeypatch.setattr(refine, "project_landmarks_px", lambda *a: np.zeros((T, 68, 2)))
    frames = {"landmarks": np.full((T, 68, 2), 500.0), "landmark_ok": np.ones(T, bool),
              "shape": np.zeros((T, 100)), "expression": np.zeros((T, 50)), "global_orient": np.zeros((T, 3)),
              "jaw_pose": np.zeros((T, 3)), "cam": np.tile([5.0, 0.0, 0.0], (T, 1))}
    params = RefineParams(lambda_anchor=anchor, refit_rounds=rounds)
    _, qc = refine.refine_motion(None, frames, np.zeros(100), params)
    assert len(calls) == 1
    assert qc["seconds"] == {"outliers_and_smoothing": 3.0, "fit": 2.5, "expression_refit": 0.0,
                             "total": 10.0}
    assert qc["expression_refit"] is None and qc["iterations"] == 7


def test_fit_pose_camera_without_iterations_returns_the_start(model):
    """max_iters 0: no step taken, 0 iterations reported, the starting pose and camera come back."""
    cam = np.tile([1.2, 0.05, -0.03], (T3, 1))
    glob = np.tile([0.1, -0.2, 0.05], (T3, 1))
    out = fit_pose_camera(model, np.zeros(100), np.zeros((T3, 50)), np.zeros((T3, 3)), glob, cam,
                          np.full((T3, 68, 2), 512.0), RefineParams(max_iters=0), device="cpu")
    assert out["iterations"] == 0 and not out["converged"]
    np.testing.assert_allclose(out["global_orient"], glob, atol=1e-7)
    np.testing.assert_allclose(out["cam"], cam, atol=1e-7)
    assert not out["neck_pose"].any()


def test_fit_pose_camera_tolerance_zero_turns_the_early_stop_off(model):
    """A relative decrease strictly below the tolerance is a stall. With only the regulariser on and
    everything at zero, no gradient moves anything and the loss stays exactly 0 (relative decrease 0):
    tolerance 0 is never undercut, so the fit runs its max_iters; any positive tolerance stops it."""
    params = RefineParams(lambda_landmark=0.0, lambda_smooth=0.0, max_iters=40, tolerance=0.0)
    args = (model, *ARGS3, np.ones((T3, 3)), np.full((T3, 68, 2), 512.0))
    out = fit_pose_camera(*args, params, device="cpu")
    assert out["loss"] == 0.0 and out["iterations"] == 40 and not out["converged"]
    out = fit_pose_camera(*args, dataclasses.replace(params, tolerance=1e-12), device="cpu")
    assert out["converged"] and out["iterations"] < 40


def test_fit_pose_camera_fits_the_camera_scale(model):
    """Landmarks drawn 10 % larger than the starting camera's: the fitted scale follows them."""
    tr = generate_sequence(model, MotionSpec(frames=T3, landmark_noise_px=0.0, landmark_outlier_rate=0.0,
                                             landmark_fail_rate=0.0), seed=2).truth
    start = tr["cam"].copy()
    start[:, 0] /= 1.1
    out = fit_pose_camera(model, tr["shape"], tr["expression"], tr["jaw_pose"],
                          compose_np(tr["global_orient"],
                          tr["neck_pose"]), start, tr["landmarks"], RefineParams(max_iters=300), device="cpu")
    np.testing.assert_allclose(out["cam"][:, 0], tr["cam"][:, 0], rtol=0.01)


def test_fit_pose_camera_fits_the_camera_translation_on_both_axes(model):
    """A start shifted right and up by different amounts: the fitted translation follows the landmarks on
    each axis (the two image axes are separate unknowns)."""
    tr = generate_sequence(model, MotionSpec(frames=T3, landmark_noise_px=0.0, landmark_outlier_rate=0.0,
                                             landmark_fail_rate=0.0), seed=2).truth
    start = tr["cam"].copy()
    start[:, 1] += 0.04
    start[:, 2] -= 0.03
    out = fit_pose_camera(model, tr["shape"], tr["expression"], tr["jaw_pose"],
                          compose_np(tr["global_orient"],
                          tr["neck_pose"]), start, tr["landmarks"], RefineParams(max_iters=300), device="cpu")
    np.testing.assert_allclose(out["cam"][:, 1:], tr["cam"][:, 1:], atol=0.012)          # from 0.04, 0.03


def test_fit_expression_jaw_refit_is_anchored_to_the_per_frame_jaw(model):
    """With refit_jaw the anchor pulls the jaw back to its per-frame value: landmarks of another jaw move
    it there with a tiny anchor, a heavy anchor keeps it within a hair of where it started."""
    tr = generate_sequence(model, MotionSpec(frames=T3, landmark_noise_px=0.0, landmark_outlier_rate=0.0,
                                             landmark_fail_rate=0.0), seed=2).truth
    jaw0 = tr["jaw_pose"] + np.array([0.08, 0.0, 0.0])
    pose = (jaw0, tr["global_orient"], tr["neck_pose"], tr["cam"])
    params = RefineParams(refit_jaw=True, refit_iters=60)
    free = fit_expression(model, tr["shape"], tr["expression"], *pose, tr["landmarks"],
                          dataclasses.replace(params, lambda_anchor=1e-6))
    held = fit_expression(model, tr["shape"], tr["expression"], *pose, tr["landmarks"],
                          dataclasses.replace(params, lambda_anchor=1e3))
    free_err = np.abs(free["jaw_pose"] - tr["jaw_pose"]).max()
    held_move = np.abs(held["jaw_pose"] - jaw0).max()
    assert free_err < 0.02 and held_move < 1e-3, (free_err, held_move)


def test_pose_landmarks_rebuild_their_tables_only_when_the_contour_rows_change(model, monkeypatch):
    """The landmark faces of the dynamic contour are looked up again only when some frame's contour row
    (its yaw in whole degrees) changed; a pose within the same rows reuses them and still equals
    model.landmarks, and so does a pose that moves the rows."""
    T = 2
    g = torch.Generator().manual_seed(1)
    shape, expr = torch.randn(100, generator=g), torch.randn(T, 50, generator=g)
    jaw = torch.tensor([[0.0, math.radians(0.5), 0.0]] * T)   # turns the jaw's world yaw 0.5 degrees further
    lookups = []
    real = model._landmark_tables
    monkeypatch.setattr(model, "_landmark_tables", lambda pose: lookups.append(1) or real(pose))
    fn = PoseLandmarks(model, shape, expr, jaw)
    neck = torch.zeros(T, 3)
    # 9.6 and 10.4 degrees: both row 10 (the head's, not the jaw's: 10.1 and 10.9); then the neck alone
    # turns the head 15 degrees further
    for yaw_deg, neck_deg, n in [(9.6, 0.0, 1), (10.4, 0.0, 0), (25.0, 0.0, 1), (25.0, 15.0, 1)]:
        glob = torch.tensor([[0.0, math.radians(yaw_deg), 0.0], [0.0, math.radians(-yaw_deg), 0.0]])
        neck = torch.tensor([[0.0, math.radians(neck_deg), 0.0]] * T)
        before = len(lookups)
        fast = fn(glob, neck)
        assert len(lookups) - before == n, yaw_deg
        torch.testing.assert_close(fast, model.landmarks(shape.expand(T, -1), expr, glob, neck, jaw),
                                   atol=1e-5, rtol=1e-5)


def test_fit_expression_at_a_start_with_zero_gradient_takes_no_step(model):
    """Nothing to fit (landmark term off, the anchor's minimum is the start): L-BFGS sees a zero gradient
    at the start and stops there: 0 iterations, converged, the per-frame expression unchanged."""
    rng = np.random.default_rng(0)
    expr = rng.normal(0, 0.5, (T3, 50))
    out = fit_expression(model, np.zeros(100), expr, np.zeros((T3, 3)), np.zeros((T3, 3)), np.zeros((T3, 3)),
                         np.ones((T3, 3)), np.full((T3, 68, 2), 512.0), RefineParams(lambda_landmark=0.0))
    assert out["iterations"] == 0 and out["converged"]
    np.testing.assert_array_equal(out["expression"], expr.astype(np.float32))


def _truth3(model):
    return generate_sequence(model, MotionSpec(frames=T3, landmark_noise_px=0.0, landmark_outlier_rate=0.0,
                                               landmark_fail_rate=0.0), seed=2).truth


def test_fit_pose_camera_loss_terms_are_eq1_of_the_returned_motion(model):
    """The reported terms, recomputed from the returned pose and camera with the reference
    model.landmarks: landmark = sum_t w_t sum_k c_k |P - l|^2 in NDC (c_k: contour_weight for the 17
    contour points, 1 elsewhere; w_t the frame weights), smooth = first differences of g, n and
    [log s, s_ref t] (s_ref the starting scales' median), reg = |g|^2 + neck_reg_scale |n|^2, and the loss
    their lambda-weighted sum."""
    tr = _truth3(model)
    rng = np.random.default_rng(5)
    target = tr["landmarks"] + rng.normal(0, 3.0, tr["landmarks"].shape)
    cam0 = tr["cam"] * np.array([1.05, 1.0, 1.0])
    frame_w = np.array([1.0, 0.5, 2.0])
    params = RefineParams(max_iters=30, contour_weight=0.25, neck_reg_scale=3.0, lambda_smooth=7.0,
                          lambda_reg=0.02, lambda_landmark=1.5)
    out = fit_pose_camera(model, tr["shape"], tr["expression"], tr["jaw_pose"], tr["global_orient"], cam0,
                          target,
                          params, frame_weight=frame_w, device="cpu")
    g, n, c = out["global_orient"], out["neck_pose"], out["cam"]
    px = project_landmarks_px(model, tr["shape"], tr["expression"], g, n, tr["jaw_pose"], c,
                              params.image_size)
    per_point = (((px - target) * (2.0 / params.image_size)) ** 2).sum(-1)          # (T,68) NDC^2
    per_point[:, :17] *= 0.25
    landmark = float((frame_w[:, None] * per_point).sum())
    s_ref = float(np.median(cam0[:, 0]))
    u = np.concatenate([np.log(c[:, :1]), s_ref * c[:, 1:]], axis=1)
    smooth = sum(float((np.diff(x, axis=0) ** 2).sum()) for x in (g, n, u))
    reg = float((g ** 2).sum() + 3.0 * (n ** 2).sum())
    terms = out["loss_terms"]
    assert terms["landmark"] == pytest.approx(landmark, rel=1e-3)
    assert terms["smooth"] == pytest.approx(smooth, rel=1e-3, abs=1e-9)
    assert terms["reg"] == pytest.approx(reg, rel=1e-3)
    assert out["loss"] == pytest.approx(1.5 * landmark + 7.0 * smooth + 0.02 * reg, rel=1e-3)


def test_fit_pose_camera_stops_on_a_relative_decrease(model):
    """The stop compares the decrease relative to the loss: every lambda scaled by 1000 scales the loss,
    not the relative decrease, so the fit stops at the same iteration."""
    tr = _truth3(model)
    start = (tr["shape"], tr["expression"], tr["jaw_pose"], tr["global_orient"] + 0.05, tr["cam"] * 1.05,
             tr["landmarks"])
    params = RefineParams(max_iters=300, tolerance=1e-3)
    out = fit_pose_camera(model, *start, params, device="cpu")
    big = fit_pose_camera(model, *start, dataclasses.replace(params, lambda_landmark=1e3, lambda_smooth=12e3,
                                                            lambda_reg=1.0), device="cpu")
    assert out["converged"] and big["converged"] and out["iterations"] < 300
    assert big["iterations"] == out["iterations"]
    assert big["loss"] == pytest.approx(1e3 * out["loss"], rel=1e-2)


def test_fit_pose_camera_stall_is_the_mean_relative_decrease_per_iteration(model):
    """At a check (every check_every iterations) the loss's decrease since the last check, relative to
    the loss now and divided by check_every, is compared with the tolerance. The losses the first two
    checks see (before steps 5 and 10: after 4 and 9 steps) come from fits that never stall; with
    lr_floor 1 the first stall ends the fit: a tolerance 5x that rate stops it at iteration 10, one 5x
    below does not."""
    tr = _truth3(model)
    start = (tr["shape"], tr["expression"], tr["jaw_pose"], tr["global_orient"] + 0.05, tr["cam"] * 1.05,
             tr["landmarks"])
    base = RefineParams(tolerance=-1e30, check_every=5, lr_floor=1.0)
    l4, l9 = (fit_pose_camera(model, *start, dataclasses.replace(base, max_iters=k), device="cpu")["loss"]
              for k in (4, 9))
    rate = (l4 - l9) / abs(l9) / 5
    assert rate > 0
    stop = fit_pose_camera(model, *start, dataclasses.replace(base, tolerance=5 * rate, max_iters=12),
                           device="cpu")
    assert stop["converged"] and stop["iterations"] == 10
    go = fit_pose_camera(model, *start, dataclasses.replace(base, tolerance=rate / 5, max_iters=12),
                         device="cpu")
    assert not go["converged"] and go["iterations"] == 12


def test_clean_landmarks_smooths_with_unit_data_weight():
    """smooth_weight is w_s against a data weight of 1: with every frame detected (three frames: too few
    for outliers) the smoothed track solves (I + w_s D^T D) x = y, D the first differences (dense numpy)."""
    y = np.random.default_rng(4).normal(300.0, 20.0, (3, 68, 2))
    D = np.diff(np.eye(3), axis=0)                                          # (2,3)
    want = np.linalg.solve(np.eye(3) + 0.3 * D.T @ D, y.reshape(3, -1)).reshape(y.shape)
    got, outlier = clean_landmarks(y, np.ones(3, bool), RefineParams(smooth_weight=0.3))
    assert not outlier.any()
    np.testing.assert_allclose(got, want, atol=1e-6)
