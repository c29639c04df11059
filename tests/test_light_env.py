"""A dataset user's environment: only what requirements-loader.txt lists (numpy, scipy, soundfile,
torch; PyAV added for video only) reads a built release with SingingHeadDataset and scores predictions
with `python -m tasks.evaluation`, the checkout on PYTHONPATH, as the README says.

The virtualenv is cached (like the numpy-1.24 one of test_flame_pickle.py) and rebuilt when
requirements-loader.txt changes. torch comes from a local CPU wheel when pip's find-links hold one
(the way the Makefile installs torch from local wheels), else from pip's indexes (a CUDA build of torch
then brings its CUDA wheels: a few GB, once; `--no-deps` does not work, it cannot import without them).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import build_dataset_and_release

from flame_fit.procedural import write_procedural_head_model
from tasks.dataset.loader import SingingHeadDataset

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements-loader.txt"
CACHE = Path(os.environ.get("SINGINGHEAD_TEST_CACHE", Path.home() / ".cache" / "singinghead-test"))
VENV = CACHE / "light"
AV_DIR = CACHE / "light-av"      # PyAV alone, added to PYTHONPATH for the video part only
HEAVY = ("luigi", "open3d", "demucs", "dlib", "cv2", "matplotlib", "librosa", "av", "face_recognition_models",
         "facenet_pytorch", "trimesh", "skimage")
OFFLINE = ("Could not find a version", "NewConnectionError", "Temporary failure in name resolution",
           "Network is unreachable", "No matching distribution")


def _requirements() -> tuple[list[str], list[str]]:
    """(requirements without PyAV, PyAV's line) of requirements-loader.txt."""
    lines = [ln.split("#")[0].strip() for ln in REQUIREMENTS.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    return [ln for ln in lines if not ln.startswith("av")], [ln for ln in lines if ln.startswith("av")]


def _local_cpu_torch() -> list[str]:
    """A torch CPU wheel in pip's find-links, if any (saves pulling CUDA wheels)."""
    r = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    dirs = [os.environ.get("PIP_FIND_LINKS", "")]
    dirs += [ln.split("=", 1)[1].strip("'\" ") for ln in r.stdout.splitlines() if "find-links" in ln]
    wheels = sorted(w for d in dirs for part in d.split() if part and Path(part).is_dir()
                    for w in Path(part).glob("torch-*+cpu-*.whl"))
    return [str(wheels[-1])] if wheels else []


def _pip(py: Path, *args: str) -> None:
    r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
                       capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        if any(s in r.stderr for s in OFFLINE):
            pytest.skip(f"pip could not install {args}: {r.stderr.strip()[-300:]}")
        raise RuntimeError(f"pip install {args} failed:\n{r.stderr}")


def _light_python() -> Path:
    """python of the cached light venv (built once per requirements-loader.txt)."""
    py, marker = VENV / "bin" / "python", VENV / ".ready"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if py.exists() and marker.is_file() and marker.read_text() == want:
        return py
    base = shutil.which("python3.11") or sys.executable
    shutil.rmtree(VENV, ignore_errors=True)
    shutil.rmtree(AV_DIR, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True, capture_output=True)
    plain, av_line = _requirements()
    torch_wheel = _local_cpu_torch()
    if torch_wheel:
        _pip(py, *torch_wheel)
    _pip(py, *plain)
    _pip(py, "--target", str(AV_DIR), *av_line)
    marker.write_text(want)
    return py


def _run(py: Path, args: list[str], with_av: bool = False, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([str(AV_DIR)] if with_av else []))
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(py), *args], capture_output=True, text=True, env=env, timeout=300, **kw)


