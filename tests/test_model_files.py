"""Model files load through allow-lists: a pickle that would run code is refused (and its code
never runs) whether it poses as a FLAME model, a landmark embedding, a FLAME masks file or an
EMOCA checkpoint; the real formats (chumpy stand-ins, scipy.sparse, torch tensors in DECA's
embedding, OmegaConf hyper-parameters in a checkpoint) still load."""
from __future__ import annotations

import builtins
import contextlib
import io
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from flame_fit.flame import load_flame
from flame_fit.flame_io import (FlameFileError, load_flame_arrays, load_flame_masks,
                                load_landmark_embedding)
from flame_fit.procedural import (EMBEDDING_FILE, MODEL_FILE, build_procedural_head_model,
                                  write_procedural_head_model)
from tasks.estimation import emoca as E
from tasks import head_model
from tasks.common.errors import ModelFileError
from tasks.common.settings import FlameSettings


# -- payloads --------------------------------------------------------------------------------------
class _SystemPayload:
    """Unpickling calls os.system(touch marker) (pickled as the global posix.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _EvalPayload:
    """Unpickling calls builtins.eval on code that creates the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.eval, (f"open({self.marker!r}, 'w').close()",)


class _Call:
    """Unpickling calls `func(*args)`; `func` may itself be a `_Call` (a chain of REDUCEs)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __call__(self, *args):            # pickle insists that a REDUCE's callable be callable
        raise AssertionError("only for pickling")

    def __reduce__(self):
        return self.func, self.args


def _exec_payload(marker):
    return _Call(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def _getattr_import_payload(marker):
    """getattr(__import__('os'), 'system')('touch marker'): acts through two inert-looking builtins."""
    return _Call(_Call(builtins.getattr, _Call(builtins.__import__, "os"), "system"), f"touch '{marker}'")


def _open_payload(marker):
    return _Call(builtins.open, str(marker), "w")          # opening for writing creates the marker


def _subprocess_payload(marker):
    return _Call(subprocess.call, ["touch", str(marker)])


def _numpy_payload(marker):
    return _Call(np.savetxt, str(marker), np.zeros(1))     # a numpy function that writes a file


# name: (payload factory, the refused global's name as the error message ends it)
PAYLOADS = {"os.system": (_SystemPayload, "system"), "builtins.eval": (_EvalPayload, "eval"),
            "builtins.exec": (_exec_payload, "exec"),
            "builtins.getattr": (_getattr_import_payload, "getattr"),
            "builtins.open": (_open_payload, "open"), "subprocess.call": (_subprocess_payload, "call"),
            "numpy.savetxt": (_numpy_payload, "savetxt")}


@pytest.fixture(params=sorted(PAYLOADS))
def payload(request, tmp_path):
    """(payload object, marker path, refused global's name); the marker must never appear."""
    cls, name = PAYLOADS[request.param]
    marker = tmp_path / "PAYLOAD_RAN"
    # Positive control: a plain unpickler does run it (so the refusal below is what stops it).
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(cls(control), protocol=2))
    assert control.exists()
    return cls(marker), marker, name


def _object_npy(path, obj):
    """`obj` saved the way DECA saved landmark_embedding.npy: a 0-d object array."""
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)


# -- tiny model files in the real formats ---------------------------------------------------------
V, F = 8, 6


def _tiny_model(rng):
    return {"v_template": rng.normal(size=(V, 3)), "f": rng.integers(0, V, size=(F, 3)).astype(np.uint32),
            "shapedirs": rng.normal(size=(V, 3, 400)) * 1e-3, "posedirs": rng.normal(size=(V, 3, 36)) * 1e-3,
            "J_regressor": scipy.sparse.csc_matrix(np.eye(5, V) * 0.5 + np.roll(np.eye(5, V), 1, 1) * 0.5),
            "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
            "weights": np.full((V, 5), 0.2)}


