"""Two pieces of rotation maths checked against independent references (scipy's Rotation):
the dynamic contour's yaw is that of R_root @ R_neck (DECA's order; the two orders differ only when both
joints rotate), and the similarity fit returns a proper rotation, never a reflection."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from flame_fit import lbs as L
from flame_fit.scan_fit import umeyama

_rotvec = st.lists(st.floats(-0.9, 0.9), min_size=3, max_size=3)


def _reference_row(root: list[float], neck: list[float]) -> tuple[int, float]:
    """DECA's row rule on scipy's R_root @ R_neck: yaw in whole degrees, clamped to 39; rows 0..39 hold
    yaw 0..39, rows 40..78 yaw -1..-39."""
    r = (Rotation.from_rotvec(root) * Rotation.from_rotvec(neck)).as_matrix()
    yaw = math.degrees(math.asin(-r[2, 0]))
    a = round(min(yaw, 39.0))
    return (a if a >= 0 else (78 if a < -39 else 39 - a)), yaw


@settings(max_examples=80, deadline=None)
@given(root=_rotvec, neck=_rotvec)
def test_contour_row_is_the_yaw_of_root_times_neck(root, neck):
    row, yaw = _reference_row(root, neck)
    assume(abs(abs(yaw) % 1.0 - 0.5) > 1e-3)  # not on a rounding edge
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, 0:3], pose[0, 3:6] = torch.tensor(root), torch.tensor(neck)
    chain = L.neck_kin_chain([-1, 0, 1, 1, 1])
    assert L.dynamic_contour_rows(pose, chain).tolist() == [row]


def test_the_order_matters_when_both_joints_rotate():
    """Root rolled 60 degrees, neck yawed 30: R_root @ R_neck has yaw 30, R_neck @ R_root about 14.5."""
    root, neck = [0.0, 0.0, math.radians(60)], [0.0, math.radians(30), 0.0]
    assert _reference_row(root, neck)[0] == 30
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, 0:3], pose[0, 3:6] = torch.tensor(root), torch.tensor(neck)
    assert L.dynamic_contour_rows(pose, [1, 0]).tolist() == [30]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), axis=st.integers(0, 2))
def test_similarity_fit_of_a_mirror_image_is_a_proper_rotation(seed, axis):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(12, 3)) * np.array([3.0, 2.0, 0.2])  # flattest along z
    mirror = np.ones(3)
    mirror[axis] = -1.0
    dst = src * mirror
    s, r, t = umeyama(src, dst)
    assert abs(np.linalg.det(r) - 1.0) < 1e-9
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    # the best proper rotation, by scipy's Kabsch (align_vectors returns rotations only)
    best, _ = Rotation.align_vectors(dst - dst.mean(axis=0), src - src.mean(axis=0))
    np.testing.assert_allclose(r, best.as_matrix(), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_similarity_fit_recovers_a_known_similarity(seed):
    rng = np.random.default_rng(seed)
    rot = Rotation.random(random_state=seed).as_matrix()
    s_true, t_true = float(rng.uniform(0.5, 2.0)), rng.normal(size=3)
    src = rng.normal(size=(10, 3))
    s, r, t = umeyama(src, s_true * src @ rot.T + t_true)
    np.testing.assert_allclose([s], [s_true], rtol=1e-9)
    np.testing.assert_allclose(r, rot, atol=1e-9)
    np.testing.assert_allclose(t, t_true, atol=1e-9)
