"""Mutation testing of the core modules with cosmic-ray (`make mutation`; never part of `make test`).

For each module of mutation/modules.toml (or those named on the command line) cosmic-ray plants one
small bug at a time (a flipped comparison, + for -, a constant off by one, a removed `not`, ...) and the
module's tests run against it; a mutant the tests do not notice survives.

    python mutation/run.py                       every module
    python mutation/run.py tasks/common/names.py one module
    python mutation/run.py -j 1 ...              one worker (default: one per CPU core)
    python mutation/run.py --report              scores from the stored sessions, runs nothing
    python mutation/run.py --check 'tasks/x.py:12:8 core/NumberReplacer#3' tests/test_x.py
                                                 one mutant (an id of survivors.txt) against the named
                                                 tests, in a scratch copy: KILLED or SURVIVED

cosmic-ray finds the mutants, applies them and keeps the results (one sqlite session per module under
mutation/.sessions/). What runs the tests is ours, because cosmic-ray's local runner costs ~11 000 mutants
x (2 s of Python and torch start-up + every test of the module) here, days on 2 cores:
- once per module, the module's tests run under coverage.py with one context per test
  (mutation/coverage_map.py), which says which tests execute each line (subprocesses included);
- a mutant runs only the tests that execute its statement, fastest first, stopping at the first
  failure (what mutmut does too). A statement that runs at import time (a default argument, a class
  body) runs every test of the module. A statement no test executes cannot change any test's outcome:
  its mutants are recorded as surviving without a run and marked so in survivors.txt;
- the tests run in a fork server (mutation/forkserver.py) that has torch, numpy, scipy, OpenCV and PyAV
  imported already; each mutant gets a fresh forked child that imports the project itself;
- N workers, each with its own scratch copy of the checkout (mutation/.sandbox/w<i>/), never the
  checkout itself.
Cached and resumable: an interrupted run continues with the mutants not yet tested; an unchanged module
costs nothing; a changed module starts over; when only its tests changed, its survivors are tested
again and its killed mutants stay killed (`--full` tests everything again).

Writes mutation/survivors.txt (kept in the repository): every surviving mutant not listed in
mutation/equivalent.txt, and prints per module and in total: killed / (tested - equivalent).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import cosmic_ray.plugins
from cosmic_ray.mutating import _make_diff, mutate_code, use_mutation
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SANDBOXES = HERE / ".sandbox"
SESSIONS = HERE / ".sessions"
SHARED_TEST_FILES = ("tests/conftest.py", "tests/dataset_helpers.py", "setup.cfg")
# Bump when a change to how tests are chosen changes which survive (their survivors are re-tested).
COVERAGE_VERSION = "subprocesses measured 1"
# Not bumped for the fixture contexts of coverage_map.py (2026-12-06): a module's survivors are re-tested
# with them whenever its tests next change; bump it to re-test every module's survivors at once.
# Bump when a change to this runner changes which outcome a mutant gets.
RUNNER_VERSION = "forkserver+coverage-selection 1"
# Operators whose mutants are mostly noise for this code base (bit shifts, ** and % in place of + or *,
# `is` in place of ==): they would triple the run time and rarely describe a bug someone writes.
EXCLUDE_OPERATORS = [
    r"core/ReplaceBinaryOperator_\w+_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|Mod|FloorDiv)$",
    r"core/ReplaceBinaryOperator_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|Mod)_\w+$",
    r"core/ReplaceComparisonOperator_\w+_(Is|IsNot)$",
    r"core/ReplaceUnaryOperator_\w+_Invert$",
    r"core/RemoveDecorator$",
    r"core/VariableReplacer$",
    r"core/VariableInserter$",
]
# A mutant's tests get this long plus three times their unmutated run time; one that runs longer (an
# endless loop) is stopped and counts as killed. A module may raise it with `timeout` in modules.toml.
TIMEOUT_S = 20.0
# Plugins are named, not auto-loaded: open3d's dependency dash registers a pytest plugin that takes 2 s to
# import; pytest's unraisable/thread-exception hooks run gc.collect() at exit (1 s with torch loaded) and
# only turn leaks into warnings.
PYTEST_ARGS = ["-x", "-q", "--no-header", "-o", "addopts=", "-p", "no:cacheprovider",
               "-p", "_hypothesis_pytestplugin", "-p", "no:unraisableexception", "-p", "no:threadexception"]
NOT_RUN = "not run: no listed test executes this statement"


def load_modules() -> list[dict]:
    return tomllib.loads((HERE / "modules.toml").read_text())["module"]


def slug(path: str) -> str:
    return path.replace("/", "__").removesuffix(".py")


def session_keys(mod: dict) -> dict:
    """What a session's results depend on. "module": the mutated module, the operators, the runner; when
    it changes, every mutant is tested again. "tests": the module's tests and the shared test helpers;
    when only they change, the survivors are tested again and the killed mutants stay killed (a changed
    test that no longer kills is caught by `--full`)."""
    def digest(head, files):
        h = hashlib.sha256(repr(head).encode())
        for f in files:
            h.update(f.encode() + b"\0" + (REPO / f).read_bytes())
        return h.hexdigest()

    test_files = sorted({t.split("::")[0] for t in mod["tests"]})  # an entry may name one test (file::name)
    return {"module": digest((EXCLUDE_OPERATORS, mod.get("exclude", []), RUNNER_VERSION), [mod["path"]]),
            "tests": digest((mod["tests"], mod.get("timeout"), COVERAGE_VERSION),
                            [*test_files, *SHARED_TEST_FILES])}


def stored_keys(session: Path) -> dict:
    try:
        return json.loads(session.with_suffix(".key").read_text())
    except (OSError, ValueError):
        return {}


def sync_sandbox(sandbox: Path) -> None:
    """Copy the checkout's tracked and untracked-but-not-ignored files into a sandbox (changed only)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src, dst = REPO / f, sandbox / f
        if not src.is_file() or (f.startswith("mutation/") and not f.endswith(".py")):
            continue
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def sandbox_env(sandbox: Path) -> dict:
    return dict(os.environ, PYTHONPATH=f"{sandbox}{os.pathsep}{sandbox / 'mutation'}",
                PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1", MPLBACKEND="Agg")


def write_config(mod: dict) -> Path:
    """The cosmic-ray config that `init` reads (module, operators); its test-command is not used."""
    ops = ", ".join(f'"{e}"' for e in EXCLUDE_OPERATORS + mod.get("exclude", [])).replace("\\", "\\\\")
    cfg = SESSIONS / f"{slug(mod['path'])}.toml"
    cfg.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{mod["path"]}"\n'
        f"timeout = {float(mod.get('timeout', TIMEOUT_S))}\n"
        "excluded-modules = []\n"
        'test-command = "false"\n\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = [{ops}]\n")
    return cfg


def init_session(mod: dict, sandbox: Path, full: bool = False) -> Path:
    """The module's cosmic-ray session: kept while the module is unchanged (survivors reset to pending
    when its tests changed), made afresh otherwise or with `full`."""
    session = SESSIONS / f"{slug(mod['path'])}.sqlite"
    keyfile = session.with_suffix(".key")
    keys, stored = session_keys(mod), stored_keys(session)
    if session.exists() and not full and stored.get("module") == keys["module"]:
        if stored.get("tests") != keys["tests"]:
            with sqlite3.connect(session) as db:
                db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
            session.with_suffix(".cov.json").unlink(missing_ok=True)
            keyfile.write_text(json.dumps(keys))
        return session
    session.unlink(missing_ok=True)
    keyfile.unlink(missing_ok=True)
    session.with_suffix(".cov.json").unlink(missing_ok=True)
    cfg = write_config(mod)
    bindir = Path(sys.executable).parent
    for cmd in (["cosmic-ray", "init"], ["cr-filter-operators"]):
        args = [str(cfg), str(session)] if cmd[0] == "cosmic-ray" else [str(session), str(cfg)]
        subprocess.run([str(bindir / cmd[0]), *cmd[1:], *args], cwd=sandbox, env=sandbox_env(sandbox),
                       check=True, capture_output=True)
    keyfile.write_text(json.dumps(keys))
    return session


def coverage_map(mod: dict, sandbox: Path) -> dict:
    """{"lines": {line: [node ids]}, "durations": {node id: s}} for the module's tests, cached per session.

    Node id "" stands for import time. Raises if the unmutated tests fail: every mutant would look killed.
    """
    cache = (SESSIONS / f"{slug(mod['path'])}.sqlite").with_suffix(".cov.json")
    if cache.exists():
        return json.loads(cache.read_text())
    import coverage

    with tempfile.TemporaryDirectory() as tmp:
        data_file, durations, rc = Path(tmp) / "cov", Path(tmp) / "durations.json", Path(tmp) / "rc"
        # Tests that run the CLI in a subprocess execute the module too: coverage.py follows them
        # (their lines get the empty context, so their mutants run every test of the module).
        rc.write_text("[run]\npatch = subprocess\n")
        target = sandbox / mod["path"]
        cov_args = [f"--rcfile={rc}", f"--data-file={data_file}"]
        cmd = [sys.executable, "-m", "coverage", "run", *cov_args, f"--include={target}",
               "-m", "pytest", *PYTEST_ARGS, "-p", "coverage_map", *mod["tests"]]
        fixtures = Path(tmp) / "fixtures.json"
        env = dict(sandbox_env(sandbox), MUTATION_DURATIONS=str(durations), MUTATION_FIXTURES=str(fixtures))
        proc = subprocess.run(cmd, cwd=sandbox, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{mod['path']}: its tests fail before any mutation (fix them first):\n"
                             f"{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        subprocess.run([sys.executable, "-m", "coverage", "combine", "-q", *cov_args], cwd=sandbox,
                       env=sandbox_env(sandbox), check=True, capture_output=True)
        data = coverage.CoverageData(basename=str(data_file))
        data.read()
        by_line = data.contexts_by_lineno(str(target)) if str(target) in data.measured_files() else {}
        result = {"lines": {str(k): sorted(v) for k, v in by_line.items()},
                  "durations": json.loads(durations.read_text()),
                  "fixtures": json.loads(fixtures.read_text())}
    cache.write_text(json.dumps(result))
    return result


def statement_lines(tree: ast.Module, line: int) -> range | None:
    """The lines of the innermost statement at `line` (a compound statement's header only); None at
    module level outside any statement (a decorator), which runs at import time."""
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno <= line <= node.end_lineno:
            if best is None or node.end_lineno - node.lineno < best.end_lineno - best.lineno:
                best = node
    if best is None:
        return None
    body = getattr(best, "body", None)
    if isinstance(body, list) and body and not isinstance(best, ast.Module):
        return range(best.lineno, max(best.lineno, body[0].lineno - 1) + 1)
    return range(best.lineno, best.end_lineno + 1)


def tests_for(cov: dict, tree: ast.Module, line: int) -> list[str] | None:
    """The node ids to run for a mutant on `line`, fastest first; [] when no test executes it; None
    for all of the module's tests (the statement runs at import time)."""
    lines = statement_lines(tree, line)
    if lines is None:
        return None
    ids = set()
    for ln in lines:
        ids.update(cov["lines"].get(str(ln), ()))
    if "" in ids:
        return None
    return sorted(fixture_users(cov, ids), key=lambda i: (cov["durations"].get(i, 1e9), i))


def fixture_users(cov: dict, contexts: set[str]) -> set[str]:
    """Node ids for coverage contexts: a test's own id, or for a fixture's set-up
    ("fixture:<baseid>::<name>", mutation/coverage_map.py) every test under <baseid> that uses <name>."""
    ids = set()
    for c in contexts:
        if not c.startswith("fixture:"):
            ids.add(c)
            continue
        baseid, _, name = c.removeprefix("fixture:").rpartition("::")
        ids.update(t for t, names in cov.get("fixtures", {}).items()
                   if name in names and (not baseid or t.startswith((baseid + "/", baseid + "::"))))
    return ids


class ForkServer:
    """One mutation/forkserver.py process in one sandbox."""

    def __init__(self, sandbox: Path):
        self.proc = subprocess.Popen([sys.executable, str(sandbox / "mutation" / "forkserver.py")],
                                     cwd=sandbox, env=sandbox_env(sandbox), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = self.proc.stdout.readline()
        if not ready:
            raise SystemExit(f"the fork server in {sandbox} did not start")

    def run(self, args: list[str], timeout: float) -> dict:
        self.proc.stdin.write(json.dumps({"args": args, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("the fork server died")
        return json.loads(reply)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@dataclass
class Job:
    mod: dict
    session: Path
    job_id: str
    mutation: object  # cosmic_ray MutationSpec
    tests: list[str]
    timeout: float


def test_one(server: ForkServer, sandbox: Path, job: Job) -> WorkResult:
    """Apply the mutant in this sandbox, run its tests in the fork server, put the file back."""
    m = job.mutation
    operator = cosmic_ray.plugins.get_operator(m.operator_name)(**(getattr(m, "operator_args", None) or {}))
    path = sandbox / m.module_path
    try:
        mutation = use_mutation(path, operator, m.occurrence)
        original, mutated = mutation.__enter__()
    except Exception as exc:  # noqa: BLE001 - cosmic-ray cannot make this mutant (see cannot_make)
        return cannot_make(exc)
    try:
        if mutated is None:
            return WorkResult(worker_outcome=WorkerOutcome.NO_TEST)
        reply = server.run([*PYTEST_ARGS, *job.tests], job.timeout)
    finally:
        mutation.__exit__(None, None, None)
    diff = "\n".join(_make_diff(original, mutated, m.module_path))
    if reply["rc"] == 5:  # "no tests collected": the selection is wrong, not the mutant caught
        raise RuntimeError(f"{m.module_path}: pytest collected none of {job.tests[:3]}...")
    outcome = TestOutcome.SURVIVED if reply["rc"] == 0 and not reply["timed_out"] else TestOutcome.KILLED
    note = "timed out\n" if reply["timed_out"] else ""
    return WorkResult(worker_outcome=WorkerOutcome.NORMAL, test_outcome=outcome, diff=diff,
                      output=note + reply["output"])


def cannot_make(exc: Exception) -> WorkResult:
    """A mutant cosmic-ray fails to write (its ExceptionReplacer on a dotted name such as
    `except tarfile.TarError`): skipped, counted apart, not a kill."""
    return WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=f"cosmic-ray cannot make it: {exc!r}")


def not_run_result(mutation, source: str) -> WorkResult:
    operator = cosmic_ray.plugins.get_operator(mutation.operator_name)(
        **(getattr(mutation, "operator_args", None) or {}))
    try:
        mutated = mutate_code(source, operator, mutation.occurrence)
    except Exception as exc:  # noqa: BLE001
        return cannot_make(exc)
    if mutated is None:
        return WorkResult(worker_outcome=WorkerOutcome.NO_TEST)
    diff = "\n".join(_make_diff(source, mutated, mutation.module_path))
    return WorkResult(worker_outcome=WorkerOutcome.NORMAL, test_outcome=TestOutcome.SURVIVED, diff=diff,
                      output=NOT_RUN)


def plan_jobs(mod: dict, session: Path, cov: dict, results: queue.Queue) -> list[Job]:
    """The module's pending mutants as jobs; those no test executes are answered at once."""
    source = (REPO / mod["path"]).read_text()
    tree = ast.parse(source)
    every = sorted(cov["durations"], key=lambda i: (cov["durations"][i], i))
    base = float(mod.get("timeout", TIMEOUT_S))
    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = list(db.pending_work_items)
    jobs = []
    for item in pending:
        m = item.mutations[0]
        tests = tests_for(cov, tree, m.start_pos[0])
        tests = every if tests is None else tests
        if not tests:
            results.put((session, item.job_id, not_run_result(m, source)))
            continue
        timeout = base + 3 * sum(cov["durations"].get(t, 0.0) for t in tests)
        jobs.append(Job(mod, session, item.job_id, m, tests, timeout))
    return jobs


def worker(index: int, jobs: queue.Queue, results: queue.Queue, planned: threading.Event,
           stop: threading.Event) -> None:
    sandbox = SANDBOXES / f"w{index}"
    server = ForkServer(sandbox)
    try:
        while not stop.is_set():
            try:
                job = jobs.get(timeout=0.5)
            except queue.Empty:
                if planned.is_set():
                    return
                continue
            try:
                results.put((job.session, job.job_id, test_one(server, sandbox, job)))
            except Exception as exc:  # noqa: BLE001 - reported and stops the run; the file is restored
                results.put(("error", job.mutation, exc))
                stop.set()
                return
    finally:
        server.close()


def run(mods: list[dict], n_workers: int, full: bool = False) -> None:
    """Coverage maps are made module by module in the main thread while the workers already test the
    mutants of the modules planned before."""
    SANDBOXES.mkdir(exist_ok=True)
    for i in range(n_workers):
        sync_sandbox(SANDBOXES / f"w{i}")
    # The planning sandbox is never mutated: coverage maps and sessions are made from the pristine code.
    plan_box = SANDBOXES / "plan"
    sync_sandbox(plan_box)
    results: queue.Queue = queue.Queue()
    jobs: queue.Queue = queue.Queue()
    planned, stop = threading.Event(), threading.Event()
    threads = [threading.Thread(target=worker, args=(i, jobs, results, planned, stop), daemon=True)
               for i in range(n_workers)]
    for t in threads:
        t.start()
    total, done, shown, t0 = 0, 0, 0, time.monotonic()
    try:
        for mod in mods:
            session = init_session(mod, plan_box, full)
            t1 = time.monotonic()
            cov = coverage_map(mod, plan_box)
            answered = results.qsize()
            planned_jobs = plan_jobs(mod, session, cov, results)
            n_unrun = results.qsize() - answered
            print(f"\n== {mod['path']}: {len(planned_jobs)} mutants to run, {n_unrun} that no "
                  f"test executes (coverage map {time.monotonic() - t1:.0f} s)", flush=True)
            for job in planned_jobs:
                jobs.put(job)
            total += len(planned_jobs)
            done += drain(results, None, count_not_run=False)
        planned.set()
        while any(t.is_alive() for t in threads) or not results.empty():
            done += drain(results, 1.0)
            if done - shown >= 10 or (done == total and shown != done):
                shown = done
                rate = done / max(time.monotonic() - t0, 1e-9)
                left_min = (total - done) / max(rate, 1e-9) / 60
                print(f"\r  {done}/{total} mutants, {rate:.2f}/s, ~{left_min:.0f} min left", end="",
                      flush=True)
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted; finished mutants are kept, rerun to continue", flush=True)
        for t in threads:
            t.join()
        drain(results, None)
    print(flush=True)


def drain(results: queue.Queue, wait: float | None, count_not_run: bool = True) -> int:
    """Store the finished results (sqlite is written from this thread only); returns how many of them
    were run (all of them with count_not_run)."""
    n = 0
    while True:
        try:
            item = results.get(timeout=wait) if wait and n == 0 else results.get_nowait()
        except queue.Empty:
            return n
        if item[0] == "error":
            raise SystemExit(f"mutation run stopped at {item[1]}: {item[2]}")
        session, job_id, result = item
        with use_db(str(session), WorkDB.Mode.open) as db:
            db.set_result(job_id, result)
        n += count_not_run or result.output != NOT_RUN


def load_reasons(name: str) -> dict[str, str]:
    """`path:line:col operator#occurrence  reason` lines of mutation/<name> (equivalent.txt, kept.txt)."""
    out = {}
    path = HERE / name
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            ident, _, reason = line.partition("  ")
            out[ident.strip()] = reason.strip()
    return out


def mutant_id(m) -> str:
    return f"{m.module_path.as_posix()}:{m.start_pos[0]}:{m.start_pos[1]} {m.operator_name}#{m.occurrence}"


def diff_line(diff: str | None) -> str:
    lines = (diff or "").splitlines()
    minus = [ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    return f"{' / '.join(minus)}  ->  {' / '.join(plus)}"


def report(mods: list[dict]) -> int:
    equivalent, kept = load_reasons("equivalent.txt"), load_reasons("kept.txt")
    lines, unmade, unexplained = [], 0, 0
    total = {"killed": 0, "survived": 0, "not_run": 0, "equivalent": 0, "pending": 0, "skipped": 0}
    print(f"{'module':40s} {'killed':>7s} {'surv.':>6s} {'(unrun)':>7s} {'equiv.':>6s} {'pending':>7s} "
          f"{'score':>7s}")
    for mod in mods:
        session = SESSIONS / f"{slug(mod['path'])}.sqlite"
        if not session.exists():
            print(f"{mod['path']:40s} {'not run':>7s}")
            continue
        c = dict.fromkeys(total, 0)
        with use_db(str(session), WorkDB.Mode.open) as db:
            c["pending"] = sum(1 for _ in db.pending_work_items)
            for item, result in db.completed_work_items:
                if result.worker_outcome in (WorkerOutcome.SKIPPED, WorkerOutcome.NO_TEST):
                    c["skipped"] += 1
                    unmade += (result.output or "").startswith("cosmic-ray cannot make")
                elif result.test_outcome == TestOutcome.SURVIVED:
                    ident = mutant_id(item.mutations[0])
                    if ident in equivalent:
                        c["equivalent"] += 1
                    else:
                        c["survived"] += 1
                        unrun = result.output == NOT_RUN
                        c["not_run"] += unrun
                        mark = "  [no test runs it]" if unrun else ""
                        # A survivor that changes behaviour stays counted; kept.txt only says why no test
                        # pins it. One without a reason is work left.
                        why = kept.get(ident)
                        unexplained += why is None
                        lines.append(f"{ident}  {diff_line(result.diff)}{mark}  # "
                                     f"{why if why is not None else 'NO REASON YET: kill it or give one'}")
                else:  # killed, timed out, or a mutant that does not even import (incompetent)
                    c["killed"] += 1
        for k in total:
            total[k] += c[k]
        tested = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / tested:6.1f}%" if tested else "    -"
        keys, stored = session_keys(mod), stored_keys(session)
        stale = ("  (stale: module changed)" if stored.get("module") != keys["module"] else
                 "  (tests changed: survivors not re-tested)" if stored.get("tests") != keys["tests"] else "")
        print(f"{mod['path']:40s} {c['killed']:7d} {c['survived']:6d} {c['not_run']:7d} {c['equivalent']:6d} "
              f"{c['pending']:7d} {score}{stale}")
    tested = total["killed"] + total["survived"]
    score = f"{100 * total['killed'] / tested:6.1f}%" if tested else "    -"
    if unmade:
        print(f"({unmade} mutants that cosmic-ray cannot write, e.g. on `except a.B`, are left out)")
    print(f"{'TOTAL':40s} {total['killed']:7d} {total['survived']:6d} {total['not_run']:7d} "
          f"{total['equivalent']:6d} {total['pending']:7d} {score}")
    print(f"{len(lines)} surviving mutant(s) in mutation/survivors.txt, {unexplained} without a reason "
          f"in mutation/kept.txt")
    header = ("# Surviving mutants of the last `make mutation` (mutation/run.py), one a line:\n"
              "# path:line:col operator#occurrence  original  ->  mutant   ([no test runs it]: no listed\n"
              "# test executes that statement)  # why no test pins it (mutation/kept.txt).\n"
              "# Kill each with a test; move one that cannot change behaviour to mutation/equivalent.txt;\n"
              "# give one that changes behaviour but should not be pinned its reason in mutation/kept.txt.\n")
    (HERE / "survivors.txt").write_text(header + "".join(f"{ln}\n" for ln in sorted(lines)))
    return 0


def check(ident: str, tests: list[str]) -> int:
    """Plant one mutant (by its survivors.txt id) in a scratch copy of the checkout and run `tests`."""
    where, _, op = ident.strip().partition(" ")
    path = where.rsplit(":", 2)[0]
    operator_name, _, occurrence = op.partition("#")
    operator = cosmic_ray.plugins.get_operator(operator_name)()
    source = (REPO / path).read_text()
    mutated = mutate_code(source, operator, int(occurrence))
    if mutated is None:
        sys.exit(f"{ident}: no such mutant in the current {path} (did its line move? ids are path:line:col)")
    print("\n".join(_make_diff(source, mutated, path)), flush=True)
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        box = Path(tmp)
        sync_sandbox(box)
        (box / path).write_text(mutated)
        rc = subprocess.run([sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests], cwd=box,
                            env=sandbox_env(box)).returncode
    print("KILLED" if rc not in (0, 5) else "SURVIVED" if rc == 0 else "NO TESTS COLLECTED")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="module paths as in mutation/modules.toml (default: all)")
    ap.add_argument("--report", action="store_true", help="only print scores from the stored sessions")
    ap.add_argument("--check", metavar="MUTANT_ID", help="run one mutant against the tests given as modules")
    ap.add_argument("--full", action="store_true", help="test every mutant again, killed ones too")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="workers (default: CPUs)")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.check, args.modules)
    mods = load_modules()
    known = {m["path"] for m in mods}
    unknown = [m for m in args.modules if m not in known]
    if unknown:
        sys.exit(f"not in mutation/modules.toml: {', '.join(unknown)}")
    chosen = [m for m in mods if not args.modules or m["path"] in args.modules]
    SESSIONS.mkdir(exist_ok=True)
    if not args.report:
        run(chosen, max(1, args.jobs), args.full)
    return report(mods)


if __name__ == "__main__":
    sys.exit(main())
