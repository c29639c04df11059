"""EMOCA v2 inference, re-implemented natively: the DECA coarse encoder (E_flame) and EMOCA's
expression encoder (E_expression), loaded from the official Lightning checkpoint.

Installing EMOCA's research code (`gdl`: Python 3.8, pytorch3d, omegaconf, Lightning) is not
needed: only the two ResNet-50 encoders are used at inference, and their parameter names are
torchvision's, so the checkpoint's `deca.E_flame.*` / `deca.E_expression.*` keys map onto the
modules here one to one. Facts and their sources: `shared/notes/flame_emoca.md` sections C, D, E
(EMOCA gdl/models/{DecaEncoder,ResNet,DECA,IO}.py, gdl/datasets/ImageTestDataset.py).

Pipeline per frame: 68 landmarks -> EMOCA crop (kpt68 box, x1.1, x1.25, 224x224 bilinear, RGB in
[0,1], no mean/std) -> E_flame (236 = shape 100 | tex 50 | exp 50 | pose 6 | cam 3 | light 27)
and E_expression (50 | 53 | 56) -> merge as `ExpDECA.decompose_code` -> the per-crop camera is
converted to the portrait-frame camera (`crop_cam_to_portrait`).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision
import yaml

from tasks.common.bounded import MAX_JSON_BYTES, MAX_MODEL_BYTES, check_regular_file, read_bounded
from tasks.common.errors import ModelFileError, PipelineInputError
from tasks.common.provenance import model_record

log = logging.getLogger("singinghead")

CROP_SIZE = 224
CROP_SCALE = 1.25          # ImageTestDataset scaling_factor
KPT68_OLD_SIZE = 1.1       # ImageDatasetHelpers.bbox2point, type 'kpt68'
SIZES = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}  # E_flame code order
N_FLAME_CODE = sum(SIZES.values())  # 236
FEATURE_SIZE = 2048
FIX_DOWNLOAD = ("point [emoca] checkpoint_dir at an unpacked EMOCA v2 model folder (e.g. "
                "EMOCA_v2_lr_mse_20 from EMOCA's download_assets.sh) holding cfg.yaml and "
                "detail/checkpoints/*.ckpt, or leave it empty for the weight-free estimator")


# ----------------------------------------------------------------------------- network
class ResNet50Features(torchvision.models.ResNet):
    """DECA's ResNet-50 backbone: torchvision's layers and names, no `fc`, AvgPool2d(7) -> (B, 2048).

    AvgPool2d(7, stride=1) (not adaptive) is what DECA uses, so the input must be 224x224.
    """

    def __init__(self):
        super().__init__(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3])
        del self.fc
        self.avgpool = nn.AvgPool2d(7, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 224, 224) -> (B, 2048)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


def _mlp_head(outsize: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(FEATURE_SIZE, 1024), nn.ReLU(), nn.Linear(1024, outsize))


class ResnetEncoder(nn.Module):
    """DECA/EMOCA `ResnetEncoder`: `encoder` (ResNet-50 features) + `layers` (2048-1024-outsize MLP)."""

    def __init__(self, outsize: int):
        super().__init__()
        self.encoder = ResNet50Features()
        self.layers = _mlp_head(outsize)

    def forward(self, images: torch.Tensor, output_features: bool = False):
        """images (B, 3, 224, 224) -> (B, outsize) [and features (B, 2048)]."""
        features = self.encoder(images)
        out = self.layers(features)
        return (out, features) if output_features else out


@dataclass(frozen=True)
class ExpressionLayout:
    """What E_expression predicts beyond the 50 expression coefficients (cfg.yaml `detail.model`)."""
    n_exp: int = 50
    global_pose: bool = False   # exp_deca_global_pose
    jaw_pose: bool = False      # exp_deca_jaw_pose
    parallel: bool = False      # expression_backbone == 'deca_parallel' (head on E_flame's features)

    @property
    def width(self) -> int:
        """ExpDECA._reconfigure: n_exp (+6 with both flags, +3 with exactly one)."""
        return self.n_exp + 3 * int(self.global_pose) + 3 * int(self.jaw_pose)


class EmocaEncoder(nn.Module):
    """E_flame + E_expression, merged the way `ExpDECA.decompose_code` merges them."""

    def __init__(self, layout: ExpressionLayout):
        super().__init__()
        self.layout = layout
        self.E_flame = ResnetEncoder(N_FLAME_CODE)
        if layout.parallel:
            # SecondHeadResnet: a second MLP on E_flame's features, no backbone of its own.
            self.E_expression_head = _mlp_head(layout.width)
        else:
            self.E_expression = ResnetEncoder(layout.width)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, 224, 224) float in [0, 1] ->
        shape (B,100), tex (B,50), exp (B,50), pose (B,6) = global aa | jaw aa, cam (B,3) = [s, tx, ty]
        (per-crop), light (B,9,3)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, CROP_SIZE, CROP_SIZE):
            raise ValueError(f"EMOCA wants (B, 3, {CROP_SIZE}, {CROP_SIZE}) images, "
                             f"got {tuple(images.shape)}")
        if self.layout.parallel:
            code, feats = self.E_flame(images, output_features=True)
            exp_code = self.E_expression_head(feats)
        else:
            code = self.E_flame(images)
            exp_code = self.E_expression(images)
        return merge_codes(code, exp_code, self.layout)


def split_flame_code(code: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 236) -> shape, tex, exp, pose, cam, light (B, 9, 3) (DECA.decompose_code)."""
    if code.shape[-1] != N_FLAME_CODE:
        raise ValueError(f"E_flame code must have {N_FLAME_CODE} values, got {code.shape[-1]}")
    out, start = {}, 0
    for name, n in SIZES.items():
        out[name] = code[:, start:start + n]
        start += n
    out["light"] = out["light"].reshape(code.shape[0], 9, 3)
    return out


