"""flame_seqs pickles: portable bytes (numpy 1.20 .. 2.x), deterministic, read through an allow-list."""
from __future__ import annotations

import json
import os
import pickle
import pickletools
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tasks.dataset import flame_pickle
from tasks.dataset.flame_pickle import (FlamePickleError, flame_pickle_bytes, load_flame_pickle,
                                        load_pickle_dict, motion59)

NP_OLD = "1.24.4"
VENV = Path(os.environ.get("SINGINGHEAD_TEST_CACHE", Path.home() / ".cache" / "singinghead-test")) / "np124"


def _codes(T=7, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(1, 100)).astype(np.float32), rng.normal(size=(T, 50)).astype(np.float32),
            rng.normal(size=(T, 9)).astype(np.float32))


def _globals(data: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")}


def test_bytes_name_only_numpy1_compatible_globals_and_are_deterministic():
    s, e, p = _codes()
    data = flame_pickle_bytes(s, e, p)
    assert _globals(data) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert flame_pickle_bytes(s.copy(), e.copy(), p.copy()) == data
    # float64 input or a non-contiguous view gives the same float32 bytes
    assert flame_pickle_bytes(s.astype(np.float64), np.asfortranarray(e), p) == data
    assert flame_pickle_bytes(s, e, p + np.float32(1e-3)) != data


def test_plain_pickle_load_under_this_numpy_without_warnings():
    s, e, p = _codes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # numpy 2 must not warn about numpy.core here
        d = pickle.loads(flame_pickle_bytes(s, e, p))
    assert list(d) == ["shapecode", "expcodes", "posecodes"]
    for a, b in zip((d["shapecode"], d["expcodes"], d["posecodes"]), (s, e, p)):
        assert a.dtype == np.float32 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)


def test_allow_list_loader_roundtrip_and_motion_order(tmp_path):
    s, e, p = _codes(T=5)
    path = tmp_path / "id0_1_0_0.pkl"
    path.write_bytes(flame_pickle_bytes(s, e, p))
    d = load_flame_pickle(path, frames=5)
    m = motion59(d)
    assert m.shape == (5, 59) and m.dtype == np.float32
    np.testing.assert_array_equal(m[:, :50], e)
    np.testing.assert_array_equal(m[:, 50:53], p[:, :3])    # global
    np.testing.assert_array_equal(m[:, 56:59], p[:, 6:9])   # jaw
    # numpy 2's own pickles (numpy._core names, protocol 4 and 5) load too
    for proto in (2, 4, 5):
        raw = pickle.dumps({"shapecode": s, "expcodes": e, "posecodes": p}, protocol=proto)
        np.testing.assert_array_equal(load_flame_pickle(raw)["expcodes"], e)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loader_refuses_code_and_names_the_file(tmp_path):
    bad = tmp_path / "id3_2_0_1.pkl"
    bad.write_bytes(pickle.dumps({"shapecode": _Evil()}))
    with pytest.raises(FlamePickleError) as ei:
        load_flame_pickle(bad)
    msg = str(ei.value)
    assert str(bad) in msg and "refusing to load" in msg and "system" in msg


def test_loader_errors_on_shape_keys_frames_and_garbage(tmp_path):
    s, e, p = _codes(T=4)
    with pytest.raises(FlamePickleError, match="expected 6"):
        load_flame_pickle(flame_pickle_bytes(s, e, p), name="a.pkl", frames=6)
    with pytest.raises(FlamePickleError, match=r"lacks \['posecodes'\]"):
        load_flame_pickle(pickle.dumps({"shapecode": s, "expcodes": e}), name="b.pkl")
    with pytest.raises(FlamePickleError, match=r"posecodes has shape \(4, 6\)"):
        load_flame_pickle(pickle.dumps({"shapecode": s, "expcodes": e, "posecodes": p[:, :6]}), name="c.pkl")
    with pytest.raises(FlamePickleError, match="truncated or corrupt"):
        load_flame_pickle(flame_pickle_bytes(s, e, p)[:50], name="d.pkl")
    with pytest.raises(FlamePickleError, match="cannot read"):
        load_flame_pickle(tmp_path / "missing.pkl")
    with pytest.raises(ValueError, match="posecodes"):
        flame_pickle_bytes(s, e, p[:3])


def test_python2_style_latin1_pickle_of_index_arrays():
    # FLAME_masks.pkl is a protocol-0 Python 2 pickle of int64 index arrays: same reader.
    masks = {"lips": np.array([3, 1, 2], dtype=np.int64), "face": np.arange(4)}
    d = load_pickle_dict(pickle.dumps(masks, protocol=0), name="FLAME_masks.pkl", encoding="latin1")
    np.testing.assert_array_equal(d["lips"], [3, 1, 2])


