"""One sequence written by `write_sequence`, rule by rule, on tiny inputs (32x32 portraits, 1-2 s).

Its inputs must cover exactly the sequence's frames at the dataset's rates and channel count, or the
file at fault is named; what it writes is the segment's own samples and motion, bit for bit; and the
log says when audio was clipped to 16-bit PCM or a clip had to be re-encoded, and only then.
"""

from __future__ import annotations

import pickle
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
from scipy.io import wavfile

from tasks.common.errors import PipelineInputError
from tasks.dataset.plan import SequencePlan
from tasks.dataset.sequences import write_sequence
from tasks.media import clips as C

FPS = 30
SR = 8000
ENC = C.ClipEncoding(crf=20, preset="ultrafast", keyint=30)


def _portrait(path, n, keyint=30, rate=Fraction(FPS)):
    """A 32x32 H.264 mp4 of n distinct frames with a keyframe every `keyint` frames from the first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.options = {"g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0", "preset": "ultrafast",
                     "crf": "30", "threads": "1"}
        for i in range(n):
            img = np.full((32, 32, 3), 40, np.uint8)
            img[i % 32, :, :] = 255
            img[:, (7 * i) % 32, 1] = 0
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _motion(n, rng, cam=True):
    m = {k: rng.normal(size=(n, 50 if k == "expression" else 3)).astype(np.float32) for k in C.MOTION_KEYS}
    if cam:
        m["cam"] = rng.normal(size=(n, 3)).astype(np.float32)
    return m


def _inputs(tmp_path, n=60, *, video_frames=None, motion_frames=None, rate=Fraction(FPS), keyint=30,
            wavs=None, cam=True, shape_offset=0.0, clip_frames=30):
    """(plan, subject shape) of one sequence of n frames; `wavs` maps vocal/bgm to (samples, rate)."""
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    _portrait(src / "portrait.mp4", n if video_frames is None else video_frames, keyint, rate)
    wavs = wavs or {}
    for name in ("vocal", "bgm"):
        data, sr = wavs.get(name, (rng.integers(-20000, 20000, n * SR // FPS).astype(np.int16), SR))
        wavfile.write(str(src / f"{name}.wav"), sr, data)
    shape = rng.normal(size=100).astype(np.float32)
    motion = _motion(n if motion_frames is None else motion_frames, rng, cam)
    np.savez(src / "motion.npz", **motion, shape=shape + np.float32(shape_offset), fps=np.float32(FPS))
    plan = SequencePlan(seq_id="id1_1_0", subject="S001", song="001_x", segment_number=0, source_segment=0,
                        start_frame=0, end_frame=n, video=src / "portrait.mp4", motion=src / "motion.npz",
                        vocal=src / "vocal.wav", bgm=src / "bgm.wav", song_dir=src,
                        clip_ids=[f"id1_1_0_{k}" for k in range(n // clip_frames)])
    return plan, shape


def _write(plan, tmp_path, shape, *, fps=float(FPS), sr=SR, clip_frames=30, channels=1):
    return write_sequence(plan, tmp_path / "out", shape, fps, sr, clip_frames, ENC, channels)


def _wav_samples(path):
    """(int16 samples (N, C), rate, sample width) read with Python's own `wave`, not our reader."""
    with wave.open(str(path), "rb") as w:
        raw = w.readframes(w.getnframes())
        return (np.frombuffer(raw, "<i2").reshape(-1, w.getnchannels()), w.getframerate(), w.getsampwidth())


def _warnings(caplog, text):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and text in r.getMessage()]


