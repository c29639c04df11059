"""The published `flame_seqs/<id>.pkl` format: writing it so every numpy reads it, reading it safely.

A flame_seqs pickle is the dict {'shapecode' (1,100), 'expcodes' (T,50), 'posecodes' (T,9)},
float32, posecodes = global 3 | neck 3 | jaw 3 (axis-angle, radians).

Why not plain `pickle.dumps`: numpy 2 names its array reconstructor `numpy._core.multiarray.
_reconstruct`, a module numpy < 2 does not have, so numpy 1.x fails with "No module named
'numpy._core'". Every numpy from 1.x to 2.x resolves `numpy.core.multiarray._reconstruct`
(numpy 2 keeps that name, without a warning, precisely so old pickles load). So we pickle with the
standard pickler at protocol 3 (Python >= 3.0; unlike protocol 4 it has no length-prefixed frames)
and then rewrite the names of GLOBAL opcodes `numpy._core.X` -> `numpy.core.X`, locating the
opcodes with `pickletools.genops` (never a byte search, which could hit array data). Everything
else in the stream (dtype state, raw little-endian bytes) is what numpy 1.x writes itself.

Reading goes through an allow-list unpickler: a downloaded .pkl must not run code.
"""
from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

import numpy as np

from tasks.common.bounded import MAX_PICKLE_BYTES, read_bounded
from tasks.common.errors import PipelineInputError

PROTOCOL = 3
# A pickle's dict, lists and object arrays, walked as a tree, may hold at most this many items
# (numpy arrays count one each; their bytes are bounded by MAX_PICKLE_BYTES): the arrays of a
# clip or a prediction written as nested lists (S*T rows) stay far below it.
MAX_PICKLE_ITEMS = 1_000_000
KEYS = ("shapecode", "expcodes", "posecodes")
N_SHAPE, N_EXP, N_POSE = 100, 50, 9

# Globals a numpy-array pickle needs, under both numpy 1.x and 2.x names, plus the plain
# containers; `_codecs.encode` is how protocol-2 pickles written by Python 3 carry bytes.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    # Python 2 pickles name builtins '__builtin__'; the unpickler maps them with fix_imports.
}
# numpy 2 -> names that exist in numpy 1.20 .. 2.x
_PORTABLE = {
    "numpy._core.multiarray _reconstruct": "numpy.core.multiarray _reconstruct",
    "numpy._core.multiarray scalar": "numpy.core.multiarray scalar",
}


class FlamePickleError(PipelineInputError):
    """A flame_seqs-style pickle that cannot be read or does not hold what it should."""


# ----------------------------------------------------------------------------- writing
def _portable(data: bytes) -> bytes:
    """Rewrite GLOBAL opcodes naming numpy 2 private modules to their numpy 1.x names."""
    out, last = [], 0
    ops = list(pickletools.genops(data))
    for i, (op, arg, pos) in enumerate(ops):
        if op.name != "GLOBAL" or arg not in _PORTABLE:
            continue
        end = ops[i + 1][2]
        module, name = _PORTABLE[arg].split(" ")
        out += [data[last:pos], b"c", module.encode() + b"\n" + name.encode() + b"\n"]
        last = end
    out.append(data[last:])
    return b"".join(out)


