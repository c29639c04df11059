"""Names from outside become paths only through here.

Subject and song names arrive from task parameters, the CLI and rerun; each must be one plain
folder name (`check_name`), so that `raw/<subject>/songs/<song>` and `processed/<subject>/...`
stay inside their roots.  Every path a task writes is checked with `check_write_path` (the
atomic writers of `tasks.common.atomic` call it against the roots `write_roots` made active), and
every delete goes through `remove_inside`, which never follows a symbolic link out of its root.
Plain code: no luigi, no tasks.config.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

from tasks.common.errors import PipelineInputError

MAX_NAME_LENGTH = 128


def _name_problem(name) -> str | None:
    """What makes `name` not a single plain folder name, or None when it is one."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f"is '{name}', which means a folder relative to the current one"
    bad = [c for c in name if unicodedata.category(c).startswith("C")]
    if bad:
        return ("contains control or invisible characters "
                + ", ".join(sorted({f"U+{ord(c):04X}" for c in bad})))
    seps = sorted({c for c in name if c in ("/", "\\", os.sep, os.altsep or "/")})
    if seps:
        return f"contains the path separator(s) {' '.join(repr(c) for c in seps)}"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        return "is an absolute path or names a drive"
    if name.startswith("."):
        return "starts with a dot (hidden folders and temporaries start with one)"
    if name != name.strip():
        return "starts or ends with white space"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    return None


def check_name(name: str, what: str = "subject", under: str | Path | None = None) -> str:
    """`name` if it is a single plain folder name; else PipelineInputError saying what is wrong.

    A plain folder name is non-empty text of at most MAX_NAME_LENGTH characters with no '/' or
    '\\' (or os.sep), not '.' or '..', not starting with a dot, not absolute, without control or
    invisible characters and without leading/trailing white space.  With `under`, the folder
    `under/name` must also exist (e.g. the raw root for subjects).
    """
    problem = _name_problem(name)
    if problem:
        raise PipelineInputError(f"{what} name {name!r}", f"not a valid {what} name: it {problem}",
                                 f"give the {what} as the name of its folder under the raw root "
                                 "(one folder name, no path), and rename the folder if needed")
    if under is not None and not (Path(under) / name).is_dir():
        raise PipelineInputError(Path(under) / name, f"no {what} folder of that name",
                                 f"use one of the {what} folders in {under}")
    return name


def resolve_inside(root: str | Path, path: str | Path) -> Path:
    """`path` (relative ones are taken under `root`) with symlinks resolved; PipelineInputError
    when the result is not `root` or inside it.  (Path,) -> Path"""
    root_r = Path(root).resolve()
    path_r = (Path(root) / path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise PipelineInputError(path, f"resolves to {path_r}, outside {root_r}",
                                 f"outputs are only written inside {root_r}; remove the symbolic link "
                                 "or '..' that leads out of it")
    return path_r


def remove_inside(root: str | Path, path: str | Path) -> bool:
    """The one guarded delete: remove `path` (file, symbolic link or folder tree) only when it lies
    inside `root`, never `root` itself.  Returns whether something was removed.

    A symbolic link is removed itself, never followed; the folder holding `path` must resolve
    inside `root` (a link on the way out is refused); shutil.rmtree does not follow links inside
    the tree.  (A folder swapped for a link by another process between the check and the delete
    is not guarded against.)
    """
    root_given = Path(root)
    root = root_given.absolute()   # a relative root would otherwise be joined twice (raw/raw/S001)
    path = Path(path)
    if not path.is_absolute():
        # given relative to the working directory with the root in front, or relative to the root
        path = path.absolute() if path.is_relative_to(root_given) and not root_given.is_absolute() \
            else root / path
    if not os.path.lexists(path):
        return False
    parent = resolve_inside(root, path.parent)
    target = parent / path.name
    if path.name in ("", ".", "..") or target == Path(root).resolve():
        raise PipelineInputError(path, "refusing to delete the root folder itself",
                                 "delete the files inside it instead")
    if target.is_symlink() or not target.is_dir():
        target.unlink()
    else:
        shutil.rmtree(target)
    return True


# The output roots of the stage running in this process (`write_roots`); empty outside a stage, where
# the caller chose the path itself (a CLI --out).  A module global rather than a context variable on
# purpose: writers run in helper threads (video encoders) that must see the stage's roots too.
_WRITE_ROOTS: list[Path] = []


@contextlib.contextmanager
def write_roots(*roots: str | Path | None):
    """Within the block, every write through `tasks.common.atomic` (and `check_write_path`) must land
    inside one of `roots` (None entries are left out), with no symbolic link between the root and the
    file.  Blocks nest; the inner one's roots apply."""
    saved = list(_WRITE_ROOTS)
    _WRITE_ROOTS[:] = [Path(os.path.abspath(r)) for r in roots if r is not None]
    try:
        yield
    finally:
        _WRITE_ROOTS[:] = saved


def active_write_roots() -> list[Path]:
    return list(_WRITE_ROOTS)


def check_write_path(path: str | Path, roots: list[str | Path] | None = None) -> Path:
    """`path` made absolute ('..' folded) after checking that it lies inside one of `roots` (the active
    `write_roots` when None) and that no folder or file between that root and `path` (`path` itself
    included) is a symbolic link: a link would carry the write (or the delete) out of its root.  The
    root itself may be a link (processed/ on another disk).  With no roots at all, `path` is returned
    made absolute and unchecked.  PipelineInputError otherwise.  (Path,) -> Path"""
    roots = _WRITE_ROOTS if roots is None else [Path(os.path.abspath(r)) for r in roots]
    p = Path(os.path.abspath(path))
    if not roots:
        return p
    for root in roots:
        for base in (root, root.resolve()):
            try:
                rel = p.relative_to(base)
            except ValueError:
                continue
            cur = base
            for part in rel.parts:
                cur = cur / part
                if os.path.islink(cur):
                    raise PipelineInputError(cur, f"is a symbolic link inside the output folder {root}; "
                                             "writing through it would change files elsewhere",
                                             "remove the link (outputs are written only inside "
                                             f"{root}, as plain folders)")
            return p
    raise PipelineInputError(path, "lies outside the output folders "
                             + ", ".join(str(r) for r in roots),
                             "outputs are only written inside [paths] processed_dir and release_dir")
