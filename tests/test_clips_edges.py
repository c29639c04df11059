"""tasks.media.clips at its edges: spans that are no self-contained packet run, a stream copy that does
not decode to its source frames, a source too short for a re-encode, audio shorter than its span,
motion files with wrong shapes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from dataset_helpers import write_portrait

from tasks.common.errors import PipelineInputError
from tasks.media import clips as C
from tasks.media.segment_audio import frame_sample_edges as segment_audio_edges


def _index(order, keyframes):
    return C.VideoIndex(frames=len(order), fps=Fraction(30), width=16, height=16, order=order,
                        keyframes=keyframes)


@pytest.mark.parametrize("order, keyframes, start, count", [
    ([0, 1, 3, 2, 4, 5], [0, 3], 0, 3),        # frame 2 is shown by packet 3, after frame 3's packet 2
    ([1, 0, 2, 3, 4, 5], [0], 0, 3),           # contiguous, but its first packet shows frame 1
    ([0, 1, 2, 3, 4, 5], [0, 3], 1, 2),        # frame 1 is no keyframe
    ([0, 1, 2, 3, 4, 5], [0, 3], 3, 4),        # past the last frame
])
def test_stream_copy_refuses_a_span_that_is_no_closed_packet_run(tmp_path, order, keyframes, start, count):
    dst = tmp_path / "clip.mp4"
    # the source is never opened: the index alone rules the span out, and nothing is written
    assert C.stream_copy_cut(tmp_path / "absent.mp4", dst, start, count, _index(order, keyframes)) is False
    assert not dst.exists()


def test_a_stream_copy_that_does_not_decode_to_its_source_frames_is_re_encoded(tmp_path, monkeypatch):
    src = tmp_path / "seg.mp4"
    write_portrait(src, 40, keyint=10, size=32)
    real = C.stream_copy_cut

    def wrong_frames(src_, dst, start, count, index):      # copies the span 10 frames later
        return real(src_, dst, start + 10, count, index)
    monkeypatch.setattr(C, "stream_copy_cut", wrong_frames)
    enc = C.ClipEncoding(crf=10, preset="ultrafast", keyint=10)
    recs = C.cut_video_clips(src, [(0, 10)], [tmp_path / "c.mp4"], encoding=enc)
    assert recs == [{"method": "re-encode", "frames": 10, "first_frame": 0, "exact": False}]
    # re-encoded from frames 0..9: closer to the source's frame 0 than the copied frame 10 was
    import av
    with av.open(str(tmp_path / "c.mp4")) as c, av.open(str(src)) as s:
        got = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float)
        want = [f.to_ndarray(format="rgb24").astype(float) for _, f in zip(range(11), s.decode(video=0))]
    assert np.abs(got - want[0]).mean() < np.abs(got - want[10]).mean()
    # at the source's rate: 10 frames 1/30 s apart
    with av.open(str(tmp_path / "c.mp4")) as c:
        times = [float(f.time) for f in c.decode(video=0)]
    np.testing.assert_allclose(times, np.arange(10) / 30, atol=1e-3)
    assert C.index_video(tmp_path / "c.mp4").fps == 30


def test_re_encode_of_a_too_short_source_names_the_frames_and_keeps_an_older_clip(tmp_path):
    src = tmp_path / "seg.mp4"
    write_portrait(src, 10, keyint=10, size=32)
    dst = tmp_path / "c.mp4"
    dst.write_bytes(b"an older clip")
    with pytest.raises(PipelineInputError, match=r"has 10 frames, a clip needs frames 5\.\.14") as e:
        C.reencode_cut(src, dst, 5, 10, C.ClipEncoding(crf=30, preset="ultrafast", keyint=10))
    assert e.value.path == str(src)
    assert dst.read_bytes() == b"an older clip"                   # a failed cut replaces nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4", "seg.mp4"]     # no temp file left


@pytest.mark.parametrize("channels", [None, 2])
def test_cut_audio_pads_a_short_source_with_silence_at_the_end(channels):
    # 30 fps at 16 kHz: frames [3, 9) are samples [1600, 4800); the source ends at 4000
    n = 4000
    data = (np.arange(1, n + 1, dtype=np.int16) % 1000 + 1).astype(np.int16)
    if channels:
        data = np.stack([data, -data], 1)
    out = C.cut_audio(data, 16000, 30.0, 3, 9)
    assert out.shape == ((3200,) if channels is None else (3200, 2)) and out.dtype == np.int16
    np.testing.assert_array_equal(out[:2400], data[1600:4000])
    assert not out[2400:].any()
    np.testing.assert_array_equal(C.cut_audio(data, 16000, 30.0, 0, 6), data[:3200])   # no padding
    head = C.cut_audio(data[:1000], 16000, 30.0, 0, 3)              # from the first frame: padded too
    assert len(head) == 1600 and (head[:1000] == data[:1000]).all() and not head[1000:].any()


def _motion(tmp_path, **over):
    t = 4
    m = {"expression": np.zeros((t, 50)), "global_orient": np.zeros((t, 3)), "neck_pose": np.zeros((t, 3)),
         "jaw_pose": np.zeros((t, 3)), "shape": np.zeros(100)}
    m.update(over)
    p = tmp_path / "motion.npz"
    np.savez(p, **m)
    return p


def test_load_motion_names_the_arrays_with_wrong_shapes(tmp_path):
    assert C.load_motion(_motion(tmp_path))["expression"].shape == (4, 50)
    with pytest.raises(PipelineInputError, match=r"unexpected shapes \{'jaw_pose': \(4, 2\)\}"):
        C.load_motion(_motion(tmp_path, jaw_pose=np.zeros((4, 2))))
    with pytest.raises(PipelineInputError, match=r"unexpected shapes \(50,\)"):
        C.load_motion(_motion(tmp_path, shape=np.zeros(50)))


def test_to_pcm16_scales_by_32768_and_counts_what_it_clips():
    x = np.array([-1.0, -0.5, 0.0, 32767 / 32768, 1.0, 1.5, -1.5, -32768.6 / 32768])
    pcm, clipped = C.to_pcm16(x)
    assert pcm.dtype == np.int16
    assert pcm.tolist() == [-32768, -16384, 0, 32767, 32767, 32767, -32768, -32768]
    assert clipped == 4                                   # 1.0, 1.5, -1.5 and -32768.6/32768 (-32769)
    ints = np.array([[1, -2], [3, 32767]], np.int16)
    same, n = C.to_pcm16(ints)
    assert same is ints and n == 0                        # int16 passes unchanged


def test_pcm16_wav_bytes_is_a_plain_44_byte_header_wav(tmp_path):
    import soundfile as sf
    import wave
    mono = np.array([1, -2, 3], np.int16)
    b = C.pcm16_wav_bytes(mono, 16000)
    assert len(b) == 44 + 6 and b[:4] == b"RIFF" and b[8:16] == b"WAVEfmt "
    assert b[44:] == b"\x01\x00\xfe\xff\x03\x00"          # little-endian int16
    stereo = np.array([[1, -1], [2, -2]], np.int16)
    p = tmp_path / "s.wav"
    p.write_bytes(C.pcm16_wav_bytes(stereo, 22050))
    with wave.open(str(p)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 22050, 2)
    data, sr = sf.read(str(p), dtype="int16")
    assert sr == 22050 and data.tolist() == [[1, -1], [2, -2]]
    with pytest.raises(TypeError, match="takes int16 samples, got float32"):
        C.pcm16_wav_bytes(np.zeros(3, np.float32), 16000)
    assert C.write_wav(tmp_path / "c.wav", np.array([0.5, 2.0]), 16000) == 1      # returns samples clipped
    assert C.read_wav(tmp_path / "c.wav")[0].tolist() == [16384, 32767]


def test_read_wav_keeps_16_bit_pcm_as_int16_and_reads_float_as_float(tmp_path):
    import soundfile as sf
    x = np.array([0.25, -0.5, 0.999], np.float32)
    sf.write(str(tmp_path / "f.wav"), x, 16000, subtype="FLOAT")
    data, sr = C.read_wav(tmp_path / "f.wav")
    assert sr == 16000 and data.dtype == np.float32 and data.tolist() == x.tolist()
    sf.write(str(tmp_path / "i.wav"), np.array([100, -200], np.int16), 8000, subtype="PCM_16")
    data, sr = C.read_wav(tmp_path / "i.wav")
    assert sr == 8000 and data.dtype == np.int16 and data.tolist() == [100, -200]
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(PipelineInputError, match="cannot read audio") as e:
        C.read_wav(tmp_path / "bad.wav")
    assert e.value.path == str(tmp_path / "bad.wav")


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("fps", [25.0, 30.0, 30000 / 1001, 60.0])
def test_a_clip_cuts_audio_on_the_same_sample_edges_as_the_segment_audio(sr, fps):
    """The frame -> sample rule is one rule: clips and segment_audio agree on every frame, halves included."""
    edges = segment_audio_edges(9000, sr, fps)
    rng = np.random.default_rng(sr + int(fps))
    for a, b in np.sort(rng.integers(0, 9001, (200, 2)), axis=1):
        assert C.sample_span(int(a), int(b), sr, fps) == (edges[a], edges[b])


def test_half_sample_frame_edges_round_up_exactly():
    # 11025 Hz at 30 fps: frame 3 starts at sample 1102.5 exactly; float round() gives 1102 (half to even)
    assert C.sample_span(3, 5, 11025, 30.0) == (1103, 1838)          # 1102.5 -> 1103, 1837.5 -> 1838
    assert C.sample_span(1, 3, 11025, 30.0) == (368, 1103)           # 367.5 -> 368


def test_audio_spans_and_the_length_check_allow_one_frame_of_slack():
    assert C.sample_span(3, 9, 16000, 30.0) == (1600, 4800)
    assert C.sample_span(1, 2, 44100, 30000 / 1001) == (1471, 2943)  # 1471.47, 2942.94: rounded, not floored
    assert C.expected_samples(90, 16000, 30.0) == 48000
    slack = 533                                                      # round(16000 / 30)
    for n in (48000 - slack, 48000, 48000 + slack):
        C.check_audio_length("a.wav", n, 90, 16000, 30.0)
    for n in (48000 - slack - 1, 48000 + slack + 1):
        with pytest.raises(PipelineInputError,
                           match=rf"has {n} samples, 90 frames at 30.0 fps need 48000 at 16000 Hz"):
            C.check_audio_length("a.wav", n, 90, 16000, 30.0)
    C.check_audio_length("a.wav", 11, 10, 1, 1.0)                    # slack is at least one sample
    C.check_audio_length("a.wav", 4, 12, 1, 4.0)                     # also below one sample per frame
    with pytest.raises(PipelineInputError):
        C.check_audio_length("a.wav", 12, 10, 1, 1.0)


def test_load_motion_missing_keys_and_unreadable_files(tmp_path):
    p = tmp_path / "motion.npz"
    np.savez(p, expression=np.zeros((4, 50)), global_orient=np.zeros((4, 3)))
    with pytest.raises(PipelineInputError, match=r"motion lacks \['neck_pose', 'jaw_pose', 'shape'\]"):
        C.load_motion(p)
    p.write_bytes(b"not a zip")
    with pytest.raises(PipelineInputError, match="cannot read motion"):
        C.load_motion(p)
    with pytest.raises(PipelineInputError, match=r"unexpected shapes \{'expression': \(4, 49\)\}"):
        C.load_motion(_motion(tmp_path, expression=np.zeros((4, 49))))
    with pytest.raises(PipelineInputError, match=r"unexpected shapes \{'global_orient': \(3, 3\)\}"):
        C.load_motion(_motion(tmp_path, global_orient=np.zeros((3, 3))))
    assert C.load_motion(_motion(tmp_path, shape=np.zeros((1, 100))))["shape"].shape == (1, 100)


def test_flame_clip_slices_frames_and_orders_the_pose_global_neck_jaw():
    t = 5
    m = {"expression": np.arange(t * 50, dtype=np.float64).reshape(t, 50),
         "global_orient": np.full((t, 3), 1.0) * np.arange(t)[:, None],
         "neck_pose": np.full((t, 3), 2.0) * np.arange(t)[:, None],
         "jaw_pose": np.full((t, 3), 3.0) * np.arange(t)[:, None]}
    shape = np.arange(100, dtype=np.float64)
    d = C.flame_clip(m, shape, 1, 3)
    assert d["shapecode"].shape == (1, 100) and d["shapecode"].dtype == np.float32
    np.testing.assert_array_equal(d["shapecode"][0], shape)
    np.testing.assert_array_equal(d["expcodes"], m["expression"][1:4])
    assert d["expcodes"].dtype == np.float32 and d["posecodes"].dtype == np.float32
    want = np.concatenate([m["global_orient"][1:4], m["neck_pose"][1:4], m["jaw_pose"][1:4]], axis=1)
    np.testing.assert_array_equal(d["posecodes"], want)
    back = C.safe_load_pickle(C.pickle_bytes(d))
    for k in ("shapecode", "expcodes", "posecodes"):
        np.testing.assert_array_equal(back[k], d[k])


def test_a_stream_copied_clip_starts_at_time_zero_with_its_frames_in_order(tmp_path):
    import av
    src = tmp_path / "seg.mp4"
    write_portrait(src, 60, keyint=20, size=32)
    dst = tmp_path / "c.mp4"
    assert C.stream_copy_cut(src, dst, 20, 20) is True
    with av.open(str(dst)) as c:
        s = c.streams.video[0]
        pkts = [p for p in c.demux(s) if p.size]
        assert min(p.pts for p in pkts) == 0 and min(p.dts for p in pkts) <= 0       # shifted like the pts
        assert all(p.dts <= p.pts for p in pkts)
        got = [(p.pts, p.dts) for p in pkts]
    with av.open(str(src)) as c:                                   # the source's packets of frames 20..39
        src_pkts = [(p.pts, p.dts) for p in c.demux(video=0) if p.size]
    ranks = {pts: i for i, pts in enumerate(sorted(pts for pts, _ in src_pkts))}
    run = [(pts, dts) for pts, dts in src_pkts if 20 <= ranks[pts] < 40]
    shift = min(pts for pts, _ in run)
    assert got == [(pts - shift, dts - shift) for pts, dts in run]    # both shifted by the same amount
    with av.open(str(dst)) as c:
        times = [float(f.time) for f in c.decode(video=0)]
    np.testing.assert_allclose(times, np.arange(20) / 30, atol=1e-3)
    assert C.frame_digests(dst) == C.frame_digests(src)[20:40]


def test_mismatched_copies_are_caught_whichever_way_their_digests_sort(tmp_path, monkeypatch):
    src = tmp_path / "seg.mp4"
    write_portrait(src, 40, keyint=10, size=32)
    real, digests = C.stream_copy_cut, C.frame_digests(src)
    shift = {0: 10, 10: 20, 20: 30, 30: 0}                        # every span copied from the next one
    monkeypatch.setattr(C, "stream_copy_cut", lambda s, d, start, n, idx: real(s, d, shift[start], n, idx))
    spans = [(0, 10), (10, 10), (20, 10), (30, 10)]
    wrong = [digests[shift[a]:shift[a] + n] for a, n in spans]
    right = [digests[a:a + n] for a, n in spans]
    assert any(w < r for w, r in zip(wrong, right)) and any(w > r for w, r in zip(wrong, right))
    recs = C.cut_video_clips(src, spans, [tmp_path / f"c{i}.mp4" for i in range(4)],
                             encoding=C.ClipEncoding(crf=30, preset="ultrafast", keyint=10))
    assert [r["method"] for r in recs] == ["re-encode"] * 4


def test_shape_checks_are_exact_not_an_order(tmp_path):
    with pytest.raises(PipelineInputError, match=r"unexpected shapes \{'expression': \(4, 51\)\}"):
        C.load_motion(_motion(tmp_path, expression=np.zeros((4, 51))))
    with pytest.raises(PipelineInputError, match=r"unexpected shapes \(101,\)"):
        C.load_motion(_motion(tmp_path, shape=np.zeros(101)))
    for dtype in (np.uint8, np.int8, np.int32, np.float64, bool):
        with pytest.raises(TypeError, match="takes int16 samples"):
            C.pcm16_wav_bytes(np.zeros(3, dtype), 16000)


def test_read_wav_reads_24_bit_pcm_as_float(tmp_path):
    import soundfile as sf
    x = np.array([0.25, -0.5, 1 / 3], np.float64)
    sf.write(str(tmp_path / "p24.wav"), x, 16000, subtype="PCM_24")
    data, _ = C.read_wav(tmp_path / "p24.wav")
    assert data.dtype == np.float32                                # not cut down to 16 bits
    np.testing.assert_allclose(data, x, atol=2 ** -23)


def _write_mp4(path, n, rate, sizes=(32,)):
    """An H.264 mp4 of n frames at `rate` fps, one video stream per size (frames differ)."""
    import av
    with av.open(str(path), "w", format="mp4") as c:
        streams = []
        for size in sizes:
            s = c.add_stream("libx264", rate=rate)
            s.width = s.height = size
            s.pix_fmt = "yuv420p"
            s.options = {"g": "10", "keyint_min": "10", "sc_threshold": "0", "preset": "ultrafast",
                         "threads": "1"}
            streams.append(s)
        for i in range(n):
            for s in streams:
                img = np.full((s.height, s.width, 3), (7 * i) % 255, np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
        for s in streams:
            for p in s.encode():
                c.mux(p)


def test_index_and_re_encode_keep_a_25_fps_source_at_25_fps(tmp_path):
    src = tmp_path / "s25.mp4"
    _write_mp4(src, 20, 25)
    idx = C.index_video(src)
    assert (idx.frames, idx.fps, idx.width, idx.height, idx.keyframes) == (20, 25, 32, 32, [0, 10])
    dst = tmp_path / "c.mp4"
    C.reencode_cut(src, dst, 5, 10, C.ClipEncoding(crf=30, preset="ultrafast", keyint=10))
    assert C.index_video(dst).fps == 25 and C.index_video(dst).frames == 10


def test_index_describes_the_first_video_stream(tmp_path):
    src = tmp_path / "two.mp4"
    _write_mp4(src, 12, 30, sizes=(32, 48))
    idx = C.index_video(src)
    assert (idx.width, idx.height, idx.frames) == (32, 32, 12)
    digests = C.frame_digests(src)
    assert len(digests) == 12 and C.stream_copy_cut(src, tmp_path / "c.mp4", 0, 10, idx)
    assert C.frame_digests(tmp_path / "c.mp4") == digests[:10]
    C.reencode_cut(src, tmp_path / "r.mp4", 0, 10, C.ClipEncoding(crf=30, preset="ultrafast", keyint=10))
    assert C.index_video(tmp_path / "r.mp4").width == 32


@pytest.mark.parametrize("content", ["garbage", "audio only"])
def test_index_video_names_a_file_it_cannot_read(tmp_path, content):
    import soundfile as sf
    p = tmp_path / "seg.mp4"
    if content == "garbage":
        p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 64)
    else:
        sf.write(str(tmp_path / "a.wav"), np.zeros(1600, np.float32), 16000)
        p = tmp_path / "a.wav"
    with pytest.raises(PipelineInputError, match="cannot read video") as e:
        C.index_video(p)
    assert e.value.path == str(p)


def test_clip_encoding_is_immutable():
    enc = C.ClipEncoding(crf=30, preset="veryfast", keyint=240)
    with pytest.raises(AttributeError):
        enc.crf = 10