READ = """
import importlib.util, json, sys
import tasks.dataset.loader, tasks.evaluation.evaluate, tasks.evaluation.__main__
from tasks.dataset.loader import SingingHeadDataset
heavy = {heavy!r}
out = {{"loaded": sorted(m for m in sys.modules if m.split('.')[0] in heavy),
       "installed": sorted(m for m in heavy if importlib.util.find_spec(m) is not None)}}
root, split, clip = sys.argv[1:4]
ds = SingingHeadDataset(root, split=split)
it = ds.by_id(clip)
out.update({{"n": len(ds), "motion": list(it["motion"].shape), "vocal": list(it["vocal"].shape),
            "motion_sum": float(it["motion"].astype("f8").sum())}})
try:
    v = SingingHeadDataset(root, split=split, with_video=True, video_size=32, frames=(10, 40)).by_id(clip)
    out["video"] = list(v["video"].shape)
    out["cut_motion_sum"] = float(v["motion"].astype("f8").sum())
    out["av"] = sys.modules["av"].__file__
except ImportError as exc:
    out["video_error"] = str(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def light_python():
    return _light_python()


def test_loader_and_evaluate_run_with_numpy_scipy_soundfile_torch_only(tmp_path, light_python):
    py = light_python
    # a release built by the pipeline (tar shards), its clips read there and here alike
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    plan = {"S001": {"001_country_one": [240]}, "S002": {"003_folk_three": [240], "004_art_four": [240]}}
    dataset, release = build_dataset_and_release(raw, processed, plan=plan)
    split = next(s for s in ("test", "val", "train") if (dataset / f"{s}.txt").read_text().strip())
    ref = SingingHeadDataset(release, split=split)
    clip = ref.ids[0]
    want = ref.by_id(clip)

    r = _run(py, ["-c", READ.format(heavy=HEAVY), str(release), split, clip])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # nothing heavy is installed there, and importing the loader and evaluate pulls nothing heavy in
    assert out["loaded"] == [] and out["installed"] == []
    assert out["n"] == len(ref) and out["motion"] == [240, 59] and out["vocal"] == list(want["vocal"].shape)
    assert out["motion_sum"] == pytest.approx(float(want["motion"].astype("f8").sum()), rel=1e-9)
    # video needs PyAV and says so; with PyAV added, a smaller video and a frame range
    assert "pip install av" in out["video_error"]
    r = _run(py, ["-c", READ.format(heavy=HEAVY), str(release), split, clip], with_av=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["loaded"] == [] and out["installed"] == ["av"]      # installed, loaded only to decode
    assert out["video"] == [30, 32, 32, 3] and out["av"].startswith(str(AV_DIR))
    assert out["cut_motion_sum"] == pytest.approx(float(want["motion"][10:40].astype("f8").sum()), rel=1e-6)

    # evaluate: the ground truth as prediction scores zero vertex errors; beat alignment needs librosa
    head = write_procedural_head_model(tmp_path / "head", seed=0, n_vertices=1500)
    preds = tmp_path / "preds"
    preds.mkdir()
    for cid in ref.ids:
        d = ref.flame(cid)
        pred = {"expcodes": d["expcodes"], "posecodes": d["posecodes"]}
        (preds / f"{cid}.pkl").write_bytes(pickle.dumps(pred))
    result = tmp_path / "result.json"
    r = _run(py, ["-m", "tasks.evaluation", str(preds), "--release", str(release), "--split", split,
                  "--flame", str(head["model"]), "--landmark-embedding", str(head["landmark_embedding"]),
                  "--out", str(result)])
    assert r.returncode == 0, r.stderr
    res = json.loads(result.read_text())
    assert res["clips"] == len(ref) and res["split"] == split
    for k in ("lve_mean", "ve_mean", "fdd", "meandist_pose"):
        assert res["metrics"][k] == pytest.approx(0.0, abs=1e-6), k
    assert res["metrics"]["ba_pose"] is None and "librosa" in res["skipped"]["ba_pose"]
    assert "n/a: ba_lmk, ba_pose: librosa is not installed" in r.stdout
    # a bad input is a clear error naming the file, not a traceback
    (preds / f"{ref.ids[0]}.pkl").write_bytes(pickle.dumps({"motion": np.zeros((3, 59))}))
    r = _run(py, ["-m", "tasks.evaluation", str(preds), "--release", str(release), "--split", split,
                  "--flame", str(head["model"]), "--landmark-embedding", str(head["landmark_embedding"]),
                  "--out", str(tmp_path / "r2.json")])
    assert r.returncode == 2 and f"{ref.ids[0]}.pkl" in r.stderr and "Traceback" not in r.stderr
