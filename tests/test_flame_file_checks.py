"""The FLAME readers refuse a model, landmark embedding or masks file whose layout is wrong, one field at a
time, with a FlameFileError that names the file and the field, while the same file with that field right
loads.  Model files are FLAME 2020 `generic_model.pkl` as its authors wrote them (Python 2 pickle, chumpy
`Ch` / `Select`, py2-era scipy csc J_regressor: tests/upstream_files.py); embeddings as DECA's
`landmark_embedding.npy` (0-d object array of a dict); masks as `FLAME_masks.pkl`."""
from __future__ import annotations

import builtins
import io
import pickle
import re

import numpy as np
import pytest
import torch

from flame_fit import flame_io
from flame_fit.flame_io import FlameFileError, load_flame_arrays, load_flame_masks, load_landmark_embedding
from upstream_files import fake_chumpy, fake_classes, old_csc, py2_pickle_bytes, py2_scipy_csc

V, F, K = 8, 6, 400


def _model(n_vertices=V, n_cols=K, seed=0):
    """A valid FLAME-layout model as plain arrays (J_regressor dense here; written as csc)."""
    rng = np.random.default_rng(seed)
    nv = n_vertices
    return {"v_template": rng.normal(size=(nv, 3)),
            "f": rng.integers(0, nv, size=(F, 3)).astype(np.uint32),
            "shapedirs": rng.normal(size=(nv, 3, n_cols)) * 1e-3,
            "posedirs": rng.normal(size=(nv, 3, 36)) * 1e-3,
            "J_regressor": np.eye(5, nv) * 0.5 + np.roll(np.eye(5, nv), 1, 1) * 0.5,
            "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
            "weights": np.full((nv, 5), 0.2), "bs_style": "lbs", "bs_type": "lrotmin"}


def _flame2020_file(path, model):
    """`model` written as FLAME 2020's generic_model.pkl: chumpy Ch for v_template / shapedirs / weights,
    a chumpy Select for posedirs, a scipy csc J_regressor (when 2-D), the rest plain."""
    with fake_chumpy() as (Ch, Select), py2_scipy_csc() as csc:
        out = dict(model)
        for key in ("v_template", "shapedirs", "weights"):
            if isinstance(model[key], np.ndarray):
                out[key] = Ch(model[key])
        pd = np.asarray(model["posedirs"])
        perm = np.random.default_rng(1).permutation(pd.size)
        flat = np.empty(pd.size)
        flat[perm] = pd.ravel()
        out["posedirs"] = Select(Ch(flat), perm, pd.shape)
        if np.ndim(model["J_regressor"]) == 2:
            out["J_regressor"] = old_csc(csc, np.asarray(model["J_regressor"]))
        path.write_bytes(py2_pickle_bytes(out))
    return path


@pytest.mark.parametrize("n_vertices,n_cols", [(V, K), (1, 350), (3, 351)])
def test_valid_models_load_down_to_one_vertex_and_350_columns(tmp_path, n_vertices, n_cols):
    """300 identity + 50 expression columns is enough; a model of any positive vertex count loads."""
    model = _model(n_vertices, n_cols)
    got = load_flame_arrays(_flame2020_file(tmp_path / "generic_model.pkl", model))
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J_regressor"):
        np.testing.assert_array_equal(got[key], model[key])
    np.testing.assert_array_equal(got["faces"], model["f"].astype(np.int64))
    assert got["parents"].tolist() == [-1, 0, 1, 1, 1]


def _with(key, value):
    return lambda m: dict(m, **{key: value(m) if callable(value) else value})