def _check_codes(shapecode, expcodes, posecodes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(shapecode, dtype=np.float32)
    e = np.asarray(expcodes, dtype=np.float32)
    p = np.asarray(posecodes, dtype=np.float32)
    if s.size != N_SHAPE:
        raise ValueError(f"shapecode has shape {s.shape}, want (1,{N_SHAPE})")
    if e.ndim != 2 or e.shape[1] != N_EXP:
        raise ValueError(f"expcodes has shape {e.shape}, want (T,{N_EXP})")
    if p.ndim != 2 or p.shape != (e.shape[0], N_POSE):
        raise ValueError(f"posecodes has shape {p.shape}, want ({e.shape[0]},{N_POSE})")
    for k, a in zip(KEYS, (s, e, p)):
        if not np.isfinite(a).all():
            raise ValueError(f"{k} holds non-finite values")
    # '<f4' explicitly: the raw bytes in the pickle are then the same on every machine.
    return tuple(np.ascontiguousarray(a, dtype="<f4") for a in (s.reshape(1, N_SHAPE), e, p))


def flame_pickle_bytes(shapecode, expcodes, posecodes) -> bytes:
    """The flame_seqs .pkl bytes of shapecode (1,100), expcodes (T,50), posecodes (T,9).

    float32, C order; same arrays -> same bytes; loads with plain `pickle.load` under numpy
    1.20 .. 2.x on Python >= 3.0.
    """
    s, e, p = _check_codes(shapecode, expcodes, posecodes)
    data = pickle.dumps({"shapecode": s, "expcodes": e, "posecodes": p}, protocol=PROTOCOL)
    return _portable(data)


# ----------------------------------------------------------------------------- reading
class _Refused(pickle.UnpicklingError):
    pass


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load {module}.{name} (only numpy arrays and dicts "
                                     f"are allowed in a dataset pickle)")


def _read(data_or_path) -> tuple[bytes, str]:
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        data = bytes(data_or_path)
        if len(data) > MAX_PICKLE_BYTES:
            raise FlamePickleError("<bytes>", f"is {len(data)} bytes, more than a pickle of this kind holds "
                                   f"(at most {MAX_PICKLE_BYTES})", "re-download or re-extract the release")
        return data, "<bytes>"
    path = Path(data_or_path)
    try:
        return read_bounded(path, MAX_PICKLE_BYTES, "the pickle"), str(path)
    except PipelineInputError as exc:
        raise FlamePickleError(path, exc.problem,
                               "check the path; re-download or re-extract the release") from exc


def _expanded_items(obj, cap: int) -> int:
    """How many containers, items and array elements of an object array `obj` expands to when
    walked as a tree (a list shared n times counts n times, as np.asarray would copy it), up to
    `cap` + 1: a few-MB pickle of lists referring to lists can otherwise expand to billions."""
    n, stack = 0, [obj]
    while stack and n <= cap:
        o = stack.pop()
        n += 1
        if isinstance(o, dict):
            stack.extend(o.values())
            stack.extend(o.keys())
        elif isinstance(o, (list, tuple)):
            n += len(o)         # items counted here; only containers among them are walked on
            stack.extend(x for x in o if isinstance(x, (list, tuple, dict, np.ndarray)))
        elif isinstance(o, np.ndarray) and o.dtype.hasobject:
            stack.extend(o.ravel().tolist()[:cap + 1 - n])
    return n


def load_pickle_dict(data_or_path, name: str | None = None, encoding: str = "ASCII") -> dict:
    """A pickled dict of numpy arrays (bytes or a path) through the allow-list unpickler.

    `name` names the source in errors (e.g. 'flame_seqs.zip:id0_1_0_0.pkl'); `encoding` as for
    pickle.load ('latin1' for Python 2 pickles such as FLAME_masks.pkl).
    """
    data, src = _read(data_or_path)
    name = name or src
    try:
        obj = _AllowListUnpickler(io.BytesIO(data), encoding=encoding).load()
    except _Refused as exc:
        raise FlamePickleError(name, f"not loadable: {exc}",
                               "this file is not a plain pickle of numpy arrays; re-download it "
                               "from a trusted source") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, UnicodeDecodeError) as exc:
        raise FlamePickleError(name, f"not a readable pickle ({type(exc).__name__}: {exc})",
                               "the file is truncated or corrupt; re-download or re-extract it") from exc
    if not isinstance(obj, dict):
        raise FlamePickleError(name, f"holds a {type(obj).__name__}, expected a dict",
                               "use a flame_seqs-style pickle")
    if _expanded_items(obj, MAX_PICKLE_ITEMS) > MAX_PICKLE_ITEMS:
        raise FlamePickleError(name, f"its nested lists expand to more than {MAX_PICKLE_ITEMS} items (lists "
                               "referring to lists many times over)", "store the values as numpy arrays")
    return obj


def load_flame_pickle(data_or_path, name: str | None = None, frames: int | None = None) -> dict:
    """A flame_seqs .pkl -> {'shapecode' (1,100), 'expcodes' (T,50), 'posecodes' (T,9)} float32.

    Checks the keys and shapes (and T == `frames` when given); errors name the file.
    """
    d = load_pickle_dict(data_or_path, name)
    name = name or (str(data_or_path) if not isinstance(data_or_path, (bytes, bytearray, memoryview))
                    else "<bytes>")
    missing = [k for k in KEYS if k not in d]
    if missing:
        raise FlamePickleError(name, f"lacks {missing} (has {sorted(map(str, d))})",
                               "a flame_seqs pickle holds 'shapecode', 'expcodes' and 'posecodes'")
    try:
        s, e, p = _check_codes(d["shapecode"], d["expcodes"], d["posecodes"])
    except ValueError as exc:
        raise FlamePickleError(name, str(exc), "re-export this clip from the release") from exc
    if frames is not None and len(e) != frames:
        raise FlamePickleError(name, f"has {len(e)} frames, expected {frames}",
                               "re-export this clip from the release")
    return {"shapecode": s, "expcodes": e, "posecodes": p}


def motion59(d: dict) -> np.ndarray:
    """flame_seqs dict -> motion (T,59) float32 in the official order exp50 | global3 | neck3 | jaw3
    (what SingingHead's metrics/calculate_3d_metrics.py slices: [:50], [50:56], [56:59])."""
    return np.concatenate([d["expcodes"], d["posecodes"]], axis=-1).astype(np.float32)
