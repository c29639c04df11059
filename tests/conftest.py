"""Shared fixtures: each test gets its own raw/ and processed/ roots through luigi's config."""
from __future__ import annotations

import os

import luigi.configuration
import pytest

# Two cores in CI: torch's own thread pool fighting pytest's processes slows everything.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def luigi_paths(tmp_path):
    """Point [paths] at fresh tmp folders for one test, restoring the previous values after."""
    cfg = luigi.configuration.get_config()
    saved = {k: cfg.get("paths", k, None) for k in ("raw_dir", "processed_dir", "release_dir")}
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    raw.mkdir()
    processed.mkdir()
    cfg.set("paths", "raw_dir", str(raw))
    cfg.set("paths", "processed_dir", str(processed))
    cfg.set("paths", "release_dir", str(processed / "release"))
    yield raw, processed
    for k, v in saved.items():
        if v is None:
            cfg.remove_option("paths", k)
        else:
            cfg.set("paths", k, v)
