"""The demo capture: raw/ layout, Kinect-like video, a face and mouth the real detectors see, audio timing."""
from __future__ import annotations

import json
from pathlib import Path

import av
import facenet_pytorch as facenet
import numpy as np
import pytest
import soundfile as sf
import torch

from demo import audio as demo_audio
from demo.capture import dlib_landmarks, make_demo_capture
from pipeline.cli import build_parser, command_function
from tasks.common.errors import PipelineInputError
from tasks.common.settings import CropSettings

W, H, SECONDS, FPS = 640, 360, 7.0, 30
GENRES = {"art", "country", "hip-hop", "rock", "folk", "rnb", "theater", "march"}


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    summary = make_demo_capture(root / "raw", root / "truth", width=W, height=H, seconds=SECONDS,
                                n_subjects=1, n_songs=2, seed=3, with_scan=False)
    return root, summary


def _song_dirs(root):
    return sorted((root / "raw" / "S001" / "songs").iterdir())


def _color_stream(container):
    streams = [s for s in container.streams.video if s.metadata.get("title") == "COLOR"]
    assert len(streams) == 1
    return streams[0]


def _frames(video: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decoded RGB frames by index (index from pts, as a Kinect reader must)."""
    out = {}
    with av.open(str(video)) as c:
        s = _color_stream(c)
        pts0 = None
        for f in c.decode(s):
            pts0 = f.pts if pts0 is None else pts0
            i = round(float((f.pts - pts0) * f.time_base) * FPS)
            if i in wanted:
                out[i] = f.to_ndarray(format="rgb24")
    return out


def _truth(root, song_dir):
    d = root / "truth" / "S001" / song_dir.name
    return np.load(d / "truth.npz"), json.loads((d / "truth.json").read_text())


def test_layout_and_json(capture):
    root, summary = capture
    raw = root / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["S001"]
    subj = json.loads((raw / "S001" / "subject.json").read_text())
    assert set(subj) == {"subject_id", "gender", "professional", "notes"}
    assert subj["subject_id"] == "S001" and isinstance(subj["professional"], bool)
    songs = _song_dirs(root)
    assert len(songs) == 2
    genres = set()
    for d in songs:
        assert sorted(p.name for p in d.iterdir()) == ["color.mkv", "original.wav", "song.json", "vocal.wav"]
        meta = json.loads((d / "song.json").read_text())
        assert set(meta) == {"title", "genre", "language", "audio_offset_s"}
        assert meta["genre"] in GENRES and d.name.split("_")[1] == meta["genre"]
        assert d.name[:3].isdigit()
        assert meta["audio_offset_s"] > 0.0
        genres.add(meta["genre"])
    assert len(genres) == 2, "songs should differ in genre"
    # The truth stays outside raw/.
    assert not list(raw.rglob("truth*")) and not list(raw.rglob("accompaniment.wav"))


def test_kinect_like_video(capture):
    root, _ = capture
    video = _song_dirs(root)[0] / "color.mkv"
    with av.open(str(video)) as c:
        assert "K4A_START_OFFSET_NS" in c.metadata
        titles = [s.metadata.get("title") for s in c.streams.video]
        assert titles == ["DEPTH", "COLOR"], "DEPTH comes first so readers must pick COLOR by title"
        attachments = [s.metadata.get("filename") for s in c.streams if s.type == "attachment"]
        assert attachments == ["calibration.json"]
        s = _color_stream(c)
        assert s.codec_context.name == "mjpeg"
        assert (s.codec_context.width, s.codec_context.height) == (W, H)
        assert s.average_rate == FPS
        pts = [p.pts for p in c.demux(s) if p.pts is not None]
        assert len(pts) == int(SECONDS * FPS)
        assert pts[0] > 0, "Kinect colour pts do not start at 0"
        step = np.diff(np.array(pts) * float(s.time_base))
        assert np.allclose(step, 1 / FPS, atol=1.5e-3)
    with av.open(str(video)) as c:
        f = next(c.decode(_color_stream(c)))
        assert f.format.name == "yuvj422p"


def test_deterministic(tmp_path):
    kw = dict(width=320, height=180, seconds=4.5, n_subjects=1, n_songs=1, seed=11, with_scan=False)
    make_demo_capture(tmp_path / "a" / "raw", tmp_path / "a" / "truth", **kw)
    make_demo_capture(tmp_path / "b" / "raw", tmp_path / "b" / "truth", **kw)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) >= 9
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # A rerun with the same parameters keeps the files; a different seed changes them.
    again = make_demo_capture(tmp_path / "a" / "raw", tmp_path / "a" / "truth", **kw)
    assert again["subjects"][0]["songs"][0].get("skipped") is True


def test_face_found_by_mtcnn_and_hidden_span(capture):
    torch.set_num_threads(1)
    root, _ = capture
    song = _song_dirs(root)[0]
    truth, info = _truth(root, song)
    h0, h1 = info["faceless_frames"]
    e0, e1 = info["excursion_frames"]
    assert h1 - h0 == round(1.5 * FPS) and not truth["face_visible"][h0:h1].any()
    assert truth["face_visible"][:h0].all() and e1 <= h0
    visible = [5, (e0 + e1) // 2]
    hidden = (h0 + h1) // 2
    frames = _frames(song / "color.mkv", set(visible) | {hidden})
    mtcnn = facenet.MTCNN(keep_all=True, device="cpu")
    for i in visible:
        boxes, probs = mtcnn.detect(frames[i])
        assert boxes is not None and probs.max() > 0.95, f"no face at frame {i}"
        cx, cy = truth["center"][i]
        b = boxes[int(np.argmax(probs))]
        assert b[0] < cx < b[2] and b[1] < cy < b[3], "the face is where the truth says"
        assert 0.9 < (b[3] - b[1]) / truth["scale"][i] < 1.8
    boxes, probs = mtcnn.detect(frames[hidden])
    assert boxes is None or probs.max() < 0.9
    # With the crop stage's default box (MTCNN box + margin per side, square), the true jaw-line
    # landmarks stay clear of the border during ordinary motion and reach it in the excursion.
    cfg = CropSettings()
    boxes, probs = mtcnn.detect(frames[5])
    x0, y0, x1, y1 = boxes[int(np.argmax(probs))]
    side = max(x1 - x0, y1 - y0) * (1 + 2 * cfg.margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    jaw = truth["landmarks"][:, 0:17]
    clearance = np.minimum(np.minimum(jaw[..., 0] - (cx - side / 2), (cx + side / 2) - jaw[..., 0]),
                           np.minimum(jaw[..., 1] - (cy - side / 2), (cy + side / 2) - jaw[..., 1])).min(1)
    assert clearance[5:e0].min() > cfg.edge_fraction * side * 1.5
    assert clearance[e0:e1].min() < cfg.edge_fraction * side
    dx = np.abs(truth["center"][(e0 + e1) // 2, 0] - truth["center"][max(e0 - 1, 0), 0])
    assert dx > 1.0 * truth["scale"][e0]


def test_mouth_follows_vocal_loudness(capture):
    root, _ = capture
    song = _song_dirs(root)[0]
    truth, info = _truth(root, song)
    vis = truth["face_visible"]
    mouth = np.where(vis, truth["mouth_open"], np.nan)
    loud, silent = int(np.nanargmax(mouth)), int(np.nanargmin(mouth))
    assert mouth[loud] > 0.7 and mouth[silent] < 0.1
    frames = _frames(song / "color.mkv", {loud, silent})
    gaps = {}
    for i in (loud, silent):
        lm = dlib_landmarks(frames[i])
        assert lm is not None, f"Dlib finds no face at frame {i}"
        # Agreement with the true landmark positions (a few pixels at 640x360).
        assert np.abs(lm - truth["landmarks"][i]).mean() < 3.0
        gaps[i] = (lm[66, 1] - lm[62, 1]) / (lm[8, 1] - lm[27, 1])
    assert gaps[loud] > gaps[silent] + 0.06, gaps
    # The mouth truth is the vocal's loudness at the video frame's time (vocal time = video + offset).
    vocal, sr = sf.read(song / "vocal.wav", dtype="float32")
    env = demo_audio.loudness_envelope(vocal, sr, FPS, len(mouth), start_s=info["audio_offset_s"])
    assert np.abs(env - truth["loudness"]).max() < 0.05


def test_audio_durations_and_truth(capture):
    root, _ = capture
    for song in _song_dirs(root):
        truth, info = _truth(root, song)
        offset = json.loads((song / "song.json").read_text())["audio_offset_s"]
        assert info["audio_offset_s"] == offset
        video_s = int(SECONDS * FPS) / FPS
        vocal = sf.info(str(song / "vocal.wav"))
        orig = sf.info(str(song / "original.wav"))
        assert vocal.samplerate == 48000 and vocal.channels == 1
        assert orig.samplerate == 44100 and orig.channels == 2
        for inf in (vocal, orig):
            assert abs(inf.frames / inf.samplerate - offset - video_s) < 1 / FPS
        tdir = root / "truth" / "S001" / song.name
        acc, sr_a = sf.read(tdir / "accompaniment.wav", dtype="float32")
        voc, _ = sf.read(tdir / "vocal_clean.wav", dtype="float32")
        mix, _ = sf.read(song / "original.wav", dtype="float32")
        assert sr_a == 44100 and acc.shape == mix.shape
        assert np.abs(mix - (acc + voc[:, None])).max() < 2e-4       # 16-bit quantisation
        assert np.abs(acc[:, 0] - acc[:, 1]).mean() > 1e-3              # stereo width
        T = int(SECONDS * FPS)
        for key, shape in (("face_visible", (T,)), ("center", (T, 2)), ("scale", (T,)), ("yaw", (T,)),
                           ("pitch", (T,)), ("roll", (T,)), ("mouth_open", (T,)), ("landmarks", (T, 68, 2))):
            assert truth[key].shape == shape, key
        assert truth["face_visible"].dtype == bool
        assert 0 <= truth["mouth_open"].min() and truth["mouth_open"].max() <= 1
        assert np.abs(truth["yaw"]).max() > 0.1 and np.abs(truth["roll"]).max() > 0.02


def test_vocal_is_sung_with_rests():
    sr = 16000
    v = demo_audio.synth_vocal(6.0, sr, seed=1, genre="rock")
    env = demo_audio.loudness_envelope(v, sr, 30, 180)
    assert 0.1 < (env < 0.05).mean() < 0.6, "phrases separated by rests"
    loud = int(np.argmax(env))
    seg = v[int(loud / 30 * sr): int(loud / 30 * sr) + 4096]
    # Pitch by autocorrelation (librosa's import alone would double this test's time).
    seg = seg - seg.mean()
    ac = np.correlate(seg, seg, "full")[len(seg) - 1:]
    lo, hi = sr // 1000, sr // 80
    best = ac[lo:hi].max()
    assert best > 0.5 * ac[0], "a clearly pitched voice"
    f0 = sr / (lo + int(np.argmax(ac[lo:hi] > 0.85 * best)))   # first strong peak: no octave errors
    assert 150 < f0 < 1000, f0
    slow = demo_audio.song_plan("art", 0).bpm
    fast = demo_audio.song_plan("rock", 0).bpm
    assert slow < 90 < 120 < fast


def test_bad_arguments_and_cli(tmp_path):
    with pytest.raises(PipelineInputError):
        make_demo_capture(tmp_path / "raw", tmp_path / "truth", width=641, height=360, seconds=6)
    with pytest.raises(PipelineInputError):
        make_demo_capture(tmp_path / "raw", tmp_path / "truth", width=640, height=360, seconds=2)
    args = build_parser().parse_args(["demo-capture", "--out", "x", "--width", "480", "--height", "270",
                              "--seconds", "6"])
    assert (args.out, args.truth, args.width, args.height, args.seconds) == ("x", "demo_truth", 480, 270, 6.0)
    assert command_function(args.command_impl).__name__ == "demo_capture"
