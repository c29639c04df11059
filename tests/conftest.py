"""Shared fixtures. Configuration for a block goes through `pipeline.build.config_overrides`,
the mechanism the CLI uses too (`--section-key value` the Luigi way, never a rewritten config)."""
from __future__ import annotations

import os

import pytest

from pipeline.build import config_overrides

# Two cores in CI: torch's own thread pool fighting pytest's processes slows everything.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def luigi_paths(tmp_path):
    """Point [paths] at fresh tmp folders for one test."""
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    raw.mkdir()
    processed.mkdir()
    with config_overrides(paths={"raw_dir": raw, "processed_dir": processed,
                                 "release_dir": processed / "release"}):
        yield raw, processed


@pytest.fixture(scope="session", autouse=True)
def default_paths_outside_the_checkout(tmp_path_factory):
    """A test that forgets its own [paths] writes into a temp folder, never into the checkout's
    raw/ or processed/ (Luigi's PROCESSING_TIME handler writes processed/_timings.jsonl)."""
    root = tmp_path_factory.mktemp("default_paths")
    # `evaluate` keeps the procedural head model in the user's cache: a session folder here
    cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    with config_overrides(paths={"raw_dir": root / "raw", "processed_dir": root / "processed"}):
        yield
    if cache is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = cache
