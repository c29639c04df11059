"""tasks.media.clips: which frame rate a video has, and the two frame counts a cut is checked against
(what the source decodes to, what a re-encoded clip holds). Tiny 32x32 videos written here."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest

from tasks.common.errors import PipelineInputError
from tasks.common.settings import DatasetSettings
from tasks.media import clips as C

ENC = C.ClipEncoding(crf=30, preset="ultrafast", keyint=10)


def _video(path, pts, fmt="mp4", rate=30, time_base=None):
    """H.264 frames at the given presentation times (in `time_base`, default 1/rate), 32x32, distinct."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=rate)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast", "g": "10", "keyint_min": "10", "sc_threshold": "0",
                     "threads": "1"}
        tb = time_base or Fraction(1, rate)
        s.codec_context.time_base = tb
        for i, p in enumerate(pts):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (9 * i) % 255, np.uint8), format="rgb24")
            f.pts, f.time_base = p, tb
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


# ----------------------------------------------------------------------------- frame rate
def test_a_variable_rate_video_is_indexed_at_its_average_rate_not_its_timestamp_tick(tmp_path):
    # frames in pairs 1/60 s apart, pairs 1/15 s apart: 20 frames over 39/60 s, i.e. ~30.8 fps on
    # average, while the timestamps' tick (FFmpeg's guessed rate) is 60 fps
    src = tmp_path / "vfr.mp4"
    _video(src, [t for k in range(10) for t in (4 * k, 4 * k + 1)], time_base=Fraction(1, 60))
    assert C.index_video(src).fps == Fraction(20 * 60, 39)


@pytest.mark.parametrize("rate", [24, 25])
def test_a_video_whose_container_states_no_average_rate_gets_its_streams_rate(tmp_path, rate):
    # a one-frame NUT states no average rate; its stream says `rate`: the index and a re-encoded
    # clip of it both keep that rate (not the 30 fps default)
    src = tmp_path / "still.nut"
    _video(src, [0], fmt="nut", rate=rate)
    with av.open(str(src)) as c:
        assert c.streams.video[0].average_rate is None  # the case this test is about
    assert C.index_video(src).fps == rate
    C.reencode_cut(src, tmp_path / "clip.mp4", 0, 1, ENC)
    assert C.index_video(tmp_path / "clip.mp4").fps == rate


def test_a_stream_that_states_no_rate_at_all_is_taken_at_the_datasets_default_rate():
    # no container written here lacks both rates; the rule on a stream that states neither
    stream = SimpleNamespace(average_rate=None, guessed_rate=None)
    assert C.stream_rate(stream) == DatasetSettings().fps == 30
    assert C.stream_rate(SimpleNamespace(average_rate=None, guessed_rate=Fraction(24000, 1001))) == Fraction(
        24000, 1001)


# ----------------------------------------------------------------------------- frame counts
@pytest.mark.parametrize("extra", [-1, 1])
def test_a_source_that_decodes_to_another_number_of_frames_than_it_has_packets_is_refused(
        tmp_path, monkeypatch, extra):
    # e.g. a damaged packet the decoder drops: the clips' frame positions would be off from there on
    src = tmp_path / "seg.mp4"
    _video(src, range(20))
    real = C.frame_digests
    monkeypatch.setattr(C, "frame_digests", lambda p: real(p)[:-1] if extra < 0 else real(p) + ["x"])
    with pytest.raises(PipelineInputError) as e:
        C.cut_video_clips(src, [(0, 10)], [tmp_path / "c.mp4"], encoding=ENC)
    assert e.value.path == str(src)
    assert f"demuxes 20 packets but decodes {20 + extra} frames" in e.value.problem
    assert not (tmp_path / "c.mp4").exists()


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_re_encoded_clip_with_another_frame_count_is_refused_naming_it(tmp_path, monkeypatch, extra):
    src = tmp_path / "seg.mp4"
    _video(src, range(30))
    real = C.reencode_cut
    monkeypatch.setattr(C, "reencode_cut",
                        lambda s, d, start, count, enc: real(s, d, start, count + extra, enc))
    dst = tmp_path / "c.mp4"
    with pytest.raises(PipelineInputError) as e:
        C.cut_video_clips(src, [(5, 10)], [dst], encoding=ENC)  # 5 is no keyframe: re-encoded
    assert e.value.path == str(dst)
    assert f"re-encoded clip has {10 + extra} frames, expected 10" in e.value.problem