@contextlib.contextmanager
def _fake_chumpy():
    """`chumpy.ch.Ch` / `chumpy.reordering.Select` as the official files pickle them, importable
    only while the test writes its file; loading then runs without chumpy."""
    ch, reo, pkg = (types.ModuleType(n) for n in ("chumpy.ch", "chumpy.reordering", "chumpy"))

    class Ch:
        def __init__(self, x):
            self.x, self._dirty_vars = np.asarray(x), set()

        def __getstate__(self):
            return dict(self.__dict__)

    class Select:
        def __init__(self, a, idxs, preferred_shape):
            self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__, Select.__module__ = "chumpy.ch", "chumpy.reordering"
    Ch.__qualname__, Select.__qualname__ = "Ch", "Select"
    ch.Ch, reo.Select, pkg.ch, pkg.reordering = Ch, Select, ch, reo
    mods = {"chumpy": pkg, "chumpy.ch": ch, "chumpy.reordering": reo}
    assert not any(m in sys.modules for m in mods)
    sys.modules.update(mods)
    try:
        yield Ch, Select
    finally:
        for m in mods:
            del sys.modules[m]


def _flame2020_bytes(model):
    """Protocol-2 pickle with chumpy objects, a scipy csc J_regressor and numpy.core names."""
    with _fake_chumpy() as (Ch, Select):
        pd = model["posedirs"]
        perm = np.random.default_rng(1).permutation(pd.size)
        flat = np.empty(pd.size)
        flat[perm] = pd.ravel()
        out = dict(model, v_template=Ch(model["v_template"]), shapedirs=Ch(model["shapedirs"]),
                   posedirs=Select(Ch(flat), perm, pd.shape), weights=Ch(model["weights"]),
                   bs_style="lbs", bs_type="lrotmin")
        data = pickle.dumps(out, protocol=2)
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def test_real_format_tiny_flame_pickle_loads(tmp_path):
    model = _tiny_model(np.random.default_rng(0))
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(_flame2020_bytes(model))
    assert b"chumpy.ch" in p.read_bytes() and b"scipy.sparse" in p.read_bytes()
    got = load_flame_arrays(p)
    assert "chumpy" not in sys.modules
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        np.testing.assert_array_equal(got[key], model[key])
    np.testing.assert_array_equal(got["J_regressor"], model["J_regressor"].toarray())
    np.testing.assert_array_equal(got["faces"], model["f"].astype(np.int64))
    assert got["parents"].tolist() == [-1, 0, 1, 1, 1]


@pytest.mark.parametrize("where", ["top level", "inside an entry", "inside an object array"])
def test_malicious_flame_model_is_refused_and_not_run(tmp_path, payload, where):
    evil, marker, name = payload
    model = _tiny_model(np.random.default_rng(0))
    if where == "top level":
        obj = evil
    elif where == "inside an entry":
        obj = dict(model, bs_type=evil)
    else:
        holder = np.empty(2, dtype=object)
        holder[0], holder[1] = "x", evil
        obj = dict(model, vert_sym_idxs=holder)
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(FlameFileError) as err:
        load_flame_arrays(p)
    msg = str(err.value)
    assert str(p) in msg and f".{name}'" in msg and "refused" in msg and "fix:" in msg
    assert not marker.exists()


def test_malicious_procedural_model_in_processed_is_refused(tmp_path, payload):
    """The threat of the issue: a worker plants a pickle where the procedural model is cached."""
    evil, marker, _ = payload
    folder = tmp_path / "_models" / "procedural_head"
    write_procedural_head_model(folder, seed=0, n_vertices=800)
    (folder / MODEL_FILE).write_bytes(pickle.dumps({"v_template": evil}, protocol=2))
    try:
        with pytest.raises(ModelFileError, match="refused"):
            head_model.get_head_model(FlameSettings(procedural_model_dir=str(folder)), tmp_path / "_models", "cpu")
    finally:
        head_model._CACHE.clear()
    assert not marker.exists()


