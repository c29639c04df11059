"""The rules of the scan fit (flame_fit.scan_fit) that need no head model: a small linear stand-in model
(an ellipsoid whose 100 shape directions are random fields) with known answers, numpy references."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from flame_fit.scan_fit import (ScanFitConfig, NeutralBasis, apply_similarity, fit_scan, icp_similarity,
                                invert_similarity, landmark_weights, residuals, select_face_points)


class LinearHead:
    """vertices = v0 + B shape (+ quad |shape|^2 along z, to break linearity), 68 landmarks at fixed
    vertices; the keyword interface of FlameModel.__call__."""

    def __init__(self, quad: float = 0.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        mesh = trimesh.creation.icosphere(subdivisions=3)
        v0 = mesh.vertices * [0.08, 0.11, 0.1]                             # a head-sized ellipsoid (m)
        self.v0 = torch.as_tensor(v0, dtype=torch.float32)
        self.B = torch.as_tensor(rng.normal(0.0, 1e-3, (len(v0), 3, 100)), dtype=torch.float32)
        self.faces = torch.as_tensor(mesh.faces, dtype=torch.int64)
        front = np.flatnonzero(v0[:, 2] > 0.05)                            # landmarks on the front
        self.lmk_idx = torch.as_tensor(rng.choice(front, 68, replace=False))
        self.quad = quad

    def __call__(self, shape, expression, global_orient, neck_pose, jaw_pose, eye_pose):
        b = shape.shape[0]   # FlameModel's input shapes, which it refuses otherwise
        want = {"shape": (b, 100), "expression": (b, 50), "global_orient": (b, 3), "neck_pose": (b, 3),
                "jaw_pose": (b, 3), "eye_pose": (b, 6)}
        got = {"shape": shape, "expression": expression, "global_orient": global_orient, "neck_pose": neck_pose,
               "jaw_pose": jaw_pose, "eye_pose": eye_pose}
        assert {k: tuple(t.shape) for k, t in got.items()} == want
        v = self.v0 + torch.einsum("vkn,bn->bvk", self.B, shape)
        v = v + self.quad * (shape ** 2).sum(-1)[:, None, None] * torch.tensor([0.0, 0.0, 1.0])
        return SimpleNamespace(vertices=v, landmarks=v[:, self.lmk_idx])


def test_neutral_basis_is_the_model_and_refuses_a_model_not_linear_in_shape():
    head = LinearHead()
    basis = NeutralBasis(head)
    beta = torch.as_tensor(np.random.default_rng(1).normal(size=100), dtype=torch.float32)
    v, l = basis(beta)
    z = lambda n: torch.zeros(1, n)  # noqa: E731
    ref = head(shape=beta[None], expression=z(50), global_orient=z(3), neck_pose=z(3), jaw_pose=z(3), eye_pose=z(6))
    torch.testing.assert_close(v, ref.vertices[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(l, ref.landmarks[0], atol=1e-6, rtol=1e-5)
    # the guard's shape has |beta|^2 = 77: an error of 77 x quad against 1e-4 x the largest coordinate (0.11)
    NeutralBasis(LinearHead(quad=1e-8))                       # 0.8 um: linear enough
    with pytest.raises(ValueError, match="not linear"):
        NeutralBasis(LinearHead(quad=1e-6))                   # 77 um


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_invert_similarity_undoes_it(seed):
    rng = np.random.default_rng(seed)
    s, r, t = float(rng.uniform(0.01, 100.0)), Rotation.random(random_state=seed).as_matrix(), rng.normal(size=3)
    p = rng.normal(size=(5, 3))
    np.testing.assert_allclose(apply_similarity(p, s, r, t), s * p @ r.T + t, atol=1e-9)
    back = apply_similarity(apply_similarity(p, s, r, t), *invert_similarity(s, r, t))
    np.testing.assert_allclose(back, p, atol=1e-9)


def test_landmark_weights_contour_and_valid():
    w = landmark_weights(contour_weight=0.25)
    assert w.tolist() == [0.25] * 17 + [1.0] * 51
    valid = np.ones(68, bool)
    valid[[3, 40]] = False
    w = landmark_weights(contour_weight=0.25, valid=valid)
    assert w[3] == 0.0 and w[40] == 0.0 and w[4] == 0.25 and w[41] == 1.0 and (w > 0).sum() == 66


def test_residuals_are_landmark_and_point_to_surface_distances():
    # a 10 x 10 square in z = 0 (two triangles): a point's distance is |z| above the square
    verts = np.array([[-5.0, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    z = np.arange(1.0, 21.0) / 10.0                        # 0.1 .. 2.0
    points = np.stack([np.linspace(-4, 4, 20), np.linspace(3, -3, 20), z * np.where(np.arange(20) % 2, 1, -1)], 1)
    model_lmk = np.zeros((68, 3))
    scan_lmk = np.zeros((68, 3))
    scan_lmk[:, 0] = np.arange(68.0)                       # landmark k is k units off
    weights = np.ones(68)
    weights[60:] = 0.0                                     # unused: 60 .. 67 never count
    r = residuals(verts, faces, model_lmk, points, scan_lmk, weights)
    used = np.arange(60.0)
    want = {"landmark_mean": used.mean(), "landmark_median": np.median(used), "landmark_max": 59.0,
            "surface_median": np.median(z), "surface_mean": z.mean(), "surface_p95": np.percentile(z, 95)}
    assert r.keys() == want.keys()
    for k in want:
        assert r[k] == pytest.approx(want[k], rel=1e-5), k


def test_select_face_points_keeps_the_face_region_and_subsamples_deterministically():
    rng = np.random.default_rng(0)
    lmk = np.zeros((68, 3))
    lmk[17:, 0] = np.linspace(-0.05, 0.05, 51)             # the static landmarks along x at z = 0
    lmk[36], lmk[45] = [-0.045, 0, 0], [0.045, 0, 0]       # eye corners 9 cm apart
    lmk[:17] = [0.0, -1.0, 0.0]                            # the contour far away: no region of its own
    pts = rng.uniform(-0.3, 0.3, (4000, 3))
    cfg = ScanFitConfig(region_radius=1.0, region_behind=0.5, max_points=100000)
    idx = select_face_points(pts, lmk, cfg)
    d = np.min(np.linalg.norm(pts[:, None] - lmk[None, 17:], axis=-1), axis=1)
    want = np.flatnonzero((d < 0.09) & (pts[:, 2] > -0.045))  # within 1 eye distance, at most 0.5 behind
    np.testing.assert_array_equal(idx, want)
    few = select_face_points(pts, lmk, ScanFitConfig(region_radius=1.0, region_behind=0.5, max_points=50))
    assert len(few) == 50 and np.all(np.diff(few) > 0) and set(few) <= set(want)
    np.testing.assert_array_equal(few, select_face_points(pts, lmk, ScanFitConfig(
        region_radius=1.0, region_behind=0.5, max_points=50)))
    assert len(select_face_points(pts, lmk, ScanFitConfig(region_radius=1.0, region_behind=0.5,
                                                          max_points=len(want)))) == len(want)


def _scan_of(head: LinearHead, sim_scan_to_model):
    """The head's neutral mesh and landmarks taken into a scan frame: model = s R scan + t."""
    v = head.v0.double().numpy()
    inv = invert_similarity(*sim_scan_to_model)
    return apply_similarity(v, *inv), apply_similarity(v[head.lmk_idx.numpy()], *inv)


