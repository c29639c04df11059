"""Per-stage wall time, gathered from Luigi's PROCESSING_TIME events into processed/_timings.jsonl.

An append-only log (one short line per finished task) works across several worker processes
and across resumed runs; the build summary adds it up per task family.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import luigi

from tasks.layout import Layout

TIMINGS_FILE = "_timings.jsonl"


@luigi.Task.event_handler(luigi.Event.PROCESSING_TIME)
def record_processing_time(task: luigi.Task, seconds: float) -> None:
    root = Layout.from_config().processed
    root.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"task": task.task_family, "id": task.task_id, "seconds": round(float(seconds), 3)})
    # O_APPEND writes of one short line are atomic on POSIX, so parallel workers do not interleave.
    fd = os.open(root / TIMINGS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_stage_timings(processed_root: Path) -> dict[str, float]:
    """{task family: seconds}, keeping the latest record of each task id."""
    path = Path(processed_root) / TIMINGS_FILE
    latest: dict[str, tuple[str, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            latest[rec["id"]] = (rec["task"], rec["seconds"])
    out: dict[str, float] = defaultdict(float)
    for family, sec in latest.values():
        out[family] += sec
    return dict(out)
