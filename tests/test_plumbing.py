"""The shared plumbing every stage relies on: atomic writes, deterministic npz, timings, CLI."""
from __future__ import annotations

import argparse
import configparser
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.timings import TIMINGS_FILE, read_stage_timings

from pipeline.build import config_overrides
from pipeline.cli import build_parser, command_function, main
from tasks import config
from tasks.common.errors import PipelineInputError
from tasks.common.settings import (ALL_SETTINGS, CropSettings, DatasetSettings, PathSettings, RefineSettings,
                                  settings_problems)
from tasks.common.atomic import (atomic_dir, atomic_path, npz_bytes, remove_stale_temps, save_npz_atomic,
                          write_json_atomic)


ROOT = Path(__file__).resolve().parents[1]


def test_atomic_path_keeps_suffix_and_renames(tmp_path):
    final = tmp_path / "sub" / "video.mp4"
    with atomic_path(final) as tmp:
        assert tmp.suffix == ".mp4" and tmp.parent == final.parent and tmp != final
        tmp.write_bytes(b"data")
        assert not final.exists()
    assert final.read_bytes() == b"data"
    assert [p.name for p in final.parent.iterdir()] == ["video.mp4"]


def test_atomic_path_leaves_old_file_on_crash(tmp_path):
    final = tmp_path / "out.json"
    final.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(final) as tmp:
            tmp.write_text("half-writ")
            raise ValueError("killed")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    final = tmp_path / "shape"
    final.mkdir()
    (final / "stale.txt").write_text("x")
    with atomic_dir(final) as tmp:
        (tmp / "shape.npy").write_bytes(b"1")
    assert sorted(p.name for p in final.iterdir()) == ["shape.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shape"]


def test_npz_is_deterministic_and_loadable(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(3, np.int64)}
    first = npz_bytes(arrays)
    time.sleep(1.1)  # np.savez would stamp a new time here
    assert npz_bytes(dict(reversed(list(arrays.items())))) == first
    save_npz_atomic(tmp_path / "m.npz", arrays)
    with np.load(tmp_path / "m.npz") as z:
        np.testing.assert_array_equal(z["b"], arrays["b"])
        assert z["a"].dtype == np.int64


def test_json_is_sorted_and_stable(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"z": np.float32(1.5), "a": np.arange(2)})
    text = (tmp_path / "a.json").read_text()
    assert text.index('"a"') < text.index('"z"')
    assert json.loads(text) == {"a": [0, 1], "z": 1.5}


def test_remove_stale_temps(tmp_path):
    (tmp_path / ".segment_000.tmp-123-abcd.mp4").write_bytes(b"half")
    (tmp_path / ".shape.tmp-1-ff").mkdir()
    (tmp_path / "segment_001.mp4").write_bytes(b"whole")
    assert remove_stale_temps(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["segment_001.mp4"]


def test_timings_keep_latest_per_task(luigi_paths):
    _, processed = luigi_paths
    lines = [{"task": "CropPortraits", "id": "c1", "seconds": 5.0},
             {"task": "CropPortraits", "id": "c2", "seconds": 2.0},
             {"task": "CropPortraits", "id": "c1", "seconds": 4.0},
             {"task": "SeparateBGM", "id": "b1", "seconds": 1.5}]
    (processed / TIMINGS_FILE).write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken")
    assert read_stage_timings(processed) == {"CropPortraits": 6.0, "SeparateBGM": 1.5}


def test_cli_lists_every_command_and_each_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"run", "rerun", "stages", "validate", "release", "verify-release", "preview",
                                "separate-bgm", "make-head-model", "demo-capture", "evaluate"}
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, (name, action.dest)
        command_function(p.get_default("command_impl"))   # each command resolves to a function