def test_icp_refines_a_similarity_towards_the_surface():
    head = LinearHead()
    truth = (0.01, Rotation.from_euler("xyz", [20, -35, 10], degrees=True).as_matrix(), np.array([0.1, -0.2, 0.3]))
    scan, scan_lmk = _scan_of(head, truth)
    v, faces = head.v0.double().numpy(), head.faces.numpy()
    lmk = v[head.lmk_idx.numpy()]
    # a start 3 % too large and a little turned: the landmarks alone would fix it, so give them no say
    off = (truth[0] * 1.03, Rotation.from_euler("y", 2, degrees=True).as_matrix() @ truth[1], truth[2] + 0.002)
    weights = landmark_weights()
    cfg = ScanFitConfig(icp_iters=100, sigma_landmark=1e3)
    s, r, t = icp_similarity(v, faces, lmk, scan, scan_lmk, weights, off, cfg)
    err = lambda sim: np.abs(apply_similarity(scan, *sim) - v).max()  # noqa: E731
    assert err((s, r, t)) < 0.1 * err(off)
    assert s == pytest.approx(truth[0], rel=1e-3)
    # with a known scale only R and t move
    s2, _, _ = icp_similarity(v, faces, lmk, scan, scan_lmk, weights, off,
                              ScanFitConfig(icp_iters=3, fixed_scale=0.02))
    assert s2 == 0.02
    # no iterations: the start comes back
    s0, r0, t0 = icp_similarity(v, faces, lmk, scan, scan_lmk, weights, off, ScanFitConfig(icp_iters=0))
    assert (s0, r0, t0) == off


