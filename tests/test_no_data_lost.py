"""Nothing lost, nothing outside its folders: a lab's subject beside the demo, links inside processed/,
song folders named like the pipeline's own outputs, two builds at once and builds killed mid-write."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import luigi
import pytest

from pipeline.build import build
from pipeline.cli import main
from tasks.common.atomic import atomic_path, remove_stale_temps, write_json_atomic
from tasks.base import StageTask
from tasks.common.errors import PipelineInputError
from tasks.crop import CropPortraits
from tasks.validate import ValidateCapture

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def lab_subject(raw: Path, sid: str = "S001") -> Path:
    sdir = raw / sid
    (sdir / "scan").mkdir(parents=True)
    (sdir / "scan" / "head.obj").write_text("v 0 0 0\n")
    (sdir / "songs" / "001_pop_lab-take").mkdir(parents=True)
    (sdir / "songs" / "001_pop_lab-take" / "vocal.wav").write_bytes(b"irreplaceable")
    (sdir / "subject.json").write_text('{"subject_id": "S001", "gender": "male", "professional": true}')
    return sdir


# ----------------------------------------------------------------------------- 1: demo-capture
def test_demo_capture_refuses_a_labs_subject_of_the_same_id(tmp_path, capsys):
    raw, truth = tmp_path / "raw", tmp_path / "demo_truth"
    lab_subject(raw)
    before = snapshot(raw)
    code = main(["demo-capture", "--out", str(raw), "--truth", str(truth), "--photo-only", "--subjects", "1",
                 "--songs", "1", "--width", "160", "--height", "90", "--seconds", "4"])
    assert code != 0
    err = capsys.readouterr().err
    assert "S001" in err and "--out" in err and len(err.strip().splitlines()) == 1
    assert snapshot(raw) == before
    record = truth / "demo_capture.json"                   # nothing of the lab's recorded as the demo's
    assert not record.exists() or "S001" not in record.read_text()


def test_demo_remove_deletes_only_unchanged_recorded_paths(tmp_path, capsys):
    from demo import ownership  # the generator's own record, as demo-capture writes it
    raw, truth, processed = tmp_path / "raw", tmp_path / "demo_truth", tmp_path / "processed"
    plan = [{"subject_id": s, "songs": [{"song_id": "001_pop_demo"}]} for s in ("S001", "S002")]
    targets = ownership.target_paths(plan, with_scan=False)
    ownership.claim_targets(raw, truth, targets)
    for s in ("S001", "S002"):           # what the generator writes
        write_json_atomic(raw / s / "subject.json", {"subject_id": s, "notes": "synthetic"})
        write_json_atomic(raw / s / "songs" / "001_pop_demo" / "song.json", {"title": "demo"})
    ownership.record_written(raw, truth, targets)
    # the lab puts a song of its own into S001 and edits the demo's S002 song
    (raw / "S001" / "songs" / "002_pop_lab").mkdir()
    (raw / "S001" / "songs" / "002_pop_lab" / "vocal.wav").write_bytes(b"lab")
    (raw / "S002" / "songs" / "001_pop_demo" / "song.json").write_text('{"title": "edited by the lab"}')

    assert main(["demo-capture", "--remove", "--out", str(raw), "--truth", str(truth),
                 "--processed-dir", str(processed)]) == 1
    assert (raw / "S001" / "songs" / "002_pop_lab" / "vocal.wav").read_bytes() == b"lab"
    assert not (raw / "S001" / "songs" / "001_pop_demo").exists()
    assert not (raw / "S001" / "subject.json").exists()
    assert (raw / "S002" / "songs" / "001_pop_demo" / "song.json").read_text() == '{"title": "edited by the lab"}'
    assert not (raw / "S002" / "subject.json").exists()     # unchanged: the demo's, removed
    assert "kept" in capsys.readouterr().out
    assert set(ownership.read_record(truth)) == {"S002"}     # the record keeps what stayed


# ----------------------------------------------------------------------------- 2: release_dir
# (in tests/test_release.py: test_pack_refuses_a_release_dir_of_the_users)


# ----------------------------------------------------------------------------- 3: links inside processed/
def test_crop_never_writes_through_a_link_in_processed(luigi_paths, tmp_path):
    raw, processed = luigi_paths
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "segments.json").write_text("not ours")
    (elsewhere / "segment_000.mp4").write_bytes(b"not ours either")
    song = processed / "S001" / "001_pop_a"
    song.mkdir(parents=True)
    (song / "portrait").symlink_to(elsewhere)
    with pytest.raises(PipelineInputError, match="symbolic link"):
        CropPortraits(subject="S001", song="001_pop_a").run()
    assert snapshot(elsewhere) == {"segments.json": b"not ours", "segment_000.mp4": b"not ours either"}


def test_a_stage_never_writes_through_a_linked_subject_folder(luigi_paths, tmp_path):
    raw, processed = luigi_paths
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (processed / "S001").symlink_to(elsewhere)
    with pytest.raises(PipelineInputError, match="symbolic link"):
        ValidateCapture(subject="S001").run()
    assert list(elsewhere.iterdir()) == []


def test_writes_stay_inside_the_write_roots(tmp_path):
    from tasks.common.names import write_roots  # a stage's roots (StageTask sets them for its run)
    root, outside = tmp_path / "processed", tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "disk").mkdir()
    (tmp_path / "linked_root").symlink_to(tmp_path / "disk")       # the root itself may be a link
    with write_roots(root, tmp_path / "linked_root"):
        write_json_atomic(root / "S001" / "a.json", {})
        write_json_atomic(tmp_path / "linked_root" / "S001" / "a.json", {})
        with pytest.raises(PipelineInputError, match="outside"):
            write_json_atomic(outside / "a.json", {})
        with pytest.raises(PipelineInputError, match="outside"):
            write_json_atomic(root / ".." / "outside" / "b.json", {})
        (root / "S001" / "link.json").symlink_to(outside / "c.json")
        with pytest.raises(PipelineInputError, match="symbolic link"):
            write_json_atomic(root / "S001" / "link.json", {})
    assert list(outside.iterdir()) == [] and (tmp_path / "disk" / "S001" / "a.json").is_file()


# ----------------------------------------------------------------------------- 4: reserved names
def test_song_and_subject_folders_named_like_outputs_are_refused(luigi_paths, capsys):
    raw, processed = luigi_paths
    for song in ("shape", "Monocular_Shape", "validation.json", "001_pop_fine"):
        (raw / "S001" / "songs" / song).mkdir(parents=True)
    (raw / "dataset" / "songs" / "001_pop_x").mkdir(parents=True)
    assert main(["validate", str(raw)]) == 1
    out = capsys.readouterr().out
    bad = {line.split(":")[0].split()[-1] for line in out.splitlines()
           if line.startswith("ERROR") and "pipeline's own outputs" in line}
    assert bad == {str(raw / "S001" / "songs" / s) for s in ("shape", "Monocular_Shape", "validation.json")} \
        | {str(raw / "dataset")}
    for kwargs in ({"subject": "S001", "song": "shape"}, {"subject": "dataset", "song": "001_pop_x"},
                   {"subject": "S001", "song": "subject_done.json"}):
        with pytest.raises(PipelineInputError, match="own outputs"):
            CropPortraits(**kwargs)


# ----------------------------------------------------------------------------- 5: one build at a time
class _Touch(luigi.Task):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)

    def run(self):
        Path(self.path).write_text("built")


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"pid {os.getpid()} holding\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_build_on_one_processed_folder_is_refused(luigi_paths, tmp_path):
    raw, processed = luigi_paths
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(processed / ".singinghead.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PipelineInputError, match=f"pid {holder.pid}"):
            build(_Touch(path=str(processed / "x.txt")))
        assert not (processed / "x.txt").exists()
        with pytest.raises(PipelineInputError, match="another build"):   # a task run by the luigi command
            ValidateCapture(subject="S001").run()
    finally:
        holder.kill()
        holder.wait()
    assert build(_Touch(path=str(processed / "x.txt"))).ok      # the lock went with its holder


def test_stale_temp_cleanup_never_touches_a_live_writers_file(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    with atomic_path(tmp_path / "segment_000.mp4") as tmp:
        tmp.write_bytes(b"half written by a live writer")
        stale = tmp.with_name(tmp.name.replace(f".tmp-{os.getpid()}@", f".tmp-{dead_pid}@"))
        stale.write_bytes(b"left by a killed writer")
        assert remove_stale_temps(tmp_path) == 1          # what a second run does on start
        assert tmp.is_file() and not stale.exists()
    assert (tmp_path / "segment_000.mp4").read_bytes() == b"half written by a live writer"


# ----------------------------------------------------------------------------- 6: killed mid-write
KILLED_WRITER = """
import os, signal, sys
from tasks.common.atomic import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "SingingHead-000.tar").write_bytes(b"x" * 4096)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temps_of_a_killed_pack_go_at_the_next_run(luigi_paths, tmp_path):
    raw, processed = luigi_paths
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for final in (processed / "release", processed / "dataset" / "SingingHead"):
        proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(final)], env=env)
        assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in processed.rglob(".*.tmp-*"))
    assert [n.split(".tmp-")[0] for n in left] == [".SingingHead", ".release"]
    assert build(_Touch(path=str(processed / "x.txt"))).ok
    assert list(processed.rglob(".*.tmp-*")) == []


class _StageWrite(StageTask):
    """A stage writing `target` (relative: under processed/) the way every stage does."""
    target = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(str(self.layout.processed / self.target))

    def run(self):
        write_json_atomic(self.output().path, {"by": os.getpid()})


class _TwoStages(luigi.WrapperTask):
    def requires(self):
        return [_StageWrite(target="a.json"), _StageWrite(target="b.json")]


def test_parallel_workers_of_one_build_share_its_lock_and_stay_inside(luigi_paths, tmp_path):
    raw, processed = luigi_paths
    assert build(_TwoStages(), workers=2).ok                 # forked workers: the build's lock is theirs
    by = {json.loads((processed / n).read_text())["by"] for n in ("a.json", "b.json")}
    assert os.getpid() not in by                             # they did run in worker processes
    outside = tmp_path / "outside.json"
    assert not build(_StageWrite(target=str(outside))).ok     # a stage's write outside processed/
    assert not outside.exists()
