"""Subject and song ids come from outside: each must be one plain folder name."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from tasks.common.errors import PipelineInputError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, what: str = "subject") -> str:
    """`name` if it is a single plain folder name (letters, digits, '.', '_', '-'; no leading dot)."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name) or name in (".", ".."):
        raise PipelineInputError(repr(name), f"not a valid {what} id: use one plain folder name "
                                 "(letters, digits, '.', '_', '-', not starting with a dot)",
                                 f"name the {what} by its folder under the raw root")
    return name


def resolve_inside(root: Path, path: Path) -> Path:
    """`path` resolved (symlinks followed), or an error when that leaves `root`."""
    root_r, path_r = Path(root).resolve(), Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise PipelineInputError(path, f"resolves outside {root}", "only paths inside the output root are written")
    return path_r


def remove_inside(root: Path, path: Path) -> bool:
    """The one guarded delete: remove `path` (a file, link or folder) only if it lies inside `root`.

    A symbolic link is removed itself, never followed. Returns whether something was removed."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return False
    resolve_inside(root, path.parent)
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        resolve_inside(root, path)
        shutil.rmtree(path)
    return True