# -- landmark embedding ---------------------------------------------------------------------------
def _tiny_embedding(rng, torch_tensors=False):
    emb = {"static_lmk_faces_idx": rng.integers(0, F, 51),
           "static_lmk_bary_coords": rng.dirichlet([1] * 3, 51),
           "dynamic_lmk_faces_idx": rng.integers(0, F, (79, 17)),
           "dynamic_lmk_bary_coords": rng.dirichlet([1] * 3, (79, 17)),
           "full_lmk_faces_idx": rng.integers(0, F, (1, 68)),
           "full_lmk_bary_coords": rng.dirichlet([1] * 3, (1, 68)).astype(np.float32)}
    if torch_tensors:   # DECA's file: the dynamic tables are torch tensors
        emb["dynamic_lmk_faces_idx"] = torch.from_numpy(emb["dynamic_lmk_faces_idx"])
        emb["dynamic_lmk_bary_coords"] = torch.from_numpy(emb["dynamic_lmk_bary_coords"]).float()
    return emb


def test_deca_style_embedding_with_torch_tensors_loads(tmp_path):
    emb = _tiny_embedding(np.random.default_rng(2), torch_tensors=True)
    p = tmp_path / "landmark_embedding.npy"
    _object_npy(p, emb)
    got = load_landmark_embedding(p, n_faces=F)
    np.testing.assert_array_equal(got["dynamic_lmk_faces_idx"], emb["dynamic_lmk_faces_idx"].numpy())
    np.testing.assert_array_equal(got["dynamic_lmk_bary_coords"],
                                  emb["dynamic_lmk_bary_coords"].numpy().astype(np.float64))
    np.testing.assert_array_equal(got["static_lmk_faces_idx"], emb["static_lmk_faces_idx"])
    np.testing.assert_array_equal(got["full_lmk_faces_idx"], emb["full_lmk_faces_idx"].ravel())


def test_malicious_landmark_embedding_is_refused_and_not_run(tmp_path, payload):
    evil, marker, name = payload
    emb = dict(_tiny_embedding(np.random.default_rng(2)), static_lmk_faces_idx=evil)
    p = tmp_path / "landmark_embedding.npy"
    _object_npy(p, emb)
    with pytest.raises(FlameFileError) as err:
        load_landmark_embedding(p, n_faces=F)
    assert str(p) in str(err.value) and f".{name}'" in str(err.value)
    assert not marker.exists()


class _TorchStoragePayload:
    """Poses as a torch storage: `torch.storage._load_from_bytes` on a legacy torch.save of a
    payload (torch's own helper would load it with weights_only=False)."""

    def __init__(self, inner):
        buf = io.BytesIO()
        torch.save(inner, buf, _use_new_zipfile_serialization=False)
        self.data = buf.getvalue()

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


def test_payload_hidden_in_torch_storage_bytes_is_not_run(tmp_path, payload):
    evil, marker, _ = payload
    emb = dict(_tiny_embedding(np.random.default_rng(2)), dynamic_lmk_faces_idx=_TorchStoragePayload(evil))
    p = tmp_path / "landmark_embedding.npy"
    _object_npy(p, emb)
    with pytest.raises(FlameFileError, match="landmark_embedding.npy"):
        load_landmark_embedding(p, n_faces=F)
    assert not marker.exists()
    # np.load(allow_pickle=True), what the loader used to do, runs it
    np.load(p, allow_pickle=True)
    assert marker.exists()


# -- FLAME_masks.pkl ------------------------------------------------------------------------------
def test_flame_masks_load_and_malicious_masks_refused(tmp_path, payload):
    evil, marker, name = payload
    rng = np.random.default_rng(3)
    masks = {"face": rng.choice(V, 5, replace=False), "lips": np.array([1, 2], dtype=np.int64),
             "left_eyeball": np.arange(3, dtype=np.int32)}
    p = tmp_path / "FLAME_masks.pkl"
    p.write_bytes(pickle.dumps(masks, protocol=2).replace(b"numpy._core", b"numpy.core"))
    got = load_flame_masks(p, n_vertices=V)
    assert sorted(got) == sorted(masks)
    for k in masks:
        np.testing.assert_array_equal(got[k], masks[k])
        assert got[k].dtype == np.int64
    with pytest.raises(FlameFileError, match="outside"):
        load_flame_masks(p, n_vertices=3)
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(dict(masks, nose=evil), protocol=2))
    with pytest.raises(FlameFileError) as err:
        load_flame_masks(tmp_path / "bad.pkl")
    assert "bad.pkl" in str(err.value) and f".{name}'" in str(err.value)
    assert not marker.exists()


