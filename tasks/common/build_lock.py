"""One build per processed/ at a time: an advisory lock on `processed/.singinghead.lock`.

`flock` (not a pid file) because the kernel drops the lock when its holder dies, even by kill -9, so
there is never a stale lock to clear by hand.  The lock is taken once per process and counts as
held in the processes forked from it (Luigi's parallel workers) while their parent holds it.  Locks on network
file systems depend on the server; the lock file then says who holds it but may not stop a second
machine.  Plain code: no luigi, no tasks.config.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from tasks.common.errors import PipelineInputError

LOCK_FILE = ".singinghead.lock"

# lock file (absolute, as given) -> open descriptor, for the locks this process (or the one it was
# forked from) holds; a nested request for a held lock is granted at once.
_HELD: dict[str, int] = {}


def _after_fork_in_child() -> None:
    # A forked child (a Luigi worker) counts as holding its parent's locks but closes its copy of the
    # descriptor: the lock must end with the build, not with the last child still shutting down.
    for key, fd in list(_HELD.items()):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        _HELD[key] = -1


os.register_at_fork(after_in_child=_after_fork_in_child)


def lock_path(processed: str | Path) -> Path:
    return Path(os.path.abspath(processed)) / LOCK_FILE


def holds(processed: str | Path) -> bool:
    return str(lock_path(processed)) in _HELD


@contextlib.contextmanager
def build_lock(processed: str | Path, shared: bool = False):
    """Hold the build lock of `processed` for the block: exclusive for a whole build, `shared` for a
    single task run outside such a build (parallel Luigi workers share it).  Granted at once when
    this process already holds it; PipelineInputError naming the holder when another build has it."""
    path = lock_path(processed)
    if str(path) in _HELD:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise PipelineInputError(path, f"another build is using {path.parent} ({holder})",
                                 "wait for it to finish or stop it; one build per processed folder at a "
                                 "time (the lock is released by itself when that process ends)") from None
    except BaseException:
        os.close(fd)
        raise
    if not shared:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:300]}\n").encode(), 0)
    _HELD[str(path)] = fd
    try:
        yield path
    finally:
        _HELD.pop(str(path), None)
        if not shared:
            os.ftruncate(fd, 0)     # the file names a holder only while one is there
        os.close(fd)        # closing the last descriptor releases the lock


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "a Luigi worker; its pid is not recorded"
