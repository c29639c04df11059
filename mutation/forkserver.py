"""A pytest fork server for `make mutation` (mutation/run.py starts one per worker; not for users).

Each mutant used to pay about 2 s to start Python and import torch, numpy, scipy, OpenCV and PyAV before
its first test ran, as much as the tests themselves on most modules. This process imports those
third-party libraries once and forks a child per request; the child imports the project (so it sees the
mutant on disk) and runs `pytest.main`. The parent never imports project code, and no bytecode is
written, so a child can never run a stale copy of a mutated module.

Protocol: one JSON request a line on stdin, `{"args": [...pytest args], "timeout": seconds}`; one JSON
reply a line on stdout, `{"rc": int, "timed_out": bool, "output": "last lines"}`. Run with the sandbox as
working directory and PYTHONPATH.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import sys
import tempfile
import time

# The third-party libraries the mapped tests import; a missing one is simply imported by each child.
PRELOAD = ("numpy", "scipy", "scipy.spatial", "scipy.ndimage", "scipy.signal", "scipy.optimize",
           "scipy.interpolate", "scipy.io.wavfile", "scipy.linalg", "scipy.stats", "torch", "cv2", "av",
           "PIL.Image", "soundfile", "luigi", "pytest", "hypothesis", "hypothesis.strategies",
           "hypothesis.extra.numpy", "trimesh", "numba", "skimage.transform", "matplotlib",
           "matplotlib.path", "facenet_pytorch", "dlib", "_hypothesis_pytestplugin", "requests", "jsonschema")
PROJECT = ("tasks", "flame_fit", "pipeline", "demo", "tests", "bench")
OUTPUT_TAIL = 4000


def preload() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional library; the child imports it itself if needed
            pass
    leaked = [m for m in sys.modules if m.split(".")[0] in PROJECT]
    if leaked:  # a child would run the pristine copy of a module imported here
        raise SystemExit(f"forkserver: project modules imported before forking: {leaked[:5]}")


def run_child(args: list[str], log_path: str) -> None:
    """In the forked child: a fresh session (so a timeout kills its subprocesses too), output to a file."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)  # stdin is the request pipe: no test may read it
    os.dup2(null, 0)
    os.close(null)
    fd = os.open(log_path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    code = 3
    try:
        import pytest
        code = int(pytest.main(args))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve_one(args: list[str], timeout: float) -> dict:
    fd, log_path = tempfile.mkstemp(prefix="mut-", suffix=".log")
    os.close(fd)
    try:
        pid = os.fork()
        if pid == 0:
            run_child(args, log_path)
        deadline, timed_out, status = time.monotonic() + timeout, False, 0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        rc = os.waitstatus_to_exitcode(status)
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - OUTPUT_TAIL))
            output = f.read().decode("utf-8", "replace")
        return {"rc": rc, "timed_out": timed_out, "output": output}
    finally:
        os.unlink(log_path)


def main() -> None:
    sys.dont_write_bytecode = True
    preload()
    gc.freeze()  # the children's collections then skip the preloaded libraries' objects
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps(serve_one(req["args"], float(req["timeout"]))), file=out, flush=True)


if __name__ == "__main__":
    main()
