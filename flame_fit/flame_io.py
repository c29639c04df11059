"""Chumpy-free, code-free readers for the official FLAME files and DECA/EMOCA's landmark embedding.

FLAME 2020 `generic_model.pkl` and FLAME 2023 `flame2023.pkl` are Python-2 pickles whose arrays
are partly chumpy objects (`chumpy.ch.Ch`, `chumpy.reordering.Select`) and whose `J_regressor` is
a scipy.sparse csc matrix.  chumpy does not import on numpy >= 1.24, so those classes are replaced
by inert stand-ins that only keep the pickled state, and `_resolve` turns the state back into
numpy arrays.

A pickle can name any importable callable and have it called (`os.system`, `builtins.eval`), and
these files live in shared, writable folders (processed/_models), so every pickle here is read by
`_GuardedUnpickler`, an allow-list: numpy arrays / dtypes / scalars, plain builtin containers,
chumpy and scipy.sparse stand-ins (never imported), and for the landmark embedding torch tensors
(rebuilt through torch's own weights-only loader).  Any other global is refused with a
FlameFileError naming the file and the global, before anything is called.  `.npy` files holding
objects are read the same way: the header with numpy.lib.format, the payload with the guarded
unpickler.  The procedural head model is written in the same format and read by the same code.
"""
from __future__ import annotations

import io
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import torch
import torch._utils

FLAME_PARENTS = (-1, 0, 1, 1, 1)           # root, neck, jaw, left eye, right eye
N_SHAPE_SPACE = 300                         # identity columns of shapedirs; expression starts here
N_DYNAMIC_ROWS = 79                         # yaw rows of the dynamic contour tables
N_CONTOUR = 17
N_STATIC = 51

REQUIRED_MODEL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
EMBEDDING_KEYS = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx",
                  "dynamic_lmk_bary_coords", "full_lmk_faces_idx", "full_lmk_bary_coords")


class FlameFileError(RuntimeError):
    """A FLAME model or landmark file that cannot be used: names the file, the problem and the fix.

    `tasks` wraps it into its own error type; flame_fit itself does not depend on tasks.
    """

    def __init__(self, path: str | Path, problem: str, fix: str = ""):
        self.path, self.problem, self.fix = str(path), problem, fix
        msg = f"{self.path}: {problem}"
        if fix:
            msg += f" -- fix: {fix}"
        super().__init__(msg)


class _Stub:
    """Stands in for every chumpy.* and scipy.sparse.* class found in the pickle."""

    _kind = "?"

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}     # (dict, slots) form
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


_STUB_CLASSES: dict[str, type] = {}


def _stub_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _STUB_CLASSES:
        _STUB_CLASSES[key] = type(name, (_Stub,), {"_kind": key})
    return _STUB_CLASSES[key]


# Globals a FLAME / landmark / mask pickle may name, as (module, name) exactly as written in the
# file.  Python-2 files name `__builtin__` and `copy_reg`; numpy < 2 files `numpy.core`.
_NUMPY_GLOBALS = {
    (mod, name)
    for core in ("numpy.core", "numpy._core")
    for mod, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"),
                      (f"{core}.numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype")}
_BUILTIN_NAMES = frozenset({"dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str",
                            "int", "float", "complex", "bool", "slice", "range", "object"})
_OTHER_GLOBALS = {
    ("_codecs", "encode"),                 # how protocol-2 pickles written by Python 3 store bytes
    ("copyreg", "_reconstructor"),         # protocol 0/1 object creation; its class args pass here too
    ("copy_reg", "_reconstructor"),
    ("collections", "OrderedDict"),
}
# torch tensors (DECA's landmark_embedding.npy): rebuilt from storages that torch's weights-only
# loader reads; `torch.storage._load_from_bytes` itself would call torch.load(weights_only=False).
_TORCH_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
                  ("torch.storage", "_load_from_bytes")}


def _torch_storage_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _allowed_global(module: str, name: str, allow_torch: bool):
    """The object a pickle's global (module, name) stands for, or None when it is not allowed."""
    top = module.split(".")[0]
    if top == "chumpy" or module.startswith("scipy.sparse"):
        return _stub_class(module, name)                   # inert stand-in; the module is never imported
    if (module, name) in _NUMPY_GLOBALS:
        numpy2 = int(np.__version__.split(".")[0]) >= 2
        if module.startswith("numpy.core") and numpy2:
            module = "numpy._core" + module[len("numpy.core"):]   # avoids numpy 2's deprecation shim
        elif module.startswith("numpy._core") and not numpy2:
            module = "numpy.core" + module[len("numpy._core"):]   # a file written by numpy 2
        return getattr(__import__(module, fromlist=[name]), name)
    if module in ("builtins", "__builtin__") and name in _BUILTIN_NAMES:
        return getattr(__import__("builtins"), name)
    if (module, name) in _OTHER_GLOBALS:
        return getattr(__import__({"copy_reg": "copyreg"}.get(module, module), fromlist=[name]), name)
    if allow_torch and (module, name) in _TORCH_GLOBALS:
        if name == "_load_from_bytes":
            return _torch_storage_from_bytes
        return getattr(torch._utils, name)
    return None


