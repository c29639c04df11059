"""Motion refinement (Eq. 1) on generated sequences with known truth, and RefineMotion via Luigi."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from flame_fit.flame import load_flame
from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from flame_fit.refine import (CLOSE_FIT, ROUNDING_NOISE_PX, PoseLandmarks, RefineParams, jitter,
                              landmark_rmse, project_landmarks_px, refine_motion)
from demo.synthetic_motion import MotionSpec, compose, generate_sequence, rotation_error_deg
from pipeline.build import build, config_overrides
from tasks.common.errors import PipelineInputError
from tasks.common.settings import RefineSettings
from tasks.estimation.motion import MOTION_KEYS, _round_floats, load_frames, refine_params, segments_fps
from tasks.head_model import _CACHE
from tasks.layout import Layout
from tasks.refine import RefineMotion

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refine_head")
    write_procedural_head_model(folder, seed=0, n_vertices=1500)     # small: fast to build
    return folder


@pytest.fixture(scope="module")
def model(head_dir):
    return load_flame(head_dir / MODEL_FILE, head_dir / EMBEDDING_FILE).eval()


@pytest.fixture(scope="module")
def sequence(model):
    return generate_sequence(model, MotionSpec(frames=60), seed=3)


def test_pose_landmarks_equal_model_landmarks(model):
    T = 12
    g = torch.Generator().manual_seed(0)
    shape, expr = torch.randn(100, generator=g), torch.randn(T, 50, generator=g)
    glob = (0.4 * torch.randn(T, 3, generator=g)).requires_grad_()
    neck = (0.1 * torch.randn(T, 3, generator=g)).requires_grad_()
    jaw = 0.2 * torch.rand(T, 3, generator=g)
    fast = PoseLandmarks(model, shape, expr, jaw)(glob, neck)
    ref = model.landmarks(shape.expand(T, -1), expr, glob, neck, jaw)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad((fast ** 2).sum(), [glob, neck])
    g2 = torch.autograd.grad((ref ** 2).sum(), [glob, neck])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_refinement_reduces_rotation_error_and_jitter(model, sequence):
    tr, fr = sequence.truth, sequence.frames
    params = RefineParams(smooth_weight=0.3)
    motion, qc = refine_motion(model, fr, tr["shape"], params)
    head_true = compose(tr["global_orient"], tr["neck_pose"])
    head_after = compose(motion["global_orient"].astype(np.float64), motion["neck_pose"].astype(np.float64))
    before = fr["global_orient"].astype(np.float64)
    err_before = np.median(rotation_error_deg(before, head_true))
    err_after = np.median(rotation_error_deg(head_after, head_true))
    assert err_after < 0.5 * err_before
    assert np.median(rotation_error_deg(motion["global_orient"], tr["global_orient"])) < err_before
    assert jitter(head_after) < jitter(before) / 5
    # the QC record reports what happened, and the fit converged by its tolerance
    assert qc["converged"] and 0 < qc["iterations"] < params.max_iters
    assert qc["landmark_rmse_px"]["after"] < qc["landmark_rmse_px"]["before"]
    assert qc["jitter"]["global_orient_deg"]["after"] < qc["jitter"]["global_orient_deg"]["before"]
    # every injected group is reported: failed detections apart, each other group as outliers
    injected = dict(sequence.injected)
    assert qc["landmark_detections_failed"] == pytest.approx(injected.pop("failed").mean())
    assert set(injected) <= set(qc["outlier_fraction"])
    for group, mask in injected.items():
        assert qc["outlier_fraction"][group] >= 0.8 * mask.mean(), group
    # the QC numbers are what they say, recomputed from the arrays (jitter: tests/test_refine_rules.py)
    T = len(fr["expression"])
    deg = 180.0 / np.pi
    ok = fr["landmark_ok"].astype(bool)
    assert qc["frames"] == T
    n_out = round(qc["outlier_fraction"]["landmarks"] * T)
    assert qc["landmark_rmse_px"]["frames_measured"] == ok.sum() - n_out
    jit = qc["jitter"]
    assert jit["global_orient_deg"]["after"] == pytest.approx(jitter(motion["global_orient"]) * deg)
    assert jit["global_orient_deg"]["before"] == pytest.approx(jitter(fr["global_orient"]) * deg)
    assert jit["neck_pose_deg"] == {"before": 0.0, "after": pytest.approx(jitter(motion["neck_pose"]) * deg)}
    assert jit["jaw_pose_deg"]["after"] == pytest.approx(jitter(motion["jaw_pose"]) * deg)
    assert jit["jaw_pose_deg"]["before"] == pytest.approx(jitter(fr["jaw_pose"]) * deg)
    assert jit["cam"] == {"before": pytest.approx(jitter(fr["cam"])), "after": pytest.approx(jitter(motion["cam"]))}
    assert jit["expression"] == {"before": pytest.approx(jitter(fr["expression"])),
                                 "after": pytest.approx(jitter(motion["expression"]))}
    # Eq. 1's value is its three terms with their weights
    terms = qc["loss_terms"]
    assert qc["loss"] == pytest.approx(params.lambda_landmark * terms["landmark"] + params.lambda_smooth * terms["smooth"]
                                       + params.lambda_reg * terms["reg"], rel=1e-9)
    assert 0 < terms["landmark"] and 0 < terms["smooth"] and 0 < terms["reg"]
    assert qc["seconds"]["total"] >= qc["seconds"]["fit"] + qc["seconds"]["expression_refit"] > 0
    assert qc["params"] == dataclasses.asdict(params)
    # contract dtypes and shapes
    want = {"expression": (T, 50), "global_orient": (T, 3), "neck_pose": (T, 3), "jaw_pose": (T, 3),
            "cam": (T, 3), "shape": (100,), "fps": ()}
    assert {k: motion[k].shape for k in want} == want
    assert all(motion[k].dtype == np.float32 for k in want)
    # the refined model's landmarks sit near the true ones (noise is 2 px per coordinate)
    px = project_landmarks_px(model, motion["shape"], motion["expression"], motion["global_orient"],
                              motion["neck_pose"], motion["jaw_pose"], motion["cam"], 1024)
    clean = fr["landmark_ok"] & ~sequence.injected["landmarks"]
    assert landmark_rmse(px, tr["landmarks"]) < landmark_rmse(tr["landmarks"], fr["landmarks"], clean)


def test_neck_stays_small_and_regulariser_decides_the_split(model, sequence):
    tr, fr = sequence.truth, sequence.frames
    motion, _ = refine_motion(model, fr, tr["shape"], RefineParams(smooth_weight=0.3, max_iters=300))
    assert np.degrees(np.abs(motion["neck_pose"])).max() < 3.0
    equal, _ = refine_motion(model, fr, tr["shape"], RefineParams(smooth_weight=0.3, neck_reg_scale=1.0,
                                                                  max_iters=300))
    assert np.abs(equal["neck_pose"]).mean() > 2 * np.abs(motion["neck_pose"]).mean()


def test_expression_refit_restores_the_fit_a_new_shape_breaks(model, sequence):
    tr, fr = sequence.truth, sequence.frames
    # the per-frame expression was estimated with another shape than the one refinement is given
    other = (tr["shape"] + np.random.default_rng(0).normal(0.0, 1.0, 100)).astype(np.float32)
    kept, qc_kept = refine_motion(model, fr, other, RefineParams(smooth_weight=0.3, lambda_anchor=0.0))
    refit, qc_refit = refine_motion(model, fr, other, RefineParams(smooth_weight=0.3))
    assert qc_kept["expression_refit"] is None and qc_refit["expression_refit"]["converged"]
    # 0.93x on head v3 (< 0.9 on v2, whose deep nose directions the expression could absorb more of);
    # most of a wrong identity (head size, width) is beyond what expressions can take up
    assert qc_refit["landmark_rmse_px"]["after"] < 0.95 * qc_kept["landmark_rmse_px"]["after"]
    np.testing.assert_array_equal(refit["jaw_pose"], kept["jaw_pose"])       # the jaw is kept
    np.testing.assert_array_equal(refit["global_orient"], kept["global_orient"])
    assert not np.array_equal(refit["expression"], kept["expression"])


def _write_fixture(layout, model, seq, subject="S001", song="001_test", segment=0, fps=30.0):
    frames = layout.frames_npz(subject, song, segment)
    frames.parent.mkdir(parents=True)
    np.savez(frames, **seq.frames)
    # the crop stage's record of the segment: the one place the frame rate is read from
    T = len(seq.frames["expression"])
    segments = layout.segments_json(subject, song)
    segments.parent.mkdir(parents=True)
    segments.write_text(json.dumps({"fps": fps, "segments": [
        {"index": segment, "start_frame": 0, "end_frame": T, "box": [0, 0, 1, 1],
         "video": f"segment_{segment:03d}.mp4"}]}))
    shape_npy = layout.scan_shape_npy(subject)
    shape_npy.parent.mkdir(parents=True)
    np.save(shape_npy, seq.truth["shape"].astype(np.float32))
    return frames


def test_refine_motion_task_contract_and_identical_rerun(luigi_paths, head_dir, model):
    raw, processed = luigi_paths
    layout = Layout.from_config()
    with config_overrides(flame={"model_path": "", "procedural_model_dir": head_dir}):
        _CACHE.clear()
        try:
            seq = generate_sequence(model, MotionSpec(frames=30), seed=5)
            _write_fixture(layout, model, seq)
            task = RefineMotion(subject="S001", song="001_test", segment=0)
            assert build(task).ok
            out = layout.motion_npz("S001", "001_test", 0)
            first = out.read_bytes()
            with np.load(out) as z:
                assert sorted(z.files) == sorted(MOTION_KEYS)
                assert all(z[k].dtype == np.float32 for k in z.files)
                assert z["expression"].shape == (30, 50) and z["shape"].shape == (100,)
                assert z["cam"].shape == z["neck_pose"].shape == (30, 3)
                assert float(z["fps"]) == 30.0
            qc = json.loads(layout.motion_qc("S001", "001_test", 0).read_text())
            assert qc["head_model"]["kind"] == "stand-in"
            assert set(qc["outlier_fraction"]) >= {"expression", "jaw_pose", "global_orient", "cam",
                                                   "landmarks"}
            assert qc["landmark_rmse_px"]["after"] < qc["landmark_rmse_px"]["before"]
            # 2 px of detector noise: the shipped [refine] values, not the close fit
            assert qc["landmark_noise_px"] > 1.5 and qc["close_fit"] is False
            assert qc["params"]["refit_jaw"] is False and qc["params"]["close_fit_noise_px"] == 0.25
            out.unlink()
            assert build(RefineMotion(subject="S001", song="001_test", segment=0)).ok
            assert out.read_bytes() == first
        finally:
            _CACHE.clear()


def test_refine_motion_task_fits_exact_landmarks_closely_with_the_shipped_config(luigi_paths, head_dir, model,
                                                                                  caplog):
    """RefineMotion with luigi.cfg as shipped: exact landmarks (no detector noise) are refined with
    CLOSE_FIT's values, which the QC record and the log say."""
    layout = Layout.from_config()
    with config_overrides(flame={"model_path": "", "procedural_model_dir": head_dir}):
        _CACHE.clear()
        try:
            spec = MotionSpec(frames=30, landmark_noise_px=0.0, landmark_outlier_rate=0.0,
                              landmark_fail_rate=0.0)
            _write_fixture(layout, model, generate_sequence(model, spec, seed=5))
            with caplog.at_level("INFO", logger="singinghead"):
                assert build(RefineMotion(subject="S001", song="001_test", segment=0)).ok
            qc = json.loads(layout.motion_qc("S001", "001_test", 0).read_text())
            assert qc["close_fit"] is True and qc["landmark_noise_px"] < 0.2   # fast synthetic singing
            assert {k: qc["params"][k] for k in CLOSE_FIT} == CLOSE_FIT
            assert "fitted closely" in caplog.text and "segment_000.npz" in caplog.text
        finally:
            _CACHE.clear()


