"""Model files named in luigi.cfg, loaded by validation the way their stages load them (plain code).

A `[flame]`, `[emoca]` or `[bgm]` setting that names a missing, damaged or refused file would
otherwise fail hours into a build, after the crop; validation loads each configured model once
through the stage's own loader (allow-listed unpickling included) and turns every failure into a
problem {path, problem, fix, level} naming the file. Empty settings (the stand-ins) are not checked
here: the stand-ins are generated or need no file.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from flame_fit.flame import load_flame
from flame_fit.flame_io import FlameFileError
from tasks.common.errors import PipelineInputError
from tasks.common.settings import BgmSettings, EmocaSettings, FlameSettings
from tasks.estimation.emoca import load_emoca
from tasks.separation.vocals import VOCAL_STEM, load_demucs


def _problem(path, problem: str, fix: str, level: str = "error") -> dict:
    return {"path": str(path), "problem": problem, "fix": fix, "level": level}


def _unexpected(path, what: str, e: Exception, fix: str) -> dict:
    return _problem(path, f"{what} does not load ({type(e).__name__}: {e})", fix)


def check_flame(cfg: FlameSettings) -> list[dict]:
    """`[flame] model_path` + `landmark_embedding_path` through flame_fit.flame.load_flame."""
    fix = ("point [flame] model_path at FLAME's generic_model.pkl / flame2023.pkl and "
           "landmark_embedding_path at DECA/EMOCA's landmark_embedding.npy, or leave model_path empty "
           "for the procedural stand-in")
    if not cfg.model_path:
        if cfg.landmark_embedding_path:
            return [_problem(cfg.landmark_embedding_path, "[flame] landmark_embedding_path is set but "
                             "model_path is empty, so the procedural stand-in is used and this file is ignored",
                             fix, "warning")]
        return []
    if not cfg.landmark_embedding_path:
        return [_problem(cfg.model_path, "[flame] model_path is set but landmark_embedding_path is empty", fix)]
    for p in (cfg.model_path, cfg.landmark_embedding_path):
        if not Path(p).is_file():
            return [_problem(p, "[flame] model file does not exist", fix)]
    try:
        load_flame(cfg.model_path, cfg.landmark_embedding_path)
    except (FlameFileError, PipelineInputError) as e:
        return [_problem(e.path, e.problem, e.fix or fix)]
    except Exception as e:  # noqa: BLE001 - any other failure is still the file's
        return [_unexpected(cfg.model_path, "the [flame] model", e, fix)]
    return []


def check_emoca(cfg: EmocaSettings) -> list[dict]:
    """`[emoca] checkpoint_dir` through tasks.estimation.emoca.load_emoca (find_checkpoint,
    read_model_config, the allow-listed checkpoint load, cross-checks), on the CPU."""
    if not cfg.checkpoint_dir:
        return []
    try:
        load_emoca(cfg.checkpoint_dir, "cpu")
    except PipelineInputError as e:
        return [_problem(e.path, e.problem, e.fix)]
    except Exception as e:  # noqa: BLE001
        return [_unexpected(cfg.checkpoint_dir, "the [emoca] model", e,
                            "download the EMOCA v2 model folder again")]
    return []


def check_bgm(cfg: BgmSettings) -> list[dict]:
    """`[bgm] demucs_repo` / `demucs_model` through tasks.separation.vocals.load_demucs (the
    folder layout, checksums, the allow-listed .th load), and the model must have a vocals stem."""
    if not cfg.demucs_repo:
        return []
    try:
        model = load_demucs(cfg.demucs_repo, cfg.demucs_model)
    except PipelineInputError as e:
        return [_problem(e.path, e.problem, e.fix)]
    except Exception as e:  # noqa: BLE001
        return [_unexpected(cfg.demucs_repo, f"Demucs model {cfg.demucs_model!r}", e,
                            "download the Demucs release files again")]
    if VOCAL_STEM not in model.sources:
        return [_problem(cfg.demucs_repo, f"Demucs model {cfg.demucs_model!r} has no {VOCAL_STEM!r} stem "
                         f"(sources {list(model.sources)})", "set [bgm] demucs_model to htdemucs or htdemucs_ft")]
    return []


_CACHE: dict[tuple, list[dict]] = {}
_LOCK = threading.Lock()


def _stamp(*paths: str) -> tuple:
    """(path, size, mtime_ns) of each configured file, and of every file under a configured folder:
    a changed, added or removed model file invalidates a cached verdict."""
    out = []
    for p in paths:
        if not p:
            continue
        root = Path(p)
        files = [root] if not root.is_dir() else sorted(q for q in root.rglob("*") if q.is_file())
        for f in files:
            try:
                st = os.stat(f)
                out.append((str(f), st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((str(f), None, None))
    return tuple(out)


def check_model_files(flame: FlameSettings, emoca: EmocaSettings, bgm: BgmSettings) -> list[dict]:
    """Every problem of the configured model files (none when all settings are empty).

    Loading htdemucs_ft or EMOCA takes seconds; ValidateCapture runs once per subject, so a verdict
    is kept per process for unchanged settings and files."""
    key = (flame, emoca, bgm, _stamp(flame.model_path, flame.landmark_embedding_path, emoca.checkpoint_dir,
                                     bgm.demucs_repo))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = check_flame(flame) + check_emoca(emoca) + check_bgm(bgm)
        return [dict(p) for p in _CACHE[key]]
