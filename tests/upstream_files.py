"""Model files written the way their upstream tools write them, for the loaders' tests.

- EMOCA v2 checkpoints: PyTorch-Lightning 1.4.9's checkpoint dict (EMOCA's environment pins
  pytorch-lightning 1.4.9 and omegaconf ~2.0.6), whose `hyper_parameters` are pickled by the real
  omegaconf 2.0.6 in an isolated, cached virtualenv (`omegaconf_python`).  Torch is not installed
  there (hundreds of MB); instead the venv's pickle bytes of the hyper-parameters are spliced into
  the data.pkl that torch.save writes here (`lightning_checkpoint`), byte for byte except that their
  memo indices are shifted past the outer pickle's.  The result is what torch.save(protocol 2) of
  the same dict in EMOCA's environment gives: same opcodes, same globals, same tensor records.
- FLAME 2020 `generic_model.pkl` and `FLAME_masks.pkl`: Python 2 (cPickle, protocol 2) pickles,
  written by `py2_pickle_bytes` (Python 2 strings as BINSTRING, `__builtin__` / `copy_reg` names,
  numpy 1.x `numpy.core` names) with chumpy's `Ch` / `Select` classes (`fake_chumpy`) and a
  py2-era scipy `scipy.sparse.csc.csc_matrix`.

Test modules import it with `from upstream_files import ...` (tests/ is on sys.path).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

CACHE = Path(os.environ.get("SINGINGHEAD_TEST_CACHE", Path.home() / ".cache" / "singinghead-test"))
OMEGACONF_VERSION = "2.0.6"          # EMOCA's requirements38.txt: omegaconf~=2.0.6
OFFLINE_SIGNS = ("Could not find a version", "NewConnectionError", "Temporary failure in name resolution",
                 "Network is unreachable", "No matching distribution", "Failed to establish a new connection",
                 "ProxyError", "Connection refused")


# ----------------------------------------------------------------------------- cached venv
_OFFLINE: list[str] = []             # set once pip could not reach the registry in this session


def _install_or_skip(py: Path, build: Path, *requirements: str) -> None:
    r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        "--retries", "2", "--timeout", "30", *requirements],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        if any(s in r.stderr for s in OFFLINE_SIGNS):
            _OFFLINE.append(f"pip could not install {' '.join(requirements)} from the registry: "
                            f"{r.stderr.strip()[-300:]}")
            pytest.skip(_OFFLINE[0])
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n{r.stderr}")


def omegaconf_python() -> Path:
    """python of a cached venv with omegaconf 2.0.6 (created once); skip if pip cannot reach the
    registry.  omegaconf 2.0.6 declares `PyYAML>=5.1.*`, which pip >= 24.1 rejects as invalid
    metadata, so pip is held below 24.1 there.  The venv is built in a scratch folder and renamed
    into place, so a half-built one is never used."""
    venv = CACHE / f"omegaconf{OMEGACONF_VERSION.replace('.', '')}"
    py = venv / "bin" / "python"
    if (venv / ".ready").is_file() and py.exists():
        return py
    if _OFFLINE:
        pytest.skip(_OFFLINE[0])
    base = shutil.which("python3.11") or (sys.executable if sys.version_info[:2] <= (3, 11) else None)
    if base is None:
        pytest.skip("omegaconf 2.0.6 needs Python <= 3.11 and no python3.11 was found")
    venv.parent.mkdir(parents=True, exist_ok=True)
    build = venv.with_name(f"{venv.name}.build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(build)], check=True, capture_output=True)
    bpy = build / "bin" / "python"
    pip_version = subprocess.run([str(bpy), "-m", "pip", "--version"], capture_output=True, text=True).stdout
    if tuple(int(x) for x in pip_version.split()[1].split(".")[:2]) >= (24, 1):
        _install_or_skip(bpy, build, "pip<24.1")
    _install_or_skip(bpy, build, f"omegaconf=={OMEGACONF_VERSION}")
    (build / ".ready").write_text(OMEGACONF_VERSION)
    shutil.rmtree(venv, ignore_errors=True)          # a stale, unfinished one
    try:
        os.rename(build, venv)
    except OSError:                                   # another process finished first: use its venv
        shutil.rmtree(build, ignore_errors=True)
    return py


# What EMOCA's DecaModule keeps as hyper-parameters: the stage's sections of the OmegaConf config
# (children of the loaded cfg.yaml, so each pickles its parents with it), as Lightning 1.4's
# `dict(model.hparams)` stores them.
_HPARAMS_SCRIPT = r"""
import json, pickle, sys
import omegaconf
from omegaconf import OmegaConf
cfg = OmegaConf.create(json.loads(sys.stdin.read()))
stage = cfg.detail
if len(sys.argv) > 1:                            # a tampered file: a node's value runs os.system
    import os
    class Payload:
        def __reduce__(self):
            return os.system, ("touch '%s'" % sys.argv[1],)
    stage.model._get_node("n_exp")._val = Payload()