def test_qc_record_keeps_small_values_and_writes_no_nan():
    """The QC record rounds to 6 significant digits (1e-7 stays 1e-7, not 0.0) and writes NaN and inf,
    which JSON has not, as null."""
    got = _round_floats({"tolerance": 1e-7, "t": 123.4567891, "rmse": float("nan"), "noise": math.inf,
                         "nested": {"x": -2.5e-9}, "n": 3, "s": "a"})
    assert got == {"tolerance": 1e-7, "t": 123.457, "rmse": None, "noise": None, "nested": {"x": -2.5e-9},
                   "n": 3, "s": "a"}
    json.loads(json.dumps(got, allow_nan=False))


def test_a_close_fit_limit_that_lets_whole_pixels_in_is_warned_about(caplog, monkeypatch):
    """[refine] close_fit_noise_px at or above the rounding noise of whole pixels lets Dlib's landmarks of
    a still face be fitted closely: the pipeline says so when it reads the setting, once per value (it
    reads it for every segment), and again for another value."""
    from tasks.estimation import motion

    monkeypatch.setattr(motion, "_WARNED_LIMITS", set())
    with caplog.at_level("WARNING", logger="singinghead"):
        refine_params(RefineSettings(), 1024)
        assert "close_fit_noise_px" not in caplog.text
        params = refine_params(RefineSettings(close_fit_noise_px=ROUNDING_NOISE_PX), 1024)
        refine_params(RefineSettings(close_fit_noise_px=ROUNDING_NOISE_PX), 1024)
        refine_params(RefineSettings(close_fit_noise_px=0.5), 1024)
    assert params.close_fit_noise_px == ROUNDING_NOISE_PX
    warned = [r.getMessage() for r in caplog.records if "close_fit_noise_px" in r.getMessage()]
    assert len(warned) == 2 and "whole-pixel" in warned[0]
    assert f"= {ROUNDING_NOISE_PX:g} " in warned[0] and "= 0.5 " in warned[1]


