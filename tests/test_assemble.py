"""Dataset assembly: frame-exact stream-copy clips, pkl layout, ids, metadata, splits, determinism.

The per-subject stages' outputs are small stand-ins from `dataset_helpers.make_subject_outputs`;
the assembly runs as `AssembleDataset` runs it (settings from luigi.cfg, stage names from the tasks).
"""

from __future__ import annotations

import csv
import json
import pickle
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from dataset_helpers import FPS, SR, make_subject_outputs, tree_digest, write_portrait
from scipy.io import wavfile

from pipeline.build import config_overrides
from tasks.assemble import AssembleDataset, stage_outputs
from tasks.common.errors import PipelineInputError
from tasks.dataset.plan import SequencePlan, clip_id, song_number, subject_number
from tasks.dataset.sequences import write_sequence
from tasks.dataset.splits import SPLITS, achieved_ratios, split_clips, split_lists
from tasks.layout import Layout
from tasks.media import clips as C
from tasks.reporting.figures import mouth_opening, qc_panels, qc_scalars
from tasks.reporting.page import build_report

@pytest.fixture
def layout(luigi_paths):
    """The Layout of the test's [paths] (what every stage task sees)."""
    return Layout.from_config()


@pytest.fixture
def built(luigi_paths, layout):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed)
    manifest = AssembleDataset().assemble()
    return raw, processed, manifest


# ----------------------------------------------------------------------------- clips
def test_stream_copy_cut_is_frame_exact(tmp_path):
    src = tmp_path / "seg.mp4"
    write_portrait(src, 520)
    spans = [(0, 240), (240, 240), (100, 240)]
    dsts = [tmp_path / f"c{i}.mp4" for i in range(3)]
    recs = C.cut_video_clips(src, spans, dsts)
    assert [r["method"] for r in recs] == ["stream-copy", "stream-copy", "re-encode"]
    digests = C.frame_digests(src)
    for (start, n), dst, rec in zip(spans, dsts, recs):
        got = C.frame_digests(dst)
        assert len(got) == n == C.index_video(dst).frames
        assert rec["exact"] == (rec["method"] == "stream-copy")
        if rec["exact"]:
            assert got == digests[start : start + n]  # bit-identical: no second generation loss
    # the off-keyframe clip is re-encoded, but still starts at the frame it claims
    with av.open(str(dsts[2])) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(float) for _, f in zip(range(102), c.decode(video=0))]
    errs = [np.abs(first - f).mean() for f in frames]
    assert int(np.argmin(errs)) == 100
    again = tmp_path / "again.mp4"
    C.cut_video_clips(src, [(240, 240)], [again])
    assert again.read_bytes() == dsts[1].read_bytes()


def test_audio_span_matches_frames():
    data = np.arange(SR * 20, dtype=np.int16)
    a, b = C.sample_span(240, 480, SR, FPS)
    assert (a, b) == (128000, 256000)
    cut = C.cut_audio(data, SR, FPS, 240, 480)
    assert len(cut) == 128000 and cut[0] == data[128000]
    assert C.sample_span(1, 2, 44100, 30) == (1470, 2940)


