"""What several commands share: path overrides from the command line and the run description."""
from __future__ import annotations

import os
from pathlib import Path

import luigi.configuration

from pipeline.build import config_overrides
from tasks import config
from tasks.common.settings import BgmSettings, EmocaSettings, FlameSettings
from tasks.layout import Layout


def path_overrides(args) -> dict:
    """`--raw-dir` / `--processed-dir` as `[paths]` overrides (unset ones are left out)."""
    return {"paths": {"raw_dir": getattr(args, "raw_dir", None),
                      "processed_dir": getattr(args, "processed_dir", None)}}


def layout_of(args) -> Layout:
    with config_overrides(path_overrides(args)):
        return Layout.from_config()


def config_files() -> list[Path]:
    """The configuration files Luigi actually read, in order (later ones win)."""
    parser = luigi.configuration.get_config()
    return [Path(p).resolve() for p in getattr(parser, "_config_paths", []) if os.path.isfile(p)]


def describe_run(args) -> str:
    """Which configuration files, folders and models a run uses (printed at its start)."""
    with config_overrides(path_overrides(args)):
        flame, emoca, bgm = config.read(FlameSettings), config.read(EmocaSettings), config.read(BgmSettings)
        lay = Layout.from_config()
    files = config_files()
    return "\n".join([
        f"configuration: {', '.join(map(str, files)) or 'none found (built-in defaults)'}",
        f"capture: {lay.raw}   outputs: {lay.processed}   release: {lay.release}",
        "head model: " + (flame.model_path or "the procedural head model (STAND-IN, not FLAME)"),
        "per-frame estimator: " + (emoca.checkpoint_dir or "the weight-free landmark fit (STAND-IN, not EMOCA)"),
        "vocal remover: " + (f"Demucs {bgm.demucs_model} from {bgm.demucs_repo}" if bgm.demucs_repo
                             else "REPET-SIM, weight-free (STAND-IN, not Demucs)"),
    ])


def stand_in_warning(description: str) -> str | None:
    if "STAND-IN" not in description:
        return None
    return ("WARNING: this build used STAND-IN models (listed above and in manifest.json `stand_ins`): "
            "it tests the pipeline and is not a dataset release.")
