"""A pytest plugin for `make mutation`: which test runs which line, and how long each test takes.

Loaded only by mutation/run.py's coverage run (`coverage run -m pytest -p mutation.coverage_map`): it
names coverage.py's dynamic context after each test's node id, so the coverage data says which tests
execute each line of the mutated module; lines run while modules are imported keep the empty context.
A fixture of wider than function scope runs once, inside whichever test needs it first; its set-up gets
a context of its own, "fixture:<where it is defined>::<name>", and the fixture names each test uses are
written out, so that a mutant in code the fixture runs is tried against every test that uses it, not
only the first. Durations go to the file named by MUTATION_DURATIONS, the tests' fixture names to
MUTATION_FIXTURES.
"""

from __future__ import annotations

import json
import os
import time

import coverage
import pytest

_durations: dict[str, float] = {}
_fixtures: dict[str, list[str]] = {}
_contexts: list[str] = [""]        # the test's context, then one per fixture being set up inside it


def fixture_context(baseid: str, argname: str) -> str:
    return f"fixture:{baseid}::{argname}"


def _switch(context: str) -> None:
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.switch_context(context)


def pytest_runtest_protocol(item, nextitem):
    _contexts[:] = [item.nodeid]
    _switch(item.nodeid)
    _fixtures[item.nodeid] = sorted(getattr(item, "fixturenames", ()))
    item._mutation_t0 = time.perf_counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.scope == "function":         # set up for each test anew: its test's context is right
        yield
        return
    _contexts.append(fixture_context(fixturedef.baseid, fixturedef.argname))
    _switch(_contexts[-1])
    try:
        yield
    finally:
        _contexts.pop()
        _switch(_contexts[-1])


def pytest_runtest_teardown(item, nextitem):
    _durations[item.nodeid] = time.perf_counter() - getattr(item, "_mutation_t0", time.perf_counter())


def pytest_sessionfinish(session, exitstatus):
    for var, data in (("MUTATION_DURATIONS", _durations), ("MUTATION_FIXTURES", _fixtures)):
        path = os.environ.get(var)
        if path:
            with open(path, "w") as f:
                json.dump(data, f)