hp = {"model_params": stage.model, "learning_params": stage.learning, "inout_params": stage.inout,
      "stage_name": "detail"}
data = pickle.dumps(hp, protocol=2)              # torch.save's protocol
plain = {} if len(sys.argv) > 1 else {k: OmegaConf.to_container(v, resolve=False) if OmegaConf.is_config(v)
                                     else v for k, v in hp.items()}
sys.stdout.write(json.dumps({"omegaconf": omegaconf.__version__, "pickle": data.hex(), "plain": plain}))
"""


def emoca_hparams_pickle(cfg: dict, payload_marker: Path | None = None) -> tuple[bytes, dict]:
    """(protocol-2 pickle of EMOCA's hyper-parameters as omegaconf 2.0.6 writes them, the same as
    plain containers per `OmegaConf.to_container(resolve=False)`); `cfg` is the cfg.yaml content
    with `detail.{model,learning,inout}` sections.  With `payload_marker`, the value of
    `model_params.n_exp` is replaced by an object whose unpickling runs `touch payload_marker`
    (the plain containers are then not returned)."""
    py = omegaconf_python()
    argv = [str(payload_marker)] if payload_marker is not None else []
    r = subprocess.run([str(py), "-c", _HPARAMS_SCRIPT, *argv], input=json.dumps(cfg), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["omegaconf"] == OMEGACONF_VERSION
    return bytes.fromhex(out["pickle"]), out["plain"]


# ----------------------------------------------------------------------------- Lightning 1.4 ckpt
class _Spliced:
    """Placeholder for an object whose pickle bytes come from another interpreter."""

    def __init__(self, data: bytes):
        self.data = data


_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_MEMO_SHIFT = 1 << 20


def _fragment(data: bytes) -> bytes:
    """The opcodes of a protocol-2 pickle without PROTO and STOP (so they push one object inside
    another pickle), memo indices moved past `_MEMO_SHIFT` so they cannot meet the outer ones."""
    ops = list(pickletools.genops(data))
    out = bytearray()
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name in ("PROTO", "STOP"):
            continue
        if op.name == "FRAME":
            raise ValueError("framed pickles (protocol 4+) cannot be spliced")
        if op.name in _MEMO_PUT:
            out += pickle.LONG_BINPUT + struct.pack("<I", int(arg) + _MEMO_SHIFT)
        elif op.name in _MEMO_GET:
            out += pickle.LONG_BINGET + struct.pack("<I", int(arg) + _MEMO_SHIFT)
        else:
            out += data[pos:end]
    return bytes(out)


class _SplicingPickler(pickle._Pickler):
    """Python's own pickler (the C one cannot be extended per object), writing `_Spliced` bytes."""

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Spliced):
            self.write(_fragment(obj.data))
            return
        super().save(obj, save_persistent_id)


_splicing_pickle_module = types.SimpleNamespace(Pickler=_SplicingPickler, __name__="pickle")


@contextlib.contextmanager
def fake_classes(qualified: dict[str, dict]):
    """Importable classes named as upstream names them (e.g. Lightning's ModelCheckpoint, chumpy's
    Ch) while a file is written: each class's module is a fresh module in sys.modules (a real one of
    that name, e.g. scipy's deprecated `scipy.sparse.csc`, is set aside), restored afterwards so
    that loading cannot import them."""
    made, saved = {}, {}
    for full, attrs in qualified.items():
        mod_name, name = full.rsplit(".", 1)
        parts = mod_name.split(".")
        for i in range(1, len(parts) + 1):
            m = ".".join(parts[:i])
            if m == mod_name or m not in sys.modules:
                if m not in saved:
                    saved[m] = sys.modules.get(m)
                    sys.modules[m] = types.ModuleType(m)
        cls = type(name, (), dict(attrs, __module__=mod_name, __qualname__=name))
        setattr(sys.modules[mod_name], name, cls)
        made[full] = cls
    try:
        yield made
    finally:
        for m, old in saved.items():
            if old is None:
                del sys.modules[m]
            else:
                sys.modules[m] = old