# ----------------------------------------------------------------------------- inputs must cover the sequence
@pytest.mark.parametrize("delta", [-1, 1])
@pytest.mark.parametrize("which", ["video", "motion"])
def test_a_portrait_or_motion_one_frame_off_the_sequence_is_refused_naming_it(tmp_path, which, delta):
    plan, shape = _inputs(tmp_path, 60, **{f"{which}_frames": 60 + delta})
    with pytest.raises(PipelineInputError) as e:
        _write(plan, tmp_path, shape)
    assert e.value.path == str(getattr(plan, which)) and f"has {60 + delta} frames" in e.value.problem
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize("rate, fps", [(Fraction(30000, 1001), 30.0), (Fraction(25), 30.0)])
def test_a_portrait_at_another_frame_rate_is_refused(tmp_path, rate, fps):
    # an NTSC capture (29.97 fps) is not a 30 fps dataset: 240 frames would be 8.008 s of audio
    plan, shape = _inputs(tmp_path, 60, rate=rate)
    with pytest.raises(PipelineInputError) as e:
        _write(plan, tmp_path, shape, fps=fps)
    assert e.value.path == str(plan.video) and "fps" in e.value.problem


@pytest.mark.parametrize("rate", [SR // 2, SR * 2])
def test_audio_at_another_sample_rate_is_refused_naming_the_file(tmp_path, rate):
    n = 60
    plan, shape = _inputs(tmp_path, n, wavs={"bgm": (np.zeros(n * rate // FPS, np.int16), rate)})
    with pytest.raises(PipelineInputError) as e:
        _write(plan, tmp_path, shape)
    assert e.value.path == str(plan.bgm) and f"{rate} Hz" in e.value.problem


@pytest.mark.parametrize("wav_channels, dataset_channels", [(2, 1), (1, 2)])
def test_audio_with_another_channel_count_is_refused_naming_the_file(tmp_path, wav_channels,
                                                                     dataset_channels):
    n = 60
    samples = np.zeros((n * SR // FPS, wav_channels), np.int16).squeeze()
    plan, shape = _inputs(tmp_path, n, wavs={"vocal": (samples, SR), "bgm": (samples, SR)})
    with pytest.raises(PipelineInputError) as e:
        _write(plan, tmp_path, shape, channels=dataset_channels)
    assert e.value.path == str(plan.vocal) and f"has {wav_channels} channel(s)" in e.value.problem


# ----------------------------------------------------------------------------- what is written
def test_stereo_audio_is_kept_stereo_and_every_wav_is_an_exact_slice(tmp_path):
    # the sequence's wav is the whole segment audio, each clip's the samples of its frames (8000 Hz /
    # 30 fps: 800 samples per 3 frames), all 16-bit PCM with both channels, sample for sample
    n, clip = 60, 30
    rng = np.random.default_rng(11)
    audio = {k: rng.integers(-30000, 30000, (n * SR // FPS, 2)).astype(np.int16) for k in ("vocal", "bgm")}
    plan, shape = _inputs(tmp_path, n, wavs={k: (v, SR) for k, v in audio.items()})
    recs = _write(plan, tmp_path, shape, clip_frames=clip, channels=2)
    out = tmp_path / "out"
    for name, data in audio.items():
        got, sr, width = _wav_samples(out / "sequences" / plan.seq_id / f"{name}.wav")
        assert (sr, width, got.shape) == (SR, 2, data.shape)
        np.testing.assert_array_equal(got, data)
    per_clip = clip * SR // FPS
    for k, rec in enumerate(recs):
        assert rec["seq_start_frame"] == k * clip
        for name, dst in (("vocal", out / "audio_seqs" / f"{rec['id']}.wav"),
                          ("bgm", out / "bgm_seqs" / f"{rec['id']}_bgm.wav")):
            got, sr, _ = _wav_samples(dst)
            np.testing.assert_array_equal(got, audio[name][k * per_clip:(k + 1) * per_clip])


def test_motion_without_a_camera_gets_zero_cameras_of_the_contract_shape(tmp_path):
    n = 30
    plan, shape = _inputs(tmp_path, n, cam=False)
    _write(plan, tmp_path, shape)
    with np.load(tmp_path / "out" / "sequences" / plan.seq_id / "motion.npz") as z:
        assert z["cam"].shape == (n, 3) and z["cam"].dtype == np.float32 and not z["cam"].any()
        src = np.load(plan.motion)
        for k in C.MOTION_KEYS:
            np.testing.assert_array_equal(z[k], src[k])


def test_the_clip_pkl_holds_the_clip_frames_of_the_motion(tmp_path):
    n, clip = 60, 30
    plan, shape = _inputs(tmp_path, n)
    _write(plan, tmp_path, shape, clip_frames=clip)
    src = np.load(plan.motion)
    with open(tmp_path / "out" / "flame_seqs" / "id1_1_0_1.pkl", "rb") as f:
        pkl = pickle.load(f)
    np.testing.assert_array_equal(pkl["expcodes"], src["expression"][clip:])
    np.testing.assert_array_equal(pkl["posecodes"], np.concatenate(
        [src["global_orient"][clip:], src["neck_pose"][clip:], src["jaw_pose"][clip:]], axis=1))


# ----------------------------------------------------------------------------- what the log says
def test_float_audio_over_full_scale_is_clipped_with_a_warning_that_counts_it(tmp_path, caplog):
    n = 30
    loud = np.full(n * SR // FPS, 0.25, np.float32)
    loud[[5, 17, 99]] = [1.0, 1.5, -1.2]  # 1.0 * 32768 and 1.5 * 32768 do not fit int16; -1.2 neither
    plan, shape = _inputs(tmp_path, n, wavs={"bgm": (loud, SR)})
    with caplog.at_level("WARNING", logger="singinghead"):
        _write(plan, tmp_path, shape)
    warned = _warnings(caplog, "clipped")
    assert len(warned) == 1 and str(plan.bgm) in warned[0] and ": 3 samples" in warned[0]
    got, _, _ = _wav_samples(tmp_path / "out" / "sequences" / plan.seq_id / "bgm.wav")
    assert got[[5, 17, 99], 0].tolist() == [32767, 32767, -32768] and got[0, 0] == 8192


def test_audio_within_full_scale_is_written_without_a_clipping_warning(tmp_path, caplog):
    n = 30
    quiet = np.full(n * SR // FPS, -0.5, np.float32)
    quiet[3] = 32767 / 32768  # the largest value 16-bit PCM holds
    plan, shape = _inputs(tmp_path, n, wavs={"vocal": (quiet, SR)})
    with caplog.at_level("WARNING", logger="singinghead"):
        _write(plan, tmp_path, shape)
    assert _warnings(caplog, "clipped") == []
    got, _, _ = _wav_samples(tmp_path / "out" / "sequences" / plan.seq_id / "vocal.wav")
    assert got[3, 0] == 32767 and got[0, 0] == -16384


@pytest.mark.parametrize("offset", [0.0, 5e-5])
def test_a_motion_with_the_subjects_shape_logs_no_difference(tmp_path, caplog, offset):
    # the subject's own shape (to 1e-4, the float32 noise of a saved and reloaded fit) is no news
    plan, shape = _inputs(tmp_path, 30, shape_offset=offset)
    with caplog.at_level("WARNING", logger="singinghead"):
        _write(plan, tmp_path, shape)
    assert _warnings(caplog, "shape differs") == []


def test_only_a_clip_off_a_keyframe_is_re_encoded_and_logged(tmp_path, caplog):
    # keyframes at 0 and 60 (ultrafast: no B-frames): clips at 0 and 60 are stream copies, the clip at
    # 30 is re-encoded
    plan, shape = _inputs(tmp_path, 90, keyint=60)
    with caplog.at_level("WARNING", logger="singinghead"):
        recs = _write(plan, tmp_path, shape, clip_frames=30)
    assert [r["method"] for r in recs] == ["stream-copy", "re-encode", "stream-copy"]
    warned = _warnings(caplog, "re-encoded")
    assert len(warned) == 1 and "clip id1_1_0_1 " in warned[0] and str(plan.video) in warned[0]


def test_clips_on_keyframes_are_stream_copied_without_a_warning(tmp_path, caplog):
    plan, shape = _inputs(tmp_path, 60, keyint=30)
    with caplog.at_level("WARNING", logger="singinghead"):
        recs = _write(plan, tmp_path, shape, clip_frames=30)
    assert [r["method"] for r in recs] == ["stream-copy", "stream-copy"]
    assert _warnings(caplog, "re-encoded") == []