# -- files exactly as their authors wrote them -----------------------------------------------------
def _flame2020_py2_bytes(model):
    """generic_model.pkl as FLAME 2020 was written: Python 2 cPickle protocol 2 of chumpy `Ch` /
    `Select` objects, a py2-era `scipy.sparse.csc.csc_matrix` J_regressor and plain arrays."""
    from upstream_files import fake_chumpy, old_csc, py2_pickle_bytes, py2_scipy_csc

    with fake_chumpy() as (Ch, Select), py2_scipy_csc() as csc:
        pd = model["posedirs"]
        perm = np.random.default_rng(1).permutation(pd.size)
        flat = np.empty(pd.size)
        flat[perm] = pd.ravel()
        out = dict(model, v_template=Ch(model["v_template"]), shapedirs=Ch(model["shapedirs"]),
                   posedirs=Select(Ch(flat), perm, pd.shape), weights=Ch(model["weights"]),
                   J_regressor=old_csc(csc, model["J_regressor"].toarray()), J=Ch(np.zeros((5, 3))),
                   bs_style="lbs", bs_type="lrotmin")
        return py2_pickle_bytes(out)


def _deca_embedding_npy(path, emb):
    """landmark_embedding.npy as DECA's file is: np.save (numpy 1.x: format 1.0, pickle protocol 3,
    `numpy.core` names) of a 0-d object array holding a dict whose dynamic tables are torch tensors."""
    arr = np.empty((), dtype=object)
    arr[()] = emb
    data = pickle.dumps(arr, protocol=3).replace(b"cnumpy._core.", b"cnumpy.core.")
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(data)


def test_flame2020_written_by_python2_and_chumpy_loads(tmp_path):
    """FLAME 2020 the way its authors wrote it (Python 2 strings, `__builtin__` / chumpy / old scipy
    names), with DECA's landmark_embedding.npy: the arrays and the posed head equal those of the
    same model in the plain numpy pickle our own writer produces."""
    from upstream_files import globals_in

    model = _tiny_model(np.random.default_rng(0))
    official = tmp_path / "generic_model.pkl"
    official.write_bytes(_flame2020_py2_bytes(model))
    names = globals_in(official.read_bytes())
    assert {"chumpy.ch Ch", "chumpy.reordering Select", "scipy.sparse.csc csc_matrix", "__builtin__ set",
            "numpy.core.multiarray _reconstruct"} <= names
    assert not any(n.startswith(("_codecs", "builtins", "numpy._core")) for n in names)
    got = load_flame_arrays(official)
    assert "chumpy" not in sys.modules
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        np.testing.assert_array_equal(got[key], model[key])
    np.testing.assert_array_equal(got["J_regressor"], model["J_regressor"].toarray())
    np.testing.assert_array_equal(got["faces"], model["f"].astype(np.int64))
    emb_path = tmp_path / "landmark_embedding.npy"
    _deca_embedding_npy(emb_path, _tiny_embedding(np.random.default_rng(2), torch_tensors=True))
    assert b"numpy.core.multiarray" in emb_path.read_bytes() and b"_load_from_bytes" in emb_path.read_bytes()
    ours = tmp_path / "ours.pkl"
    ours.write_bytes(pickle.dumps(dict(model, bs_type="lrotmin"), protocol=2))
    a, b = load_flame(official, emb_path), load_flame(ours, emb_path)
    assert a.is_real
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 100, generator=g), torch.randn(2, 50, generator=g),
            torch.randn(2, 3, generator=g) * 0.2)
    out_a, out_b = a(*args, jaw_pose=args[2] * 0.5), b(*args, jaw_pose=args[2] * 0.5)
    assert torch.equal(out_a.vertices, out_b.vertices) and torch.equal(out_a.landmarks, out_b.landmarks)


