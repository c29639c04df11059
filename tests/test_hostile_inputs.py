"""Hostile and faulty input files (issue 18, items 7-14): FIFOs, devices, bombs, NaN, degenerate scans.

Every read of a file we did not write is bounded (regular files only, sizes checked on the bytes
read), validation refuses what a later stage would, and each failure names the file."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.capture import checks
from tasks.common.bounded import read_bounded
from tasks.common.errors import PipelineInputError
from tasks.media.audio_io import read_audio
from tasks.scans.scan_io import load_scan

REPO = Path(__file__).resolve().parents[1]
TETRA = "v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nv 0 0 0.1\n"


@contextlib.contextmanager
def no_hang(seconds: int = 10):
    """Fail (instead of blocking the suite) when the body does not return within `seconds`."""
    def _alarm(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def textured_tetra(scan_dir: Path) -> Path:
    """A tiny textured OBJ (with its .mtl and a PNG texture) the scan fit's loader reads."""
    import cv2
    scan_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(scan_dir / "tex.png"), np.full((8, 8, 3), 128, np.uint8))
    (scan_dir / "head.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd tex.png\n")
    obj = scan_dir / "head.obj"
    obj.write_text("mtllib head.mtl\n" + TETRA + "vt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\nusemtl m\n"
                   "f 1/1 2/2 3/3\nf 1/1 3/3 4/4\nf 1/1 2/2 4/4\n")
    return obj


def scan_problems(subject: Path) -> list[dict]:
    problems: list[dict] = []
    with no_hang():
        checks.check_scan(subject, problems)
    return checks.errors_of(problems)


# ----------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("fifo", ["landmarks.json", "head.mtl", "tex.png", "scan.json"])
def test_a_fifo_in_the_scan_folder_is_refused_without_blocking(tmp_path, fifo):
    subject = tmp_path / "S001"
    obj = textured_tetra(subject / "scan")
    assert load_scan(obj).texture is not None           # the textured fixture loads as a textured scan
    target = obj.parent / fifo
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    bad = scan_problems(subject)
    assert bad and any("FIFO" in p["problem"] for p in bad), bad
    assert any(p["path"] in (str(target), str(obj)) for p in bad)


def test_a_link_to_a_device_is_refused_by_what_it_is_not_by_its_size(tmp_path):
    link = tmp_path / "landmarks.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(PipelineInputError, match="character device.*not a regular file"):
        read_bounded(link, 1 << 20)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    with pytest.raises(PipelineInputError, match="2000 bytes"):
        read_bounded(big, 1000)
    assert read_bounded(big, 2000) == b" " * 2000


def _run_limited(imports: str, code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`code` in a child whose address space may grow 2 GiB past what `imports` took, for 60 s."""
    script = imports + textwrap.dedent("""
        import os, resource
        vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), vm + (2 << 30)))
    """) + code
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_landmarks_linked_to_dev_zero_is_refused_within_bounded_memory(tmp_path):
    subject = tmp_path / "S001"
    textured_tetra(subject / "scan")
    (subject / "scan" / "landmarks.json").symlink_to("/dev/zero")
    r = _run_limited("from tasks.capture import checks\n", textwrap.dedent(f"""
        from pathlib import Path
        problems = []
        checks.check_scan(Path({str(subject)!r}), problems)
        print("PROBLEMS", [p["problem"] for p in problems])
    """), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "character device" in r.stdout


# ----------------------------------------------------------------------------- item 9
def test_validate_refuses_what_the_scan_fit_refuses(tmp_path):
    subject = tmp_path / "S001"
    obj = textured_tetra(subject / "scan")
    assert scan_problems(subject) == []
    units = obj.parent / "scan.json"
    units.write_text('{"units": ')
    bad = scan_problems(subject)
    assert [p["path"] for p in bad] == [str(units)] and "units" in bad[0]["problem"]
    units.write_text('{"units": "furlongs"}')
    assert "furlongs" in scan_problems(subject)[0]["problem"]
    units.write_text('{"units": "mm"}')
    assert scan_problems(subject) == []
    # uncoloured: the fit needs landmarks.json (no texture to find them automatically)
    obj.write_text(TETRA + "f 1 2 3\nf 1 3 4\n")
    bad = scan_problems(subject)
    lm = obj.parent / "landmarks.json"
    assert [p["path"] for p in bad] == [str(lm)] and "neither a texture nor vertex colours" in bad[0]["problem"]
    lm.write_text(json.dumps({"landmarks": np.random.default_rng(0).normal(size=(68, 3)).tolist()}))
    assert scan_problems(subject) == []


# ----------------------------------------------------------------------------- item 10
def test_nan_samples_are_named_in_validation_and_in_reading(tmp_path):
    x = np.zeros((16000, 1), np.float32)
    x[100] = np.nan
    vocal = tmp_path / "vocal.wav"
    sf.write(vocal, x, 16000, subtype="FLOAT")
    problems: list[dict] = []
    assert checks.check_audio(vocal, problems, "dry vocal recording") is None
    assert problems[0]["path"] == str(vocal) and "1 NaN or infinite sample" in problems[0]["problem"]
    with pytest.raises(PipelineInputError, match="NaN or infinite") as e:
        read_audio(vocal)
    assert e.value.path == str(vocal)
    sf.write(vocal, np.zeros((16000, 1), np.float32), 16000, subtype="FLOAT")
    problems = []
    assert checks.check_audio(vocal, problems, "dry vocal recording") is not None and problems == []


# ----------------------------------------------------------------------------- item 11
def test_a_scan_whose_triangles_have_no_area_is_refused(tmp_path):
    subject = tmp_path / "S001"
    obj = textured_tetra(subject / "scan")
    (obj.parent / "landmarks.json").write_text(json.dumps({"landmarks": [[0.0, 0.0, 0.0]] * 68}))
    obj.write_text("v 0 0 0\nv 0.1 0 0\nv 0.2 0 0\nv 0.3 0 0\nf 1 2 3\nf 2 3 4\nf 1 1 2\n")
    bad = scan_problems(subject)
    assert [p["path"] for p in bad] == [str(obj)] and "zero area" in bad[0]["problem"]


# ----------------------------------------------------------------------------- item 14
def test_a_key_given_twice_in_song_json_is_refused(tmp_path):
    song = tmp_path / "song.json"
    song.write_text('{"title": "a", "genre": "folk", "language": "en", "audio_offset_s": 0.5, '
                    '"audio_offset_s": 3.0}')
    problems: list[dict] = []
    assert checks.check_json(song, checks.SONG_KEYS, problems) is None
    assert "'audio_offset_s' is given twice" in problems[0]["problem"]
    from tasks.capture.raw_layout import read_json
    with pytest.raises(PipelineInputError, match="given twice"):
        read_json(song)