def _nan_at(key, bad=np.nan):
    def corrupt(m):
        a = np.array(m[key], dtype=np.float64)
        a.flat[a.size // 2] = bad
        return dict(m, **{key: a})
    return corrupt


def _faces_with(index):
    def corrupt(m):
        f = m["f"].astype(np.int64)
        f[2, 1] = index
        return dict(m, f=f)
    return corrupt


rng0 = np.random.default_rng(9)
_CASES = {
    # v_template: (V, 3), V > 0
    "v_template (V,2)": (_with("v_template", rng0.normal(size=(V, 2))), r"v_template \(8, 2\), want \(V,3\)"),
    "v_template (V,4)": (_with("v_template", rng0.normal(size=(V, 4))), r"v_template \(8, 4\), want \(V,3\)"),
    "v_template (V,3,1)": (_with("v_template", rng0.normal(size=(V, 3, 1))), r"v_template \(8, 3, 1\), want"),
    "v_template (3,)": (_with("v_template", rng0.normal(size=3)), r"v_template \(3,\), want \(V,3\)"),
    "v_template scalar": (_with("v_template", np.float64(1.5)), r"v_template \(\), want \(V,3\)"),
    "v_template no vertex": (_with("v_template", np.zeros((0, 3))), r"v_template \(0, 3\), want \(V,3\)"),
    "v_template text": (_with("v_template", "not an array"), r"entry 'v_template' is not numeric"),
    # faces: (F, 3) ids in [0, V)
    "f (F,2)": (_with("f", lambda m: m["f"][:, :2]), r"f \(6, 2\), want \(F,3\)"),
    "f (F,4)": (_with("f", lambda m: np.c_[m["f"], m["f"][:, :1]]), r"f \(6, 4\), want \(F,3\)"),
    "f (F,3,1)": (_with("f", lambda m: m["f"][..., None]), r"f \(6, 3, 1\), want \(F,3\)"),
    "f (3,)": (_with("f", lambda m: m["f"][0]), r"f \(3,\), want \(F,3\)"),
    "f empty": (_with("f", np.zeros((0, 3), np.uint32)), r"face indices outside \[0,8\)"),
    "f id -1": (_faces_with(-1), r"face indices outside \[0,8\)"),
    "f id V": (_faces_with(V), r"face indices outside \[0,8\)"),
    "f id V+1": (_faces_with(V + 1), r"face indices outside \[0,8\)"),
    # shapedirs: (V, 3, K), K >= 350
    "shapedirs (V,3,K,1)": (_with("shapedirs", lambda m: m["shapedirs"][..., None]),
                            r"shapedirs \(8, 3, 400, 1\), want \(8,3,K\)"),
    "shapedirs (V,3)": (_with("shapedirs", lambda m: m["shapedirs"][:, :, 0]), r"shapedirs \(8, 3\), want"),
    "shapedirs (V+1,3,K)": (_with("shapedirs", lambda m: np.r_[m["shapedirs"], m["shapedirs"][:1]]),
                            r"shapedirs \(9, 3, 400\), want \(8,3,K\)"),
    "shapedirs (V-1,3,K)": (_with("shapedirs", lambda m: m["shapedirs"][1:]),
                            r"shapedirs \(7, 3, 400\), want \(8,3,K\)"),
    "shapedirs (V,4,K)": (_with("shapedirs", lambda m: np.concatenate([m["shapedirs"], m["shapedirs"][:, :1]],
                                                                      axis=1)),
                          r"shapedirs \(8, 4, 400\), want \(8,3,K\)"),
    "shapedirs 349 columns": (_with("shapedirs", lambda m: m["shapedirs"][:, :, :349]),
                              r"shapedirs has 349 columns; need 300 identity \+ at least 50 expression"),
    # kintree_table: (2, 5), parents of FLAME's 5 joints
    "kintree (3,5)": (_with("kintree_table", lambda m: np.r_[m["kintree_table"], m["kintree_table"][1:]]),
                      r"kintree_table \(3, 5\), want \(2,5\)"),
    "kintree (1,5)": (_with("kintree_table", lambda m: m["kintree_table"][:1]),
                      r"kintree_table \(1, 5\), want"),
    "kintree (2,6)": (_with("kintree_table", lambda m: np.c_[m["kintree_table"], [1, 5]]),
                      r"kintree_table \(2, 6\), want \(2,5\)"),
    "parents right eye on left eye": (_with("kintree_table", np.array([[4294967295, 0, 1, 1, 3],
                                                                       [0, 1, 2, 3, 4]])),
                                      r"joint parents \[-1, 0, 1, 1, 3\], want \[-1, 0, 1, 1, 1\]"),
    "parents jaw on root": (_with("kintree_table", np.array([[4294967295, 0, 0, 1, 1], [0, 1, 2, 3, 4]])),
                            r"joint parents \[-1, 0, 0, 1, 1\], want"),
    # posedirs, J_regressor, weights
    "posedirs (V+1,3,36)": (_with("posedirs", lambda m: np.concatenate([m["posedirs"], m["posedirs"][:1]])),
                            r"posedirs \(9, 3, 36\), want \(8,3,36\)"),
    "posedirs (V,3,35)": (_with("posedirs", lambda m: m["posedirs"][..., :35]),
                          r"posedirs \(8, 3, 35\), want"),
    "J_regressor (5,V+1)": (_with("J_regressor", lambda m: np.c_[m["J_regressor"], np.zeros(5)]),
                            r"J_regressor \(5, 9\), want \(5,8\)"),
    "J_regressor (4,V)": (_with("J_regressor", lambda m: m["J_regressor"][:4]),
                          r"J_regressor \(4, 8\), want"),
    "weights (V,6)": (_with("weights", lambda m: np.c_[m["weights"], np.zeros(V)]),
                      r"weights \(8, 6\), want \(8,5\)"),
    "weights (V,4)": (_with("weights", lambda m: m["weights"][:, :4]), r"weights \(8, 4\), want \(8,5\)"),
    # finite values, pose mapping
    **{f"{key} {bad}": (_nan_at(key, bad), rf"{key} has non-finite values")
       for key, bad in (("v_template", np.nan), ("shapedirs", np.inf), ("posedirs", np.nan),
                        ("J_regressor", np.inf), ("weights", -np.inf))},
    "bs_type rotmin": (_with("bs_type", "rotmin"), r"bs_type 'rotmin'; only the 'lrotmin' pose mapping"),
    "bs_type axis_angle": (_with("bs_type", "axis_angle"), r"bs_type 'axis_angle'; only the 'lrotmin'"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_one_wrong_field_is_refused_naming_it(tmp_path, case):
    corrupt, message = _CASES[case]
    p = _flame2020_file(tmp_path / "generic_model.pkl", corrupt(_model()))
    with pytest.raises(FlameFileError) as err:
        load_flame_arrays(p)
    assert str(err.value).startswith(f"{p}: ")
    assert re.search(message, str(err.value)), str(err.value)
    assert "fix:" in str(err.value)


@pytest.mark.parametrize("content,cause", [(b"", "EOFError"),
                                           (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "UnpicklingError"),
                                           ("truncated", "")], ids=["empty", "jpeg", "truncated"])
def test_a_file_that_is_no_pickle_is_named_as_such(tmp_path, content, cause):
    """Empty, a JPEG (its first byte sorts after the .npy magic), a truncated download."""
    p = tmp_path / "generic_model.pkl"
    if content == "truncated":
        data = _flame2020_file(p, _model()).read_bytes()
        content = data[: len(data) // 2]
    p.write_bytes(content)
    want = rf"^{re.escape(str(p))}: not a readable FLAME pickle \({cause}"
    with pytest.raises(FlameFileError, match=want) as err:
        load_flame_arrays(p)
    assert "re-download" in str(err.value)


def test_torch_tensors_are_not_allowed_in_model_or_masks_files(tmp_path):
    """Only the landmark embedding (DECA's file) may hold torch tensors; a FLAME model or masks pickle that
    names torch's rebuild functions is refused like any other global."""
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps(dict(_model(), v_template=torch.zeros(V, 3)), protocol=2))
    with pytest.raises(FlameFileError, match=r"refers to 'torch\._utils\._rebuild_tensor_v2'"):
        load_flame_arrays(p)
    p = tmp_path / "FLAME_masks.pkl"
    p.write_bytes(pickle.dumps({"face": torch.arange(3)}, protocol=2))
    with pytest.raises(FlameFileError, match=r"refers to 'torch\._utils\._rebuild_tensor_v2'"):
        load_flame_masks(p)


def test_npy_format_versions_below_1_are_refused(tmp_path):
    arr = np.empty((), dtype=object)
    arr[()] = {"a": 1}
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(1, 0), allow_pickle=True)
    data = bytearray(buf.getvalue())
    data[6:8] = b"\x00\x01"
    p = tmp_path / "landmark_embedding.npy"
    p.write_bytes(bytes(data))
    with pytest.raises(FlameFileError, match=r"\.npy format version \(0, 1\) is not supported"):
        load_landmark_embedding(p)


# -- chumpy / scipy objects the reader cannot evaluate -----------------------------------------------
_UNKNOWN_STATES = {
    "chumpy Transpose (a, axes)": ("chumpy.reordering.Transpose", {"a": np.arange(6.0), "axes": (1, 0)}),
    "sparse without indptr": ("scipy.sparse.coo.coo_matrix", {"indices": np.arange(3), "data": np.ones(3)}),
    "sparse without indices": ("scipy.sparse.csr.csr_matrix", {"indptr": np.arange(3), "data": np.ones(3)}),
    "state a 1-tuple": ("chumpy.ch.Ch", ({"x": np.arange(6.0)},)),
    "state a 3-tuple": ("chumpy.ch.Ch", ({"x": np.arange(6.0)}, {}, None)),
}


@pytest.mark.parametrize("case", list(_UNKNOWN_STATES))
def test_objects_of_unknown_layout_are_refused_naming_the_entry(tmp_path, case):
    qualname, state = _UNKNOWN_STATES[case]
    with fake_classes({qualname: {}}) as made:
        cls = made[qualname]
        cls.__reduce__ = lambda self: (cls, (), state)
        data = pickle.dumps({"shapedirs": cls()}, protocol=2)
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(data)
    want = rf"entry 'shapedirs' is a {re.escape(qualname)} object this reader cannot evaluate"
    with pytest.raises(FlameFileError, match=want):
        flame_io.read_flame_pickle(p)


# -- numpy 1 / numpy 2 module names -----------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:numpy.core:DeprecationWarning")
@pytest.mark.parametrize("version,core", [("1.26.4", "numpy.core"), ("1.21.0", "numpy.core"),
                                          ("2.0.0", "numpy._core"), ("2.4.6", "numpy._core"),
                                          ("3.0.0", "numpy._core")])
def test_numpy_globals_are_imported_under_the_running_numpys_name(monkeypatch, version, core):
    """numpy < 2 has numpy.core, numpy >= 2 numpy._core (numpy.core is a deprecated shim there): a file's
    numpy names, whichever numpy wrote it, are imported under the name the running numpy uses."""
    imported = []
    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        if name.startswith("numpy"):
            imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(np, "__version__", version)
    monkeypatch.setattr(builtins, "__import__", spy)
    got = {}
    for written in ("numpy.core", "numpy._core"):
        for sub, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                          ("numeric", "_frombuffer")):
            imported.clear()
            got[written, name] = flame_io._allowed_global(f"{written}.{sub}", name, False)
            assert imported[:1] == [f"{core}.{sub}"], (written, name, imported)   # (the shim imports on)
    monkeypatch.undo()
    assert got["numpy.core", "_reconstruct"] is np._core.multiarray._reconstruct
    assert got["numpy._core", "_frombuffer"] is np._core.numeric._frombuffer


# -- landmark embedding ------------------------------------------------------------------------------
def _embedding(seed=2, n_faces=F):
    rng = np.random.default_rng(seed)
    return {"static_lmk_faces_idx": rng.integers(0, n_faces, 51).astype(np.int32),
            "static_lmk_bary_coords": rng.dirichlet([1] * 3, 51).astype(np.float32),
            "dynamic_lmk_faces_idx": rng.integers(0, n_faces, (79, 17)),
            "dynamic_lmk_bary_coords": rng.dirichlet([1] * 3, (79, 17)),
            "full_lmk_faces_idx": rng.integers(0, n_faces, (1, 68)).astype(np.int32),
            "full_lmk_bary_coords": rng.dirichlet([1] * 3, (1, 68)).astype(np.float32)}


def _deca_npy(path, obj):
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)
    return path