@pytest.mark.parametrize("protocol", [0, 2])
def test_flame_masks_written_by_python2_load(tmp_path, protocol):
    """FLAME_masks.pkl as a Python 2 pickle (text protocol 0 or binary 2) of int64 index arrays."""
    from upstream_files import globals_in, py2_pickle_bytes

    rng = np.random.default_rng(4)
    masks = {region: np.sort(rng.choice(V, 3, replace=False)).astype(np.int64)
             for region in ("face", "neck", "scalp", "boundary", "right_eyeball", "left_eyeball", "lips")}
    p = tmp_path / "FLAME_masks.pkl"
    p.write_bytes(py2_pickle_bytes(masks, protocol))
    assert "numpy.core.multiarray _reconstruct" in globals_in(p.read_bytes())
    got = load_flame_masks(p, n_vertices=V)
    assert list(got) == list(masks)
    for k in masks:
        np.testing.assert_array_equal(got[k], masks[k])


# -- EMOCA checkpoints ----------------------------------------------------------------------------
def _tiny_state():
    g = torch.Generator().manual_seed(5)
    return {"deca.E_flame.layers.0.weight": torch.randn(4, 3, generator=g),
            "deca.E_flame.layers.0.bias": torch.randn(4, generator=g)}


def _lightning_ckpt(path, state, **extra):
    torch.save({"epoch": 1, "global_step": 3, "pytorch-lightning_version": "1.4.9",
                "state_dict": state, **extra}, path)


def test_malicious_emoca_checkpoint_is_refused_and_not_run(tmp_path, payload):
    evil, marker, name = payload
    p = tmp_path / "deca-epoch=01-val_loss=0.5.ckpt"
    _lightning_ckpt(p, _tiny_state(), hyper_parameters={"model_params": evil})
    with pytest.raises(ModelFileError) as err:
        E.load_state_dict(p)
    msg = str(err.value)
    assert str(p) in msg and f".{name}'" in msg and "refused" in msg
    assert not marker.exists()


def test_tampered_official_emoca_checkpoint_is_refused_and_not_run(tmp_path):
    """An official-format checkpoint (Lightning 1.4.9, omegaconf 2.0.6 hyper-parameters) in which one
    OmegaConf node's value was replaced by a payload: the inert names around it do not let it through."""
    from upstream_files import emoca_hparams_pickle, lightning_checkpoint

    marker = tmp_path / "PAYLOAD_RAN"
    cfg = {"detail": {"model": {"n_exp": 50, "deca_class": "ExpDECA"}, "learning": {"lr": 1e-4},
                      "inout": {"full_run_dir": "/x"}}}
    hp_pickle, _ = emoca_hparams_pickle(cfg, payload_marker=marker)
    p = lightning_checkpoint(tmp_path / "deca-epoch=01-val_loss=0.5.ckpt", _tiny_state(), hp_pickle)
    with pytest.raises(ModelFileError) as err:
        E.load_state_dict(p)
    msg = str(err.value)
    assert str(p) in msg and "'posix.system'" in msg and "refused" in msg
    assert "builtins.dict" not in msg and "omegaconf" not in msg     # only the payload is named
    assert not marker.exists()
    clean, _ = emoca_hparams_pickle(cfg)                             # control: untampered, it loads
    assert sorted(E.load_state_dict(lightning_checkpoint(tmp_path / "ok.ckpt", _tiny_state(), clean)))


class _Trap:
    """A class in a configuration module whose own code would create the marker."""

    marker = None

    def __setstate__(self, state):
        open(self.marker, "w").close()


def test_config_classes_are_inert_records_never_imported(tmp_path):
    """A global from a configuration module (here a fake `omegaconf.trap`) is read as an inert
    record: its module's code does not run even when that module is importable at load time."""
    mod = types.ModuleType("omegaconf.trap")
    _Trap.__module__, _Trap.__qualname__ = mod.__name__, "Trap"
    mod.Trap = _Trap
    pkg = types.ModuleType("omegaconf")
    pkg.trap = mod
    marker = tmp_path / "TRAP_RAN"
    _Trap.marker = str(marker)
    trap = _Trap()
    trap.value = 1
    state = _tiny_state()
    p = tmp_path / "model.ckpt"
    saved = {k: sys.modules.get(k) for k in ("omegaconf", "omegaconf.trap")}
    sys.modules.update({"omegaconf": pkg, "omegaconf.trap": mod})
    try:
        _lightning_ckpt(p, state, hyper_parameters={"cfg": trap})
        with pytest.raises(pickle.UnpicklingError):               # a plain weights-only load refuses
            torch.load(p, weights_only=True)
        pickle.loads(pickle.dumps(trap))                         # control: the real class does run
        assert marker.exists()
        marker.unlink()
        got = E.load_state_dict(p)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    assert not marker.exists()
    assert sorted(got) == sorted(state)
    for k in state:
        torch.testing.assert_close(got[k], state[k], rtol=0, atol=0)