def test_fit_scan_needs_four_landmarks_and_warns_about_a_small_region_and_no_convergence():
    head = LinearHead()
    truth = (0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk = _scan_of(head, truth)
    weights = np.zeros(68)
    weights[17:20] = 1.0
    with pytest.raises(ValueError, match="at least 4 landmarks"):
        fit_scan(head, scan, scan_lmk, weights)
    weights[20] = 1.0
    quick = ScanFitConfig(max_iters=3, min_iters=3, probe_iters=2, icp_iters=2, scale_starts=(1.0,))
    fit = fit_scan(head, scan, scan_lmk, weights, config=quick)
    assert fit.iterations == 3 and not fit.converged
    assert any("did not converge in 3 iterations" in w for w in fit.warnings)
    assert fit.n_region_points >= 200 and not any("scan points" in w for w in fit.warnings)
    assert fit.shape.shape == (100,) and fit.shape.dtype == np.float32
    narrow = fit_scan(head, scan, scan_lmk, weights, config=dataclasses.replace(quick, region_radius=0.3))
    assert 0 < narrow.n_region_points < 200
    assert any(f"only {narrow.n_region_points} scan points" in w for w in narrow.warnings)


def test_fit_scan_recovers_a_known_shape_and_stops_when_the_loss_settles():
    """The stand-in head at a known shape as the scan (metric: a known scale): the fit finds the shape,
    stops on a window boundary once the mean loss of a window changes by less than `tolerance`, and
    records one loss per window; with tolerance 0 it runs to max_iters and says so."""
    head = LinearHead()
    beta = np.random.default_rng(5).normal(0.0, 1.0, 100).astype(np.float32)
    v = (head.v0 + torch.einsum("vkn,n->vk", head.B, torch.as_tensor(beta))).double().numpy()
    inv = invert_similarity(0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk = apply_similarity(v, *inv), apply_similarity(v[head.lmk_idx.numpy()], *inv)
    cfg = ScanFitConfig(max_iters=300, min_iters=20, window=10, probe_iters=20, icp_iters=5, fixed_scale=0.01)
    fit = fit_scan(head, scan, scan_lmk, landmark_weights(), config=cfg)
    assert fit.converged and 20 <= fit.iterations < 300 and fit.iterations % 10 == 0
    assert len(fit.losses) == fit.iterations // 10 and fit.losses[-1] < fit.losses[0]
    assert fit.scale == 0.01 and not fit.warnings
    fitted = (head.v0 + torch.einsum("vkn,n->vk", head.B, torch.as_tensor(fit.shape))).double().numpy()
    assert np.abs(fitted - v).max() < 0.1 * np.abs(head.v0.double().numpy() - v).max()
    assert fit.after["surface_median"] < 0.2 * fit.before["surface_median"]
    assert fit.after["landmark_mean"] < 0.2 * fit.before["landmark_mean"]
    stubborn = fit_scan(head, scan, scan_lmk, landmark_weights(),
                        config=dataclasses.replace(cfg, max_iters=40, tolerance=0.0))
    assert stubborn.iterations == 40 and not stubborn.converged and len(stubborn.losses) == 4
    assert any("did not converge in 40 iterations" in w for w in stubborn.warnings)


def test_scan_fit_config_defaults_are_the_documented_ones():
    """The settings FitScanShape runs with (scan_fit.ScanFitConfig's comments say why each)."""
    assert dataclasses.asdict(ScanFitConfig()) == {
        "max_iters": 800, "min_iters": 60, "tolerance": 5e-5, "window": 20, "lr_shape": 0.1,
        "lr_rotation": 5e-3, "lr_translation": 1e-3, "lr_log_scale": 5e-3, "lr_decay": 0.995,
        "sigma_landmark": 0.003, "sigma_surface": 0.002, "tangential_weight": 0.1, "shape_prior": 1.0,
        "contour_weight": 0.1, "region_radius": 1.0, "region_behind": 1.5, "max_points": 2000,
        "scale_starts": (0.94, 1.0, 1.06), "icp_iters": 30, "probe_iters": 120, "rebuild_every": 10,
        "seed": 0, "fixed_scale": None}


def test_one_icp_step_is_the_documented_weighted_similarity():
    """One step from a start 2 % off, the scan's landmarks 3 mm off the surface's: the similarity of
    the closest surface points weighted by Geman-McClure, (s^2 / (d^2 + s^2))^2, and the landmarks as
    68 observations of std sigma_landmark against the surface's sigma_surface (their weights, in the
    landmark weights' proportions, sum to 68 (sigma_surface / sigma_landmark)^2)."""
    from flame_fit.geometry import SurfaceIndex
    from flame_fit.scan_fit import umeyama
    head = LinearHead()
    v, faces = head.v0.double().numpy(), head.faces.numpy()
    lmk = v[head.lmk_idx.numpy()]
    truth = (0.01, Rotation.from_euler("xyz", [5, -10, 3], degrees=True).as_matrix(), np.array([0.01, 0.0, 0.02]))
    scan, scan_lmk = _scan_of(head, truth)
    scan_lmk = scan_lmk + [0.3, 0.0, 0.0]                         # 3 mm at model scale
    start = (truth[0] * 1.02, truth[1], truth[2] + 0.001)
    weights = landmark_weights(valid=np.arange(68) != 30)       # one landmark unused
    cfg = ScanFitConfig(icp_iters=1)
    got = icp_similarity(v, faces, lmk, scan, scan_lmk, weights, start, cfg)
    q = apply_similarity(scan, *start)
    _, _, foot = SurfaceIndex(v, faces).closest(q)
    w_surf = (cfg.sigma_surface ** 2 / (((q - foot) ** 2).sum(1) + cfg.sigma_surface ** 2)) ** 2
    used = weights > 0
    w_lmk = weights[used] / weights[used].sum() * 68 * (cfg.sigma_surface / cfg.sigma_landmark) ** 2
    want = umeyama(np.vstack([scan, scan_lmk[used]]), np.vstack([foot, lmk[used]]), np.concatenate([w_surf, w_lmk]))
    assert got[0] == pytest.approx(want[0], rel=1e-9)
    np.testing.assert_allclose(got[1], want[1], atol=1e-9)
    np.testing.assert_allclose(got[2], want[2], atol=1e-9)
    # a landmark the detector could not place (NaN, weight 0) is left out, not multiplied by 0
    lost = scan_lmk.copy()
    lost[30] = np.nan
    np.testing.assert_array_equal(icp_similarity(v, faces, lmk, scan, lost, weights, start, cfg)[2], got[2])
    # the landmarks pull: without them the step lands elsewhere
    alone = umeyama(scan, foot, w_surf)
    assert np.abs(alone[2] - want[2]).max() > 1e-5
