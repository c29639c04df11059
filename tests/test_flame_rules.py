"""Rules of the FLAME readers, model, camera and surface geometry on tiny hand-made files and arrays, each
against an independent reference (hand-computed values, a loop): .npy header versions, plain and .npz
embeddings read without unpickling, chumpy state in its (dict, slots) form, numpy-1 and numpy-2 module names,
shared landmark tables, the model's checks, the orthographic camera, closest points / rays / normals on two
triangles, the robust kernel and the face-region mask."""
from __future__ import annotations

import io
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from flame_fit import flame_io
from flame_fit import lbs as L
from flame_fit.camera import ndc_to_pixels, orth_project, pixels_to_ndc
from flame_fit.flame import FlameModel
from flame_fit.flame_io import FlameFileError, load_flame_arrays, load_landmark_embedding
from flame_fit.geometry import (SurfaceIndex, face_normals_at, face_region_mask, geman_mcclure, points_on_faces,
                                vertex_normals)
from upstream_files import fake_classes

V, F = 8, 6


def _embedding(rng):
    return {"static_lmk_faces_idx": rng.integers(0, F, 51),
            "static_lmk_bary_coords": rng.dirichlet([1] * 3, 51),
            "dynamic_lmk_faces_idx": rng.integers(0, F, (79, 17)),
            "dynamic_lmk_bary_coords": rng.dirichlet([1] * 3, (79, 17)),
            "full_lmk_faces_idx": rng.integers(0, F, 68),
            "full_lmk_bary_coords": rng.dirichlet([1] * 3, 68)}


def _model(rng, n_cols=400):
    faces = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6], [5, 6, 7]])
    return {"v_template": rng.normal(size=(V, 3)), "f": faces, "shapedirs": rng.normal(size=(V, 3, n_cols)),
            "posedirs": rng.normal(size=(V, 3, 36)) * 1e-2,
            "J_regressor": np.full((5, V), 1.0 / V), "kintree_table": np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
            "weights": rng.dirichlet([1] * 5, V), "bs_type": "lrotmin"}


def _object_npy_bytes(obj, version):
    arr = np.empty((), dtype=object)
    arr[()] = obj
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=True)
    return buf.getvalue()


# -- flame_io ---------------------------------------------------------------------------------------
def test_npy_header_versions_1_and_2_load_others_are_refused(tmp_path):
    emb = _embedding(np.random.default_rng(0))
    for version in ((1, 0), (2, 0)):
        p = tmp_path / f"emb_{version[0]}.npy"
        p.write_bytes(_object_npy_bytes(emb, version))
        assert np.lib.format.read_magic(io.BytesIO(p.read_bytes())) == version
        got = load_landmark_embedding(p, n_faces=F)
        for k in emb:
            np.testing.assert_array_equal(got[k], emb[k])
    for version, data in (((3, 0), _object_npy_bytes(emb, (3, 0))),
                          ((1, 1), _object_npy_bytes(emb, (1, 0))[:7] + b"\x01" + _object_npy_bytes(emb, (1, 0))[8:])):
        p = tmp_path / "emb_x.npy"
        p.write_bytes(data)
        assert np.lib.format.read_magic(io.BytesIO(data)) == version
        with pytest.raises(FlameFileError,
                           match=rf"emb_x\.npy: \.npy format version \({version[0]}, {version[1]}\) is not supported"):
            load_landmark_embedding(p, n_faces=F)


def test_plain_npy_is_read_as_an_array_without_unpickling(tmp_path):
    a = np.arange(12.0).reshape(3, 4)
    p = tmp_path / "plain.npy"
    np.save(p, a)
    got = flame_io._guarded_load(p, "a test array")
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, a)
    with pytest.raises(FlameFileError, match="plain.npy: the .npy does not hold a dict of landmark arrays"):
        load_landmark_embedding(p)


class _Touch:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_npz_embedding_with_an_object_array_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    emb = _embedding(np.random.default_rng(1))
    evil = np.empty(1, dtype=object)
    evil[0] = _Touch(marker)
    np.savez(tmp_path / "emb.npz", **dict(emb, static_lmk_faces_idx=evil))
    with pytest.raises(FlameFileError, match="emb.npz: cannot read the landmark embedding"):
        load_landmark_embedding(tmp_path / "emb.npz")
    assert not marker.exists()


def _chumpy_with_state(state):
    """Pickle bytes of a dict {'v_template': <chumpy.ch.Ch whose BUILD state is `state`>}."""
    with fake_classes({"chumpy.ch.Ch": {}}) as made:
        cls = made["chumpy.ch.Ch"]
        cls.__reduce__ = lambda self: (cls, (), state)
        return pickle.dumps({"v_template": cls()}, protocol=2)