def test_help_imports_nothing_heavy():
    code = ("import sys; from pipeline.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'open3d', 'demucs', 'cv2', 'av') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_verbose_after_the_subcommand_and_version(capsys):
    args = build_parser().parse_args(["verify-release", "x", "-v", "--debug"])
    assert args.verbose and args.debug
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert "singinghead" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["verify-release", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "fix:" in err and "Traceback" not in err
    assert main(["--config", str(tmp_path / "nope.cfg"), "verify-release", str(tmp_path)]) == 2


def test_luigi_cfg_sets_failure_exit_codes():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "luigi.cfg")
    assert int(cfg.get("retcode", "task_failed")) != 0
    assert int(cfg.get("retcode", "unhandled_exception")) != 0


def test_settings_and_luigi_config_agree():
    """The luigi.Config classes are derived from the settings dataclasses, defaults included."""
    import dataclasses
    for cls in ALL_SETTINGS:
        if cls is not PathSettings:       # [paths] points into a temp folder for the whole session
            assert config.read(cls) == cls(), cls
        cfg_cls = config.CONFIG_CLASSES[cls]
        assert {n for n, _ in cfg_cls.get_params()} == {f.name for f in dataclasses.fields(cls)}
    with config_overrides(crop={"landmark_every": 4}, dataset={"split_by_song": "false"}):
        assert config.read(CropSettings).landmark_every == 4
        assert config.read(DatasetSettings).split_by_song is False
    assert config.read(CropSettings).landmark_every == 6


# Values a lab could type that the code would take but that mean nothing, each beside the nearest value
# that is allowed; written out here, not derived from settings.LIMITS, so a wrong limit is seen.
REFUSED_AND_NEAREST = [
    ("crop", "output_size", 1023, 1024), ("crop", "output_size", 14, 16), ("crop", "margin", -0.1, 0.0),
    ("crop", "detect_width", 63, 64), ("crop", "landmark_every", 0, 1), ("crop", "edge_fraction", 0.5, 0.49),
    ("crop", "edge_fraction", -0.01, 0.0), ("crop", "crf", 52, 51), ("crop", "crf", -1, 0),
    ("crop", "keyframe_interval", 0, 1), ("crop", "threads", -1, 0),
    ("bgm", "chunk_seconds", 0.0, 0.5),
    ("audio", "sample_rate", 7999, 8000), ("audio", "sample_rate", 192001, 192000),
    ("audio", "channels", 3, 2), ("audio", "channels", 0, 1), ("audio", "duration_tolerance_s", -0.5, 0.0),
    ("emoca", "batch_size", 0, 1),
    ("refine", "outlier_scale", 0.0, 0.1), ("refine", "landmark_window", 0, 1),
    ("refine", "smooth_weight", -0.1, 0.0), ("refine", "lambda_smooth", -1.0, 0.0),
    ("refine", "lambda_landmark", -1.0, 0.0), ("refine", "lambda_reg", -1e-3, 0.0),
    ("refine", "smooth_order", 3, 2), ("refine", "smooth_order", 0, 1),
    ("refine", "neck_reg_scale", -1.0, 0.0), ("refine", "contour_weight", -1.0, 0.0),
    ("refine", "lambda_anchor", -1.0, 0.0), ("refine", "refit_iters", -1, 0), ("refine", "lr", 0.0, 1e-4),
    ("refine", "lr_floor", 0.0, 0.01), ("refine", "lr_floor", 1.5, 1.0), ("refine", "max_iters", 0, 1),
    ("refine", "tolerance", -1e-9, 0.0), ("refine", "check_every", 0, 1),
    ("scan_fit", "max_landmark_residual_mm", 0.0, 0.1), ("scan_fit", "max_abs_shape_coefficient", 0.0, 0.5),
    ("scan_fit", "landmark_sigma_mm", 0.0, 0.01),
    ("dataset", "fps", 0, 1), ("dataset", "min_sequence_seconds", -1.0, 0.0), ("dataset", "clip_frames", 0, 1),
    ("dataset", "train_fraction", 1.01, 0.95), ("dataset", "val_fraction", -0.05, 0.0),
    ("dataset", "val_fraction", 0.25, 0.2),                                   # 0.8 + 0.25 leaves test < 0
    ("release", "shard_bytes", 0, 1),
]


def _settings_class(section):
    return next(c for c in ALL_SETTINGS if c.SECTION == section)


@pytest.mark.parametrize("section, key, bad, good", REFUSED_AND_NEAREST)
def test_a_meaningless_setting_is_refused_by_name_and_the_nearest_allowed_value_is_not(section, key, bad, good):
    with config_overrides(**{section: {key: str(bad)}}):
        with pytest.raises(PipelineInputError) as err:
            config.read(_settings_class(section))
    msg = str(err.value)
    assert msg.startswith(f"luigi.cfg [{section}] {key}: is {bad!r}") and "want" in msg
    assert f"--{section}-{key.replace('_', '-')} VALUE" in err.value.fix
    with config_overrides(**{section: {key: str(good)}}):
        assert getattr(config.read(_settings_class(section)), key) == good


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_float_setting_is_refused(value):
    with config_overrides(refine={"lambda_smooth": value}), pytest.raises(PipelineInputError, match="finite"):
        config.read(RefineSettings)


def test_every_default_and_the_shipped_luigi_cfg_are_allowed():
    assert all(settings_problems(cls()) == [] for cls in ALL_SETTINGS)
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "luigi.cfg")
    with config_overrides(**{c.SECTION: dict(cfg[c.SECTION]) for c in ALL_SETTINGS
                             if c.SECTION in cfg and c is not PathSettings}):
        config.read_all()


def test_a_refused_setting_stops_run_and_the_roots_before_any_work(tmp_path, capsys):
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    (raw / "S001" / "songs").mkdir(parents=True)
    code = main(["run", "--raw-dir", str(raw), "--processed-dir", str(processed), "--refine-smooth-weight=-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "[refine] smooth_weight: is -1.0" in err[-1] and "fix:" in err[-1]
    assert not any("Traceback" in e for e in err) and not processed.exists()
    import luigi.task_register
    import pipeline
    with config_overrides(paths={"raw_dir": str(raw), "processed_dir": str(processed)},
                          dataset={"clip_frames": "0"}):
        for root in (lambda: pipeline.BuildSingingHead(), lambda: pipeline.BuildSubject(subject="S001")):
            # a fresh instance, as in a `luigi` process: Luigi hands back one made earlier in this process
            luigi.task_register.Register.clear_instance_cache()
            with pytest.raises(PipelineInputError, match=r"\[dataset\] clip_frames"):   # luigi --module pipeline
                root()
    assert not processed.exists()