def merge_codes(code: torch.Tensor, exp_code: torch.Tensor,
                layout: ExpressionLayout) -> dict[str, torch.Tensor]:
    """ExpDECA.decompose_code: expression (and global/jaw pose when flagged) come from E_expression,
    everything else from E_flame. code (B, 236), exp_code (B, layout.width)."""
    out = split_flame_code(code)
    n = layout.n_exp
    if exp_code.shape[-1] != layout.width:
        raise ValueError(f"E_expression code must have {layout.width} values, got {exp_code.shape[-1]}")
    out["exp"] = exp_code[:, :n]
    extra = exp_code[:, n:]
    if layout.global_pose and layout.jaw_pose:
        out["pose"] = extra
    elif layout.global_pose:
        out["pose"] = torch.cat([extra, out["pose"][:, 3:]], dim=1)
    elif layout.jaw_pose:
        out["pose"] = torch.cat([out["pose"][:, :3], extra], dim=1)
    return out


# ----------------------------------------------------------------------------- checkpoint files
def find_checkpoint(model_dir: str | Path, stage: str = "detail") -> Path:
    """EMOCA's `mode='best'` selection (gdl/models/IO.py): among `<dir>/<stage>/checkpoints/**/*.ckpt`
    (sorted), skip `last`, take the smallest number after the last '=' in the stem (later wins ties).
    Where no name carries a number, `last.ckpt` is used (EMOCA would fail there).

    The coarse encoders are frozen in the detail stage, so a folder with only `coarse/` checkpoints
    holds the same E_flame/E_expression; it is used when `detail/` has none.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFileError(model_dir, "EMOCA model folder does not exist", FIX_DOWNLOAD)
    for st in (stage, "coarse"):
        ckpts = sorted((model_dir / st / "checkpoints").glob("**/*.ckpt"))
        best, best_val = None, None
        for p in ckpts:
            if p.stem == "last":
                continue
            try:
                val = float(p.stem.split("=")[-1])
            except ValueError:
                continue
            if best_val is None or val <= best_val:
                best, best_val = p, val
        if best is None:
            best = next((p for p in ckpts if p.stem == "last"), None)
        if best is not None:
            return best
    raise ModelFileError(model_dir / stage / "checkpoints", "no *.ckpt checkpoint found", FIX_DOWNLOAD)


def read_model_config(model_dir: str | Path) -> dict:
    """`detail.model` (or `coarse.model`) of the model folder's cfg.yaml (OmegaConf YAML, read
    with yaml.safe_load: interpolations stay strings, which the flags used here never are)."""
    path = Path(model_dir) / "cfg.yaml"
    if not path.is_file():
        raise ModelFileError(path, "EMOCA cfg.yaml is missing (it says which pose E_expression predicts)",
                             FIX_DOWNLOAD)
    try:
        cfg = yaml.safe_load(read_bounded(path, MAX_JSON_BYTES, "cfg.yaml", FIX_DOWNLOAD).decode("utf-8"))
    except PipelineInputError as e:
        raise ModelFileError(e.path, e.problem, e.fix) from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ModelFileError(path, f"cfg.yaml is not valid YAML ({e})", FIX_DOWNLOAD) from e
    if not isinstance(cfg, dict):      # empty, or a list / scalar at the top: no section to read
        cfg = {}
    for stage in ("detail", "coarse"):
        model = cfg.get(stage)
        if isinstance(model, dict) and isinstance(model.get("model"), dict):
            return model["model"]
    if isinstance(cfg.get("model"), dict):
        return cfg["model"]
    raise ModelFileError(path, "cfg.yaml has no detail.model / coarse.model section", FIX_DOWNLOAD)


def _as_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def layout_from_config(model_cfg: dict, cfg_path: str | Path = "cfg.yaml") -> ExpressionLayout:
    deca_class = model_cfg.get("deca_class", "ExpDECA")
    if deca_class not in ("ExpDECA", "EMOCA"):
        raise ModelFileError(cfg_path, f"deca_class '{deca_class}' is not EMOCA's ExpDECA: unsupported",
                             FIX_DOWNLOAD)
    backbone = model_cfg.get("expression_backbone", "deca_clone")
    if backbone not in ("deca_clone", "deca_parallel"):
        raise ModelFileError(cfg_path, f"expression_backbone '{backbone}' is unsupported (only deca_clone, "
                             "the final EMOCA, and deca_parallel)", FIX_DOWNLOAD)
    for key, want in (("n_shape", 100), ("n_tex", 50), ("n_pose", 6), ("n_cam", 3), ("n_light", 27)):
        if key in model_cfg and int(model_cfg[key]) != want:
            raise ModelFileError(cfg_path, f"{key}={model_cfg[key]} but EMOCA's code layout has {want}: "
                                 "unsupported",
                                 FIX_DOWNLOAD)
    return ExpressionLayout(n_exp=int(model_cfg.get("n_exp", 50)),
                            global_pose=_as_bool(model_cfg.get("exp_deca_global_pose", False)),
                            jaw_pose=_as_bool(model_cfg.get("exp_deca_jaw_pose", False)),
                            parallel=backbone == "deca_parallel")


# What a checkpoint's pickle may name besides torch's own weights-only allow-list.
#
# A global in a pickle is harmless only if everything the unpickler can then do with it is: NEWOBJ
# and REDUCE *call* it with arguments from the file, BUILD hands it state.  So the rule is about
# the callable, not the name:
#  * configuration classes (CONFIG_MODULES: EMOCA's OmegaConf DictConfig/ListConfig and their node
#    and metadata classes, gdl enums, Lightning's AttributeDict and callback classes, typing.Any)
#    become `_ConfigRecord` stand-ins: the module is never imported, and calling or building a
#    stand-in only stores its arguments;
#  * INERT_BUILTINS are the real value types (OmegaConf 2.0 metadata names `dict`, `list`, `int`
#    as key / element / object types): called with any arguments they only build a value of their
#    own type, they import, open, evaluate and look up nothing by name.  Their arguments can only be
#    data or other objects allowed here, so the special methods they may invoke (`__str__`,
#    `__int__`, `__iter__`) are those of data, records and tensors; BUILD on such a value fails (no
#    `__dict__`).  `collections.defaultdict` (OmegaConf's resolver cache) becomes a plain dict: its
#    factory is dropped, never called;
#  * everything else is refused before the file is unpickled, in particular every builtin that
#    acts or reaches other objects (eval, exec, compile, open, getattr, setattr, __import__,
#    globals, vars, breakpoint, input, print, `type` (three arguments make a class), `object`,
#    super, property, map, filter), os.*, subprocess.*, numpy (its functions include file I/O and
#    `numpy.testing`'s exec) and any module not named here.
CONFIG_MODULES = ("omegaconf", "gdl", "gdl_apps", "inferno", "pytorch_lightning", "lightning",
                  "lightning_fabric", "typing", "pathlib", "argparse", "enum", "collections")
INERT_BUILTINS = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, set, frozenset, int, float,
                                                        complex, bool, str)}


def _defaultdict_as_dict(default_factory=None, *args) -> dict:
    """`collections.defaultdict(factory, ...)` read as a plain dict (the factory is never called)."""
    return dict(*args)


PLAIN_REPLACEMENTS = {"collections.defaultdict": _defaultdict_as_dict}


class _ConfigRecord:
    """Inert stand-in for a configuration class named in a checkpoint: keeps the pickled
    arguments and state as data and has no behaviour."""

    _qualified_name = "?"

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __repr__(self):
        return f"<record of {self._qualified_name}>"


_RECORD_CLASSES: dict[str, type] = {}


def _config_record(qualified_name: str) -> type:
    if qualified_name not in _RECORD_CLASSES:
        _RECORD_CLASSES[qualified_name] = type(qualified_name.rsplit(".", 1)[-1], (_ConfigRecord,),
                                               {"_qualified_name": qualified_name})
    return _RECORD_CLASSES[qualified_name]


def _stand_in(global_name: str):
    """What a checkpoint global outside torch's allow-list is read as, or None when it is refused."""
    if global_name in INERT_BUILTINS:
        return INERT_BUILTINS[global_name]
    if global_name in PLAIN_REPLACEMENTS:
        return PLAIN_REPLACEMENTS[global_name]
    if global_name.split(".")[0] in CONFIG_MODULES:
        return _config_record(global_name)
    return None


