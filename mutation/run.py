"""Mutation testing of the core modules with cosmic-ray (`make mutation`; never part of `make test`).

For each module of mutation/modules.toml (or those named on the command line) cosmic-ray plants one
small bug at a time (a flipped comparison, + for -, a constant off by one, a removed `not`, ...) and runs
only that module's test files; a mutant the tests do not notice survives.

    python mutation/run.py                       every module (hours the first time)
    python mutation/run.py tasks/common/names.py one module
    python mutation/run.py --report              scores from the stored sessions, runs nothing

Cached and resumable: each module has a cosmic-ray session (sqlite) under mutation/.sessions/, keyed by
a hash of the module, its test files and the shared test helpers. An interrupted run continues with the
mutants not yet tested; an unchanged module costs nothing; a changed one starts a new session.
Mutants are applied in a scratch copy of the checkout (mutation/.sandbox/), never in the checkout itself.

Writes mutation/survivors.txt (kept in the repository): every surviving mutant not listed in
mutation/equivalent.txt, and prints per module and in total: killed / (tested - equivalent).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SANDBOX = HERE / ".sandbox"
SESSIONS = HERE / ".sessions"
SHARED_TEST_FILES = ("tests/conftest.py", "tests/dataset_helpers.py", "setup.cfg")
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
# A mutant that loops forever is stopped after this long (and counts as killed); a module whose tests take
# longer sets its own `timeout` in modules.toml. It should be a few times the tests' run time.
TIMEOUT_S = 120.0


def load_modules() -> list[dict]:
    return tomllib.loads((HERE / "modules.toml").read_text())["module"]


def timeout(mod: dict) -> float:
    return float(mod.get("timeout", TIMEOUT_S))


def slug(path: str) -> str:
    return path.replace("/", "__").removesuffix(".py")


def module_key(mod: dict) -> str:
    """What a session's results depend on: the module, its tests, the shared helpers, the settings."""
    h = hashlib.sha256(repr((EXCLUDE_OPERATORS, timeout(mod))).encode())
    test_files = sorted({t.split("::")[0] for t in mod["tests"]})  # an entry may name one test (file::name)
    for f in [mod["path"], *test_files, *SHARED_TEST_FILES]:
        h.update(f.encode() + b"\0" + (REPO / f).read_bytes())
    return h.hexdigest()


def sync_sandbox() -> None:
    """Copy the checkout's tracked and untracked-but-not-ignored files into the sandbox (changed only)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src, dst = REPO / f, SANDBOX / f
        if not src.is_file() or f.startswith("mutation/"):
            continue
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def write_config(mod: dict) -> Path:
    tests = " ".join(mod["tests"])
    ops = ", ".join(f'"{e}"' for e in EXCLUDE_OPERATORS).replace("\\", "\\\\")
    cfg = SESSIONS / f"{slug(mod['path'])}.toml"
    cfg.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{mod["path"]}"\n'
        f"timeout = {timeout(mod)}\n"
        "excluded-modules = []\n"
        f'test-command = "{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"\n\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = [{ops}]\n")
    return cfg


def cosmic(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(SANDBOX), OMP_NUM_THREADS="1")
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / args[0]), *args[1:]], cwd=SANDBOX, env=env, check=True)


def run_module(mod: dict) -> None:
    session = SESSIONS / f"{slug(mod['path'])}.sqlite"
    keyfile = session.with_suffix(".key")
    key = module_key(mod)
    cfg = write_config(mod)
    if not (session.exists() and keyfile.exists() and keyfile.read_text() == key):
        session.unlink(missing_ok=True)
        keyfile.unlink(missing_ok=True)
        cosmic("cosmic-ray", "init", str(cfg), str(session))
        cosmic("cr-filter-operators", str(session), str(cfg))
        keyfile.write_text(key)
    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = sum(1 for _ in db.pending_work_items)
    print(f"== {mod['path']}: {pending} mutants to test", flush=True)
    if pending:
        cosmic("cosmic-ray", "exec", str(cfg), str(session))


def load_equivalent() -> dict[str, str]:
    """`path:line:col operator#occurrence  reason` lines of mutation/equivalent.txt."""
    out = {}
    for line in (HERE / "equivalent.txt").read_text().splitlines():
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
    equivalent = load_equivalent()
    lines, total = [], {"killed": 0, "survived": 0, "equivalent": 0, "pending": 0, "skipped": 0}
    print(f"{'module':40s} {'killed':>7s} {'surv.':>6s} {'equiv.':>6s} {'pending':>7s} {'score':>7s}")
    for mod in mods:
        session = SESSIONS / f"{slug(mod['path'])}.sqlite"
        if not session.exists():
            print(f"{mod['path']:40s} {'not run':>7s}")
            continue
        c = dict.fromkeys(total, 0)
        with use_db(str(session), WorkDB.Mode.open) as db:
            c["pending"] = sum(1 for _ in db.pending_work_items)
            for item, result in db.completed_work_items:
                if result.worker_outcome == WorkerOutcome.SKIPPED:
                    c["skipped"] += 1
                elif result.test_outcome == TestOutcome.SURVIVED:
                    ident = mutant_id(item.mutations[0])
                    if ident in equivalent:
                        c["equivalent"] += 1
                    else:
                        c["survived"] += 1
                        lines.append(f"{ident}  {diff_line(result.diff)}")
                else:  # killed, timed out, or a mutant that does not even import (incompetent)
                    c["killed"] += 1
        for k in total:
            total[k] += c[k]
        tested = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / tested:6.1f}%" if tested else "    -"
        keyfile = session.with_suffix(".key")
        fresh = keyfile.exists() and keyfile.read_text() == module_key(mod)
        stale = "" if fresh else "  (stale: module or tests changed)"
        print(f"{mod['path']:40s} {c['killed']:7d} {c['survived']:6d} {c['equivalent']:6d} {c['pending']:7d} "
              f"{score}{stale}")
    tested = total["killed"] + total["survived"]
    score = f"{100 * total['killed'] / tested:6.1f}%" if tested else "    -"
    print(f"{'TOTAL':40s} {total['killed']:7d} {total['survived']:6d} {total['equivalent']:6d} "
          f"{total['pending']:7d} {score}")
    header = ("# Surviving mutants of the last `make mutation` (mutation/run.py), one a line:\n"
              "# path:line:col operator#occurrence  original  ->  mutant\n"
              "# Kill each with a test, or move it to mutation/equivalent.txt with a one-line reason.\n")
    (HERE / "survivors.txt").write_text(header + "".join(f"{ln}\n" for ln in sorted(lines)))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="module paths as in mutation/modules.toml (default: all)")
    ap.add_argument("--report", action="store_true", help="only print scores from the stored sessions")
    args = ap.parse_args(argv)
    mods = load_modules()
    known = {m["path"] for m in mods}
    unknown = [m for m in args.modules if m not in known]
    if unknown:
        sys.exit(f"not in mutation/modules.toml: {', '.join(unknown)}")
    chosen = [m for m in mods if not args.modules or m["path"] in args.modules]
    SESSIONS.mkdir(exist_ok=True)
    if not args.report:
        sync_sandbox()
        for mod in chosen:
            run_module(mod)
    return report(mods)


if __name__ == "__main__":
    sys.exit(main())