def lightning_checkpoint(path: Path, state: dict, hparams_pickle: bytes | None = None,
                         pickle_module=_splicing_pickle_module) -> Path:
    """`path` written as PyTorch-Lightning 1.4.9's `dump_checkpoint` + torch.save write it for EMOCA:
    epoch, global_step, version, the state dict (an OrderedDict with `_metadata`, as
    Module.state_dict() returns), callbacks keyed by the callback class, Adam's optimizer state,
    lr_schedulers, hparams_name and the hyper-parameters (omegaconf 2.0.6's own pickle bytes)."""
    import torch

    sd = OrderedDict(state)
    sd._metadata = OrderedDict([("", {"version": 1}), ("deca", {"version": 1})])
    first = next(iter(state.values()))
    with fake_classes({"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": {}}) as cls:
        ckpt = {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.4.9", "state_dict": sd,
                "callbacks": {cls["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]: {
                    "monitor": "val_loss", "best_model_score": torch.tensor(0.5),
                    "best_model_path": "/ps/scratch/rdanecek/emoca/detail/checkpoints/x.ckpt",
                    "current_score": torch.tensor(0.5), "dirpath": "/ps/scratch/rdanecek/emoca/detail"}},
                "optimizer_states": [{"state": {0: {"step": 10, "exp_avg": torch.zeros_like(first),
                                                    "exp_avg_sq": torch.zeros_like(first)}},
                                      "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                                        "weight_decay": 0, "amsgrad": False,
                                                        "params": [0]}]}],
                "lr_schedulers": [], "hparams_name": "kwargs"}
        if hparams_pickle is not None:
            ckpt["hyper_parameters"] = _Spliced(hparams_pickle)
        torch.save(ckpt, path, pickle_module=pickle_module, pickle_protocol=2)
    return path


# ----------------------------------------------------------------------------- Python 2 pickles
class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote it: a Python 2 `str` (text and raw bytes alike) is a
    BINSTRING, globals carry Python 2 names (`__builtin__`, `copy_reg`; fix_imports)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if self.proto == 0:                 # STRING: Python 2's repr of the str, quotes included
            self.write(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def py2_pickle_bytes(obj, protocol: int = 2) -> bytes:
    """`obj` pickled the way Python 2.7 + numpy 1.x wrote it (`cPickle.dump(obj, f, protocol)`):
    STRING / BINSTRING for str and array data, `numpy.core.multiarray` names.  ASCII text only."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=protocol, fix_imports=True).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")


@contextlib.contextmanager
def fake_chumpy():
    """chumpy's `Ch` (ch.py: dterms ['x'], __getstate__ = __dict__ minus _parents/_cache) and
    `reordering.Select` (a, idxs, preferred_shape), importable only while a file is written."""

    def ch_getstate(self):
        d = dict(self.__dict__)
        d.pop("_parents", None)
        d.pop("_cache", None)
        return d

    def ch_init(self, x):
        self.x = np.asarray(x)
        self._dirty_vars = set()
        self._itr = None
        self._depends_on_deps = {}
        self._parents, self._cache = {}, {}

    def select_init(self, a, idxs, preferred_shape):
        self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape
        self._dirty_vars, self._itr, self._depends_on_deps = set(), None, {}
        self._parents, self._cache = {}, {}

    with fake_classes({"chumpy.ch.Ch": {"__init__": ch_init, "__getstate__": ch_getstate},
                       "chumpy.reordering.Select": {"__init__": select_init,
                                                    "__getstate__": ch_getstate}}) as made:
        yield made["chumpy.ch.Ch"], made["chumpy.reordering.Select"]


@contextlib.contextmanager
def py2_scipy_csc():
    """A scipy < 1.8 `scipy.sparse.csc.csc_matrix` (how FLAME 2020's J_regressor is pickled):
    state = its __dict__ (_shape, maxprint, indptr, indices, data)."""
    with fake_classes({"scipy.sparse.csc.csc_matrix": {}}) as made:
        yield made["scipy.sparse.csc.csc_matrix"]


def old_csc(cls, dense: np.ndarray):
    m = scipy.sparse.csc_matrix(dense)
    obj = cls.__new__(cls)
    obj.__dict__.update({"_shape": tuple(m.shape), "maxprint": 50, "indptr": m.indptr.astype(np.int32),
                         "indices": m.indices.astype(np.int32), "data": m.data})
    return obj


def globals_in(data: bytes) -> set[str]:
    """'module name' of every GLOBAL opcode in a pickle."""
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}