class _GuardedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only allow-listed globals (see `_allowed_global`); any other
    global raises FlameFileError naming the file and the global before it is imported or called."""

    def __init__(self, file, path: str | Path, what: str, allow_torch: bool):
        super().__init__(file, encoding="latin1")          # Python-2 pickles (FLAME 2020)
        self._path, self._what, self._allow_torch = Path(path), what, allow_torch

    def find_class(self, module, name):
        obj = _allowed_global(module, name, self._allow_torch)
        if obj is None:
            raise FlameFileError(
                self._path,
                f"refused to load {self._what}: the pickle refers to '{module}.{name}', which is not "
                "array data (only numpy arrays, scipy.sparse matrices, chumpy arrays and plain "
                "containers are allowed; loading it could run code)",
                "replace the file with the original download (or, for the procedural model, delete "
                "its folder; it is regenerated); do not load files of unknown origin")
        return obj

    def persistent_load(self, pid):
        raise FlameFileError(self._path, f"refused to load {self._what}: the pickle uses persistent ids "
                             "(a torch.save file?), which a FLAME file never does",
                             "use the .pkl / .npy from the FLAME or DECA download")


def _guarded_load(path: Path, what: str, allow_torch: bool = False):
    """The object in a pickle file or in an object-dtype .npy file, through `_GuardedUnpickler`.

    Plain (non-object) .npy files are read without any unpickling. Only a regular file is opened
    (a FIFO would block the open, a link to a device never end).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise FlameFileError(path, f"{what} is not a regular file (a FIFO, device or folder)",
                             "point the setting at the model file itself")
    with open(path, "rb") as f:
        if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            f.seek(0)
            return _GuardedUnpickler(f, path, what, allow_torch).load()
        f.seek(0)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise FlameFileError(path, f".npy format version {version} is not supported here",
                                 "save the file with numpy's default format (np.save)")
        if not dtype.hasobject:
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        return _GuardedUnpickler(f, path, what, allow_torch).load()   # what np.load would pickle.load


def _sparse_to_dense(d: dict, kind: str) -> np.ndarray:
    shape = d.get("_shape", d.get("shape"))
    data, indices, indptr = (np.asarray(d[k]) for k in ("data", "indices", "indptr"))
    nr, nc = (int(s) for s in shape)
    dense = np.zeros((nr, nc), dtype=np.float64)
    csr = "csr" in kind.lower()
    outer = nr if csr else nc
    for j in range(outer):
        sl = slice(int(indptr[j]), int(indptr[j + 1]))
        if csr:
            dense[j, indices[sl]] += data[sl]
        else:
            dense[indices[sl], j] += data[sl]
    return dense


def _resolve(obj, path: Path, key: str):
    """Stub objects -> numpy arrays (chumpy Ch, chumpy Select, scipy csc/csr); others unchanged."""
    if not isinstance(obj, _Stub):
        return obj
    d = obj.__dict__
    if "indptr" in d and "indices" in d:
        return _sparse_to_dense(d, obj._kind)
    if "x" in d:                                           # chumpy.ch.Ch keeps its value in 'x'
        return np.asarray(_resolve(d["x"], path, key))
    if "a" in d and "idxs" in d:                           # chumpy.reordering.Select
        flat = np.asarray(_resolve(d["a"], path, key)).ravel()[np.asarray(d["idxs"]).ravel()]
        shape = d.get("preferred_shape")
        return flat.reshape(shape) if shape is not None else flat
    raise FlameFileError(path, f"entry '{key}' is a {obj._kind} object this reader cannot evaluate "
                               f"(state keys {sorted(k for k in d if not k.startswith('_'))})",
                         "convert the file once with chumpy (save each entry as a numpy array) or use "
                         "the official FLAME 2020/2023 download")