@pytest.mark.parametrize("where", ["dict part", "slots part"])
def test_chumpy_state_in_dict_and_slots_form(tmp_path, where):
    """An object with __slots__ pickles its state as (dict or None, slots dict): both halves count."""
    x = np.arange(6.0).reshape(2, 3)
    state = ({"x": x}, {"_itr": 3}) if where == "dict part" else ({"_dirty_vars": set()}, {"x": x})
    p = tmp_path / "m.pkl"
    p.write_bytes(_chumpy_with_state(state))
    np.testing.assert_array_equal(flame_io.read_flame_pickle(p)["v_template"], x)
    p.write_bytes(_chumpy_with_state((None, {"x": x})))
    np.testing.assert_array_equal(flame_io.read_flame_pickle(p)["v_template"], x)


def test_unknown_chumpy_object_is_named_with_its_public_state_keys(tmp_path):
    p = tmp_path / "m.pkl"
    p.write_bytes(_chumpy_with_state({"weird": 1, "_cache": 2, "other": 3}))
    with pytest.raises(FlameFileError) as e:
        flame_io.read_flame_pickle(p)
    msg = str(e.value)
    assert "entry 'v_template' is a chumpy.ch.Ch object" in msg
    assert "(state keys ['other', 'weird'])" in msg


def test_numpy2_names_read_where_numpy_is_1(tmp_path, monkeypatch):
    """A file written by numpy 2 names numpy._core; under numpy 1 that is numpy.core (simulated here by
    the version numpy reports; numpy 2's numpy.core shim serves the same functions)."""
    a = np.arange(5.0)
    data = pickle.dumps({"a": a}, protocol=2)
    assert b"numpy._core.multiarray" in data
    p = tmp_path / "np2.pkl"
    p.write_bytes(data)
    monkeypatch.setattr(np, "__version__", "1.26.4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        got = flame_io._guarded_load(p, "a numpy-2 file")
        fn = flame_io._allowed_global("numpy._core.multiarray", "_reconstruct", False)
    np.testing.assert_array_equal(got["a"], a)
    assert fn is np._core.multiarray._reconstruct


# -- flame / lbs ------------------------------------------------------------------------------------
def test_model_refuses_too_few_shapedirs_columns():
    rng = np.random.default_rng(2)
    m = _model(rng, n_cols=340)
    arrays = dict(m, faces=m["f"], parents=np.array([-1, 0, 1, 1, 1]), weights=m["weights"])
    with pytest.raises(ValueError, match=r"^shapedirs has 340 columns, need 350$"):
        FlameModel(arrays, _embedding(rng), is_real=False)


def test_model_description_names_its_size(tmp_path):
    rng = np.random.default_rng(3)
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps(_model(rng), protocol=2))
    arrays = load_flame_arrays(p)
    model = FlameModel(arrays, _embedding(rng), name="tiny", is_real=False)
    assert "name='tiny', is_real=False, V=8, F=6" in repr(model)


def test_shared_landmark_tables_apply_to_every_batch_item():
    """(L,) face ids and (L,3) barycentric coordinates shared by the batch, against a loop."""
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(3, V, 3, generator=g, dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6], [5, 6, 7]])
    idx = torch.tensor([5, 0, 3, 3])
    bary = torch.rand(4, 3, generator=g, dtype=torch.float64)
    want = torch.stack([torch.stack([sum(bary[l, k] * verts[b, faces[idx[l], k]] for k in range(3))
                                     for l in range(4)]) for b in range(3)])
    got = L.vertices2landmarks(verts, faces, idx, bary)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # per-item tables give the same
    got_b = L.vertices2landmarks(verts, faces, idx.expand(3, -1), bary.expand(3, -1, -1))
    torch.testing.assert_close(got_b, want, rtol=0, atol=1e-12)


# -- camera -----------------------------------------------------------------------------------------
def test_orthographic_projection_by_hand_per_batch_item():
    pts = torch.tensor([[[0.1, 0.2, 0.3], [-0.5, 0.0, 9.0]],
                        [[1.0, -1.0, 0.0], [0.0, 0.5, -2.0]]], dtype=torch.float64)
    cam = torch.tensor([[2.0, 0.5, -0.25], [3.0, -1.0, 1.0]], dtype=torch.float64)
    # x = s (X + tx), y = -s (Y + ty); depth plays no part
    want = torch.tensor([[[1.2, 0.1], [0.0, 0.5]],
                         [[0.0, 0.0], [-3.0, -4.5]]], dtype=torch.float64)
    torch.testing.assert_close(orth_project(pts, cam), want, rtol=0, atol=1e-12)
    ndc = np.array([[-1.0, 1.0], [0.0, 0.5]])
    np.testing.assert_array_equal(ndc_to_pixels(ndc, 200), [[0.0, 200.0], [100.0, 150.0]])
    np.testing.assert_array_equal(pixels_to_ndc(np.array([[0.0, 200.0], [100.0, 150.0]]), 200), ndc)


# -- geometry ---------------------------------------------------------------------------------------
_TRI_V = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 0.0], [5.0, 7.0, 0.0],
                   [5.0, 5.0, 4.0]])
_TRI_F = np.array([[0, 1, 2], [3, 4, 5]])      # a triangle in z = 0, one in the plane x = 5


