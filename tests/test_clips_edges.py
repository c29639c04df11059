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
