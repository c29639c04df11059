"""A pytest plugin for `make mutation`: which test runs which line, and how long each test takes.

Loaded only by mutation/run.py's coverage run (`coverage run -m pytest -p mutation.coverage_map`): it
names coverage.py's dynamic context after each test's node id, so the coverage data says which tests
execute each line of the mutated module; lines run while modules are imported keep the empty context.
Durations go to the file named by MUTATION_DURATIONS so that fast tests are tried first.
"""

from __future__ import annotations

import json
import os
import time

import coverage

_durations: dict[str, float] = {}


def pytest_runtest_protocol(item, nextitem):
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.switch_context(item.nodeid)
    item._mutation_t0 = time.perf_counter()


def pytest_runtest_teardown(item, nextitem):
    _durations[item.nodeid] = time.perf_counter() - getattr(item, "_mutation_t0", time.perf_counter())


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MUTATION_DURATIONS")
    if path:
        with open(path, "w") as f:
            json.dump(_durations, f)