@pytest.mark.parametrize("form", ["deca .npy", ".npz", "pickled dict"])
def test_embedding_loads_from_each_form_as_int64_ids_and_float64_coordinates(tmp_path, form):
    emb = _embedding()
    if form == "deca .npy":
        p = _deca_npy(tmp_path / "landmark_embedding.npy", emb)
    elif form == ".npz":
        p = tmp_path / "landmark_embedding.npz"
        np.savez(p, **emb)
    else:
        p = tmp_path / "landmark_embedding.pkl"
        p.write_bytes(pickle.dumps(emb, protocol=2))
    got = load_landmark_embedding(p, n_faces=F)
    assert list(got) == list(emb)
    for k, a in got.items():
        assert a.dtype == (np.int64 if "faces_idx" in k else np.float64), k
        np.testing.assert_array_equal(a, emb[k].reshape(a.shape))
    assert got["full_lmk_faces_idx"].shape == (68,) and got["full_lmk_bary_coords"].shape == (68, 3)


def test_embedding_npy_of_several_objects_is_refused(tmp_path):
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = _embedding(), _embedding(3)
    p = tmp_path / "landmark_embedding.npy"
    np.save(p, arr, allow_pickle=True)
    with pytest.raises(FlameFileError, match="the .npy does not hold a dict of landmark arrays"):
        load_landmark_embedding(p)