def test_bad_frames_file_names_the_file(tmp_path):
    bad = tmp_path / "segment_000.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PipelineInputError) as e:
        load_frames(bad)
    assert str(bad) in str(e.value)
    np.savez(bad, landmarks=np.zeros((5, 68, 2)), landmark_ok=np.zeros(5, bool), shape=np.zeros((5, 100)),
             expression=np.zeros((5, 50)), global_orient=np.zeros((5, 3)), jaw_pose=np.zeros((5, 3)),
             cam=np.ones((5, 3)))
    with pytest.raises(PipelineInputError, match="no frame of this segment has a landmark detection"):
        load_frames(bad)


def test_fps_comes_from_segments_json(tmp_path):
    """segments.json's fps is the one source of the frame rate; without it the error names the file."""
    seg = tmp_path / "segments.json"
    seg.write_text(json.dumps({"fps": 25.0, "segments": []}))
    assert segments_fps(seg) == 25.0
    seg.write_text(json.dumps({"segments": []}))
    with pytest.raises(PipelineInputError, match="fps") as e:
        segments_fps(seg)
    assert str(seg) in str(e.value)
    with pytest.raises(PipelineInputError, match="CropPortraits"):
        segments_fps(tmp_path / "missing" / "segments.json")


def _exact_frames(model, truth: dict, size: int = 1024) -> dict:
    """Per-frame inputs whose landmarks are exactly the truth's projection (no detector error)."""
    lmk = project_landmarks_px(model, truth["shape"], truth["expression"], truth["global_orient"],
                               truth["neck_pose"], truth["jaw_pose"], truth["cam"], size)
    T = len(lmk)
    return {"landmarks": lmk, "landmark_ok": np.ones(T, bool), "shape": np.repeat(truth["shape"][None], T, 0),
            **{k: np.array(truth[k], np.float64) for k in ("expression", "jaw_pose", "global_orient", "cam")}}


