"""`make clean-demo` (`singinghead demo-capture --remove`) removes the demo and nothing of a lab's own."""
from __future__ import annotations

import json

from demo import ownership
from pipeline.cli import main


def test_remove_takes_only_the_recorded_demo_subjects(tmp_path):
    raw, processed, truth = tmp_path / "raw", tmp_path / "processed", tmp_path / "demo_truth"
    for subject in ("S001", "S002", "S100"):             # S100 is the lab's own capture
        (raw / subject / "songs" / "001_art_a").mkdir(parents=True)
        (raw / subject / "subject.json").write_text("{}")
        (processed / subject / "001_art_a").mkdir(parents=True)
        (processed / subject / "validation.json").write_text("{}")
    (processed / "dataset" / "SingingHead").mkdir(parents=True)
    (processed / "dataset" / "SingingHead" / "manifest.json").write_text("{}")
    # recorded as demo-capture records what it writes: fingerprints of the paths it wrote
    targets = ownership.target_paths([{"subject_id": s, "songs": [{"song_id": "001_art_a"}]}
                                      for s in ("S001", "S002")], with_scan=False)
    ownership.record_written(raw, truth, targets)
    (tmp_path / "elsewhere.txt").write_text("keep")

    assert main(["demo-capture", "--remove", "--out", str(raw), "--truth", str(truth),
                 "--processed-dir", str(processed)]) == 0
    assert sorted(p.name for p in raw.iterdir()) == ["S100"]
    assert (processed / "S100" / "validation.json").is_file()
    assert not (processed / "S001").exists() and not (processed / "S002").exists()
    # the shared dataset mixed the demo in: it goes, so the next build does not reuse it
    assert not (processed / "dataset" / "SingingHead" / "manifest.json").exists()
    assert not truth.exists() and (tmp_path / "elsewhere.txt").read_text() == "keep"


def test_remove_without_a_record_removes_nothing(tmp_path):
    (tmp_path / "raw" / "S001").mkdir(parents=True)
    assert main(["demo-capture", "--remove", "--out", str(tmp_path / "raw"), "--truth",
                 str(tmp_path / "demo_truth")]) == 0
    assert (tmp_path / "raw" / "S001").is_dir()


def test_a_hostile_record_cannot_reach_outside(tmp_path):
    raw, truth = tmp_path / "raw", tmp_path / "demo_truth"
    raw.mkdir()
    truth.mkdir()
    (tmp_path / "victim").mkdir()
    (truth / "demo_capture.json").write_text(json.dumps({"subjects": ["../victim"]}))
    assert main(["demo-capture", "--remove", "--out", str(raw), "--truth", str(truth)]) == 2
    assert (tmp_path / "victim").is_dir()


def test_remove_with_relative_folders_as_make_clean_demo_gives_them(tmp_path, monkeypatch):
    """`make clean-demo` passes `--out raw --truth demo_truth`: relative to the checkout. The guarded
    delete once joined the relative root twice (raw/raw/S001) and removed nothing."""
    monkeypatch.chdir(tmp_path)
    for subject in ("S001", "S100"):
        (tmp_path / "raw" / subject / "songs" / "001_art_a").mkdir(parents=True)
        (tmp_path / "raw" / subject / "subject.json").write_text("{}")
        (tmp_path / "processed" / subject).mkdir(parents=True)
    (tmp_path / "demo_truth").mkdir()
    # recorded as the generator records what it wrote: each path with its fingerprint
    s001 = tmp_path / "raw" / "S001"
    ownership.write_record(tmp_path / "demo_truth", {"S001": {
        rel: ownership.tree_fingerprint(s001 / rel) for rel in ("subject.json", "songs/001_art_a")}})
    assert main(["demo-capture", "--remove", "--out", "raw", "--truth", "demo_truth",
                 "--processed-dir", "processed"]) == 0
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["S100"]
    # the build lock file stays (it is how a running build is known); nothing else of S001 does
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [".singinghead.lock", "S100"]
    assert not (tmp_path / "demo_truth").exists()
