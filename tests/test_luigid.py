"""Scale-out: a central `luigid` on loopback and two worker processes build a small demo capture.

Checks that every task ran exactly once across the two workers (processed/_timings.jsonl gets one
line per finished task) and that the release verifies. Slow (a whole pipeline run): marked `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from demo.capture import make_demo_capture
from tasks.dataset.verify import verify_release

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 230


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"luigid exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"luigid did not listen on 127.0.0.1:{port} within {timeout} s")


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


@pytest.mark.slow
def test_luigid_two_workers_build_a_release(tmp_path):

    raw, processed = tmp_path / "raw", tmp_path / "processed"
    make_demo_capture(
        raw, tmp_path / "truth", width=640, height=360, seconds=12.0, n_subjects=1, n_songs=1, workers=1
    )
    cfg = tmp_path / "test_luigi.cfg"  # read after ./luigi.cfg, so these values win
    cfg.write_text(
        f"[paths]\nraw_dir = {raw}\nprocessed_dir = {processed}\nrelease_dir = {processed}/release\n"
        # 2 s clips with keyframes every 60 frames, so the short demo segments still give clips
        "[crop]\noutput_size = 256\nkeyframe_interval = 60\n[dataset]\nclip_frames = 60\n"
        "[refine]\nmax_iters = 200\n"
        # keep_alive: both workers stay and share the work; one retry at most, so a failure ends the run
        "[worker]\nkeep_alive = true\n[scheduler]\nretry_count = 1\n[resources]\ngpu = 1\n"
    )
    env = {
        **os.environ,
        "LUIGI_CONFIG_PATH": str(cfg),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    luigid = subprocess.Popen(
        [
            _bin("luigid"),
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
            "--state-path",
            str(tmp_path / "luigid-state.pickle"),
            "--logdir",
            str(logs),
        ],
        cwd=REPO,
        env=env,
        stdout=open(logs / "luigid.out", "w"),
        stderr=subprocess.STDOUT,
    )
    workers = []
    try:
        wait_for_port(port, luigid)
        for k in range(2):
            workers.append(
                subprocess.Popen(
                    [
                        _bin("luigi"),
                        "--module",
                        "pipeline",
                        "BuildSingingHead",
                        "--scheduler-host",
                        "127.0.0.1",
                        "--scheduler-port",
                        str(port),
                        "--workers",
                        "1",
                        "--no-lock",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=open(logs / f"worker{k}.out", "w"),
                    stderr=subprocess.STDOUT,
                )
            )
            time.sleep(1.0)  # the second worker joins a scheduler that already knows the DAG
        end = time.monotonic() + TIMEOUT_S
        for w in workers:
            w.wait(timeout=max(1, end - time.monotonic()))
    finally:
        for p in workers + [luigid]:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    outputs = "\n".join((logs / f"worker{k}.out").read_text()[-3000:] for k in range(2))
    assert (processed / "build_summary.json").exists(), outputs
    # luigi.cfg [retcode]: 0, or a worker found tasks held by the other one: already_running (10) or
    # "not granted run permission" (not_run, 25). A failure anywhere (30, 35, 40) fails the test.
    assert all(w.returncode in (0, 10, 25) for w in workers), outputs
    lines = [json.loads(line) for line in (processed / "_timings.jsonl").read_text().splitlines()]
    ran = Counter(rec["id"] for rec in lines)
    assert ran and max(ran.values()) == 1, [t for t, n in ran.items() if n > 1]
    families = {rec["task"] for rec in lines}
    assert {"AssembleDataset", "PackRelease", "DatasetReport", "BuildSingingHead"} <= families
    manifest = json.loads((processed / "dataset" / "SingingHead" / "manifest.json").read_text())
    assert manifest["counts"]["clips"] >= 1, manifest["counts"]  # 2 s clips from the demo's segments
    assert manifest["clip_cutting"]["re_encoded"] == []  # keyframes every 60 frames: all stream copies
    assert verify_release(processed / "release") == []