def test_jaw_refit_with_the_true_shape_recovers_the_jaw_from_exact_landmarks(model):
    """Known truth: exact landmarks, the true shape, a per-frame jaw 3 degrees too open (what the weight-free
    estimator gives on exact landmarks). The default keeps that jaw; `refit_jaw` recovers it."""
    spec = MotionSpec(frames=40, landmark_noise_px=0.0, landmark_outlier_rate=0.0, landmark_fail_rate=0.0,
                      neck_deg=0.0)
    tr = generate_sequence(model, spec, seed=5).truth
    fr = _exact_frames(model, tr)
    fr["jaw_pose"][:, 0] += np.radians(3.0)
    kept, _ = refine_motion(model, fr, tr["shape"], RefineParams())
    refit, qc = refine_motion(model, fr, tr["shape"], RefineParams(refit_jaw=True, lambda_anchor=1e-5))
    def err(m):
        return np.median(rotation_error_deg(m["jaw_pose"].astype(np.float64), tr["jaw_pose"]))
    assert err(kept) > 2.5
    assert err(refit) < 0.5
    assert qc["landmark_rmse_px"]["after"] < qc["landmark_rmse_px"]["before"]


def test_second_difference_smoothness_leaves_a_steady_turn_alone(model):
    """A steady turn has no acceleration: penalising second differences keeps it where first differences
    (the paper's Eq. 1) pull a noisy estimate of it towards a slower turn."""
    T = 30
    spec = MotionSpec(frames=T, landmark_noise_px=0.0, landmark_outlier_rate=0.0, landmark_fail_rate=0.0)
    tr = dict(generate_sequence(model, spec, seed=1).truth)
    tr["global_orient"] = np.zeros((T, 3))
    tr["global_orient"][:, 1] = np.radians(np.linspace(-20.0, 20.0, T))
    tr["neck_pose"] = np.zeros((T, 3))
    fr = _exact_frames(model, tr)
    fr["global_orient"] += np.radians(2.0) * np.random.default_rng(0).standard_normal((T, 3))
    errs = {}
    for order in (1, 2):
        m, _ = refine_motion(model, fr, tr["shape"], RefineParams(smooth_order=order, lambda_smooth=100.0))
        head = compose(m["global_orient"].astype(np.float64), m["neck_pose"].astype(np.float64))
        errs[order] = float(np.median(rotation_error_deg(head, tr["global_orient"])))
    assert errs[2] < 0.3
    assert errs[1] > 2 * errs[2]