# ----------------------------------------------------------------------------- numpy 1.24
def _old_numpy_python() -> Path:
    """python of a cached venv with numpy 1.24.4 (created once); skip if pip cannot reach PyPI."""
    py = VENV / "bin" / "python"
    marker = VENV / ".ready"
    if marker.is_file() and py.exists():
        return py
    base = shutil.which("python3.11") or (sys.executable if sys.version_info[:2] <= (3, 11) else None)
    if base is None:
        pytest.skip("numpy 1.24 needs Python <= 3.11 and no python3.11 was found")
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True, capture_output=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        f"numpy=={NP_OLD}"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        if any(s in r.stderr for s in ("Could not find a version", "NewConnectionError",
                                        "Temporary failure in name resolution", "Network is unreachable",
                                        "No matching distribution")):
            pytest.skip(f"pip could not install numpy=={NP_OLD} from the registry: {r.stderr.strip()[-300:]}")
        raise RuntimeError(f"pip install numpy=={NP_OLD} failed:\n{r.stderr}")
    marker.write_text(NP_OLD)
    return py


def test_pickle_loads_under_numpy_1_24_with_plain_pickle(tmp_path):
    py = _old_numpy_python()
    s, e, p = _codes(T=9, seed=3)
    path = tmp_path / "id0_10_0_0.pkl"
    path.write_bytes(flame_pickle_bytes(s, e, p))
    script = ("import pickle,sys,json,numpy as np\n"
              "d=pickle.load(open(sys.argv[1],'rb'))\n"
              "print(json.dumps({'np':np.__version__,'keys':list(d),"
              "'shapes':{k:list(v.shape) for k,v in d.items()},"
              "'dtypes':{k:str(v.dtype) for k,v in d.items()},"
              "'sums':{k:float(v.astype('f8').sum()) for k,v in d.items()},"
              "'e23':float(d['expcodes'][2,3]),'p81':float(d['posecodes'][8,1])}))\n")
    r = subprocess.run([str(py), "-W", "error", "-c", script, str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["np"] == NP_OLD
    assert out["keys"] == ["shapecode", "expcodes", "posecodes"]
    assert out["shapes"] == {"shapecode": [1, 100], "expcodes": [9, 50], "posecodes": [9, 9]}
    assert set(out["dtypes"].values()) == {"float32"}
    for k, a in zip(("shapecode", "expcodes", "posecodes"), (s, e, p)):
        assert out["sums"][k] == pytest.approx(float(a.astype(np.float64).sum()), abs=1e-9)
    assert out["e23"] == float(e[2, 3]) and out["p81"] == float(p[8, 1])
    # and what numpy 2 writes natively is exactly what numpy 1.24 cannot read (the bug)
    native = tmp_path / "native.pkl"
    native.write_bytes(pickle.dumps({"expcodes": e}, protocol=4))
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        r = subprocess.run([str(py), "-c", "import pickle,sys;pickle.load(open(sys.argv[1],'rb'))", str(native)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "numpy._core" in r.stderr


@pytest.mark.parametrize("kind", ["ints", "lists"])
def test_object_arrays_count_every_element_against_the_item_cap(monkeypatch, kind):
    """A pickle's tree may hold at most MAX_PICKLE_ITEMS items: an object array counts itself and each
    element; {'a': array of k objects} is the dict, its key, the array and k elements: 3 + k items."""
    monkeypatch.setattr(flame_pickle, "MAX_PICKLE_ITEMS", 50)

    def pkl(k):
        arr = np.empty(k, dtype=object)
        for i in range(k):
            arr[i] = i if kind == "ints" else []     # an empty list counts one, as an int does
        return pickle.dumps({"a": arr}, protocol=4)

    assert len(load_pickle_dict(pkl(47), name="ok.pkl")["a"]) == 47            # 50 items: at the cap
    for k in (48, 49, 500):                                                       # 51 and more: refused
        with pytest.raises(FlamePickleError, match="expand to more than 50 items"):
            load_pickle_dict(pkl(k), name="big.pkl")


@pytest.mark.parametrize("which, shape, match", [
    ("s", (1, 99), r"shapecode has shape \(1, 99\)"), ("s", (1, 101), r"shapecode has shape \(1, 101\)"),
    ("e", (4, 50, 1), r"expcodes has shape \(4, 50, 1\)"), ("e", (4, 49), r"expcodes has shape \(4, 49\)"),
    ("e", (50,), r"expcodes has shape \(50,\)"),
    ("e", (4, 51), r"expcodes has shape \(4, 51\)"),
    ("p", (1, 4, 9), r"posecodes has shape \(1, 4, 9\)"), ("p", (4, 8), r"posecodes has shape \(4, 8\)"),
    ("p", (4, 10), r"posecodes has shape \(4, 10\)"), ("p", (3, 9), r"posecodes has shape \(3, 9\)"),
    ("p", (5, 9), r"posecodes has shape \(5, 9\)"),
])
def test_every_wrong_shape_is_refused_on_write_and_on_read(which, shape, match):
    """shapecode holds 100 values, expcodes is (T,50), posecodes (T,9) with the same T: too few or too
    many of anything, or an extra axis, is refused by the writer and by the reader."""
    s, e, p = _codes(T=4)
    arrays = {"s": s, "e": e, "p": p}
    arrays[which] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=match):
        flame_pickle_bytes(arrays["s"], arrays["e"], arrays["p"])
    raw = pickle.dumps({"shapecode": arrays["s"], "expcodes": arrays["e"], "posecodes": arrays["p"]})
    with pytest.raises(FlamePickleError, match=match) as ei:
        load_flame_pickle(raw, name="x.pkl")
    want = {"s": "want (1,100)", "e": "want (T,50)", "p": "want (4,9)"}[which]   # posecodes: T of expcodes
    assert want in str(ei.value)


def test_frames_must_match_exactly():
    data = flame_pickle_bytes(*_codes(T=4))
    assert len(load_flame_pickle(data, frames=4)["expcodes"]) == 4
    for frames in (3, 5):
        with pytest.raises(FlamePickleError, match=f"has 4 frames, expected {frames}"):
            load_flame_pickle(data, name="x.pkl", frames=frames)


def test_pickle_bytes_of_exactly_the_size_cap_load_one_byte_more_is_refused(monkeypatch, tmp_path):
    data = flame_pickle_bytes(*_codes(T=3))
    path = tmp_path / "a.pkl"
    path.write_bytes(data)
    monkeypatch.setattr(flame_pickle, "MAX_PICKLE_BYTES", len(data))
    for src in (data, bytearray(data), memoryview(data), path):
        assert load_flame_pickle(src)["expcodes"].shape == (3, 50)
    monkeypatch.setattr(flame_pickle, "MAX_PICKLE_BYTES", len(data) - 1)
    with pytest.raises(FlamePickleError, match=rf"<bytes>: is {len(data)} bytes, .*at most {len(data) - 1}"):
        load_flame_pickle(data)
    with pytest.raises(FlamePickleError, match=rf"a.pkl: the pickle is {len(data)} bytes"):
        load_flame_pickle(path)


def test_motion59_of_stacked_samples_keeps_the_leading_axes():
    # evaluate.py passes predictions as (S,T,50) / (S,T,9): the 59 values are the last axis
    rng = np.random.default_rng(2)
    e, p = rng.normal(size=(2, 5, 50)), rng.normal(size=(2, 5, 9))
    m = motion59({"expcodes": e, "posecodes": p})
    assert m.shape == (2, 5, 59) and m.dtype == np.float32
    np.testing.assert_array_equal(m[1, 3], np.concatenate([e[1, 3], p[1, 3]]).astype(np.float32))


def test_content_errors_name_the_path_or_bytes_when_no_name_is_given(tmp_path):
    s, e, _ = _codes(T=2)
    raw = pickle.dumps({"shapecode": s, "expcodes": e})
    path = tmp_path / "id0_1_0_0.pkl"
    path.write_bytes(raw)
    with pytest.raises(FlamePickleError, match=r"lacks \['posecodes'\]") as ei:
        load_flame_pickle(path)
    assert ei.value.path == str(path)
    with pytest.raises(FlamePickleError, match=r"lacks \['posecodes'\]") as ei:
        load_flame_pickle(raw)
    assert ei.value.path == "<bytes>"


def test_the_shipped_item_cap_is_one_million():
    # {'a': list of k ints} is the dict, its key, the list and its k items: 3 + k
    assert len(load_pickle_dict(pickle.dumps({"a": [0] * 999_997}, protocol=4))["a"]) == 999_997
    with pytest.raises(FlamePickleError, match="expand to more than 1000000 items"):
        load_pickle_dict(pickle.dumps({"a": [0] * 999_998}, protocol=4))


@pytest.mark.parametrize("key", ["shapecode", "expcodes", "posecodes"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_codes_are_refused_on_write_and_on_read(key, bad):
    s, e, p = _codes(T=3)
    d = {"shapecode": s, "expcodes": e, "posecodes": p}
    d[key] = d[key].copy()
    d[key][0, -1] = bad
    with pytest.raises(ValueError, match=f"{key} holds non-finite values"):
        flame_pickle_bytes(d["shapecode"], d["expcodes"], d["posecodes"])
    with pytest.raises(FlamePickleError, match=f"x.pkl: {key} holds non-finite values"):
        load_flame_pickle(pickle.dumps(d), name="x.pkl")