_SHAPES = {"static_lmk_faces_idx": (51,), "static_lmk_bary_coords": (51, 3),
           "dynamic_lmk_faces_idx": (79, 17), "dynamic_lmk_bary_coords": (79, 17, 3),
           "full_lmk_faces_idx": (68,), "full_lmk_bary_coords": (68, 3)}


@pytest.mark.parametrize("key", list(_SHAPES))
@pytest.mark.parametrize("delta", [-1, 1])
def test_embedding_table_of_wrong_size_is_refused_naming_it(tmp_path, key, delta):
    emb = _embedding()
    a = emb[key].reshape(_SHAPES[key])
    bad = a[:delta] if delta < 0 else np.concatenate([a, a[:1]])
    p = _deca_npy(tmp_path / "landmark_embedding.npy", dict(emb, **{key: bad}))
    with pytest.raises(FlameFileError, match=rf"{key} has shape \({_SHAPES[key][0] + delta},"):
        load_landmark_embedding(p, n_faces=F)


@pytest.mark.parametrize("key", ["static_lmk_faces_idx", "dynamic_lmk_faces_idx", "full_lmk_faces_idx"])
@pytest.mark.parametrize("bad", [-1, F, F + 3])
def test_embedding_face_ids_outside_the_model_are_refused(tmp_path, key, bad):
    emb = _embedding()
    a = np.array(emb[key], dtype=np.int64)
    a.flat[a.size // 3] = bad
    p = _deca_npy(tmp_path / "landmark_embedding.npy", dict(emb, **{key: a}))
    with pytest.raises(FlameFileError, match=rf"{key} has face ids outside \[0,{F}\)"):
        load_landmark_embedding(p, n_faces=F)
    if bad >= 0:                                  # without a model to check against, they are only ids
        assert load_landmark_embedding(p)[key].max() == bad


# -- FLAME_masks.pkl ---------------------------------------------------------------------------------
_MASKS = {"face": np.array([0, 2, 5, 7]), "lips": np.array([1, 2], dtype=np.int32),
          "nose": np.array([], np.int64)}


def test_masks_saved_as_an_object_npy_load(tmp_path):
    got = load_flame_masks(_deca_npy(tmp_path / "FLAME_masks.npy", _MASKS), n_vertices=V)
    assert list(got) == list(_MASKS)
    for k in _MASKS:
        np.testing.assert_array_equal(got[k], _MASKS[k])
        assert got[k].dtype == np.int64


@pytest.mark.parametrize("content,what", [
    ("object (2,)", "holds a ndarray, not a dict"), ("empty dict", "holds a dict, not a dict of region"),
    ({"face": np.array([[0, 1], [2, 3]])}, "region 'face' is not a 1-D integer array"),
    ({"face": np.int64(3)}, "region 'face' is not a 1-D integer array"),
    ({"face": np.array([0.0, 1.0])}, "region 'face' is not a 1-D integer array"),
    ({3: np.array([0, 1])}, "region 3 is not a 1-D integer array"),
    ({"face": np.array([-1, 2])}, r"region 'face' has vertex ids outside \[0,8\)"),
    ({"face": np.array([0, V])}, r"region 'face' has vertex ids outside \[0,8\)"),
    ("garbage", "not a readable masks pickle"),
], ids=["object-array", "empty", "2-D", "scalar", "float", "int-key", "negative", "id-V", "garbage"])
def test_masks_of_wrong_layout_are_refused(tmp_path, content, what):
    p = tmp_path / "FLAME_masks.pkl"
    if content == "object (2,)":
        arr = np.empty(2, dtype=object)
        arr[0], arr[1] = _MASKS, _MASKS
        np.save(tmp_path / "m.npy", arr, allow_pickle=True)
        p.write_bytes((tmp_path / "m.npy").read_bytes())
    elif content == "garbage":
        p.write_bytes(pickle.dumps(_MASKS, protocol=2)[:40])
    else:
        p.write_bytes(pickle.dumps({} if content == "empty dict" else content, protocol=2))
    with pytest.raises(FlameFileError, match=rf"^{re.escape(str(p))}: {what}"):
        load_flame_masks(p, n_vertices=V)
