"""Shared test helpers: `luigi_options` sets luigi config options for a block and restores them; the
`luigi_paths` fixture gives each test its own raw/ and processed/ roots through [paths].

Test modules import the helper with `from conftest import luigi_options` (pytest puts tests/ on
sys.path for this conftest)."""
from __future__ import annotations

import contextlib
import os

import luigi.configuration
import pytest

# Two cores in CI: torch's own thread pool fighting pytest's processes slows everything.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@contextlib.contextmanager
def luigi_options(**sections):
    """Set luigi config options for the block, e.g. luigi_options(dataset={'min_sequence_seconds': '0.3'},
    crop={'output_size': 256}); values are passed through str(). Afterwards each option gets its
    previous value back, or is removed if it was not set (and a section added here goes again)."""
    cfg = luigi.configuration.get_config()
    saved, added = [], []
    try:
        for sec, opts in sections.items():
            if not cfg.has_section(sec):
                cfg.add_section(sec)
                added.append(sec)
            for k, v in opts.items():
                saved.append((sec, k, cfg.get(sec, k, None, raw=True)))
                cfg.set(sec, k, str(v))
        yield
    finally:
        for sec, k, v in reversed(saved):
            if v is None:
                cfg.remove_option(sec, k)
            else:
                cfg.set(sec, k, v)
        for sec in added:
            if cfg.has_section(sec) and not cfg.options(sec):
                cfg.remove_section(sec)


@pytest.fixture
def luigi_paths(tmp_path):
    """Point [paths] at fresh tmp folders for one test, restoring the previous values after."""
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    raw.mkdir()
    processed.mkdir()
    with luigi_options(paths={"raw_dir": raw, "processed_dir": processed,
                              "release_dir": processed / "release"}):
        yield raw, processed
