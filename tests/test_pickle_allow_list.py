"""Both pickle allow-lists (dataset pickles: tasks.dataset.flame_pickle; model files: flame_fit.flame_io)
refuse every numpy global outside the few that rebuild arrays: numpy has functions that read files or run
code (numpy.load, numpy.testing, numpy.f2py, numpy.ctypeslib ...), so 'anything from numpy' is no rule."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flame_fit.flame_io import FlameFileError, read_flame_pickle
from tasks.dataset.flame_pickle import (FlamePickleError, flame_pickle_bytes, load_flame_pickle,
                                        load_pickle_dict)

RECONSTRUCTION = {(f"{core}.{mod}", name) for core in ("numpy.core", "numpy._core")
                  for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                    ("numeric", "_frombuffer"))} | {("numpy", "ndarray"), ("numpy", "dtype")}
_modules = st.sampled_from(["numpy", "numpy.testing", "numpy.f2py", "numpy.lib.npyio", "numpy.ctypeslib",
                            "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                            "numpy._core.numeric", "numpy.lib.format", "numpy.testing._private.utils"])
_names = st.one_of(st.sampled_from(["load", "save", "fromfile", "frombuffer", "loadtxt", "run_main",
                                    "compile", "runstring", "_reconstruct", "scalar", "_frombuffer",
                                    "ndarray", "dtype", "array", "read_array", "load_library"]),
                   st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True))


def _global_only(module: str, name: str) -> bytes:
    """A protocol-0 pickle that only looks up module.name (GLOBAL then STOP)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n."


@settings(max_examples=80, deadline=None)
@given(module=_modules, name=_names)
def test_dataset_pickles_refuse_every_numpy_global_but_the_reconstruction_ones(module, name):
    if (module, name) in RECONSTRUCTION:
        return
    with pytest.raises(FlamePickleError, match=f"refusing to load {module}.{name} "):
        load_pickle_dict(_global_only(module, name))


@settings(max_examples=80, deadline=None)
@given(module=_modules, name=_names)
def test_model_pickles_refuse_every_numpy_global_but_the_reconstruction_ones(tmp_path_factory, module, name):
    if (module, name) in RECONSTRUCTION:
        return
    p = tmp_path_factory.mktemp("m") / "generic_model.pkl"
    p.write_bytes(_global_only(module, name))
    with pytest.raises(FlameFileError, match="refused to load"):
        read_flame_pickle(p)


@pytest.mark.parametrize("module,name", sorted(RECONSTRUCTION))
def test_the_reconstruction_globals_pass_both_guards(tmp_path, module, name):
    """Control: the guard is what refuses above (these pass it and fail later as 'not a dict')."""
    with pytest.raises(FlamePickleError, match="expected a dict"):
        load_pickle_dict(_global_only(module, name))
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(_global_only(module, name))
    with pytest.raises(FlameFileError, match="not a dict"):
        read_flame_pickle(p)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 40), seed=st.integers(0, 10**6), scale=st.floats(1e-3, 1e3))
def test_flame_pickles_round_trip_exactly_and_deterministically(T, seed, scale):
    """Any finite codes written by flame_pickle_bytes load back bit for bit through the guarded reader,
    plain pickle reads them too, and the same arrays give the same bytes."""
    rng = np.random.default_rng(seed)
    s, e, p = (rng.normal(size=shape).astype(np.float32) * scale for shape in ((1, 100), (T, 50), (T, 9)))
    data = flame_pickle_bytes(s, e, p)
    assert flame_pickle_bytes(s.copy(), e.copy(), p.copy()) == data
    for d in (load_flame_pickle(data, frames=T), pickle.loads(data)):
        for k, a in zip(("shapecode", "expcodes", "posecodes"), (s, e, p)):
            assert d[k].dtype == np.float32 and d[k].tobytes() == a.tobytes(), k
