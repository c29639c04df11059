"""Move the ids of mutation/equivalent.txt and mutation/kept.txt to where their mutants are now.

An id (`path:line:col operator#occurrence`) names a position: an edit above a listed mutant moves its
line, and an edit that adds or removes a site of the same operator above it changes its occurrence
number. This finds each listed mutant of a module that differs from git revision REV in the module
as it is now: the same operator making the same change (the original and mutated line, as text) at
the same column, the nearest such site when there are several. An id whose mutant is gone (its line
was rewritten) is printed and left as it is; `run.py --report` then counts it nowhere.

    python mutation/remap.py HEAD~1          after committing an edit of a listed module
    python mutation/remap.py main --dry-run  what would move
    python mutation/remap.py abc123 tasks/x.py   only the ids of tasks/x.py
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cosmic_ray.plugins
from cosmic_ray.ast import Visitor, get_ast
from cosmic_ray.mutating import mutate_code

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FILES = ("equivalent.txt", "kept.txt")


class _Sites(Visitor):
    """Every site of one operator in a module, in cosmic-ray's occurrence order: [(line, col)]."""

    def __init__(self, operator):
        self.operator, self.sites = operator, []

    def visit(self, node):
        for start, _ in self.operator.mutation_positions(node):
            self.sites.append(tuple(start))
        return node


def sites(source: str, operator) -> list[tuple[int, int]]:
    visitor = _Sites(operator)
    visitor.walk(get_ast(source))
    return visitor.sites


def change(source: str, operator, occurrence: int) -> tuple[str, str] | None:
    """(original line, mutated line) of one mutant, stripped; None when it does not exist."""
    mutated = mutate_code(source, operator, occurrence)
    if mutated is None:
        return None
    old, new = source.splitlines(), mutated.splitlines()
    i = next((k for k, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    return old[i].strip() if i < len(old) else "", new[i].strip() if i < len(new) else ""


def parse_id(ident: str) -> tuple[str, int, int, str, int]:
    where, _, op = ident.partition(" ")
    path, line, col = where.rsplit(":", 2)
    name, _, occ = op.partition("#")
    return path, int(line), int(col), name, int(occ)


def remap_one(ident: str, old_src: str, new_src: str) -> str | None:
    """The id of the same mutant in `new_src`; None when no site makes the same change."""
    path, line, col, name, occ = parse_id(ident)
    operator = cosmic_ray.plugins.get_operator(name)()
    want = change(old_src, operator, occ)
    if want is None:
        return None
    new_sites = sites(new_src, operator)
    found = [k for k, (ln, c) in enumerate(new_sites) if c == col and change(new_src, operator, k) == want]
    if not found:
        return None
    k = min(found, key=lambda k: (abs(new_sites[k][0] - line), abs(k - occ)))
    ln, c = new_sites[k]
    return f"{path}:{ln}:{c} {name}#{k}"


def git_show(rev: str, path: str) -> str | None:
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the git revision the listed ids were written against")
    ap.add_argument("--dry-run", action="store_true", help="print the moves, write nothing")
    ap.add_argument("modules", nargs="*", help="only the ids of these module paths (default: every module)")
    args = ap.parse_args(argv)
    sources: dict[str, tuple[str | None, str | None]] = {}
    lost = moved = 0
    for name in FILES:
        listing = HERE / name
        if not listing.exists():
            continue
        lines = listing.read_text().splitlines()
        out = []
        for text in lines:
            ident, sep, reason = text.partition("  ")
            if not text.strip() or text.startswith("#"):
                out.append(text)
                continue
            path = parse_id(ident.strip())[0]
            if args.modules and path not in args.modules:
                out.append(text)
                continue
            if path not in sources:
                cur = REPO / path
                sources[path] = (git_show(args.rev, path), cur.read_text() if cur.exists() else None)
            old_src, new_src = sources[path]
            if old_src is None or new_src is None or old_src == new_src:
                out.append(text)
                continue
            new_id = remap_one(ident.strip(), old_src, new_src)
            if new_id is None:
                lost += 1
                print(f"{name}: no such mutant any more, left as it is: {ident.strip()}")
                out.append(text)
            else:
                if new_id != ident.strip():
                    moved += 1
                    print(f"{name}: {ident.strip()} -> {new_id}")
                out.append(f"{new_id}{sep}{reason}")
        if not args.dry_run:
            listing.write_text("\n".join(out) + "\n")
    print(f"{moved} id(s) moved, {lost} not found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
