"""Capture validation: broken captures each get a clear error naming the file; all at once."""
from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from pipeline.build import build
import soundfile as sf

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
