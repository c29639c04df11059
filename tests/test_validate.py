"""Capture validation: broken captures each get a clear error naming the file; all at once."""
from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from pipeline.build import build, config_overrides
import soundfile as sf
import trimesh
import trimesh.creation

from tasks.capture import checks
from tasks.capture.checks import errors_of, format_problems
from tasks.common.errors import CaptureInvalid
from tasks.common.settings import AudioSettings, BgmSettings, DatasetSettings, EmocaSettings, FlameSettings
from tasks.layout import Layout
from tasks.validate import ValidateCapture

W, H, FPS = 160, 96, 30
TB = Fraction(1, 1_000_000)


def write_kinect_like(path, seconds=3.0, titles=("DEPTH", "COLOR"), seed=0):
    """A small MKV like k4arecorder's: raw JPEG packets in a track titled COLOR, a gray16 DEPTH track."""
    rng = np.random.default_rng(seed)
    c = av.open(str(path), "w", format="matroska", options={"allow_raw_vfw": "1"})
    streams = {}
    for t in titles:
        if t == "COLOR":
            s = c.add_stream("mjpeg", rate=FPS)
            s.width, s.height, s.pix_fmt = W, H, "yuvj422p"
        else:
            s = c.add_stream("rawvideo", rate=FPS)
            s.width, s.height, s.pix_fmt = 32, 24, "gray16be"
        s.metadata["title"] = t
        streams[t] = s
    for i in range(int(seconds * FPS)):
        for t, s in streams.items():
            if t == "COLOR":
                img = rng.integers(0, 255, (H, W, 3), np.uint8)
                ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
                pkt = av.Packet(jpg.tobytes())
                pkt.stream = s
                pkt.time_base = TB
                pkt.pts = pkt.dts = 200_000 + round(i * 1e6 / FPS)
                pkt.duration = round(1e6 / FPS)
                c.mux(pkt)
            else:
                f = av.VideoFrame.from_ndarray(np.zeros((24, 32), np.uint16), format="gray16be")
                f.pts = i
                for p in s.encode(f):
                    c.mux(p)
    for t, s in streams.items():
        if t != "COLOR":
            for p in s.encode(None):
                c.mux(p)
    c.close()


def write_wav(path, seconds, sr=16000):
    sf.write(str(path), np.zeros(int(seconds * sr), np.float32), sr, format="WAV", subtype="PCM_16")


def make_song(sdir, seconds=3.0, offset=0.25, genre="folk", **video_kw):
    sdir.mkdir(parents=True)
    (sdir / "song.json").write_text(json.dumps({"title": "t", "genre": genre, "language": "english",
                                                "audio_offset_s": offset}))
    write_kinect_like(sdir / "color.mkv", seconds, **video_kw)
    write_wav(sdir / "vocal.wav", seconds + offset + 0.2)
    write_wav(sdir / "original.wav", seconds + offset + 0.2)


def make_subject(raw, sid="S001", songs=("001_folk_a",)):
    d = raw / sid
    d.mkdir(parents=True)
    (d / "subject.json").write_text(json.dumps({"subject_id": sid, "gender": "female", "professional": True}))
    for s in songs:
        make_song(d / "songs" / s)
    return d


def validate_capture(raw, subjects=None, flame=FlameSettings(), emoca=EmocaSettings(), bgm=BgmSettings()):
    """The plain checks with the default [dataset] and [audio] settings (30 fps, 1 s tolerance) and,
    unless given, no model files configured (the stand-ins)."""
    return checks.validate_capture(raw, subjects, DatasetSettings(), AudioSettings(), flame, emoca, bgm)


def problems_at(problems, path):
    return [p for p in errors_of(problems) if p["path"] == str(path)]


def test_valid_capture_has_no_errors(tmp_path):
    make_subject(tmp_path)
    problems = validate_capture(tmp_path)
    assert errors_of(problems) == []
    # A small frame is accepted but recorded as a warning naming the video.
    assert any(p["level"] == "warning" and p["path"].endswith("color.mkv") and "160x96" in p["problem"]
               for p in problems)