def plain_config(obj):
    """Checkpoint data with OmegaConf records turned back into plain dicts / lists / values, as
    `OmegaConf.to_container(cfg, resolve=False)` gives them (interpolations stay strings, a missing
    value stays '???'); other records are left as they are."""
    if isinstance(obj, _ConfigRecord):
        state = obj.__dict__.get("_state")
        name = obj._qualified_name
        if name.startswith("omegaconf.") and isinstance(state, dict):
            if name.endswith(("DictConfig", "ListConfig")) and "_content" in state:
                return plain_config(state["_content"])
            if "_val" in state:                                  # omegaconf.nodes.*Node
                return plain_config(state["_val"])
        return obj
    if isinstance(obj, dict):
        return {k: plain_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_config(v) for v in obj)
    return obj


def _load_checkpoint(path: Path):
    """torch.load(weights_only=True); when the checkpoint also names configuration classes or inert
    value types (see `_stand_in`) they are allow-listed as such and the load is repeated.
    Never weights_only=False: any other global is refused with a ModelFileError naming it."""
    try:
        check_regular_file(path, MAX_MODEL_BYTES, "the checkpoint", FIX_DOWNLOAD)
    except PipelineInputError as e:
        raise ModelFileError(e.path, e.problem, e.fix) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        try:
            unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - not a zip checkpoint (or torch < 2.5): report the first error
            raise first from None
        if not unsafe:                 # failed for another reason than a global: unreadable
            raise first from None
        stand_ins = {g: _stand_in(g) for g in unsafe}
        refused = [g for g, obj in stand_ins.items() if obj is None]
        if refused:
            named = ", ".join(f"'{g}'" for g in refused)
            raise ModelFileError(path, f"refused to load the checkpoint: it refers to {named}, which is "
                                 "neither weights nor configuration data (loading it could run code)",
                                 "use the checkpoint from the official EMOCA download; do not load "
                                 "checkpoints of unknown origin") from None
        # safe_globals' (obj, "module.name") form, which names a stand-in, came with torch 2.6
        if tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
            raise ModelFileError(path, "the checkpoint holds configuration objects "
                                 f"({', '.join(unsafe)}); reading them without running code needs "
                                 f"torch >= 2.6 (this is {torch.__version__})", "upgrade torch") from None
        log.info("%s: configuration classes %s read as inert records", path, ", ".join(unsafe))
        with torch.serialization.safe_globals([(obj, g) for g, obj in stand_ins.items()]):
            return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning `.ckpt` (or a bare state dict) as plain data on the CPU: tensors, and the
    hyper-parameters' OmegaConf objects as dicts / lists (`plain_config`).

    Read with torch's weights-only loader (`_load_checkpoint`); anything that is not weights,
    configuration or a plain value is refused.
    """
    path = Path(path)
    try:
        ckpt = _load_checkpoint(path)
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here is an unreadable model file
        raise ModelFileError(path, f"cannot read the checkpoint ({type(e).__name__}: {e})",
                             "download the model again; the file may be truncated") from e
    if not isinstance(ckpt, dict):
        raise ModelFileError(path, "checkpoint holds no state_dict", FIX_DOWNLOAD)
    if "hyper_parameters" in ckpt:
        ckpt["hyper_parameters"] = plain_config(ckpt["hyper_parameters"])
    return ckpt


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of a Lightning `.ckpt` (or a bare state dict), on the CPU (`read_checkpoint`)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelFileError(path, "checkpoint holds no state_dict", FIX_DOWNLOAD)
    return state


def _strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def detect_backbone(state: dict, path: str | Path = "checkpoint") -> str:
    """'deca_clone' (own backbone `deca.E_expression.encoder.*`) or 'deca_parallel'
    (SecondHeadResnet: `deca.E_expression.resnet.*` + its own `layers`)."""
    if any(k.startswith("deca.E_expression.encoder.") for k in state):
        return "deca_clone"
    if any(k.startswith("deca.E_expression.resnet.") for k in state):
        return "deca_parallel"
    if any(k.startswith("deca.E_flame.") for k in state):
        raise ModelFileError(path, "checkpoint has E_flame but no E_expression weights: a DECA "
                             "checkpoint, not EMOCA (unsupported)", FIX_DOWNLOAD)
    raise ModelFileError(path, "checkpoint has neither deca.E_flame.* nor deca.E_expression.* weights: "
                         "not an EMOCA checkpoint", FIX_DOWNLOAD)


def _load_strict(module: nn.Module, weights: dict, what: str, path) -> None:
    """Copy `weights` into `module`: every parameter/buffer must be present with the right shape."""
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in weights)
    mismatched = sorted(f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                        for k, v in expected.items()
                        if k in weights and tuple(weights[k].shape) != tuple(v.shape))
    if missing or mismatched:
        lines = []
        if missing:
            lines.append(f"{len(missing)} missing weight(s): "
                         + ", ".join(f"{what}.{k}" for k in missing[:12])
                         + (" ..." if len(missing) > 12 else ""))
        if mismatched:
            lines.append(f"{len(mismatched)} shape mismatch(es): "
                         + "; ".join(f"{what}.{m}" for m in mismatched[:12]))
        raise ModelFileError(path, "EMOCA checkpoint does not fit the encoder: " + " | ".join(lines),
                             FIX_DOWNLOAD)
    # assign=True: the module was built on the meta device (no random init of 2x25M weights)
    module.load_state_dict({k: weights[k].to(v.dtype).contiguous() for k, v in expected.items()},
                           strict=True, assign=True)


def build_encoder(state: dict, layout: ExpressionLayout, path: str | Path = "checkpoint") -> EmocaEncoder:
    """An EmocaEncoder filled strictly from a checkpoint state_dict (unrelated keys ignored)."""
    with torch.device("meta"):
        enc = EmocaEncoder(layout)
    flame_w = _strip_prefix(state, "deca.E_flame.")
    if layout.parallel:
        if not flame_w:  # the shared backbone is also stored under the second head
            flame_w = _strip_prefix(state, "deca.E_expression.resnet.")
        _load_strict(enc.E_flame, flame_w, "deca.E_flame", path)
        _load_strict(enc.E_expression_head, _strip_prefix(state, "deca.E_expression.layers."),
                     "deca.E_expression.layers", path)
    else:
        _load_strict(enc.E_flame, flame_w, "deca.E_flame", path)
        _load_strict(enc.E_expression, _strip_prefix(state, "deca.E_expression."), "deca.E_expression", path)
    return enc.eval()


def expression_width(state: dict, path: str | Path = "checkpoint") -> int:
    key = "deca.E_expression.layers.2.weight"
    if key not in state:
        raise ModelFileError(path, f"checkpoint lacks {key} (E_expression's last layer)", FIX_DOWNLOAD)
    return int(state[key].shape[0])


@dataclass
class LoadedEmoca:
    encoder: EmocaEncoder
    layout: ExpressionLayout
    checkpoint: Path
    config_path: Path


def load_emoca(model_dir: str | Path, device: torch.device | str = "cpu") -> LoadedEmoca:
    """Load an EMOCA v2 model folder: cfg.yaml flags cross-checked against the checkpoint's
    E_expression width, weights loaded strictly, eval mode, on `device`."""
    model_dir = Path(model_dir)
    ckpt = find_checkpoint(model_dir)
    cfg_path = model_dir / "cfg.yaml"
    layout = layout_from_config(read_model_config(model_dir), cfg_path)
    state = load_state_dict(ckpt)
    backbone = detect_backbone(state, ckpt)
    if (backbone == "deca_parallel") != layout.parallel:
        raise ModelFileError(ckpt, f"checkpoint keys say {backbone} but cfg.yaml says "
                             f"{'deca_parallel' if layout.parallel else 'deca_clone'}", FIX_DOWNLOAD)
    width = expression_width(state, ckpt)
    if width != layout.width:
        raise ModelFileError(ckpt, f"E_expression predicts {width} values but cfg.yaml "
                             f"(n_exp={layout.n_exp}, exp_deca_global_pose={layout.global_pose}, "
                             f"exp_deca_jaw_pose={layout.jaw_pose}) implies {layout.width}",
                             "use the cfg.yaml that came with this checkpoint")
    enc = build_encoder(state, layout, ckpt).to(device)
    log.info("EMOCA loaded from %s (E_expression width %d: global from %s, jaw from %s)", ckpt, width,
             "E_expression" if layout.global_pose else "E_flame",
             "E_expression" if layout.jaw_pose else "E_flame")
    return LoadedEmoca(enc, layout, ckpt, cfg_path)


def emoca_model_record(loaded: LoadedEmoca) -> dict:
    return model_record(f"EMOCA v2 ({loaded.checkpoint.parent.parent.parent.name})", True,
                        [loaded.checkpoint, loaded.config_path],
                        expression_width=loaded.layout.width,
                        jaw_from_expression_encoder=loaded.layout.jaw_pose,
                        global_from_expression_encoder=loaded.layout.global_pose,
                        expression_backbone="deca_parallel" if loaded.layout.parallel else "deca_clone")


# ----------------------------------------------------------------------------- crop
def crop_boxes_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """EMOCA's test-time box from 68 landmarks (type 'kpt68').

    landmarks: (N, 68, 2) image pixels -> (N, 3) [cx, cy, size]; size = int(old_size * 1.25) with
    old_size = mean(width, height) * 1.1 of the landmarks' bounding box.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    left, right = lm[:, :, 0].min(1), lm[:, :, 0].max(1)
    top, bottom = lm[:, :, 1].min(1), lm[:, :, 1].max(1)
    old_size = (right - left + bottom - top) / 2 * KPT68_OLD_SIZE
    cx, cy = right - (right - left) / 2.0, bottom - (bottom - top) / 2.0
    size = np.floor(old_size * CROP_SCALE)  # int() truncation; sizes are positive
    return np.stack([cx, cy, size], axis=1)