# ----------------------------------------------------------------------------- assembly
def test_assembly_layout_pkl_ids_and_metadata(built, layout):
    raw, processed, manifest = built
    root = layout.dataset_root()
    # S001 song 1: 500 frames -> 2 clips, its 60-frame segment dropped; song 2: 250 -> 1;
    # S002: 240 -> 1, 300 -> 1
    ids = sorted(p.stem for p in (root / "video_seqs").glob("*.mp4"))
    assert ids == ["id1_1_0_0", "id1_1_0_1", "id1_2_0_0", "id2_3_0_0", "id2_3_1_0"]
    assert manifest["counts"]["sequences_kept"] == 4 and manifest["counts"]["sequences_dropped_short"] == 1
    assert manifest["counts"]["clips"] == 5
    assert manifest["splits"]["target"] == {"train": 0.80, "val": 0.05, "test": 0.15}  # the shipped targets
    for cid in ids:
        with open(root / "flame_seqs" / f"{cid}.pkl", "rb") as f:
            d = pickle.load(f)
        assert set(d) == {"shapecode", "expcodes", "posecodes"}
        assert d["shapecode"].shape == (1, 100) and d["expcodes"].shape == (240, 50)
        assert d["posecodes"].shape == (240, 9) and all(v.dtype == np.float32 for v in d.values())
        for wav in (root / "audio_seqs" / f"{cid}.wav", root / "bgm_seqs" / f"{cid}_bgm.wav"):
            sr, x = wavfile.read(wav)
            assert sr == SR and len(x) == 240 * SR // FPS
        assert C.index_video(root / "video_seqs" / f"{cid}.mp4").frames == 240
    # clip 1 of id1_1_0 = frames 240..479 of the sequence: motion and audio line up with the source
    motion = np.load(layout.motion_npz("S001", "001_country_take-me-home", 0))
    d = pickle.load(open(root / "flame_seqs" / "id1_1_0_1.pkl", "rb"))
    np.testing.assert_array_equal(d["expcodes"], motion["expression"][240:480])
    np.testing.assert_array_equal(d["posecodes"][:, 3:6], motion["neck_pose"][240:480])
    np.testing.assert_array_equal(d["posecodes"][:, 6:9], motion["jaw_pose"][240:480])
    np.testing.assert_array_equal(d["shapecode"][0], np.load(root / "shapes" / "S001.npy"))
    _, src = wavfile.read(layout.segment_vocal_wav("S001", "001_country_take-me-home", 0))
    _, clip = wavfile.read(root / "audio_seqs" / "id1_1_0_1.wav")
    np.testing.assert_array_equal(clip, src[128000:256000])
    assert (
        C.frame_digests(root / "video_seqs" / "id1_1_0_1.mp4")
        == C.frame_digests(root / "sequences" / "id1_1_0" / "video.mp4")[240:480]
    )
    seq = np.load(root / "sequences" / "id1_1_0" / "motion.npz")
    assert seq["expression"].shape == (500, 50) and seq["shape"].shape == (100,)
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    assert len(rows) == 4 + 5
    r = next(r for r in rows if r["id"] == "id1_1_0_1")
    assert (r["kind"], r["genre"], r["gender"], r["professional"]) == ("clip", "country", "female", "true")
    assert (int(r["start_frame"]), int(r["end_frame"]), r["source_segment"]) == (340, 580, "0")
    # ids count from 0 (official id0_10_0_0); metadata maps them to the source segment and span
    assert (r["segment"], r["clip"], r["seq_start_frame"]) == ("0", "1", "240")
    r2 = next(r for r in rows if r["id"] == "id2_3_1_0")  # S002's second kept segment: crop segment 1
    assert (r2["segment"], r2["clip"], r2["source_segment"], r2["start_frame"]) == ("1", "0", "1", "390")
    assert "counted from 0" in manifest["dataset"]["numbering"]
    assert r["video_method"] == "stream-copy"
    splits = {s: (root / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == ids
    assert manifest["stand_ins"] == ["landmark-fit estimator", "procedural head", "weight-free vocal remover"]
    mtcnn = [m for m in manifest["models"] if m["name"] == "MTCNN"]
    assert len(mtcnn) == 1 and mtcnn[0]["kind"] == "real" and mtcnn[0]["used_by"] == ["crop", "estimate"]
    assert manifest["parameters"]["stages"]["estimate"] == [{"batch_size": 32}]
    assert json.loads((root / "manifest.json").read_text())["counts"] == manifest["counts"]


def test_assembly_is_deterministic(built, layout):
    first = tree_digest(layout.dataset_root())
    AssembleDataset(threads=2).assemble()
    assert tree_digest(layout.dataset_root()) == first


def test_assembly_after_processed_moved(built, layout, tmp_path):
    """subject_done.json records paths as configured at build time; assembly reads the layout."""
    raw, processed, _ = built
    first = tree_digest(layout.dataset_root())
    moved = tmp_path / "elsewhere" / "processed"
    shutil.move(str(processed), str(moved))
    with config_overrides(paths={"raw_dir": raw, "processed_dir": moved, "release_dir": moved / "release"}):
        AssembleDataset().assemble()
        assert tree_digest(Layout.from_config().dataset_root()) == first


def test_missing_keyframes_fall_back_to_reencode(luigi_paths, layout):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S003": {"001_art_x": [480]}}, keyint=300)
    assert layout.list_subjects() == ["S003"]
    m = AssembleDataset().assemble()
    # clip 2 has no keyframe at its start; clip 1's last B-frames reference frame 240 (outside it)
    assert (
        m["clip_cutting"]["re_encoded"] == ["id3_1_0_0", "id3_1_0_1"]
        and m["clip_cutting"]["stream_copy"] == 0
    )
    for cid in m["clip_cutting"]["re_encoded"]:
        assert C.index_video(layout.dataset_root() / "video_seqs" / f"{cid}.mp4").frames == 240


def test_bad_audio_rate_names_the_file(luigi_paths, layout):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S004": {"001_art_x": [240]}})
    bad = layout.segment_vocal_wav("S004", "001_art_x", 0)
    wavfile.write(str(bad), 8000, np.zeros(8000 * 8, np.int16))
    with pytest.raises(PipelineInputError, match="8000 Hz"):
        AssembleDataset().assemble()
    assert not (layout.dataset_root() / "manifest.json").exists()


def test_ids_from_folder_names():
    assert subject_number("S015") == 15
    assert song_number("003_country_take-me-home", []) == 3
    assert song_number("b_song", ["a_song", "b_song"]) == 2
    assert clip_id(15, 3, 1, 3) == "id15_3_1_3"
    # a subject folder without a number: the error names the folder when it is known, else the name
    with pytest.raises(PipelineInputError, match="holds no number") as ei:
        subject_number("Alice", Path("/data/raw/Alice"))
    assert ei.value.path == str(Path("/data/raw/Alice"))
    with pytest.raises(PipelineInputError, match="holds no number") as ei:
        subject_number("Alice")
    assert ei.value.path == "Alice"


# ----------------------------------------------------------------------------- splits
def _clips(groups):
    return [
        {"id": f"id{s}_{g}_1_{k}", "subject": s, "song": g} for (s, g), n in groups.items() for k in range(n)
    ]


def test_grouped_split_keeps_songs_together_and_hits_ratios():
    rng = np.random.default_rng(3)
    groups = {(s, g): int(rng.integers(3, 30)) for s in range(12) for g in range(5)}
    clips = _clips(groups)
    split = split_clips(clips, seed=7)
    by_group = {}
    for c in clips:
        by_group.setdefault((c["subject"], c["song"]), set()).add(split[c["id"]])
    assert all(len(v) == 1 for v in by_group.values())
    r = achieved_ratios(split)
    assert abs(r["train"] - 0.80) < 0.02 and abs(r["val"] - 0.05) < 0.02 and abs(r["test"] - 0.15) < 0.02
    assert split_clips(clips, seed=7) == split
    assert split_clips(list(reversed(clips)), seed=7) == split  # input order does not matter
    assert split_clips(clips, seed=8) != split


def test_per_clip_split_exact_counts():
    clips = _clips({(1, 1): 100, (2, 2): 100})
    split = split_clips(clips, seed=0, by_song=False)
    r = achieved_ratios(split)
    assert r == {"train": 0.8, "val": 0.05, "test": 0.15}
    groups = {}
    for c in clips:
        groups.setdefault(c["song"], set()).add(split[c["id"]])
    assert all(len(v) == 3 for v in groups.values())  # plain split mixes a song's clips


def test_few_songs_still_fill_every_split_song_disjoint():
    # the demo's shape: 4 songs of 2 clips; 80/5/15 by clip count alone would leave val empty
    clips = _clips({(1, 1): 2, (1, 2): 2, (2, 3): 2, (2, 4): 2})
    split = split_clips(clips, seed=0)
    lists = split_lists(split)
    assert [len(lists[s]) for s in SPLITS] == [4, 2, 2]
    songs = [{c["song"] for c in clips if split[c["id"]] == s} for s in SPLITS]
    assert not (songs[0] & songs[1] or songs[0] & songs[2] or songs[1] & songs[2])
    assert split_clips(list(reversed(clips)), seed=0) == split
    # the smallest song goes to the smallest split
    split = split_clips(_clips({(1, 1): 5, (1, 2): 1, (2, 3): 2, (2, 4): 2}), seed=0)
    assert [k for k, v in split.items() if v == "val"] == ["id1_2_1_0"]
    # fewer songs than splits: nothing to fill with; a zero fraction stays empty
    assert set(split_clips(_clips({(1, 1): 3, (1, 2): 1}), seed=0).values()) != set(SPLITS)
    assert set(split_clips(clips, seed=0, fractions=(0.85, 0.0, 0.15)).values()) == {"train", "test"}


def test_per_clip_split_fills_every_split_from_three_clips():
    assert sorted(split_clips(_clips({(1, 1): 3}), by_song=False).values()) == ["test", "train", "val"]
    r = split_lists(split_clips(_clips({(1, 1): 8}), by_song=False))
    assert [len(r[s]) for s in SPLITS] == [6, 1, 1]


# ----------------------------------------------------------------------------- report
def test_report_is_self_contained_with_figures(built, layout):
    stats = build_report(layout.dataset_root(), layout.report_dir(), layout)
    page = (layout.report_dir() / "index.html").read_text()
    embedded = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,", page)
    assert page.count("data:image/png;base64,") == len(embedded)
    # the figures by name: statistics, refinement QC, then the yield and the per-song timeline (one
    # figure for up to 30 songs); each exactly once
    assert sorted(embedded) == sorted(["shares", "f0", "tempo", "chroma", "mouth", "durations", "qc",
                                       "yield per song", "segment timeline"])
    assert "stand-in" in page and "src='http" not in page
    assert stats["dominant_f0_hz"]["voiced"] == 5
    assert 200 < stats["dominant_f0_hz"]["median"] < 280  # the fixture vocals are 220 and 260 Hz sines
    assert "reprojection_error_px.mean" in stats["qc_keys"] and "jitter" in stats["qc_keys"]
    lm = np.zeros((2, 68, 2))
    lm[:, 27], lm[:, 8] = (0, 0), (0, 100)
    lm[:, 62], lm[:, 66] = (0, 50), (0, 60)
    np.testing.assert_allclose(mouth_opening(lm, np.array([True, False])), [0.1])
    assert qc_scalars({"a": {"b": 1}, "ok": True, "model": {"x": 1}, "c": float("nan")}) == {"a.b": 1.0}


def test_qc_panels_prefer_errors_and_after_values():
    keys = [
        "segment",
        "fps",
        "jitter.cam.before",
        "jitter.cam.after",
        "landmark_rmse_px.after",
        "landmark_rmse_px.before",
        "outlier_fraction.jaw_pose",
        "loss",
        "seconds.total",
        "only.before",
    ]
    assert qc_panels(keys) == [
        "landmark_rmse_px.after",
        "outlier_fraction.jaw_pose",
        "jitter.cam.after",
        "loss",
        "only.before",
    ]


# ----------------------------------------------------------------------------- provenance
def test_stage_names_come_from_the_tasks(tmp_path):
    """`stage_outputs` follows requires() and dynamic_requires(); a record is named after the stage
    whose output it is or sits beside, else after its file name."""
    import luigi

    from tasks.dataset.manifest import gather_records

    class Early(luigi.Task):
        STAGE = "early"

        def output(self):
            return luigi.LocalTarget(str(tmp_path / "S1" / "early" / "out.npz"))

    class Late(luigi.Task):
        STAGE = "late"

        def requires(self):
            return {"e": Early()}

        def output(self):
            return {"a": luigi.LocalTarget(str(tmp_path / "S1" / "late.json")),
                    "b": luigi.LocalTarget(str(tmp_path / "S1" / "late" / "x.npy"))}

    class Other(luigi.Task):
        STAGE = "other"

        def output(self):
            return luigi.LocalTarget(str(tmp_path / "S1" / "other.npz"))

    class Root(luigi.Task):  # no STAGE: not a stage, its outputs name nothing
        def requires(self):
            return [Other()]

        def dynamic_requires(self):
            return [Late()]

        def output(self):
            return luigi.LocalTarget(str(tmp_path / "S1" / "done.json"))

    stages = stage_outputs([Root()])
    assert stages == {tmp_path / "S1" / "early" / "out.npz": "early", tmp_path / "S1" / "late.json": "late",
                      tmp_path / "S1" / "late" / "x.npy": "late", tmp_path / "S1" / "other.npz": "other"}
    # misc.json sits beside outputs of two stages: named after itself
    for rel in ("early/out.json", "late.json", "late/report.json", "misc.json", "done.json"):
        (tmp_path / "S1" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "S1" / rel).write_text(json.dumps({"params": {"f": rel}}))
    got = gather_records(tmp_path / "S1", tmp_path / "S1" / "done.json", stages)
    assert [(s, r["params"]["f"]) for s, r in got] == [
        ("early", "early/out.json"), ("late", "late/report.json"), ("late", "late.json"), ("misc", "misc.json")]


def test_a_motion_fitted_with_another_shape_is_kept_and_the_difference_logged(tmp_path, caplog):
    # one 1 s sequence cut into one 30-frame clip: the refinement's own shape goes into the clip pkl
    # (expression and pose were fitted with it), and the log says how far it is from the subject's
    n = 30
    rng = np.random.default_rng(5)
    subject_shape = rng.normal(size=100).astype(np.float32)
    motion_shape = subject_shape.copy()
    motion_shape[7] += 0.5
    motion_shape[9] -= 0.25
    src = tmp_path / "in"
    write_portrait(src / "portrait.mp4", n, keyint=30)
    for name in ("vocal", "bgm"):
        wavfile.write(str(src / f"{name}.wav"), SR, np.zeros(n * SR // FPS, np.int16))
    motion = {k: rng.normal(size=(n, 50 if k == "expression" else 3)).astype(np.float32) for k in C.MOTION_KEYS}
    np.savez(src / "motion.npz", **motion, shape=motion_shape, fps=np.float32(FPS))
    plan = SequencePlan(seq_id="id1_1_0", subject="S001", song="001_x", segment_number=0, source_segment=0,
                        start_frame=0, end_frame=n, video=src / "portrait.mp4", motion=src / "motion.npz",
                        vocal=src / "vocal.wav", bgm=src / "bgm.wav", song_dir=src, clip_ids=["id1_1_0_0"])
    with caplog.at_level("WARNING", logger="singinghead"):
        recs = write_sequence(plan, tmp_path / "out", subject_shape, float(FPS), SR, n,
                              C.ClipEncoding(crf=20, preset="ultrafast", keyint=30))
    assert [r["id"] for r in recs] == ["id1_1_0_0"]
    warned = [r.getMessage() for r in caplog.records if "shape differs" in r.getMessage()]
    assert len(warned) == 1 and "(max |diff| 0.5)" in warned[0] and "S001" in warned[0]
    with open(tmp_path / "out" / "flame_seqs" / "id1_1_0_0.pkl", "rb") as f:
        np.testing.assert_array_equal(pickle.load(f)["shapecode"], motion_shape[None])
