"""Dataset assembly: frame-exact stream-copy clips, pkl layout, ids, metadata, splits, determinism.

`make_subject_outputs` writes small stand-ins for what the per-subject stages leave under
processed/ (tiny H.264 portraits with a keyframe every 240 frames, sine wavs, random motion), so
the assembly is tested against the file contract alone. test_release.py and test_rerun.py reuse it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle

import av
import numpy as np
import pytest
from scipy.io import wavfile

from tasks.media import clips as C
from tasks import layout
from tasks.common.atomic import save_npz_atomic, write_json_atomic
from tasks.dataset.splits import achieved_ratios, split_clips

SIZE = 64
FPS = 30
SR = 16000

# subject -> song -> list of segment lengths in frames (segment 1 of S001/001 is < 3 s: dropped)
DEFAULT_PLAN = {
    "S001": {"001_country_take-me-home": [500, 60], "002_rock_we-will": [250]},
    "S002": {"003_folk_scarborough": [240, 300]},
}


def write_portrait(path, n, keyint=240, size=SIZE, seed=0):
    """An H.264 mp4 with B-frames and a keyframe every `keyint` frames from the first; each frame distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {
            "g": str(keyint),
            "keyint_min": str(keyint),
            "sc_threshold": "0",
            "preset": "veryfast",
            "crf": "30",
            "threads": "1",
        }
        for i in range(n):
            img = base.copy()
            img[i % size, :, :] = 255
            img[:, (3 * i) % size, 1] = 0
            img[: (i // size) % size + 1, :4, 2] = 17 * (i % 15)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_sine(path, n_samples, freq):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(n_samples) / SR
    wavfile.write(str(path), SR, (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def make_subject_outputs(raw, processed, plan=None, keyint=240):
    """Raw metadata plus every processed/ file the assembly reads, for each subject of `plan`."""
    plan = plan or DEFAULT_PLAN
    rng = np.random.default_rng(1)
    for si, (subject, songs) in enumerate(sorted(plan.items())):
        write_json_atomic(
            raw / subject / "subject.json",
            {
                "subject_id": subject,
                "gender": "female" if si % 2 == 0 else "male",
                "professional": si % 2 == 0,
            },
        )
        sequences, total = [], 0
        subject_shape = rng.normal(size=100).astype(np.float32)
        for song, lengths in sorted(songs.items()):
            genre = song.split("_")[1]
            write_json_atomic(
                raw / subject / "songs" / song / "song.json",
                {"title": song, "genre": genre, "language": "en", "audio_offset_s": 0.0},
            )
            segs, start = [], 100
            for k, n in enumerate(lengths):
                total += 1
                segs.append(
                    {
                        "index": k,
                        "start_frame": start,
                        "end_frame": start + n,
                        "video": f"segment_{k:03d}.mp4",
                    }
                )
                start += n + 50
            write_json_atomic(
                layout.segments_json(subject, song),
                {
                    "segments": segs,
                    "model": {"name": "MTCNN", "kind": "real", "files": []},
                    "params": {"margin": 0.6},
                },
            )
            write_json_atomic(
                layout.bgm_record(subject, song),
                {"model": {"name": "weight-free vocal remover", "kind": "stand-in", "files": []}},
            )
            for seg in segs:
                k, n = seg["index"], seg["end_frame"] - seg["start_frame"]
                if n < 90:
                    continue  # the subject stage lists only usable segments
                video = layout.portrait_dir(subject, song) / seg["video"]
                write_portrait(video, n, keyint=keyint, seed=si * 10 + k)
                write_sine(layout.segment_vocal_wav(subject, song, k), round(n * SR / FPS), 220 + 40 * k)
                write_sine(layout.segment_bgm_wav(subject, song, k), round(n * SR / FPS), 110)
                motion = {
                    "expression": rng.normal(size=(n, 50)).astype(np.float32),
                    "global_orient": rng.normal(size=(n, 3)).astype(np.float32),
                    "neck_pose": rng.normal(size=(n, 3)).astype(np.float32),
                    "jaw_pose": rng.normal(size=(n, 3)).astype(np.float32),
                    "cam": rng.normal(size=(n, 3)).astype(np.float32),
                    "shape": subject_shape,
                    "fps": np.float32(FPS),
                }
                save_npz_atomic(layout.motion_npz(subject, song, k), motion)
                write_json_atomic(
                    layout.motion_qc(subject, song, k),
                    {
                        "reprojection_error_px": {"mean": float(rng.uniform(1, 3))},
                        "jitter": float(rng.uniform(0, 1)),
                        "outlier_fraction": float(rng.uniform(0, 0.1)),
                        "model": {"name": "procedural head", "kind": "stand-in", "files": []},
                    },
                )
                lm = rng.uniform(20, 40, size=(n, 68, 2)).astype(np.float32)
                save_npz_atomic(
                    layout.frames_npz(subject, song, k), {"landmarks": lm, "landmark_ok": np.ones(n, bool)}
                )
                write_json_atomic(
                    layout.frames_record(subject, song, k),
                    {
                        # models under the keys the estimation stage uses, one of them in a list
                        "estimator": {"name": "landmark-fit estimator", "kind": "stand-in", "files": []},
                        "landmark_models": [{"name": "MTCNN", "kind": "real", "files": []}],
                        "params": {"batch_size": 32},
                    },
                )
                sequences.append(
                    {
                        "song": song,
                        "segment": k,
                        "start_frame": seg["start_frame"],
                        "end_frame": seg["end_frame"],
                        "frames": n,
                        "video": str(video),
                        "motion": str(layout.motion_npz(subject, song, k)),
                        "motion_qc": str(layout.motion_qc(subject, song, k)),
                    }
                )
        layout.shape_dir(subject).mkdir(parents=True, exist_ok=True)
        np.save(layout.scan_shape_npy(subject), subject_shape)
        write_json_atomic(
            layout.scan_fit_report(subject),
            {
                "source": "monocular mean",
                "model": {"name": "procedural head", "kind": "stand-in", "files": []},
            },
        )
        write_json_atomic(
            layout.subject_done(subject),
            {
                "subject": subject,
                "sequences": sequences,
                "segments_total": total,
                "segments_too_short": total - len(sequences),
                "min_sequence_seconds": 3.0,
            },
        )


def tree_digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def built(luigi_paths):
    from tasks.assemble import assemble_dataset

    raw, processed = luigi_paths
    make_subject_outputs(raw, processed)
    manifest = assemble_dataset(layout.list_subjects(), layout.dataset_root())
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
def test_assembly_layout_pkl_ids_and_metadata(built):
    raw, processed, manifest = built
    root = layout.dataset_root()
    # S001 song 1: 500 frames -> 2 clips, its 60-frame segment dropped; song 2: 250 -> 1;
    # S002: 240 -> 1, 300 -> 1
    ids = sorted(p.stem for p in (root / "video_seqs").glob("*.mp4"))
    assert ids == ["id1_1_1_1", "id1_1_1_2", "id1_2_1_1", "id2_3_1_1", "id2_3_2_1"]
    assert manifest["counts"]["sequences_kept"] == 4 and manifest["counts"]["sequences_dropped_short"] == 1
    assert manifest["counts"]["clips"] == 5
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
    # clip 2 of id1_1_1 = frames 240..479 of the sequence: motion and audio line up with the source
    motion = np.load(layout.motion_npz("S001", "001_country_take-me-home", 0))
    d = pickle.load(open(root / "flame_seqs" / "id1_1_1_2.pkl", "rb"))
    np.testing.assert_array_equal(d["expcodes"], motion["expression"][240:480])
    np.testing.assert_array_equal(d["posecodes"][:, 3:6], motion["neck_pose"][240:480])
    np.testing.assert_array_equal(d["posecodes"][:, 6:9], motion["jaw_pose"][240:480])
    np.testing.assert_array_equal(d["shapecode"][0], np.load(root / "shapes" / "S001.npy"))
    _, src = wavfile.read(layout.segment_vocal_wav("S001", "001_country_take-me-home", 0))
    _, clip = wavfile.read(root / "audio_seqs" / "id1_1_1_2.wav")
    np.testing.assert_array_equal(clip, src[128000:256000])
    assert (
        C.frame_digests(root / "video_seqs" / "id1_1_1_2.mp4")
        == C.frame_digests(root / "sequences" / "id1_1_1" / "video.mp4")[240:480]
    )
    seq = np.load(root / "sequences" / "id1_1_1" / "motion.npz")
    assert seq["expression"].shape == (500, 50) and seq["shape"].shape == (100,)
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    assert len(rows) == 4 + 5
    r = next(r for r in rows if r["id"] == "id1_1_1_2")
    assert (r["kind"], r["genre"], r["gender"], r["professional"]) == ("clip", "country", "female", "true")
    assert (int(r["start_frame"]), int(r["end_frame"]), r["source_segment"]) == (340, 580, "0")
    assert r["video_method"] == "stream-copy"
    splits = {s: (root / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == ids
    assert manifest["stand_ins"] == ["landmark-fit estimator", "procedural head", "weight-free vocal remover"]
    mtcnn = [m for m in manifest["models"] if m["name"] == "MTCNN"]
    assert len(mtcnn) == 1 and mtcnn[0]["kind"] == "real" and mtcnn[0]["used_by"] == ["crop", "estimate"]
    assert manifest["parameters"]["stages"]["estimate"] == [{"batch_size": 32}]
    assert json.loads((root / "manifest.json").read_text())["counts"] == manifest["counts"]


def test_assembly_is_deterministic(built):
    from tasks.assemble import assemble_dataset

    first = tree_digest(layout.dataset_root())
    assemble_dataset(layout.list_subjects(), layout.dataset_root(), threads=2)
    assert tree_digest(layout.dataset_root()) == first


def test_missing_keyframes_fall_back_to_reencode(luigi_paths):
    from tasks.assemble import assemble_dataset

    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S003": {"001_art_x": [480]}}, keyint=300)
    m = assemble_dataset(["S003"], layout.dataset_root())
    # clip 2 has no keyframe at its start; clip 1's last B-frames reference frame 240 (outside it)
    assert (
        m["clip_cutting"]["re_encoded"] == ["id3_1_1_1", "id3_1_1_2"]
        and m["clip_cutting"]["stream_copy"] == 0
    )
    for cid in m["clip_cutting"]["re_encoded"]:
        assert C.index_video(layout.dataset_root() / "video_seqs" / f"{cid}.mp4").frames == 240


def test_bad_audio_rate_names_the_file(luigi_paths):
    from tasks.assemble import assemble_dataset
    from tasks.common.errors import PipelineInputError

    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S004": {"001_art_x": [240]}})
    bad = layout.segment_vocal_wav("S004", "001_art_x", 0)
    wavfile.write(str(bad), 8000, np.zeros(8000 * 8, np.int16))
    with pytest.raises(PipelineInputError, match="8000 Hz"):
        assemble_dataset(["S004"], layout.dataset_root())
    assert not (layout.dataset_root() / "manifest.json").exists()


def test_ids_from_folder_names():
    from tasks.assemble import clip_id, song_number, subject_number

    assert subject_number("S015") == 15
    assert song_number("003_country_take-me-home", []) == 3
    assert song_number("b_song", ["a_song", "b_song"]) == 2
    assert clip_id(15, 3, 1, 3) == "id15_3_1_3"


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


# ----------------------------------------------------------------------------- report
def test_report_is_self_contained_with_figures(built):
    import matplotlib

    matplotlib.use("Agg")
    from tasks.report import build_report, mouth_opening, qc_scalars

    stats = build_report(layout.dataset_root(), layout.report_dir())
    page = (layout.report_dir() / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 7  # shares, f0, tempo, chroma, mouth, durations, qc
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
    from tasks.report import qc_panels

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
