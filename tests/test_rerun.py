"""Rerunning one subject: its outputs from the stage on go, other subjects' files are not rewritten."""

from __future__ import annotations

import json
import shutil

import luigi
import pytest

from tasks import layout
from pipeline.rerun import paths_to_remove, rerun, stages_from
from test_assemble import make_subject_outputs


def snapshot(folder):
    """{relative path: (bytes, mtime_ns)} of every file under `folder`."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_stage_closure():
    assert stages_from("refine") == ["refine"]
    assert stages_from("estimate") == ["estimate", "shape", "refine"]
    assert stages_from("crop") == ["crop", "audio", "estimate", "shape", "refine"]
    assert stages_from("bgm") == ["bgm", "audio"]
    assert stages_from("validate") == ["validate", "crop", "bgm", "audio", "estimate", "shape", "refine"]
    with pytest.raises(ValueError):
        stages_from("paint")


def test_removal_sets(luigi_paths):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S001": {"001_art_x": [240]}})
    rel = {str(p.relative_to(processed)) for p in paths_to_remove("S001", "estimate")}
    assert {
        "S001/001_art_x/frames",
        "S001/monocular_shape.npz",
        "S001/shape",
        "S001/001_art_x/motion",
        "S001/subject_done.json",
        "dataset/SingingHead",
        "dataset/report",
        "release",
        "build_summary.json",
    } == rel
    rel = {str(p.relative_to(processed)) for p in paths_to_remove("S001", "crop")}
    assert {"S001/001_art_x/portrait", "S001/001_art_x/audio"} <= rel and "S001/001_art_x/bgm.wav" not in rel


def test_rerun_leaves_other_subjects_untouched(luigi_paths, monkeypatch, tmp_path):
    from tasks.assemble import AssembleDataset
    from tasks.release import PackRelease

    raw, processed = luigi_paths
    make_subject_outputs(raw, processed)
    # the subject stages are stood in by the fixture files: the dataset tasks need nothing upstream
    monkeypatch.setattr(AssembleDataset, "requires", lambda self: [])
    assert luigi.build([PackRelease()], local_scheduler=True)
    (processed / "build_summary.json").write_text("{}")
    release_before = (layout.release_root() / "SHA256SUMS").read_bytes()
    other = snapshot(processed / "S002")
    frames_before = snapshot(layout.frames_npz("S001", "001_country_take-me-home", 0).parent)
    motion_dirs = [layout.motion_npz("S001", song, 0).parent for song in layout.list_songs("S001")]
    saved = tmp_path / "saved_motion"
    for k, d in enumerate(motion_dirs):
        shutil.copytree(d, saved / str(k))
    done = layout.subject_done("S001").read_bytes()

    rebuilt = []

    def rebuild(workers):
        # what RefineMotion and SubjectOutputs would write again, then the real downstream Luigi tasks
        assert not any(d.exists() for d in motion_dirs) and not layout.dataset_root().exists()
        assert not layout.release_root().exists() and not (processed / "build_summary.json").exists()
        for k, d in enumerate(motion_dirs):
            shutil.copytree(saved / str(k), d)
        layout.subject_done("S001").write_bytes(done)
        rebuilt.append(workers)
        res = luigi.build([PackRelease()], local_scheduler=True, workers=workers, detailed_summary=True)
        print(res.summary_text)
        return res.status == luigi.LuigiStatusCode.SUCCESS

    removed, ok = rerun(["S001"], "refine", build=rebuild)
    assert ok and rebuilt == [1]
    assert {str(p.relative_to(processed)) for p in removed} == {
        "S001/001_country_take-me-home/motion",
        "S001/002_rock_we-will/motion",
        "S001/subject_done.json",
        "dataset/SingingHead",
        "release",
        "build_summary.json",
    }
    assert snapshot(processed / "S002") == other  # same bytes and same mtimes: never rewritten
    assert snapshot(layout.frames_npz("S001", "001_country_take-me-home", 0).parent) == frames_before
    assert (layout.release_root() / "SHA256SUMS").read_bytes() == release_before  # deterministic rebuild
    assert json.loads((layout.dataset_root() / "manifest.json").read_text())["counts"]["clips"] == 5


def test_dry_run_and_cli(luigi_paths, capsys):
    import argparse

    from pipeline.rerun import register_cli

    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S001": {"001_art_x": [240]}})
    before = snapshot(processed)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["rerun", "--subject", "S001", "--from", "shape", "--dry-run", "--processed-dir", str(processed)]
    )
    assert args.func(args) == 0
    assert snapshot(processed) == before
    assert "S001/shape" in capsys.readouterr().err
    args = parser.parse_args(["rerun", "--subject", "S001", "--from", "shape", "--no-build"])
    assert args.func(args) == 0
    assert not layout.shape_dir("S001").exists() and not layout.subject_done("S001").exists()
    assert layout.frames_npz("S001", "001_art_x", 0).exists()
    args = parser.parse_args(["rerun", "--subject", "S999", "--no-build"])
    assert args.func(args) == 2
