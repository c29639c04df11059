"""The rules of the scan fit (flame_fit.scan_fit) that need no head model: a small linear stand-in model
(an ellipsoid whose 100 shape directions are random fields) with known answers, numpy references."""
from __future__ import annotations

import dataclasses
import time
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
    # 40 iterations hold fewer than 2 x 5 windows of 10: no comparison of mean shapes, none reported
    assert stubborn.shape_change == float("inf")
    assert stubborn.warnings == ["fit did not converge in 40 iterations: the relative loss change stayed "
                                 "above 0 or the head kept moving"]
    # with the loss test alone, and 2 x 2 windows: the last comparison in mm, over 2 x 10 iterations
    loss_only = fit_scan(head, scan, scan_lmk, landmark_weights(), config=dataclasses.replace(
        cfg, max_iters=40, tolerance=0.0, shape_tolerance=None, shape_windows=2))
    assert loss_only.iterations == 40 and not loss_only.converged and 0 < loss_only.shape_change < 1
    mm = f"{loss_only.shape_change * 1000:.3g}"
    assert loss_only.warnings == ["fit did not converge in 40 iterations: the relative loss change stayed "
                                  f"above 0 or the head kept moving ({mm} mm at model scale over the last "
                                  "20 iterations)"]


def test_scan_fit_config_defaults_are_the_documented_ones():
    """The settings FitScanShape runs with (scan_fit.ScanFitConfig's comments say why each)."""
    assert dataclasses.asdict(ScanFitConfig()) == {
        "max_iters": 3000, "min_iters": 60, "tolerance": 5e-5, "shape_tolerance": 1e-5, "shape_windows": 5,
        "window": 20, "lr_shape": 0.1,
        "lr_rotation": 5e-3, "lr_translation": 1e-3, "lr_log_scale": 5e-3, "lr_decay": 0.999,
        "sigma_landmark": 0.001, "sigma_surface": 0.002, "tangential_weight": 0.1, "shape_prior": 0.3,
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


# -- the optimiser's energy, its iterations and its starts ---------------------------------------------
def _on_surface_scan(head, beta, sim, rng):
    """Scan points at known distances d (0.5 - 3 mm) straight out of the faces' centroids of the head at
    `beta` (zero: a convex polyhedron, so the centroid is each point's closest surface point), and
    landmarks at known offsets; both in the scan frame of `sim` (scan -> model)."""
    v = (head.v0 + torch.einsum("vkn,n->vk", head.B, torch.as_tensor(beta))).double().numpy()
    mesh = trimesh.Trimesh(v, head.faces.numpy(), process=False)
    tri = rng.choice(len(mesh.faces), 300, replace=False)
    d = rng.uniform(5e-4, 3e-3, len(tri))
    pts = mesh.triangles_center[tri] + d[:, None] * mesh.face_normals[tri]
    off = rng.normal(0.0, 2e-3, (68, 3))
    lmk = v[head.lmk_idx.numpy()] + off
    inv = invert_similarity(*sim)
    return apply_similarity(pts, *inv), apply_similarity(lmk, *inv), d, off


def test_first_loss_is_the_documented_energy():
    """Sum over points of GM(rn^2 + tangential_weight |r|^2) + 68 / sigma_l^2 sum_k w_k / sum(w) |l_k - L_k|^2
    + shape_prior |beta|^2, at the start (one iteration, a window of one), against the known distances
    (at beta = 0: the shape prior's weight is seen by its product with 0)."""
    from flame_fit import scan_fit

    head, rng = LinearHead(), np.random.default_rng(7)
    beta0 = np.zeros(100, np.float32)
    rot = Rotation.from_euler("xyz", [10, -20, 5], degrees=True).as_matrix()
    sim = (0.01, rot, np.array([0.1, 0.0, -0.2]))
    scan, scan_lmk, d, off = _on_surface_scan(head, beta0, sim, rng)
    weights = landmark_weights(contour_weight=0.3)
    weights[[20, 50]] = 0.0
    cfg = ScanFitConfig(max_iters=1, min_iters=1, window=1, shape_prior=2.5, tangential_weight=0.2,
                        sigma_surface=0.002, sigma_landmark=0.004)
    got = scan_fit._optimise(NeutralBasis(head), head.faces, head.faces.numpy(), scan, scan_lmk, weights,
                             beta0, sim, cfg, torch.device("cpu"))
    sq = d ** 2 * (1.0 + 0.2)                              # r is along the normal: rn^2 = |r|^2 = d^2
    surf = (sq / (sq + 0.002 ** 2)).sum()                  # Geman-McClure: sq / (sq + sigma^2)
    lmk = 68.0 / 0.004 ** 2 * (weights / weights.sum() * (off ** 2).sum(1)).sum()
    assert got["loss"] == pytest.approx(surf + lmk, rel=2e-4)
    assert got["iterations"] == 1 and got["losses"] == [pytest.approx(got["loss"])]


class _Count:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k


def test_iterations_progress_rebuilds_and_the_minimum_before_stopping(monkeypatch):
    """`progress` gets one update per iteration; closest points are rebuilt on iterations 1,
    1 + rebuild_every, ...; the loss test starts at min_iters even when the loss has long settled."""
    from flame_fit import scan_fit

    head, rng = LinearHead(), np.random.default_rng(8)
    beta0 = np.zeros(100, np.float32)
    sim = (0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk, _, _ = _on_surface_scan(head, beta0, sim, rng)
    progress, built = _Count(), []

    class CountingIndex(scan_fit.SurfaceIndex):
        def __init__(self, *args, **kwargs):
            built.append(progress.n)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(scan_fit, "SurfaceIndex", CountingIndex)
    def run(cfg):
        return scan_fit._optimise(NeutralBasis(head), head.faces, head.faces.numpy(), scan, scan_lmk,
                                  landmark_weights(), beta0, sim, cfg, torch.device("cpu"), progress)

    got = run(ScanFitConfig(max_iters=25, min_iters=1000, window=5, rebuild_every=10))
    assert progress.n == 25 and got["iterations"] == 25 and not got["converged"]
    assert built == [0, 10, 20]                            # before iterations 1, 11 and 21
    settled = run(ScanFitConfig(max_iters=100, min_iters=40, window=10, tolerance=1e9, shape_tolerance=None))
    assert settled["iterations"] == 40 and settled["converged"]


def _optimise_on_surface(cfg, beta0=None):
    """scan_fit._optimise from `beta0` (zeros when None) on LinearHead's zero-shape surface scan (seed 8)."""
    from flame_fit import scan_fit

    head = LinearHead()
    sim = (0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk, _, _ = _on_surface_scan(head, np.zeros(100, np.float32), sim, np.random.default_rng(8))
    beta0 = np.zeros(100, np.float32) if beta0 is None else beta0
    return scan_fit._optimise(NeutralBasis(head), head.faces, head.faces.numpy(), scan, scan_lmk,
                              landmark_weights(), beta0, sim, cfg, torch.device("cpu"))


def test_the_shape_test_compares_the_mean_shapes_of_the_last_windows_with_the_ones_before():
    """shape_change is the largest vertex displacement between the mean shape of the last
    `shape_windows` windows and of the `shape_windows` before, inf until there are twice that many
    windows (window 1, shape_windows 3: none after 5 iterations; after 6 the iterates 4-6 against 1-3,
    after 7 the iterates 5-7 against 2-4)."""
    basis = NeutralBasis(LinearHead())

    def run(n):
        return _optimise_on_surface(ScanFitConfig(max_iters=n, min_iters=1000, window=1, shape_windows=3))

    betas = torch.stack([torch.as_tensor(run(n)["shape"], dtype=torch.float64) for n in range(1, 8)])
    assert run(5)["shape_change"] == float("inf")
    for n in (6, 7):
        step = betas[n - 3:n].mean(0) - betas[n - 6:n - 3].mean(0)
        want = float((basis.bv.double() @ step).norm(dim=-1).max())
        assert want > 0 and run(n)["shape_change"] == pytest.approx(want, rel=1e-4), n


@pytest.mark.parametrize("shape_tolerance, iterations, converged", [(None, 10, True), (1.0, 20, True),
                                                                    (1e-12, 60, False)])
def test_a_settled_loss_does_not_stop_a_fit_whose_shape_still_moves(shape_tolerance, iterations, converged):
    """With the loss test always passed, the shape test decides: none stops at min_iters (10); a loose one
    at its first comparison (2 x shape_windows x window = 20 iterations); one no fit reaches never."""
    got = _optimise_on_surface(ScanFitConfig(max_iters=60, min_iters=10, window=5, shape_windows=2,
                                             tolerance=1e9, shape_tolerance=shape_tolerance))
    assert got["iterations"] == iterations and got["converged"] == converged
    if shape_tolerance == 1e-12:
        assert 1e-12 < got["shape_change"] < 1.0


def test_the_shape_prior_alone_pulls_the_shape_to_zero(monkeypatch):
    """The prior is shape_prior * sum(beta^2), added: with the surface term scripted to a constant and the
    landmarks weighed out, a start of 0.5 in every coefficient shrinks towards 0, to under 0.05 after 300
    iterations, without crossing it."""
    from flame_fit import scan_fit

    monkeypatch.setattr(scan_fit, "geman_mcclure", lambda sq, sigma: sq * 0.0)
    got = _optimise_on_surface(ScanFitConfig(max_iters=300, min_iters=1000, sigma_landmark=1e6),
                               np.full(100, 0.5, np.float32))
    assert np.all(np.abs(got["shape"]) < 0.05) and np.all(got["shape"] > -0.01), got["shape"][:5]


def _stub_optimise(calls, losses=None):
    def fake(basis, faces, faces_np, region_scan, scan_landmarks, weights, beta0, sim0, config, device,
             progress=None):
        k = len(calls)
        calls.append({"sim0": sim0, "max_iters": config.max_iters, "beta0": np.array(beta0)})
        sim = (sim0[0] * (1 + 0.01 * k), sim0[1], sim0[2] + 0.001 * k)    # each run ends elsewhere
        return {"shape": np.full(100, 0.01 * k, np.float32), "sim": sim, "iterations": 7, "converged": True,
                "losses": [1.0], "shape_change": 0.0, "loss": (losses or {}).get(k, 10.0 + k)}
    return fake


@pytest.mark.parametrize("case", ["free scale", "free scale + icp", "fixed scale", "fixed scale + icp",
                                  "icp at 20 region points", "icp at 19 region points"])
def test_probes_start_from_the_landmark_similarity_scaled_about_the_face(monkeypatch, case):
    """Free scale: one probe per `scale_starts` factor f, the landmark similarity scaled by f about the
    centre of the static landmarks (x -> f (s0 R0 x + t0) + (1 - f) c), plus the robust ICP start when
    icp_iters > 0 and the region has at least 20 points; the full fit continues from the probe with the
    lowest loss. One start (fixed scale, no ICP): no probes, the full fit starts from it."""
    from flame_fit import scan_fit

    head = LinearHead()
    rot = Rotation.from_euler("xyz", [5, 30, -10], degrees=True).as_matrix()
    truth = (0.01, rot, np.array([0.05, 0.1, 0.0]))
    scan, scan_lmk = _scan_of(head, truth)
    weights = landmark_weights()
    fixed = case.startswith("fixed")
    icp = 1 if "icp" in case else 0
    n_region = 20 if "20" in case else 19 if "19" in case else 2000
    cfg = ScanFitConfig(scale_starts=(0.9, 1.0, 1.2), icp_iters=icp, probe_iters=11, max_iters=33,
                        fixed_scale=0.01 if fixed else None, max_points=n_region)
    calls = []
    monkeypatch.setattr(scan_fit, "_optimise", _stub_optimise(calls, {1: 0.5}))   # the second probe is best
    fit = fit_scan(head, scan, scan_lmk, weights, config=cfg)
    factors = (1.0,) if fixed else (0.9, 1.0, 1.2)
    centre = head.v0.double().numpy()[head.lmk_idx.numpy()][17:].mean(axis=0)
    want = [(f * truth[0], truth[1], f * truth[2] + (1 - f) * centre) for f in factors]
    v, faces = head.v0.double().numpy(), head.faces.numpy()
    region = select_face_points(apply_similarity(scan, *truth), v[head.lmk_idx.numpy()], cfg)
    assert len(region) == n_region if n_region < 2000 else len(region) >= 20
    if icp and len(region) >= 20:                          # too few points for ICP: no such start
        want.append(icp_similarity(v, faces, v[head.lmk_idx.numpy()], scan[region], scan_lmk, weights,
                                   truth, cfg))
    probes, full = calls[:-1], calls[-1]
    if len(want) == 1:
        assert probes == [] and np.array_equal(full["beta0"], np.zeros(100))
        best_sim = want[0]
    else:
        assert len(probes) == len(want) and all(c["max_iters"] == 11 for c in probes)
        for c, w in zip(probes, want):
            assert c["sim0"][0] == pytest.approx(w[0], rel=1e-9)
            np.testing.assert_allclose(c["sim0"][1], w[1], atol=1e-9)
            np.testing.assert_allclose(c["sim0"][2], w[2], atol=1e-9)
        best_sim = (want[1][0] * 1.01, want[1][1], want[1][2] + 0.001)                # what probe 1 ended at
        np.testing.assert_array_equal(full["beta0"], np.full(100, 0.01, np.float32))
    assert full["max_iters"] == 33
    assert full["sim0"][0] == pytest.approx(best_sim[0], rel=1e-9)
    np.testing.assert_allclose(full["sim0"][2], best_sim[2], atol=1e-9)
    assert fit.scale == full["sim0"][0] * (1 + 0.01 * len(probes))   # the full fit's own result


def test_a_bad_final_fit_warns_with_its_median_residual_in_mm_and_seconds_are_wall_time(monkeypatch):
    from flame_fit import scan_fit

    head = LinearHead()
    truth = (0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk = _scan_of(head, truth)
    calls = []
    monkeypatch.setattr(scan_fit, "_optimise", _stub_optimise(calls))
    cfg = ScanFitConfig(scale_starts=(1.0,), icp_iters=0, fixed_scale=0.01, max_points=200)
    t0 = time.perf_counter()
    good = fit_scan(head, scan, scan_lmk, landmark_weights(), config=cfg)   # ends at its start, the truth
    elapsed = time.perf_counter() - t0
    assert good.n_region_points == 200 and not good.warnings      # 200 points are enough for the surface term
    assert 0.0 < good.seconds <= elapsed
    far = (0.01, np.eye(3), np.array([0.0, 0.0, 0.2]))           # 20 cm off, beyond 3 x sigma_surface
    monkeypatch.setattr(scan_fit, "_optimise", lambda *a, **k: {
        "shape": np.zeros(100, np.float32), "sim": far, "iterations": 1, "converged": True, "losses": [],
        "shape_change": 0.0, "loss": 0.0})
    bad = fit_scan(head, scan, scan_lmk, landmark_weights(), config=cfg)
    mm = bad.after["surface_median"] * 1000
    assert mm > 100.0                                             # (a 0.1 % error shows in the message)
    assert bad.warnings == [f"median surface residual {mm:.1f} mm (model scale) is large: "
                            "check the landmarks and the picture"]
    # the warning comes exactly when the median residual is above 3 sigma_surface (6 mm here)
    medians = []
    for dz in (0.004, 0.006, 0.0075, 0.009, 0.011):
        off = (0.01, np.eye(3), np.array([0.0, 0.0, dz]))
        monkeypatch.setattr(scan_fit, "_optimise", lambda *a, _off=off, **k: {
            "shape": np.zeros(100, np.float32), "sim": _off, "iterations": 1, "converged": True, "losses": [],
            "shape_change": 0.0, "loss": 0.0})
        fit = fit_scan(head, scan, scan_lmk, landmark_weights(), config=cfg)
        medians.append(fit.after["surface_median"])
        assert bool(fit.warnings) == (medians[-1] > 3 * cfg.sigma_surface), (dz, medians[-1], fit.warnings)
    assert any(0.004 < m < 0.006 for m in medians) and any(0.006 < m < 0.008 for m in medians), medians
    monkeypatch.setattr(scan_fit, "_optimise", _stub_optimise([]))
    few = fit_scan(head, scan, scan_lmk, landmark_weights(), config=dataclasses.replace(cfg, max_points=199))
    assert few.warnings == ["only 199 scan points in the face region: the surface term is weak"]


def test_landmarks_of_weight_zero_do_not_move_the_fit():
    head = LinearHead()
    truth = (0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk = _scan_of(head, truth)
    weights = landmark_weights()
    weights[[30, 60]] = 0.0
    moved = scan_lmk.copy()
    moved[[30, 60]] += 5.0                                  # 5 cm in model units: wildly off
    quick = ScanFitConfig(max_iters=6, min_iters=6, probe_iters=3, icp_iters=2, scale_starts=(0.95, 1.0))
    a, b = (fit_scan(head, scan, lm, weights, config=quick) for lm in (scan_lmk, moved))
    np.testing.assert_array_equal(a.shape, b.shape)
    assert (a.scale, a.after) == (b.scale, b.after)
    np.testing.assert_array_equal(a.translation, b.translation)


def test_config_is_frozen_and_landmark_weights_default_to_its_contour_weight():
    """ScanFitConfig is fit_scan's default argument: shared by every call, so it must not be changeable."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        ScanFitConfig().max_iters = 5
    assert landmark_weights()[:17].tolist() == [ScanFitConfig().contour_weight] * 17


def test_the_face_region_grows_from_the_static_landmarks_only():
    lmk = np.zeros((68, 3))
    lmk[17:, 0] = np.linspace(-0.05, 0.05, 51)
    lmk[36], lmk[45] = [-0.045, 0, 0], [0.045, 0, 0]
    lmk[:17] = [0.5, 0.5, 0.0]                             # the contour, 16 included, far from the face
    pts = np.array([[0.0, 0.01, 0.0], [0.5, 0.5, 0.0], [0.5, 0.52, 0.0]])
    assert select_face_points(pts, lmk, ScanFitConfig()).tolist() == [0]


def test_the_fit_stops_when_a_windows_mean_loss_matches_the_window_before(monkeypatch):
    """The loss test compares the mean loss of the last `window` iterations with that of the `window` before
    (a scripted surface loss; the landmark and shape terms weighed out): 100, 100, 100, 1, 1 | 1 x 5 | 1 x 5
    has the means 60.4 | 1 | 1, so the fit stops after 15 iterations, not after 10."""
    from flame_fit import scan_fit

    head, rng = LinearHead(), np.random.default_rng(9)
    beta0 = np.zeros(100, np.float32)
    sim = (0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk, _, _ = _on_surface_scan(head, beta0, sim, rng)
    script = [100.0] * 3 + [1.0] * 100
    calls = []

    def scripted(sq, sigma):
        calls.append(len(calls))
        return sq * 0.0 + script[len(calls) - 1] / sq.numel()

    monkeypatch.setattr(scan_fit, "geman_mcclure", scripted)
    cfg = ScanFitConfig(max_iters=50, min_iters=10, window=5, tolerance=1e-3, sigma_landmark=1e6,
                        shape_prior=0.0, shape_tolerance=None)
    got = scan_fit._optimise(NeutralBasis(head), head.faces, head.faces.numpy(), scan, scan_lmk,
                             landmark_weights(), beta0, sim, cfg, torch.device("cpu"))
    assert got["converged"] and got["iterations"] == 15
    assert got["loss"] == pytest.approx(1.0, rel=1e-4)     # the mean of the last window, not of all 15
    assert got["losses"] == [pytest.approx(v, rel=1e-4) for v in (1.0, 1.0, 1.0)]


@pytest.mark.parametrize("fixed", [False, True])
def test_the_scale_is_refined_only_when_it_is_free(fixed):
    """From a start 4 % too large the free scale moves towards the truth; a fixed (known) scale stays."""
    from flame_fit import scan_fit

    head, rng = LinearHead(), np.random.default_rng(10)
    beta0 = np.zeros(100, np.float32)
    truth = (0.01, np.eye(3), np.zeros(3))
    scan, scan_lmk, _, _ = _on_surface_scan(head, beta0, truth, rng)
    start = (0.0104, np.eye(3), np.zeros(3))
    cfg = ScanFitConfig(max_iters=30, min_iters=1000, fixed_scale=0.0104 if fixed else None)
    got = scan_fit._optimise(NeutralBasis(head), head.faces, head.faces.numpy(), scan, scan_lmk,
                             landmark_weights(), beta0, start, cfg, torch.device("cpu"))
    if fixed:
        assert got["sim"][0] == pytest.approx(0.0104, rel=1e-12)
    else:
        assert got["sim"][0] < 0.0104 * (1 - 1e-3)