def crop_to_image_affine(box) -> np.ndarray:
    """(3,) [cx, cy, size] -> (2, 3) A with image_xy = A @ [u, v, 1] for crop pixel (u, v).

    EMOCA maps src corners (cx-s/2, cy-s/2), (cx-s/2, cy+s/2), (cx+s/2, cy-s/2) to (0,0), (0,223),
    (223,0): scale 223/s, no rotation.
    """
    cx, cy, s = (float(v) for v in box)
    k = s / (CROP_SIZE - 1)
    return np.array([[k, 0.0, cx - s / 2], [0.0, k, cy - s / 2]])


def _bilinear_taps(box, h: int, w: int):
    """Sample positions of the 224x224 crop: integer corners (224,) and fractions (224,) per axis."""
    A = crop_to_image_affine(box)
    u = np.arange(CROP_SIZE, dtype=np.float64)
    xs = A[0, 0] * u + A[0, 2]                     # x per output column
    ys = A[1, 1] * u + A[1, 2]                     # y per output row
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    return y0, x0, (ys - y0).astype(np.float32), (xs - x0).astype(np.float32)


def crop_image(rgb: np.ndarray, box) -> np.ndarray:
    """One EMOCA crop: rgb (H, W, 3) uint8, box (3,) -> (3, 224, 224) float32 in [0, 1].

    Hand-written exact bilinear sampling (as skimage.transform.warp order=1, mode='constant',
    cval=0, on image/255): cv2.warpAffine quantises the weights to 1/32 pixel, and skimage warps
    the whole frame in float64 (~10x slower). Neighbours outside the frame count as 0."""
    h, w = rgb.shape[:2]
    y0, x0, fy, fx = _bilinear_taps(box, h, w)

    def gather(yi, xi):
        vy = (yi >= 0) & (yi < h)
        vx = (xi >= 0) & (xi < w)
        g = rgb[np.clip(yi, 0, h - 1)][:, np.clip(xi, 0, w - 1)].astype(np.float32)  # (224, 224, 3)
        return g * (vy[:, None] & vx[None, :])[..., None]

    top = gather(y0, x0) * (1 - fx)[None, :, None] + gather(y0, x0 + 1) * fx[None, :, None]
    bot = gather(y0 + 1, x0) * (1 - fx)[None, :, None] + gather(y0 + 1, x0 + 1) * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return np.ascontiguousarray((out / 255.0).transpose(2, 0, 1), dtype=np.float32)