def test_exact_landmarks_are_fitted_closely_and_rounded_ones_are_not(model):
    """Known truth, the pipeline's rule: exact landmarks measure far below close_fit_noise_px, so the
    refinement takes CLOSE_FIT's values and recovers a per-frame jaw 3 degrees too open; the same
    landmarks rounded to whole pixels (what Dlib reports) keep the given values and that jaw. The QC
    record says which, with the measured noise and the values used."""
    spec = MotionSpec(frames=40, landmark_noise_px=0.0, landmark_outlier_rate=0.0, landmark_fail_rate=0.0,
                      neck_deg=0.0)
    tr = generate_sequence(model, spec, seed=5).truth
    fr = _exact_frames(model, tr)
    fr["jaw_pose"][:, 0] += np.radians(3.0)
    params = RefineParams(close_fit_noise_px=0.25)
    exact, qc = refine_motion(model, fr, tr["shape"], params)
    rounded, qc_r = refine_motion(model, {**fr, "landmarks": np.round(fr["landmarks"])}, tr["shape"], params)
    def err(m):
        return np.median(rotation_error_deg(m["jaw_pose"].astype(np.float64), tr["jaw_pose"]))
    assert qc["close_fit"] and qc["landmark_noise_px"] < 0.25
    assert {k: qc["params"][k] for k in CLOSE_FIT} == CLOSE_FIT
    assert err(exact) < 0.5
    assert not qc_r["close_fit"] and qc_r["landmark_noise_px"] >= ROUNDING_NOISE_PX
    assert qc_r["params"] == dataclasses.asdict(params)
    assert err(rounded) > 2.5
    off, qc_off = refine_motion(model, fr, tr["shape"], RefineParams())          # the library's 0: never
    assert not qc_off["close_fit"] and err(off) > 2.5