def read_flame_pickle(path: str | Path) -> dict:
    """The raw dict of a FLAME pickle with every chumpy / scipy.sparse entry turned into numpy."""
    path = Path(path)
    if not path.is_file():
        raise FlameFileError(path, "FLAME model file not found",
                             "download FLAME 2020 (generic_model.pkl) from flame.is.tue.mpg.de and set "
                             "[flame] model_path, or leave it empty for the procedural head model")
    try:
        raw = _guarded_load(path, "this FLAME model")
    except FlameFileError:
        raise
    except Exception as exc:  # truncated / not a pickle / wrong file
        raise FlameFileError(path, f"not a readable FLAME pickle ({type(exc).__name__}: {exc})",
                             "point [flame] model_path at generic_model.pkl or flame2023.pkl from the "
                             "FLAME download (re-download if the file is truncated)") from exc
    if not isinstance(raw, dict):
        raise FlameFileError(path, f"pickle holds a {type(raw).__name__}, not a dict of FLAME arrays",
                             "use generic_model.pkl / flame2023.pkl from the FLAME download")
    return {k: _resolve(v, path, k) for k, v in raw.items()}


def load_flame_arrays(path: str | Path) -> dict:
    """Checked numpy arrays of a FLAME model file.

    Returns v_template (V,3) f64, faces (F,3) i64, shapedirs (V,3,K) f64 (K >= 350),
    posedirs (V,3,36), J_regressor (5,V) dense, parents (5,) i64 with parents[0] = -1,
    weights (V,5), plus 'procedural' (bool) and 'description' (str).
    """
    path = Path(path)
    raw = read_flame_pickle(path)
    missing = [k for k in REQUIRED_MODEL_KEYS if k not in raw]
    if missing:
        raise FlameFileError(path, f"missing FLAME entries {missing} (has {sorted(raw)})",
                             "use generic_model.pkl / flame2023.pkl from the FLAME download")

    def arr(key, dtype=np.float64):
        try:
            return np.asarray(raw[key], dtype=dtype)
        except Exception as exc:
            raise FlameFileError(path, f"entry '{key}' is not numeric ({exc})",
                                 "re-download the model") from exc

    v_template, faces = arr("v_template"), arr("f", np.int64)
    shapedirs, posedirs = arr("shapedirs"), arr("posedirs")
    J_regressor, weights = arr("J_regressor"), arr("weights")
    kintree = arr("kintree_table", np.int64)

    def check(ok, what):
        if not ok:
            raise FlameFileError(path, f"unexpected array layout: {what}",
                                 "use the official FLAME 2020/2023 pickle (or `singinghead make-head-model`)")

    check(v_template.ndim == 2 and v_template.shape[1] == 3 and v_template.shape[0] > 0,
          f"v_template {v_template.shape}, want (V,3)")
    V = v_template.shape[0]
    check(faces.ndim == 2 and faces.shape[1] == 3, f"f {faces.shape}, want (F,3)")
    check(faces.size > 0 and faces.min() >= 0 and faces.max() < V, f"face indices outside [0,{V})")
    check(shapedirs.ndim == 3 and shapedirs.shape[:2] == (V, 3),
          f"shapedirs {shapedirs.shape}, want ({V},3,K)")
    check(shapedirs.shape[2] >= N_SHAPE_SPACE + 50,
          f"shapedirs has {shapedirs.shape[2]} columns; need 300 identity + at least 50 expression")
    check(kintree.shape == (2, 5), f"kintree_table {kintree.shape}, want (2,5)")
    parents = kintree[0].copy()
    parents[0] = -1
    check(tuple(int(p) for p in parents) == FLAME_PARENTS,
          f"joint parents {parents.tolist()}, want {list(FLAME_PARENTS)}")
    check(posedirs.shape == (V, 3, 36), f"posedirs {posedirs.shape}, want ({V},3,36)")
    check(J_regressor.shape == (5, V), f"J_regressor {J_regressor.shape}, want (5,{V})")
    check(weights.shape == (V, 5), f"weights {weights.shape}, want ({V},5)")
    for key, a in (("v_template", v_template), ("shapedirs", shapedirs), ("posedirs", posedirs),
                   ("J_regressor", J_regressor), ("weights", weights)):
        check(np.isfinite(a).all(), f"{key} has non-finite values")
    bs_type = raw.get("bs_type", "lrotmin")
    check(bs_type == "lrotmin", f"bs_type {bs_type!r}; only the 'lrotmin' pose mapping exists")
    return {"v_template": v_template, "faces": faces, "shapedirs": shapedirs, "posedirs": posedirs,
            "J_regressor": J_regressor, "parents": parents, "weights": weights,
            "procedural": bool(raw.get("procedural", False)),
            "description": str(raw.get("description", ""))}


def _to_numpy(x):
    if hasattr(x, "detach"):                                # torch tensors in DECA's file
        return x.detach().cpu().numpy()
    return np.asarray(x)