def crop_image_torch(rgb: torch.Tensor, box) -> torch.Tensor:
    """`crop_image` on a torch device: rgb (H, W, 3) uint8 tensor -> (3, 224, 224) float32.

    Same taps and weights as the NumPy version; on a GPU it moves the crop off the CPU, which
    otherwise limits EMOCA to ~200 frames/s while the encoders run at thousands."""
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    y0, x0, fy, fx = _bilinear_taps(box, h, w)
    dev = rgb.device
    ys = torch.as_tensor(np.stack([y0, y0 + 1]), device=dev)           # (2, 224)
    xs = torch.as_tensor(np.stack([x0, x0 + 1]), device=dev)
    vy = ((ys >= 0) & (ys < h)).float()
    vx = ((xs >= 0) & (xs < w)).float()
    wy = torch.as_tensor(np.stack([1 - fy, fy]), device=dev) * vy      # (2, 224)
    wx = torch.as_tensor(np.stack([1 - fx, fx]), device=dev) * vx
    g = rgb[ys.clamp(0, h - 1)][:, :, xs.clamp(0, w - 1)].float()      # (2, 224, 2, 224, 3)
    out = torch.einsum("aubvc,au,bv->cuv", g, wy, wx)
    return out / 255.0


def crop_cam_to_portrait(cam: np.ndarray, boxes: np.ndarray, image_size: int) -> np.ndarray:
    """Per-crop camera -> camera of the whole (square) portrait frame.

    cam (N, 3) [s, tx, ty] of the 224 crop, boxes (N, 3) [cx, cy, size] -> (N, 3).
    Crop: u = (s(X+tx) + 1) * 224/2, v = (1 - s(Y+ty)) * 224/2; image x = x0 + u*k, y = y0 + v*k
    (k = size/223, x0 = cx - size/2). Portrait: x = (S(X+TX) + 1) * W/2, y = (1 - S(Y+TY)) * W/2.
    Matching the coefficients of X and the constants gives, with m = 112*k:
    S = s*m/(W/2); TX = (x0 + m*(1 + s*tx) - W/2) / (S*W/2); TY = (W/2 - y0 - m*(1 - s*ty)) / (S*W/2).
    Exact: the crop is a scale + translation of the frame, and the camera is orthographic.
    """
    cam = np.asarray(cam, dtype=np.float64).reshape(-1, 3)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
    s, tx, ty = cam[:, 0], cam[:, 1], cam[:, 2]
    cx, cy, size = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    half = image_size / 2.0
    m = (CROP_SIZE / 2.0) * size / (CROP_SIZE - 1)
    x0, y0 = cx - size / 2, cy - size / 2
    S = s * m / half
    TX = (x0 + m * (1 + s * tx) - half) / (S * half)
    TY = (half - y0 - m * (1 - s * ty)) / (S * half)
    return np.stack([S, TX, TY], axis=1)


