"""Rerunning one subject: its outputs from the stage on go, other subjects' files are not rewritten."""

from __future__ import annotations

import json
import shutil

import pytest

import pipeline
from dataset_helpers import make_subject_outputs
from pipeline.build import build, config_overrides
from pipeline.cli import main
from pipeline.registry import task_graph
from pipeline.rerun import plan_rerun, remove_outputs, rerun_tasks
from tasks.assemble import AssembleDataset
from tasks.layout import Layout
from tasks.release import PackRelease


def snapshot(folder):
    """{relative path: (bytes, mtime_ns)} of every file under `folder`."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_rerun_sets_follow_the_dag(luigi_paths):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S001": {"001_art_x": [240]}})
    graph = task_graph(pipeline.BuildSingingHead())
    fams = lambda stage: {t.task_family for t in rerun_tasks(graph, "S001", stage)}  # noqa: E731
    shared = {"SubjectOutputs", "AssembleDataset", "DatasetReport", "PackRelease", "BuildSingingHead"}
    assert fams("refine") == {"RefineMotion"} | shared
    assert fams("shape") == {"FitScanShape", "RefineMotion"} | shared
    assert fams("estimate") == {"EstimateFrames", "SubjectShape", "FitScanShape", "RefineMotion"} | shared
    assert fams("bgm") == {"SeparateBGM", "SegmentAudio"} | shared
    assert fams("crop") == {"CropPortraits", "SegmentAudio", "EstimateFrames", "SubjectShape",
                            "FitScanShape", "RefineMotion"} | shared
    assert fams("validate") == fams("crop") | {"ValidateCapture", "SeparateBGM"}


def test_rerun_leaves_other_subjects_untouched(luigi_paths, monkeypatch, tmp_path):
    raw, processed = luigi_paths
    lay = Layout.from_config()
    make_subject_outputs(raw, processed)
    plan = plan_rerun(["S001"], "refine", lay)          # read off the whole DAG, before any patching
    # the subject stages are stood in by the fixture files: the dataset tasks need nothing upstream
    monkeypatch.setattr(AssembleDataset, "requires", lambda self: [])
    assert build(PackRelease()).ok
    (processed / "build_summary.json").write_text("{}")
    release_before = (lay.release_root() / "SHA256SUMS").read_bytes()
    other = snapshot(processed / "S002")
    frames_before = snapshot(lay.frames_dir("S001", "001_country_take-me-home"))
    motion_dirs = [lay.motion_dir("S001", song) for song in lay.list_songs("S001")]
    saved = tmp_path / "saved_motion"
    for k, d in enumerate(motion_dirs):
        shutil.copytree(d, saved / str(k))
    done = lay.subject_done("S001").read_bytes()

    removed = remove_outputs(plan, lay)
    assert {str(p.relative_to(processed)) for p in removed} == {
        "S001/001_country_take-me-home/motion/segment_000.npz",
        "S001/002_rock_we-will/motion/segment_000.npz",
        "S001/subject_done.json",
        "dataset/SingingHead/manifest.json",
        "release/SHA256SUMS",
        "build_summary.json",
    }
    # what RefineMotion and SubjectOutputs would write again, then the real downstream Luigi tasks
    for k, d in enumerate(motion_dirs):
        shutil.rmtree(d)
        shutil.copytree(saved / str(k), d)
    lay.subject_done("S001").write_bytes(done)
    assert build(PackRelease()).ok
    assert snapshot(processed / "S002") == other  # same bytes and same mtimes: never rewritten
    assert snapshot(lay.frames_dir("S001", "001_country_take-me-home")) == frames_before
    assert (lay.release_root() / "SHA256SUMS").read_bytes() == release_before  # deterministic rebuild
    assert json.loads((lay.dataset_root() / "manifest.json").read_text())["counts"]["clips"] == 5


def test_dry_run_and_cli(luigi_paths, capsys):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S001": {"001_art_x": [240]}})
    lay = Layout.from_config()
    before = snapshot(processed)
    common = ["--raw-dir", str(raw), "--processed-dir", str(processed)]
    assert main(["rerun", "--subject", "S001", "--from", "shape", "--dry-run", *common]) == 0
    assert snapshot(processed) == before
    assert "S001/shape/shape.npy" in capsys.readouterr().out   # the plan: stdout
    assert main(["rerun", "--subject", "S001", "--from", "shape", "--no-build", *common]) == 0
    assert not lay.scan_shape_npy("S001").exists() and not lay.subject_done("S001").exists()
    assert lay.frames_npz("S001", "001_art_x", 0).exists()
    for bad in (["--subject", "S999"], ["--subject", "../victim"], ["--subject", "S001", "--from", "paint"]):
        assert main(["rerun", *bad, "--no-build", *common]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "fix:" in err
    with pytest.raises(Exception):
        main(["rerun", "--subject", "../victim", "--no-build", "--debug", *common])


def test_rerun_with_the_shipped_relative_paths_really_deletes(tmp_path, monkeypatch, capsys):
    """luigi.cfg ships `raw_dir = raw`, `processed_dir = processed`: relative to the working
    directory. The rerun's guarded delete once joined the relative root twice and removed nothing
    while saying it had (issue 17)."""
    monkeypatch.chdir(tmp_path)
    make_subject_outputs(tmp_path / "raw", tmp_path / "processed", {"S001": {"001_art_x": [240]}})
    with config_overrides(paths={"raw_dir": "raw", "processed_dir": "processed", "release_dir": ""}):
        lay = Layout.from_config()
        motion = lay.motion_npz("S001", "001_art_x", 0)
        frames = lay.frames_npz("S001", "001_art_x", 0)
        assert motion.is_file() and frames.is_file()
        removed = remove_outputs(plan_rerun(["S001"], "refine", lay), lay)
    assert motion in removed and not motion.exists() and frames.is_file()
    assert (tmp_path / "processed" / "S001" / "001_art_x" / "frames").is_dir()
    assert not (tmp_path / "processed" / "processed").exists()
    # the command, as a user types it in the checkout
    assert main(["rerun", "--subject", "S001", "--from", "estimate", "--no-build",
                 "--raw-dir", "raw", "--processed-dir", "processed"]) == 0
    assert not frames.exists() and "segment_000.npz" in capsys.readouterr().out
