"""The head model every stage fits against: FLAME from `[flame]`, or the procedural stand-in.

With `[flame] model_path` empty, the procedural head model (flame_fit.procedural) is generated
once into `[flame] procedural_model_dir` and then read through the same loader as the licensed
files, so both paths exercise the same code.  Its model record and log lines name it
"procedural head model, not FLAME".
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from flame_fit.flame import PROCEDURAL_NAME, FlameModel, load_flame
from flame_fit.flame_io import FlameFileError
from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from tasks import layout
from tasks.common.atomic import atomic_dir
from tasks.config import flame as flame_config
from tasks.devices import torch_device
from tasks.common.errors import ModelFileError
from tasks.common.provenance import model_record

log = logging.getLogger("singinghead")

PROCEDURAL_SEED = 0
# Bump when flame_fit.procedural changes what it writes: cached copies live in a folder named by it.
PROCEDURAL_VERSION = "v1"
_CACHE: dict[tuple, tuple[FlameModel, dict]] = {}
_LOCK = threading.Lock()


def procedural_model_files(folder: str | Path, seed: int = PROCEDURAL_SEED) -> tuple[Path, Path]:
    """Paths of the procedural model in `folder`, generating them atomically when absent."""
    folder = Path(folder)
    model, emb = folder / MODEL_FILE, folder / EMBEDDING_FILE
    if not (model.is_file() and emb.is_file()):
        log.warning("generating the %s into %s (no [flame] model_path configured)", PROCEDURAL_NAME, folder)
        with atomic_dir(folder) as tmp:
            write_procedural_head_model(tmp, seed=seed)
    return model, emb


def default_procedural_dir(seed: int = PROCEDURAL_SEED) -> Path:
    """Under processed/_models, named by generator version so a changed generator regenerates."""
    return layout.models_dir() / f"procedural_head_{PROCEDURAL_VERSION}_seed{seed}"


def resolve_model_paths(cfg=None) -> tuple[Path, Path, bool]:
    """(model path, landmark embedding path, is_procedural) from the `[flame]` section."""
    cfg = cfg or flame_config()
    if not cfg.model_path:
        folder = cfg.procedural_model_dir or default_procedural_dir()
        model, emb = procedural_model_files(folder)
        return model, emb, True
    if not cfg.landmark_embedding_path:
        raise ModelFileError(cfg.model_path, "[flame] model_path is set but landmark_embedding_path is empty",
                             "set [flame] landmark_embedding_path to DECA/EMOCA's "
                             "data/landmark_embedding.npy")
    return Path(cfg.model_path), Path(cfg.landmark_embedding_path), False


def get_head_model(device=None) -> tuple[FlameModel, dict]:
    """(FlameModel on `device`, model record); cached per (files, device)."""
    device = torch.device(device) if device is not None else torch_device()
    model_path, emb_path, procedural = resolve_model_paths()
    key = (str(Path(model_path).resolve()), str(Path(emb_path).resolve()), str(device))
    with _LOCK:
        if key not in _CACHE:
            try:
                flame = load_flame(model_path, emb_path)
            except FlameFileError as exc:
                raise ModelFileError(exc.path, exc.problem, exc.fix) from exc
            flame = flame.to(device).eval()
            if procedural and flame.is_real:
                raise ModelFileError(model_path, "the procedural model folder holds a file that does not say "
                                     "it is procedural", "delete the folder; it is regenerated on next use")
            record = model_record(flame.name, real=flame.is_real, files=[model_path, emb_path],
                                  n_vertices=flame.n_vertices, n_shape=flame.n_shape, n_expr=flame.n_expr)
            log.info("head model: %s (%d vertices) on %s", flame.name, flame.n_vertices, device)
            _CACHE[key] = (flame, record)
        flame, record = _CACHE[key]
    return flame, dict(record)