# ----------------------------------------------------------------------------- batched inference
class EmocaRunner:
    """Feed frames one by one with their landmarks; crops are batched through the encoder.

    `add(rgb, landmarks)` queues one crop; `finish()` returns per-frame arrays in frame order:
    shape (T,100), expression (T,50), global_orient (T,3), jaw_pose (T,3), cam (T,3) (portrait
    frame), crop_cam (T,3), crop_boxes (T,3)."""

    def __init__(self, encoder: nn.Module, device, batch_size: int = 32, image_size: int = 1024):
        self.encoder = encoder.eval()
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.image_size = int(image_size)
        self._crops: list[torch.Tensor | None] = []
        self._boxes: list[np.ndarray] = []
        self._out: dict[str, list[np.ndarray]] = {k: [] for k in ("shape", "exp", "pose", "cam")}

    def add(self, rgb: np.ndarray, landmarks: np.ndarray) -> None:
        box = crop_boxes_from_landmarks(landmarks[None])[0]
        if self.device.type == "cuda":
            self._crops.append(crop_image_torch(torch.from_numpy(rgb).to(self.device), box))
        else:
            self._crops.append(torch.from_numpy(crop_image(rgb, box)))
        self._boxes.append(box)
        if len(self._crops) - sum(len(x) for x in self._out["shape"]) >= self.batch_size:
            self._flush()

    @torch.inference_mode()
    def _flush(self) -> None:
        done = sum(len(x) for x in self._out["shape"])
        pending = self._crops[done:]
        if not pending:
            return
        images = torch.stack(pending).to(self.device)
        out = self.encoder(images)
        for k in self._out:
            self._out[k].append(out[k].float().cpu().numpy())
        # crops already encoded are not needed any more; keep list length for indexing
        for i in range(done, len(self._crops)):
            self._crops[i] = None

    def finish(self) -> dict[str, np.ndarray]:
        self._flush()
        if not self._boxes:
            raise ValueError("no frames were given to EMOCA")
        cat = {k: np.concatenate(v, 0).astype(np.float64) for k, v in self._out.items()}
        boxes = np.stack(self._boxes)
        return {
            "shape": cat["shape"].astype(np.float32),
            "expression": cat["exp"].astype(np.float32),
            "global_orient": cat["pose"][:, :3].astype(np.float32),
            "jaw_pose": cat["pose"][:, 3:6].astype(np.float32),
            "cam": crop_cam_to_portrait(cat["cam"], boxes, self.image_size).astype(np.float32),
            "crop_cam": cat["cam"].astype(np.float32),
            "crop_boxes": boxes.astype(np.float32),
        }