def test_plain_emoca_checkpoint_loads_without_allow_listing(tmp_path):
    state = _tiny_state()
    p = tmp_path / "model.ckpt"
    _lightning_ckpt(p, state, callbacks={"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}})
    got = E.load_state_dict(p)
    for k in state:
        torch.testing.assert_close(got[k], state[k], rtol=0, atol=0)


# -- procedural model -----------------------------------------------------------------------------
def test_procedural_model_round_trip_is_unchanged(tmp_path):
    """The writer's container is unchanged (the file is the protocol-2 pickle of the built dict, so
    model hashes in existing manifests stay valid) and the guarded loader returns exactly the
    arrays it was built from."""
    paths = write_procedural_head_model(tmp_path, seed=0, n_vertices=800)
    model, emb = build_procedural_head_model(seed=0, n_vertices=800)
    assert paths["model"].read_bytes() == pickle.dumps(model, protocol=2)
    got = load_flame_arrays(paths["model"])
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        np.testing.assert_array_equal(got[key], model[key])
    np.testing.assert_array_equal(got["J_regressor"], model["J_regressor"].toarray())
    np.testing.assert_array_equal(got["faces"], model["f"].astype(np.int64))
    assert got["procedural"] is True and "not FLAME" in got["description"]
    got_emb = load_landmark_embedding(paths["landmark_embedding"], n_faces=len(model["f"]))
    for key, value in emb.items():
        np.testing.assert_array_equal(got_emb[key], np.asarray(value).reshape(got_emb[key].shape))
    flame = load_flame(tmp_path / MODEL_FILE, tmp_path / EMBEDDING_FILE)
    assert not flame.is_real


# -- Demucs release files -------------------------------------------------------------------------
def _demucs_th(repo, package, sig="0badc0de"):
    """`package` saved the way demucs.states.save_with_checksum names release files, plus a bag yaml
    naming it, so only the allow-list (not the checksum or the layout) can stop it."""
    import hashlib

    buf = io.BytesIO()
    torch.save(package, buf)
    repo.mkdir(parents=True, exist_ok=True)
    th = repo / f"{sig}-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.th"
    th.write_bytes(buf.getvalue())
    (repo / "htdemucs.yaml").write_text(f"models: ['{sig}']\n")
    return th


@pytest.mark.parametrize("where", ["klass", "kwargs", "state"])
def test_malicious_demucs_th_is_refused_and_not_run(tmp_path, payload, where):
    from demucs.htdemucs import HTDemucs
    from tasks.separation.vocals import load_demucs

    evil, marker, name = payload
    package = {"klass": HTDemucs, "args": [], "kwargs": {"channels": 8}, "state": {}}
    package[where] = evil if where == "klass" else {"x": evil}
    th = _demucs_th(tmp_path / "demucs", package)
    with pytest.raises(ModelFileError) as err:
        load_demucs(tmp_path / "demucs", "htdemucs")
    msg = str(err.value)
    assert str(th) in msg and f".{name}" in msg and "refused" in msg and "fix:" in msg
    assert not marker.exists()


def test_demucs_th_naming_an_allowed_non_model_class_is_refused(tmp_path):
    """Fraction is allow-listed for kwargs only: as `klass` it is refused before anything is built."""
    from fractions import Fraction
    from tasks.separation.vocals import load_demucs

    th = _demucs_th(tmp_path / "demucs", {"klass": Fraction, "args": ["1/2"], "kwargs": {}, "state": {}})
    with pytest.raises(ModelFileError, match="not a Demucs model") as err:
        load_demucs(tmp_path / "demucs", "htdemucs")
    assert str(th) in str(err.value)
