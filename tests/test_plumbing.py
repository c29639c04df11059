"""The shared plumbing every stage relies on: atomic writes, deterministic npz, timings, CLI."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tasks.common.atomic import (atomic_dir, atomic_path, npz_bytes, remove_stale_temps, save_npz_atomic,
                          write_json_atomic)


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
    from pipeline.timings import TIMINGS_FILE, read_stage_timings
    _, processed = luigi_paths
    lines = [{"task": "CropPortraits", "id": "c1", "seconds": 5.0},
             {"task": "CropPortraits", "id": "c2", "seconds": 2.0},
             {"task": "CropPortraits", "id": "c1", "seconds": 4.0},
             {"task": "SeparateBGM", "id": "b1", "seconds": 1.5}]
    (processed / TIMINGS_FILE).write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken")
    assert read_stage_timings(processed) == {"CropPortraits": 6.0, "SeparateBGM": 1.5}


def test_cli_lists_every_command(capsys):
    from pipeline.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for cmd in ("run", "demo-capture", "validate", "make-head-model", "preview", "release",
                "verify-release", "rerun"):
        assert cmd in out


def test_luigi_cfg_sets_failure_exit_codes():
    import luigi.configuration
    cfg = luigi.configuration.get_config()
    assert int(cfg.get("retcode", "task_failed")) != 0
    assert int(cfg.get("retcode", "unhandled_exception")) != 0