def load_landmark_embedding(path: str | Path, n_faces: int | None = None) -> dict:
    """DECA/EMOCA `landmark_embedding.npy` (0-d object array of a dict; the dynamic entries are
    pickled torch tensors, rebuilt by torch's weights-only loader) or an `.npz` with the same keys.
    The pickled payload goes through the allow-list of `_GuardedUnpickler`.

    Returns static_lmk_faces_idx (51,) i64, static_lmk_bary_coords (51,3), dynamic_lmk_faces_idx
    (79,17) i64, dynamic_lmk_bary_coords (79,17,3), full_lmk_faces_idx (68,) i64,
    full_lmk_bary_coords (68,3) (bary as float64).  `n_faces` checks the face ids.
    """
    path = Path(path)
    fix = ("use data/landmark_embedding.npy from DECA/EMOCA (or the one `singinghead make-head-model` "
           "writes for the procedural model)")
    if not path.is_file():
        raise FlameFileError(path, "landmark embedding file not found", fix)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        else:
            loaded = _guarded_load(path, "this landmark embedding", allow_torch=True)
            d = (loaded.item() if isinstance(loaded, np.ndarray) and loaded.dtype == object
                 and loaded.ndim == 0 else loaded)
            if not isinstance(d, dict):
                raise FlameFileError(path, "the .npy does not hold a dict of landmark arrays", fix)
    except FlameFileError:
        raise
    except Exception as exc:
        raise FlameFileError(path, f"cannot read the landmark embedding ({type(exc).__name__}: {exc})",
                             fix) from exc
    missing = [k for k in EMBEDDING_KEYS if k not in d]
    if missing:
        raise FlameFileError(path, f"missing entries {missing} (has {sorted(d)})", fix)
    out = {k: _to_numpy(d[k]) for k in EMBEDDING_KEYS}
    for k in out:
        out[k] = out[k].astype(np.int64 if "faces_idx" in k else np.float64)
    out["full_lmk_faces_idx"] = out["full_lmk_faces_idx"].reshape(-1)
    out["full_lmk_bary_coords"] = out["full_lmk_bary_coords"].reshape(-1, 3)
    want = {"static_lmk_faces_idx": (N_STATIC,), "static_lmk_bary_coords": (N_STATIC, 3),
            "dynamic_lmk_faces_idx": (N_DYNAMIC_ROWS, N_CONTOUR),
            "dynamic_lmk_bary_coords": (N_DYNAMIC_ROWS, N_CONTOUR, 3),
            "full_lmk_faces_idx": (68,), "full_lmk_bary_coords": (68, 3)}
    for k, shape in want.items():
        if out[k].shape != shape:
            raise FlameFileError(path, f"{k} has shape {out[k].shape}, want {shape}", fix)
    for k in ("static_lmk_faces_idx", "dynamic_lmk_faces_idx", "full_lmk_faces_idx"):
        if out[k].min() < 0 or (n_faces is not None and out[k].max() >= n_faces):
            raise FlameFileError(path, f"{k} has face ids outside [0,{n_faces}) of the model",
                                 "use the landmark embedding that belongs to this model's topology")
    return out


def load_flame_masks(path: str | Path, n_vertices: int | None = None) -> dict[str, np.ndarray]:
    """FLAME's `FLAME_masks.pkl` (a pickled dict region -> vertex ids, e.g. 'face', 'lips',
    'left_eyeball') through the allow-list unpickler; also accepts the dict saved as an object .npy.

    Returns {region: (N,) int64 vertex ids}; `n_vertices` checks the ids against the model.
    """
    path = Path(path)
    fix = "use FLAME_masks.pkl from the FLAME vertex-masks download (flame.is.tue.mpg.de)"
    if not path.is_file():
        raise FlameFileError(path, "FLAME masks file not found", fix)
    try:
        raw = _guarded_load(path, "this FLAME masks file")
    except FlameFileError:
        raise
    except Exception as exc:
        raise FlameFileError(path, f"not a readable masks pickle ({type(exc).__name__}: {exc})", fix) from exc
    if isinstance(raw, np.ndarray) and raw.dtype == object and raw.ndim == 0:
        raw = raw.item()
    if not isinstance(raw, dict) or not raw:
        raise FlameFileError(path, f"holds a {type(raw).__name__}, not a dict of region -> vertex ids", fix)
    out = {}
    for region, ids in raw.items():
        a = np.asarray(ids)
        if not isinstance(region, str) or a.ndim != 1 or a.dtype.kind not in "iu":
            raise FlameFileError(path, f"region {region!r} is not a 1-D integer array of vertex ids "
                                       f"({a.dtype}, shape {a.shape})", fix)
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or (n_vertices is not None and a.max() >= n_vertices)):
            raise FlameFileError(path, f"region {region!r} has vertex ids outside [0,{n_vertices})",
                                 "use the masks file that belongs to this model's topology")
        out[region] = a
    return out
