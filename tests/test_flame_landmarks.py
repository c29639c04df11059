"""FlameModel's landmark rules on a tiny random model in FLAME's layout, against independent references:
the landmark-only evaluation equals the full forward pass, the dynamic contour row is the head's yaw in
whole degrees (rows 0..39 for yaw 0..39, 40..78 for -1..-39, clamped at both ends), the parameter shapes
are checked with the batch size of the first tensor given, and 300 + 50 shapedirs columns suffice."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flame_fit import lbs as L
from flame_fit.flame import FlameModel

V, F = 40, 60


def _arrays(n_cols=400, seed=0):
    rng = np.random.default_rng(seed)
    faces = np.stack([rng.choice(V, 3, replace=False) for _ in range(F)])
    return {"v_template": rng.normal(size=(V, 3)), "faces": faces,
            "shapedirs": rng.normal(size=(V, 3, n_cols)) * 1e-2,
            "posedirs": rng.normal(size=(V, 3, 36)) * 1e-2,
            "J_regressor": rng.dirichlet([1] * V, 5), "weights": rng.dirichlet([1] * 5, V),
            "parents": np.array([-1, 0, 1, 1, 1])}


def _embedding(seed=1):
    """Landmark faces among the first half of the faces only, so that the landmark vertices are a subset."""
    rng = np.random.default_rng(seed)
    return {"static_lmk_faces_idx": rng.integers(0, F // 2, 51),
            "static_lmk_bary_coords": rng.dirichlet([1] * 3, 51),
            "dynamic_lmk_faces_idx": rng.integers(0, F // 2, (79, 17)),
            "dynamic_lmk_bary_coords": rng.dirichlet([1] * 3, (79, 17)),
            "full_lmk_faces_idx": rng.integers(0, F // 2, 68),
            "full_lmk_bary_coords": rng.dirichlet([1] * 3, 68)}


def _yaw(deg):
    return torch.tensor([[0.0, math.radians(deg), 0.0]])


def test_landmark_only_evaluation_equals_the_full_forward_pass():
    arrays, emb = _arrays(), _embedding()
    model = FlameModel(arrays, emb, name="tiny", is_real=False)
    lmk_faces = np.r_[emb["static_lmk_faces_idx"], emb["dynamic_lmk_faces_idx"].ravel()]
    used = np.unique(arrays["faces"][lmk_faces])
    # a true subset of the vertices, its first id on a face the landmarks use
    assert 0 < used.size < V and used.min() == model.sub_vertex_ids.min().item()
    g = torch.Generator().manual_seed(0)
    B = 6
    global_orient = (torch.cat([_yaw(d) for d in (-50, -20, -3, 0, 15, 45)])
                     + torch.randn(B, 3, generator=g) * 0.05)
    args = dict(shape=torch.randn(B, 100, generator=g), expression=torch.randn(B, 50, generator=g),
                global_orient=global_orient, neck_pose=torch.randn(B, 3, generator=g) * 0.2,
                jaw_pose=torch.randn(B, 3, generator=g) * 0.2, eye_pose=torch.randn(B, 6, generator=g) * 0.2)
    full = model(**args).landmarks
    fast = model.landmarks(**args)
    np.testing.assert_allclose(fast.numpy(), full.numpy(), atol=2e-5, rtol=0)   # (torch.testing: 1.5 s import)


@pytest.mark.parametrize("deg,row", [(0, 0), (0.4, 0), (0.6, 1), (12, 12), (38.6, 39), (39, 39), (39.4, 39),
                                     (70, 39), (-0.6, 40), (-1, 40), (-12, 51), (-38.6, 78), (-39, 78),
                                     (-39.6, 78), (-40, 78), (-40.4, 78), (-41, 78), (-70, 78)])
def test_contour_row_is_the_yaw_in_whole_degrees(deg, row):
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, :3] = _yaw(deg)
    assert L.dynamic_contour_rows(pose, [1, 0]).tolist() == [row]


def test_model_landmark_tables_take_the_row_of_the_head_yaw():
    emb = _embedding()
    model = FlameModel(_arrays(), emb, name="tiny", is_real=False)
    degs, rows = (-30, -5, 0, 7, 20, 39), [69, 44, 0, 7, 20, 39]
    pose = torch.zeros(len(degs), 15)
    pose[:, :3] = torch.cat([_yaw(d) for d in degs])
    idx, bary = model.landmark_tables(pose)
    assert idx.shape == (len(degs), 68) and bary.shape == (len(degs), 68, 3)
    for b, r in enumerate(rows):
        assert idx[b, :17].tolist() == emb["dynamic_lmk_faces_idx"][r].tolist(), (degs[b], r)
        np.testing.assert_allclose(bary[b, :17].numpy(), emb["dynamic_lmk_bary_coords"][r], rtol=1e-6)
        assert idx[b, 17:].tolist() == emb["static_lmk_faces_idx"].tolist()


def test_parameter_shapes_are_checked_against_the_first_tensors_batch():
    model = FlameModel(_arrays(), _embedding(), name="tiny", is_real=False)
    z = lambda b, n: torch.zeros(b, n)          # noqa: E731
    with pytest.raises(ValueError, match=r"^expression has shape \(2, 49\), want \(2,50\)$"):
        model(z(2, 100), z(2, 49), z(2, 3))
    with pytest.raises(ValueError, match=r"^expression has shape \(2, 51\), want \(2,50\)$"):
        model(z(2, 100), z(2, 51), z(2, 3))
    with pytest.raises(ValueError, match=r"^global_orient has shape \(3, 3\), want \(2,3\)$"):
        model(z(2, 100), z(2, 50), z(3, 3))
    with pytest.raises(ValueError, match=r"^expression has shape \(2, 50\), want \(1,50\)$"):
        model.landmarks(z(1, 100), z(2, 50), z(2, 3))
    assert model(None, None, z(4, 3)).vertices.shape == (4, V, 3)     # batch from the one given


def test_300_identity_and_50_expression_columns_suffice():
    model = FlameModel(_arrays(n_cols=350), _embedding(), name="tiny", is_real=False)
    assert model.shapedirs.shape == (V, 3, 150)
    with pytest.raises(ValueError, match=r"^shapedirs has 349 columns, need 350$"):
        FlameModel(_arrays(n_cols=349), _embedding(), name="tiny", is_real=False)