def test_surface_queries_on_two_triangles_by_hand():
    index = SurfaceIndex(_TRI_V, _TRI_F)
    pts = np.array([[0.2, 0.3, 5.0], [7.0, 6.0, 1.0]])
    ids, bary, closest = index.closest(pts)
    assert ids.tolist() == [0, 1]
    # (0.2, 0.3, 0) = 0.5 a + 0.2 b + 0.3 c; (5, 6, 1) = 0.25 d + 0.5 e + 0.25 f
    np.testing.assert_allclose(bary, [[0.5, 0.2, 0.3], [0.25, 0.5, 0.25]], atol=1e-6)
    np.testing.assert_allclose(closest, [[0.2, 0.3, 0.0], [5.0, 6.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(index.distance(pts), [5.0, 2.0], atol=1e-6)
    hits = index.cast(np.array([[0.2, 0.3, 5.0], [3.0, 3.0, 3.0], [9.0, 6.0, 1.0]]),
                      np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]]))
    np.testing.assert_allclose(hits["t_hit"][[0, 2]], [5.0, 2.0], atol=1e-6)    # t in units of |dir|
    assert hits["t_hit"][1] == np.inf
    assert hits["primitive_ids"].tolist() == [0, -1, 1]
    np.testing.assert_allclose(hits["bary"][[0, 2]], [[0.5, 0.2, 0.3], [0.25, 0.5, 0.25]], atol=1e-6)
    np.testing.assert_allclose(np.abs(hits["normals"][[0, 2]]), [[0, 0, 1], [1, 0, 0]], atol=1e-6)


def test_surface_points_normals_and_kernel_by_hand():
    v, f = torch.as_tensor(_TRI_V), torch.as_tensor(_TRI_F)
    pts = points_on_faces(v, f, torch.tensor([1, 0]), torch.tensor([[0.25, 0.5, 0.25], [0.5, 0.2, 0.3]],
                                                                   dtype=torch.float64))
    torch.testing.assert_close(pts, torch.tensor([[5.0, 6.0, 1.0], [0.2, 0.3, 0.0]], dtype=torch.float64))
    # right-handed corner order: (b - a) x (c - a)
    n = face_normals_at(v, f, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(n, torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 0, 1]], dtype=torch.float64))
    small = face_normals_at(v * 0.01 + torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64), f, torch.tensor([0, 1]))
    torch.testing.assert_close(small, torch.tensor([[0.0, 0, 1], [1, 0, 0]], dtype=torch.float64))  # unit at any size
    flat = torch.zeros(3, 3, dtype=torch.float64)
    assert torch.equal(face_normals_at(flat, torch.tensor([[0, 1, 2]]), torch.tensor([0])),
                       torch.zeros(1, 3, dtype=torch.float64))          # a degenerate face: zero, not NaN
    sq = torch.tensor([0.0, 1.0, 3.0, 4.0])
    torch.testing.assert_close(geman_mcclure(sq, 1.0), torch.tensor([0.0, 0.5, 0.75, 0.8]))
    torch.testing.assert_close(geman_mcclure(sq, 2.0), torch.tensor([0.0, 0.2, 3 / 7, 0.5]))
    # area weighting: a right triangle of area 1/200 (normal +z) and one of area 16/200 (normal +x) share
    # vertex 0; small (unit normals whatever the size) and away from the origin
    vv = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 4, 0], [0, 0, 4], [9, 9, 9]]) * 0.1 + [3.0, -2.0, 1.0]
    ff = np.array([[0, 1, 2], [0, 3, 4]])
    vn = vertex_normals(vv, ff)
    np.testing.assert_allclose(vn[0], np.array([16.0, 0, 1]) / np.sqrt(257), atol=1e-12)
    np.testing.assert_allclose(vn[[1, 2]], [[0, 0, 1], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(vn[[3, 4]], [[1, 0, 0], [1, 0, 0]], atol=1e-12)
    np.testing.assert_array_equal(vn[5], [0, 0, 0])                    # in no face


def test_face_region_by_radius_and_depth():
    lmk = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 2.0]])
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 3.0, 0.0], [10.0, 0.0, -0.5], [10.0, 2.999, 2.0], [5.0, 0.0, 0.0]])
    assert face_region_mask(pts, lmk, 3.0).tolist() == [True, False, True, True, False]   # 3.0 is outside
    # forward +z: the rearmost landmark is at z = 0; `behind` lets points down to z > -behind in (-0.5 is on the fence at 0.5)
    assert face_region_mask(pts, lmk, 3.0, forward=np.array([0.0, 0.0, 2.0])).tolist() == \
        [True, False, False, True, False]
    assert face_region_mask(pts, lmk, 3.0, forward=np.array([0.0, 0.0, 2.0]), behind=0.5).tolist() == \
        [True, False, False, True, False]
    assert face_region_mask(pts, lmk, 3.0, forward=np.array([0.0, 0.0, 2.0]), behind=1.5).tolist() == \
        [True, False, True, True, False]
    on_limit = np.array([[0.0, 1.0, 0.0]])                              # exactly at the rearmost depth
    assert not face_region_mask(on_limit, lmk, 3.0, forward=np.array([0.0, 0.0, 1.0])).any()
