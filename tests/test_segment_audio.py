"""SegmentAudio: sample-exact spans per frame, the offset, coverage errors and capture checks."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings, strategies as st

from tasks.common.atomic import write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.timebase import exact_fraction
from tasks.layout import Layout
from tasks.media import segment_audio as SA
from tasks.media.segment_audio import frame_sample, frame_sample_edges, segment_span
from tasks.segment_audio import SegmentAudio

SUBJECT, SONG = "S001", "001_folk_demo"
FPS, N_FRAMES = 30, 90
VOCAL_SR, BGM_SR, SR = 48000, 44100, 16000
# (index, start, end); starts and click frames are multiples of 3 so 16 kHz sample times are whole.
SEGMENTS = [(0, 9, 42), (1, 45, 87), (2, 87, 90)]
VOCAL_CLICKS = [12, 30, 51, 69]
BGM_CLICKS = [15, 36, 60, 81]


def clicks(frames, sr, seconds, offset, channels, noise=1e-3, seed=0):
    """Impulses at file time f/FPS + offset (whole samples), over low noise: (N, channels)."""
    x = np.random.default_rng(seed).standard_normal((int(round(seconds * sr)), channels)).astype(np.float32) * noise
    for f in frames:
        k = int(round((f / FPS + offset) * sr))
        if 0 <= k < len(x):
            x[k] = 0.8
    return x


def lay():
    """The layout of [paths] as the luigi_paths fixture set it."""
    return Layout.from_config()


def make_song(raw, offset=0.25, vocal=None, vocal_seconds=None, bgm_seconds=None, segments=SEGMENTS):
    d = raw / SUBJECT / "songs" / SONG
    d.mkdir(parents=True, exist_ok=True)
    (d / "song.json").write_text(json.dumps({"title": "t", "genre": "folk", "language": "en",
                                             "audio_offset_s": offset}))
    video_s = N_FRAMES / FPS
    if vocal is None:
        vocal = clicks(VOCAL_CLICKS, VOCAL_SR, vocal_seconds or video_s + offset, offset, 2)
    sf.write(str(d / "vocal.wav"), vocal, VOCAL_SR, subtype="PCM_24")
    # Stand-ins for the crop stage's segments.json and SeparateBGM's bgm.wav (fixtures, not modules).
    write_json_atomic(lay().segments_json(SUBJECT, SONG), {
        "segments": [{"index": i, "start_frame": s, "end_frame": e, "video": f"segment_{i:03d}.mp4"}
                     for i, s, e in segments],
        "fps": float(FPS), "frame_count": N_FRAMES})
    bgm = clicks(BGM_CLICKS, BGM_SR, bgm_seconds or video_s + offset, offset, 1, seed=1)
    lay().bgm_wav(SUBJECT, SONG).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(lay().bgm_wav(SUBJECT, SONG)), bgm, BGM_SR, subtype="FLOAT")
    return d


def run_task():
    SegmentAudio(subject=SUBJECT, song=SONG).run()
    return json.loads(lay().segment_audio_record(SUBJECT, SONG).read_text())


def test_frame_sample_formula():
    for sr, fps in [(16000, 30), (44100, 30), (16000, 30000 / 1001), (22050, 25)]:
        for t in (0, 1, 7, 239, 240, 1001):
            assert frame_sample(t, sr, fps) == int(np.floor(t * sr / fps + 0.5 + 1e-9))
        edges = frame_sample_edges(240, sr, fps)
        assert edges[0] == 0 and (np.diff(edges) > 0).all()
        assert segment_span(17, 257, sr, fps) == (frame_sample(17, sr, fps), edges[-1])


def test_clicks_land_on_their_frames(luigi_paths):
    raw, processed = luigi_paths
    make_song(raw, offset=0.25)
    rec = run_task()
    assert rec["sample_rate"] == SR and rec["channels"] == 1 and rec["offset_samples"] == 4000
    assert [r["index"] for r in rec["segments"]] == [0, 1, 2]           # every segment, usable or not
    usable = {s["index"] for s in lay().usable_segments(SUBJECT, SONG, round(1.0 * FPS))}
    assert usable == {0, 1}       # the stage cuts short segments too (3 frames here)
    for (i, s, e), row in zip(SEGMENTS, rec["segments"]):
        for kind, frames in (("vocal", VOCAL_CLICKS), ("bgm", BGM_CLICKS)):
            path = lay().segment_vocal_wav(SUBJECT, SONG, i) if kind == "vocal" else lay().segment_bgm_wav(SUBJECT, SONG, i)
            assert path.name == row[kind]
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)
            assert sr == SR and x.shape == (round((e - s) * SR / FPS), 1) == (row["samples"], 1)
            inside = [f for f in frames if s <= f < e]
            edges = frame_sample_edges(e - s, SR, FPS)
            peaks = np.sort(np.argsort(np.abs(x[:, 0]))[::-1][:len(inside)]) if inside else []
            for f, p in zip(inside, peaks):
                assert p == edges[f - s], (kind, i, f, p, edges[f - s])
            if not inside:
                assert np.abs(x).max() < 0.05
    first = {p.name: p.read_bytes() for p in lay().segment_audio_dir(SUBJECT, SONG).iterdir()}
    run_task()
    again = {p.name: p.read_bytes() for p in lay().segment_audio_dir(SUBJECT, SONG).iterdir()}
    assert first == again                                                # rerun: same bytes


def test_offset_shifts_the_cut(luigi_paths):
    """The same clicks recorded with a different offset land on the same frames."""
    raw, processed = luigi_paths
    make_song(raw, offset=-0.1, segments=[(0, 9, 42)])
    rec = run_task()
    assert rec["offset_samples"] == -1600 and rec["segments"][0]["source_samples"][0] == round(9 * SR / FPS) - 1600
    x, _ = sf.read(str(lay().segment_vocal_wav(SUBJECT, SONG, 0)), dtype="float32")
    assert int(np.argmax(np.abs(x))) in (frame_sample(12 - 9, SR, FPS), frame_sample(30 - 9, SR, FPS))


def test_missing_coverage_names_file_and_seconds(luigi_paths):
    raw, processed = luigi_paths
    # the original song ends 0.5 s before the video does: segment 1 and 2 lack BGM
    make_song(raw, offset=0.25, bgm_seconds=N_FRAMES / FPS + 0.25 - 0.5)
    with pytest.raises(PipelineInputError) as e:
        run_task()
    assert e.value.path == str(lay().bgm_wav(SUBJECT, SONG)) and "0.400 s after its end" in str(e.value)
    assert "does not cover segment 1 (video frames [45, 87) = 1.500-2.900 s, offset 0.25 s)" in str(e.value)
    assert not lay().segment_audio_record(SUBJECT, SONG).exists()
    assert not lay().segment_audio_dir(SUBJECT, SONG).exists()          # nothing half-written


def test_vocal_starting_late_is_missing_seconds_before(luigi_paths):
    raw, processed = luigi_paths
    make_song(raw, offset=-0.5)      # frame 9 (0.3 s) is vocal time -0.2 s
    with pytest.raises(PipelineInputError) as e:
        run_task()
    assert e.value.path.endswith("vocal.wav") and "0.200 s before its start" in str(e.value)


def test_silent_microphone_is_an_error(luigi_paths):
    raw, processed = luigi_paths
    make_song(raw, vocal=np.zeros((int(3.25 * VOCAL_SR), 1), np.float32))
    with pytest.raises(PipelineInputError, match="silent") as e:
        run_task()
    assert e.value.path.endswith("vocal.wav")


def test_clipped_microphone_is_warned_in_the_record(luigi_paths):
    raw, processed = luigi_paths
    v = clicks(VOCAL_CLICKS, VOCAL_SR, 3.25, 0.25, 1)
    v[: VOCAL_SR // 2] = np.sign(np.sin(np.arange(VOCAL_SR // 2) * 0.05))[:, None]   # square wave at full scale
    make_song(raw, vocal=v)
    rec = run_task()
    assert any("clipped" in w for w in rec["warnings"]) and rec["vocal"]["levels"]["clipped_fraction"] > 0.1


def test_length_and_offset_checks(luigi_paths):
    raw, processed = luigi_paths
    make_song(raw, offset=0.25, vocal_seconds=N_FRAMES / FPS + 0.25 + 1.5)   # a 1.5 s longer take
    with pytest.raises(PipelineInputError, match=r"ends 1\.500 s after the video") as e:
        run_task()
    assert e.value.path.endswith("vocal.wav")
    make_song(raw, offset=25.0)
    with pytest.raises(PipelineInputError, match="beyond") as e:
        run_task()
    assert e.value.path.endswith("song.json")


# ----------------------------------------------------------------------------- the rules, one by one
# frame rates as the exact fractions a video stores (NTSC ones included) and sample rates whose
# samples per frame are often not whole (11025/30 = 367.5: every odd frame lands on a half)
RATES = [(30, 1), (25, 1), (24, 1), (50, 1), (60, 1), (30000, 1001), (24000, 1001), (60000, 1001)]


@settings(max_examples=200, deadline=None)
@given(t=st.integers(0, 10 ** 6), sr=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
       rate=st.sampled_from(RATES))
def test_frame_sample_is_round_half_up_of_t_sr_over_fps(t, sr, rate):
    p, q = rate
    want = (2 * t * sr * q + p) // (2 * p)                      # floor(t*sr*q/p + 1/2) in integers
    assert SA.frame_sample(t, sr, p / q) == want


def test_frame_sample_and_offset_round_halves_up():
    assert SA.frame_sample(1, 11025, 30) == 368 and SA.frame_sample(3, 11025, 30) == 1103   # 367.5, 1102.5
    assert SA.frame_sample(1, 11025, 25) == 441                                              # exact
    assert SA.segment_span(1, 3, 11025, 30) == (368, 735)                          # 367.5 -> 368, 735
    # offsets: half a sample rounds up, also below zero (towards +inf, not away from 0)
    assert [SA.offset_samples(k / 32000, 16000) for k in (1, -1, -3, 3)] == [1, 0, -1, 2]
    assert SA.offset_samples(0.25, 16000) == 4000 and SA.offset_samples(-0.1, 16000) == -1600


def test_timing_checks_at_their_bounds():
    v, s = Path("vocal.wav"), Path("song.json")
    assert SA.check_timing(10.0, 13.0, 3.0, 0.1, v, s) == 0.0              # |offset| = 10 s is allowed
    assert SA.check_timing(-10.0, 2.0, 12.0, 0.1, v, s) == 0.0
    for off in (10.5, -10.5, float("nan"), float("inf")):
        with pytest.raises(PipelineInputError, match="is beyond") as e:
            SA.check_timing(off, 30.0, 30.0, 100.0, v, s)
        assert e.value.path == "song.json"
    # the vocal covers video time [-offset, vocal_s - offset]: no overlap at all is an error
    for off in (3.0, 3.5):                                                   # at or after the vocal's end
        with pytest.raises(PipelineInputError, match="puts the whole video outside vocal.wav"):
            SA.check_timing(off, 3.0, 3.0, 100.0, v, s)
    for off in (-3.0, -3.5):                                                 # the video ends before the vocal
        with pytest.raises(PipelineInputError, match="puts the whole video outside"):
            SA.check_timing(off, 3.0, 3.0, 100.0, v, s)
    assert SA.check_timing(2.5, 3.0, 0.5, 0.1, v, s) == 0.0
    assert SA.check_timing(-2.5, 0.5, 3.0, 0.1, v, s) == 0.0
    # the ends meet within the tolerance, bound included
    assert SA.check_timing(0.25, 3.5, 3.0, 0.25, v, s) == 0.25
    with pytest.raises(PipelineInputError, match=r"ends 0\.250 s after the video") as e:
        SA.check_timing(0.25, 3.5, 3.0, 0.125, v, s)
    assert e.value.path == "vocal.wav"
    with pytest.raises(PipelineInputError, match=r"ends 0\.750 s before the video"):
        SA.check_timing(0.25, 2.5, 3.0, 0.5, v, s)


def test_vocal_level_checks_at_their_bounds():
    p = Path("vocal.wav")
    with pytest.raises(PipelineInputError, match=r"silent \(peak -inf dBFS\)"):
        SA.check_vocal_levels(np.zeros((100, 1)), p)
    quiet = np.zeros((100, 1))
    quiet[3] = 10 ** -4.5 * 0.99                                  # just below -90 dBFS
    with pytest.raises(PipelineInputError, match=r"silent \(peak -90\.1 dBFS\)"):
        SA.check_vocal_levels(quiet, p)
    quiet[3] = 10 ** -4.5                                         # -90.0 dBFS exactly: quiet, not silent
    stats, warnings = SA.check_vocal_levels(quiet, p)
    assert stats["peak_dbfs"] == -90.0 and len(warnings) == 1
    assert "very quiet (peak -90.0 dBFS)" in warnings[0]
    x = np.zeros((10000, 1))
    x[0] = 0.01                                                   # -40 dBFS exactly: not quiet
    assert SA.check_vocal_levels(x, p)[1] == []
    x[0] = 0.0099
    assert "very quiet" in SA.check_vocal_levels(x, p)[1][0]
    x[0] = 0.999                                                  # 1 of 10 000 samples clipped: at the bound
    assert SA.check_vocal_levels(x, p)[1] == []
    x[1] = -1.0                                                   # 2: above it
    (w,) = SA.check_vocal_levels(x, p)[1]
    assert w.startswith("vocal.wav: microphone track is clipped (0.020 % of samples")
    x[:5000] = 1.0
    (w,) = SA.check_vocal_levels(x, p)[1]
    assert "clipped (50.000 % of samples at full scale)" in w


def test_song_offset_reads_a_number_of_seconds(tmp_path):
    song = tmp_path / "song.json"
    with pytest.raises(PipelineInputError, match="song.json is missing"):
        SA._song_offset(song)
    for value, want in ((0.25, 0.25), (-1, -1.0), (None, None), ("0.5", None), (True, None), ([0.1], None)):
        song.write_text(json.dumps({"audio_offset_s": value}))
        if want is None:
            with pytest.raises(PipelineInputError, match="not a number of seconds"):
                SA._song_offset(song)
        else:
            got = SA._song_offset(song)
            assert got == want and type(got) is float
    song.write_text(json.dumps({"title": "t"}))
    assert SA._song_offset(song) == 0.0                           # absent: in sync


def test_record_describes_every_segment_and_both_sources(luigi_paths, caplog):
    import hashlib
    raw, processed = luigi_paths
    v = clicks(VOCAL_CLICKS, VOCAL_SR, 3.25, 0.25, 2)
    v[: VOCAL_SR // 2] = np.sign(np.sin(np.arange(VOCAL_SR // 2) * 0.05))[:, None]   # clipped: one warning
    make_song(raw, offset=0.25, vocal=v)
    with caplog.at_level("WARNING", logger="singinghead"):
        rec = run_task()
    assert [r.getMessage() for r in caplog.records if "CAPTURE PROBLEM" in r.getMessage()] == \
        [f"CAPTURE PROBLEM {rec['warnings'][0]}"]
    # 16 kHz at 30 fps: frame f starts at sample f * 1600 / 3; the offset 0.25 s is 4000 samples
    want = [(9, 42, 4800, 17600, [0.55, 1.65]), (45, 87, 24000, 22400, [1.75, 3.15]),
            (87, 90, 46400, 1600, [3.15, 3.25])]
    for i, (row, (s, e, a0, n, secs)) in enumerate(zip(rec["segments"], want)):
        got = (row["index"], row["start_frame"], row["end_frame"], row["frames"], row["samples"])
        assert got == (i, s, e, e - s, n)
        assert row["usable"] is False                                  # min_sequence_seconds 3.0 in luigi.cfg
        assert row["video_samples"] == [a0, a0 + n] and row["source_samples"] == [a0 + 4000, a0 + 4000 + n]
        assert row["source_seconds"] == pytest.approx(secs)
        for kind, path in (("vocal", lay().segment_vocal_wav(SUBJECT, SONG, i)),
                           ("bgm", lay().segment_bgm_wav(SUBJECT, SONG, i))):
            assert row[f"{kind}_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["fps"] == 30.0 and rec["offset_samples"] == 4000 and rec["audio_offset_s"] == 0.25
    assert rec["video"] == {"frame_count": 90, "duration_s": 3.0}
    vocal = rec["vocal"]
    assert (vocal["sample_rate"], vocal["channels"], vocal["frames"]) == (48000, 2, 156000)
    assert vocal["duration_s"] == 3.25 and vocal["end_minus_video_end_s"] == 0.0
    assert (rec["bgm"]["sample_rate"], rec["bgm"]["channels"], rec["bgm"]["frames"]) == (44100, 1, 143325)
    assert rec["bgm"]["method"] is None                                # no bgm.json beside bgm.wav


def test_segments_json_fps_and_frame_count_and_their_fallbacks(luigi_paths):
    """fps and frame_count come from segments.json; without them, [dataset] fps and the last segment's
    end. A segment of exactly min_sequence_seconds is usable."""
    from pipeline.build import config_overrides
    raw, processed = luigi_paths

    def segs(spans, **extra):
        write_json_atomic(lay().segments_json(SUBJECT, SONG), {
            "segments": [{"index": i, "start_frame": s, "end_frame": e} for i, s, e in spans], **extra})

    make_song(raw, offset=0.25)
    segs([(0, 0, 45)], fps=15.0, frame_count=45)                       # 3 s at 15 fps
    rec = run_task()
    assert rec["fps"] == 15.0 and rec["video"]["frame_count"] == 45
    assert rec["segments"][0]["samples"] == 48000 and rec["segments"][0]["video_samples"] == [0, 48000]
    make_song(raw, offset=0.25, vocal_seconds=75 / 30 + 0.25, bgm_seconds=75 / 30 + 0.25)
    segs([(0, 0, 30), (1, 30, 59), (2, 59, 75)])                        # no fps, no frame_count
    with config_overrides(dataset={"min_sequence_seconds": 0.5}):
        rec = run_task()
    assert rec["fps"] == 30.0 and rec["video"]["frame_count"] == 75
    assert [r["usable"] for r in rec["segments"]] == [True, True, True]
    with config_overrides(dataset={"min_sequence_seconds": 1.0}):
        rec = run_task()
    assert [r["usable"] for r in rec["segments"]] == [True, False, False]   # 30 frames = 1.0 s: usable
    make_song(raw, offset=0.25, vocal_seconds=0.75, bgm_seconds=0.75)
    segs([])                                                            # nothing to cut, no frame_count
    rec = run_task()
    assert rec["video"]["frame_count"] == 0 and rec["segments"] == []
    assert rec["vocal"]["end_minus_video_end_s"] == 0.5                # 0.75 - 0.25 - 0 s of video


def test_frame_rate_is_read_as_a_fraction_with_a_denominator_up_to_a_million():
    assert exact_fraction(30000 / 1001) == Fraction(30000, 1001)
    assert exact_fraction(30000001 / 1000000) == Fraction(30000001, 1000000)
    assert exact_fraction(30000031 / 1000001).denominator <= 1000000


def test_song_audio_files_are_immutable(tmp_path):
    f = SA.SongAudioFiles(*(tmp_path for _ in range(7)), segment_wavs=lambda i: (tmp_path, tmp_path))
    with pytest.raises(AttributeError):
        f.out_dir = tmp_path / "x"


def test_progress_reaches_all_segments(luigi_paths):
    raw, processed = luigi_paths
    make_song(raw, offset=0.25, segments=[(0, 9, 42)])
    task = SegmentAudio(subject=SUBJECT, song=SONG)
    seen = []
    task.set_progress_percentage = lambda pct: seen.append(pct)
    task.set_status_message = lambda msg: seen.append(msg)
    task.run()
    assert seen[-2:] == [100, f"audio {SONG}: 1/1"]