def test_every_broken_song_is_reported_at_once(tmp_path):
    subj = make_subject(tmp_path, songs=("a_ok", "b_missing", "c_trunc", "d_nocolor", "e_badjson"))
    songs = subj / "songs"
    (songs / "b_missing" / "vocal.wav").unlink()
    mkv = songs / "c_trunc" / "color.mkv"
    data = mkv.read_bytes()
    mkv.write_bytes(data[: len(data) // 2])
    (songs / "d_nocolor" / "color.mkv").unlink()
    write_kinect_like(songs / "d_nocolor" / "color.mkv", titles=("DEPTH", "IR"))
    (songs / "e_badjson" / "song.json").write_text('{"title": "t", "genre": "folk",')

    problems = validate_capture(tmp_path)

    assert problems_at(problems, songs / "a_ok" / "color.mkv") == []
    missing = problems_at(problems, songs / "b_missing" / "vocal.wav")
    assert missing and "missing" in missing[0]["problem"] and missing[0]["fix"]
    trunc = problems_at(problems, mkv)
    assert trunc and "truncated" in trunc[0]["problem"]
    nocolor = problems_at(problems, songs / "d_nocolor" / "color.mkv")
    assert nocolor and "COLOR" in nocolor[0]["problem"] and "DEPTH, IR" in nocolor[0]["problem"]
    bad = problems_at(problems, songs / "e_badjson" / "song.json")
    assert bad and "JSON" in bad[0]["problem"]


def test_json_keys_genre_and_offset(tmp_path):
    subj = make_subject(tmp_path, songs=("a", "b"))
    (subj / "subject.json").write_text(json.dumps({"subject_id": "S001", "gender": "f"}))
    sj = subj / "songs" / "a" / "song.json"
    sj.write_text(json.dumps({"title": "t", "genre": "polka", "language": "en", "audio_offset_s": 0.25}))
    # Song b: the vocal ends 2 s before the video does at its offset.
    write_wav(subj / "songs" / "b" / "vocal.wav", 1.0)
    problems = validate_capture(tmp_path)
    assert any("professional" in p["problem"] for p in problems_at(problems, subj / "subject.json"))
    assert any("polka" in p["problem"] for p in problems_at(problems, sj))
    short = problems_at(problems, subj / "songs" / "b" / "vocal.wav")
    assert short and "needs" in short[0]["problem"] and "audio_offset_s" in short[0]["fix"]


def test_plain_video_without_titles_is_accepted(tmp_path):
    subj = make_subject(tmp_path)
    song = subj / "songs" / "001_folk_a"
    (song / "color.mkv").unlink()
    c = av.open(str(song / "take.mp4"), "w", format="mp4")
    s = c.add_stream("mpeg4", rate=FPS)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    for i in range(90):
        f = av.VideoFrame.from_ndarray(np.full((H, W, 3), i, np.uint8), format="rgb24")
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode(None):
        c.mux(p)
    c.close()
    assert errors_of(validate_capture(tmp_path)) == []


def test_validate_task_refuses_and_command_reports(tmp_path, luigi_paths):
    raw, processed = luigi_paths
    subj = make_subject(raw)
    (subj / "songs" / "001_folk_a" / "original.wav").unlink()
    task = ValidateCapture(subject="S001")
    with pytest.raises(CaptureInvalid) as e:
        task.run()
    assert "original" in str(e.value)
    assert not task.complete()
    failed_report = Layout.from_config().validation_failed_report
    assert failed_report("S001").is_file()
    # the build reports failure (so heavy stages never start).
    assert not build(task, log_level="ERROR").ok

    # What the `validate` command reports (pipeline/cli.py exits 1 when errors_of(...) is non-empty).
    problems = validate_capture(raw)
    assert errors_of(problems)
    out = format_problems(problems)
    assert "original.wav" in out and "fix:" in out

    # Fixed capture: the task writes validation.json and the command finds no error.
    write_wav(subj / "songs" / "001_folk_a" / "original.wav", 3.5)
    task.run()
    assert task.complete() and not failed_report("S001").exists()
    report = json.loads(task.output().open("r").read())
    assert report["ok"] and report["facts"]["songs"]["001_folk_a"]["video"]["fps"] == 30
    assert errors_of(validate_capture(raw)) == []


# ----------------------------------------------------------------------------- issue 13 checks
S = 64   # tiny frames for the timing/rotation/length fixtures


def write_color_track(path, pts_us, seed=0):
    """A 64x64 k4arecorder-like MKV: raw JPEG packets stamped exactly `pts_us` (µs) in a COLOR track."""
    rng = np.random.default_rng(seed)
    c = av.open(str(path), "w", format="matroska", options={"allow_raw_vfw": "1"})
    s = c.add_stream("mjpeg", rate=FPS)
    s.width, s.height, s.pix_fmt = S, S, "yuvj422p"
    s.metadata["title"] = "COLOR"
    for i, t in enumerate(pts_us):
        ok, jpg = cv2.imencode(".jpg", rng.integers(0, 255, (S, S, 3), np.uint8))
        pkt = av.Packet(jpg.tobytes())
        pkt.stream, pkt.time_base = s, TB
        pkt.pts = int(t)
        pkt.dts = 200_000 + round(i * 1e6 / FPS)   # monotonic, so the muxer takes any pts
        pkt.duration = round(1e6 / FPS)
        c.mux(pkt)
    c.close()


def regular_pts(n, start=200_000):
    return [start + round(i * 1e6 / FPS) for i in range(n)]


def tiny_song(raw, pts_us, audio_s, offset=0.25, subject="S001", song="001_folk_a"):
    """A subject with one song: the given colour timestamps, vocal/original of `audio_s` seconds."""
    d = raw / subject
    (d / "songs" / song).mkdir(parents=True)
    (d / "subject.json").write_text(json.dumps({"subject_id": subject, "gender": "female", "professional": True}))
    sdir = d / "songs" / song
    (sdir / "song.json").write_text(json.dumps({"title": "t", "genre": "folk", "language": "en",
                                                "audio_offset_s": offset}))
    write_color_track(sdir / "color.mkv", pts_us)
    write_wav(sdir / "vocal.wav", audio_s)
    write_wav(sdir / "original.wav", audio_s)
    return sdir


def all_at(problems, path, level=None):
    return [p for p in problems if p["path"] == str(path) and (level is None or p["level"] == level)]


def test_scan_must_load_as_a_finite_triangle_mesh(tmp_path):
    subj = tmp_path / "S001"
    (subj / "songs").mkdir(parents=True)
    scan = subj / "scan" / "head.obj"
    scan.parent.mkdir()
    scan.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\n")
    assert problems_at(validate_capture(tmp_path), scan) == []          # a real (tiny) mesh passes
    scan.write_text("this is not a mesh\n\x00\x01 garbage")
    bad = problems_at(validate_capture(tmp_path), scan)
    assert bad and "triangle mesh" in bad[0]["problem"] and "Metashape" in bad[0]["fix"]
    scan.write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\n")
    bad = problems_at(validate_capture(tmp_path), scan)
    assert bad and "non-finite" in bad[0]["problem"]
    lm = scan.parent / "landmarks.json"
    lm.write_text(json.dumps({"landmarks": [[0, 0, 0]] * 60}))
    assert any("60 landmarks" in p["problem"] for p in problems_at(validate_capture(tmp_path), lm))


def test_scan_units_checked_before_any_work(tmp_path):
    """A bad scan.json is an error; undeclared units no unit makes a head of (with hand-placed
    landmarks) a warning naming the scan and [scan_fit] units = free; a metric head passes."""
    subj = tmp_path / "S001"
    (subj / "songs").mkdir(parents=True)
    scan = subj / "scan" / "head.ply"
    scan.parent.mkdir()
    head = trimesh.creation.icosphere(subdivisions=3)
    lmk = np.zeros((68, 3))
    lmk[:] = [0.0, 0.0, 0.09]
    lmk[[36, 39, 42, 45]] = [[-0.045, 0.03, 0.09], [-0.015, 0.03, 0.095], [0.015, 0.03, 0.095],
                             [0.045, 0.03, 0.09]]
    lmk[[48, 54]] = [[-0.025, -0.05, 0.09], [0.025, -0.05, 0.09]]

    def write(per_metre):
        trimesh.Trimesh(head.vertices * [0.08, 0.11, 0.1] * per_metre, head.faces).export(scan)
        (scan.parent / "landmarks.json").write_text(json.dumps({"landmarks": (lmk * per_metre).tolist()}))
        return validate_capture(tmp_path)

    assert all_at(write(1000.0), scan) == []                         # a 0.2 m head in mm
    warned = all_at(write(7.5), scan, "warning")                       # 1.5 units: no unit fits
    assert warned and "none of" in warned[0]["problem"] and "units = free" in warned[0]["problem"]
    assert problems_at(write(7.5), scan) == []                         # a warning, not an error
    (scan.parent / "scan.json").write_text(json.dumps({"units": "furlong"}))
    bad = problems_at(validate_capture(tmp_path), scan.parent / "scan.json")
    assert any("furlong" in p["problem"] for p in bad)
    (scan.parent / "scan.json").write_text(json.dumps({"units": "cm"}))  # declared: no inference
    assert all_at(validate_capture(tmp_path), scan) == []


def test_video_much_shorter_than_its_audio_is_an_error_on_the_video(tmp_path):
    sdir = tiny_song(tmp_path, regular_pts(1), audio_s=6.25)        # one frame, 6 s of singing
    problems = validate_capture(tmp_path)
    video = sdir / "color.mkv"
    errs = problems_at(problems, video)
    assert errs and "vocal.wav is 6.25 s" in errs[0]["problem"] and "0.03 s" in errs[0]["problem"]
    # The original song may run on past the take: a warning, also naming the video.
    assert any("original.wav" in p["problem"] for p in all_at(problems, video, "warning"))
    assert problems_at(problems, sdir / "vocal.wav") == []
    # Lengths that agree at the offset (3 s of video + 0.25 s offset, within 1 s) pass.
    (sdir / "vocal.wav").unlink()
    write_wav(sdir / "vocal.wav", 0.25 + 1 / FPS + 0.5)
    assert problems_at(validate_capture(tmp_path), video) == []


def test_timestamp_jump_is_blamed_on_the_video_with_frame_and_time(tmp_path):
    pts = regular_pts(30)
    pts[15] = 200_000 + 36_000 * 1_000_000           # one frame stamped 10 h later
    sdir = tiny_song(tmp_path, pts, audio_s=1.5)
    problems = validate_capture(tmp_path)
    jumps = [p for p in problems_at(problems, sdir / "color.mkv") if "jump" in p["problem"]]
    assert jumps and "frame 15" in jumps[0]["problem"] and "36000.000 s" in jumps[0]["problem"]
    assert "genpts" in jumps[0]["fix"]
    assert not any("truncated" in p["problem"] for p in problems)   # the stray stamp is not a cut file
    assert problems_at(problems, sdir / "vocal.wav") == [] and problems_at(problems, sdir / "original.wav") == []
    # Control: the same file with sound timestamps has no jump.
    (sdir / "color.mkv").unlink()
    write_color_track(sdir / "color.mkv", regular_pts(30))
    assert problems_at(validate_capture(tmp_path), sdir / "color.mkv") == []


def test_rotation_flag_is_refused(tmp_path):
    sdir = tiny_song(tmp_path, regular_pts(1), audio_s=0.3)
    (sdir / "color.mkv").unlink()
    for rotate in (90, 0):
        out = sdir / "take.mp4"
        c = av.open(str(out), "w", format="mp4")
        s = c.add_stream("mpeg4", rate=FPS)
        s.width = s.height = S
        s.pix_fmt = "yuv420p"
        if rotate:
            s.set_display_rotation(rotate)
        for i in range(9):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((S, S, 3), 9 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
        c.close()
        rot = [p for p in problems_at(validate_capture(tmp_path), out) if "rotat" in p["problem"]]
        if rotate:
            assert rot and "90 degrees" in rot[0]["problem"] and "without rotation" in rot[0]["fix"]
        else:
            assert rot == []
        out.unlink()


def test_irregular_timing_is_a_warning_with_the_repaired_count(luigi_paths):
    raw, _ = luigi_paths
    pts = regular_pts(45)
    pts = pts[:10] + pts[13:20] + [pts[19] + 300] + pts[20:]     # frames 10-12 missing, frame 19 twice
    sdir = tiny_song(raw, pts, audio_s=1.75)
    problems = validate_capture(raw)
    warn = [p for p in all_at(problems, sdir / "color.mkv", "warning") if "irregular" in p["problem"]]
    assert errors_of(problems) == []
    assert warn and "4 frame(s) will be repaired" in warn[0]["problem"]
    assert "3 missing" in warn[0]["problem"] and "1 with a repeated timestamp" in warn[0]["problem"]
    assert "after frame 9" in warn[0]["problem"]
    # The stage's report carries the count, as segments.json carries the crop's repairs.
    task = ValidateCapture(subject="S001")
    task.run()
    timing = json.loads(task.output().open("r").read())["facts"]["songs"]["001_folk_a"]["video"]["timing"]
    assert timing["repaired_frames"] == 4 and timing["missing_frames"] == 3 and timing["duplicate_frames"] == 1
    assert timing["frame_count"] == 45 and timing["gaps"] == [{"after_frame": 9, "missing": 3, "time_s": 0.3}]


def _bare_subject(raw, name, songs=()):
    d = raw / name
    for s in songs:
        (d / "songs" / s).mkdir(parents=True)
    (d / "songs").mkdir(parents=True, exist_ok=True)
    (d / "subject.json").write_text(json.dumps({"subject_id": name, "gender": "f", "professional": False}))
    return d


def test_folder_names_the_ids_cannot_use(tmp_path):
    _bare_subject(tmp_path, "alice", ["001_folk_a"])
    _bare_subject(tmp_path, "S1", ["003_folk_a", "3_rock_b", "intro"])
    _bare_subject(tmp_path, "S001", ["001_folk_a"])
    _bare_subject(tmp_path, "S002", ["001_folk_a", "002_rock_b"])
    problems = validate_capture(tmp_path)
    alice = problems_at(problems, tmp_path / "alice")
    assert alice and "'alice' holds no number" in alice[0]["problem"] and "id<subject>" in alice[0]["problem"]
    assert "S001" in alice[0]["fix"]
    clash = problems_at(problems, tmp_path / "S1")
    assert clash and "'S001'" in clash[0]["problem"] and "subject number 1" in clash[0]["problem"]
    song_clash = problems_at(problems, tmp_path / "S1" / "songs" / "3_rock_b")
    assert song_clash and "'003_folk_a'" in song_clash[0]["problem"] and "song number 3" in song_clash[0]["problem"]
    intro = all_at(problems, tmp_path / "S1" / "songs" / "intro", "warning")
    assert intro and "position (3)" in intro[0]["problem"]
    # Well-named folders get no name problem.
    for ok in (tmp_path / "S002", tmp_path / "S002" / "songs" / "001_folk_a", tmp_path / "S002" / "songs" / "002_rock_b"):
        assert all_at(problems, ok) == []
    # A subject given by a name that is not a plain folder name is reported, never opened.
    bad = validate_capture(tmp_path, subjects=["../S002"])
    assert problems_at(bad, tmp_path / "../S002") and not any("S002/songs" in p["path"] for p in bad)


@pytest.mark.parametrize("text, expect", [
    ('{"title": "t", "genre": "folk", "language": "en", "audio_offset_s": 1' + "0" * 400 + "}", "401 digits"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"title": "t", "genre": "folk", "language": "en", "audio_offset_s": NaN}', "NaN"),
    ('{"title": "t", "genre": "folk", "language": "en", "audio_offset_s": 1e999}', "not finite"),
    ('{"title": "t", "genre": "folk", "language": "en", "audio_offset_s": 1e300}', "too large"),
    ('{"title": "t", "genre": "folk", "language": "en", "audio_offset_s": 99999.0}', "at most 3600"),
    ('{"title": "t", "genre": ["folk"], "language": "en", "audio_offset_s": "0.2"}', "must be a number"),
    ('["title", "genre"]', "not a list"),
    (b'{"title": "\xff\xfe"}', "not UTF-8"),
])
def test_malformed_song_json_is_a_clear_error(tmp_path, text, expect):
    subj = _bare_subject(tmp_path, "S001", ["001_folk_a"])
    sj = subj / "songs" / "001_folk_a" / "song.json"
    sj.write_bytes(text if isinstance(text, bytes) else text.encode())
    problems = validate_capture(tmp_path)            # never a traceback
    errs = problems_at(problems, sj)
    assert errs and any(expect in p["problem"] for p in errs), errs
    if expect == "not a list":
        return
    assert errs[0]["fix"]


def test_configured_model_files_must_load(tmp_path, luigi_paths, payload_th):
    from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
    raw, _ = luigi_paths
    _bare_subject(raw, "S001", ["001_folk_a"])
    models = tmp_path / "models"
    write_procedural_head_model(models / "flame", seed=0, n_vertices=800)
    good_flame = FlameSettings(model_path=str(models / "flame" / MODEL_FILE),
                               landmark_embedding_path=str(models / "flame" / EMBEDDING_FILE))
    assert all_at(validate_capture(raw, flame=good_flame), good_flame.model_path) == []

    missing = FlameSettings(model_path=str(models / "generic_model.pkl"),
                            landmark_embedding_path=str(models / "flame" / EMBEDDING_FILE))
    errs = problems_at(validate_capture(raw, flame=missing), missing.model_path)
    assert errs and "does not exist" in errs[0]["problem"]
    garbage = models / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle at all")
    errs = problems_at(validate_capture(raw, flame=FlameSettings(model_path=str(garbage),
                                                                 landmark_embedding_path=good_flame.landmark_embedding_path)),
                       garbage)
    assert errs and errs[0]["fix"]

    no_emoca = models / "EMOCA_v2_lr_mse_20"
    errs = problems_at(validate_capture(raw, emoca=EmocaSettings(checkpoint_dir=str(no_emoca))), no_emoca)
    assert errs and "does not exist" in errs[0]["problem"]
    no_emoca.mkdir()
    (no_emoca / "detail" / "checkpoints").mkdir(parents=True)
    (no_emoca / "detail" / "checkpoints" / "deca-epoch=01.ckpt").write_bytes(b"truncated")
    errs = [p for p in errors_of(validate_capture(raw, emoca=EmocaSettings(checkpoint_dir=str(no_emoca))))
            if str(no_emoca) in p["path"]]
    assert errs                                   # no cfg.yaml / unreadable checkpoint, named

    repo, th, marker = payload_th
    errs = problems_at(validate_capture(raw, bgm=BgmSettings(demucs_repo=str(repo), demucs_model="htdemucs")), th)
    assert errs and "refused" in errs[0]["problem"] and not marker.exists()

    # The stage and the command pass the configured settings in.
    with config_overrides(flame={"model_path": missing.model_path,
                                 "landmark_embedding_path": missing.landmark_embedding_path}):
        with pytest.raises(CaptureInvalid, match="generic_model.pkl"):
            ValidateCapture(subject="S001").run()
    with config_overrides(bgm={"demucs_repo": str(repo), "demucs_model": "htdemucs"}):
        from pipeline.cli import main
        import contextlib, io
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["validate", str(raw)]) == 1
        assert th.name in out.getvalue() and "refused" in out.getvalue()


@pytest.fixture
def payload_th(tmp_path):
    """A Demucs folder whose .th (correct checksum name) would run `touch marker` if unpickled."""
    import hashlib
    import io
    import os
    import torch

    marker = tmp_path / "PAYLOAD_RAN"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch '{marker}'",)

    buf = io.BytesIO()
    torch.save({"klass": Evil(), "args": [], "kwargs": {}, "state": {}}, buf)
    repo = tmp_path / "demucs"
    repo.mkdir()
    th = repo / f"0badc0de-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.th"
    th.write_bytes(buf.getvalue())
    (repo / "htdemucs.yaml").write_text("models: ['0badc0de']\n")
    return repo, th, marker


def test_demucs_folder_that_loads_passes_and_a_changed_file_is_seen(tmp_path):
    """A tiny random HTDemucs in the release format passes; damaging its file afterwards is reported
    (the per-process verdict cache keys on the files' size and mtime)."""
    import os
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import save_with_checksum

    _bare_subject(tmp_path / "raw", "S001", ["001_folk_a"])
    repo = tmp_path / "demucs"
    repo.mkdir()
    torch.manual_seed(0)
    m = HTDemucs(["drums", "bass", "other", "vocals"], channels=8, depth=4, t_layers=1, t_heads=1, segment=4)
    args, kwargs = m._init_args_kwargs
    save_with_checksum({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": m.state_dict()}, repo / "0badc0de.th")
    (repo / "htdemucs.yaml").write_text("models: ['0badc0de']\n")
    bgm = BgmSettings(demucs_repo=str(repo), demucs_model="htdemucs")
    assert [p for p in errors_of(validate_capture(tmp_path / "raw", bgm=bgm)) if str(repo) in p["path"]] == []
    th = next(repo.glob("*.th"))
    data = bytearray(th.read_bytes())
    data[len(data) // 2] ^= 0xFF
    th.write_bytes(bytes(data))
    os.utime(th, ns=(th.stat().st_atime_ns, th.stat().st_mtime_ns + 10**9))
    errs = problems_at(validate_capture(tmp_path / "raw", bgm=bgm), th)
    assert errs and "checksum" in errs[0]["problem"]
