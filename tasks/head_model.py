"""The head model every stage fits against: FLAME from `[flame]`, or the procedural stand-in.

`get_head_model(flame_settings, models_dir, device)` takes everything explicitly; Luigi tasks use
`head_model_for_task(layout)`, which reads `[flame]` and `[device]` once.

With `[flame] model_path` empty, the procedural head model (flame_fit.procedural) is generated
once into `[flame] procedural_model_dir` and then read through the same loader as the licensed
files, so both paths exercise the same code.  Its model record and log lines name it
"procedural head model, not FLAME".
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from flame_fit.flame import PROCEDURAL_NAME, FlameModel, load_flame
from flame_fit.flame_io import FlameFileError
from flame_fit.procedural import EMBEDDING_FILE, GENERATOR_VERSION, MODEL_FILE, write_procedural_head_model
from tasks import config
from tasks.common.atomic import atomic_dir
from tasks.common.errors import ModelFileError
from tasks.common.provenance import model_record
from tasks.common.settings import FlameSettings
from tasks.devices import DeviceLike, torch_device
from tasks.layout import Layout

log = logging.getLogger("singinghead")

PROCEDURAL_SEED = 0
# flame_fit.procedural's generator version: cached copies live in a folder named by it, so a changed
# generator regenerates.
PROCEDURAL_VERSION = GENERATOR_VERSION
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


def user_models_dir() -> Path:
    """Where a command run outside a build (evaluate) keeps the procedural model: the user's cache,
    $XDG_CACHE_HOME/singinghead/_models (default ~/.cache/singinghead/_models)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "singinghead" / "_models"


def default_procedural_dir(models_dir: str | Path, seed: int = PROCEDURAL_SEED) -> Path:
    """Under `models_dir` (processed/_models), named by generator version so a changed generator
    regenerates."""
    return Path(models_dir) / f"procedural_head_{PROCEDURAL_VERSION}_seed{seed}"


def resolve_model_paths(cfg: FlameSettings, models_dir: str | Path) -> tuple[Path, Path, bool]:
    """(model path, landmark embedding path, is_procedural) from the `[flame]` settings."""
    if not cfg.model_path:
        folder = cfg.procedural_model_dir or default_procedural_dir(models_dir)
        model, emb = procedural_model_files(folder)
        return model, emb, True
    if not cfg.landmark_embedding_path:
        raise ModelFileError(cfg.model_path, "[flame] model_path is set but landmark_embedding_path is empty",
                             "set [flame] landmark_embedding_path to DECA/EMOCA's "
                             "data/landmark_embedding.npy")
    return Path(cfg.model_path), Path(cfg.landmark_embedding_path), False


def get_head_model(flame_settings: FlameSettings, models_dir: str | Path, device: DeviceLike) -> tuple[FlameModel, dict]:
    """(FlameModel on `device`, model record); cached per (files, device).

    `flame_settings`: `[flame]`; `models_dir`: where the procedural stand-in is generated when
    `[flame]` names no folder (`Layout.models_dir()`); `device`: a torch.device, a name or
    DeviceSettings (see `tasks.devices.torch_device`).
    """
    device = torch_device(device)
    model_path, emb_path, procedural = resolve_model_paths(flame_settings, models_dir)
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


def head_model_for_task(layout: Layout, device: DeviceLike | None = None) -> tuple[FlameModel, dict]:
    """`get_head_model` for a Luigi task: `[flame]` read now, the procedural model under
    `layout.models_dir()`, on `device` (None: `[device] torch_device`)."""
    return get_head_model(config.read(FlameSettings), layout.models_dir(), torch_device(device))
