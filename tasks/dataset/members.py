"""Which archive members a release may hold: safe relative names, regular files, each name once.

One rule for `verify-release` (tasks.dataset.verify) and the loader (tasks.dataset.loader); kept
apart from both so that the loader, which dataset users install with numpy, scipy, soundfile and
torch only, imports no video library through it.
"""
from __future__ import annotations

import re
import tarfile


def unsafe_name(name: str) -> str | None:
    """Why an archive member's name could write outside its folder, or None for a safe relative name."""
    if not name:
        return "an empty name"
    if any(ord(c) < 32 for c in name):
        return "a control character in its name"
    if "\\" in name:
        return "a backslash in its name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute name"
    parts = name.split("/")
    if ".." in parts:
        return "'..' in its name"
    if any(p in ("", ".") for p in parts):
        return "an empty or '.' component in its name"
    return None


def tar_member_problem(m: tarfile.TarInfo, seen: set[str]) -> str | None:
    """Why a tar member is refused, or None (then its name joins `seen`): an unsafe name, not a
    regular file, or a name already in `seen` (`tar xf` would keep the last copy, a reader the
    first). verify-release and the loader (tasks.dataset.loader) refuse the same members."""
    why = unsafe_name(m.name) or _member_kind_problem(m)
    if why:
        return f"{why} (a release holds regular files with relative names only)"
    if m.name in seen:
        return "appears twice in the archive"
    seen.add(m.name)
    return None


def _member_kind_problem(m: tarfile.TarInfo) -> str | None:
    if m.issym() or m.islnk():
        return f"a {'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}"
    if m.isdir():
        return "a folder entry"
    if m.issparse():
        return "a sparse file"
    if not m.isreg():
        return "a device, fifo or other special file"
    return None
