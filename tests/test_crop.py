"""Crop stage: box geometry, re-segmentation logic, and the stage end to end on a demo capture."""
from __future__ import annotations

import hashlib
import json
import shutil

import av
import numpy as np
import pytest

from tasks.faces.portrait_video import crop_to_i420, crop_video
from tasks.faces.segmenter import (CUT_REASONS, EDGE, END_OF_VIDEO, FOREHEAD_OUT, LOST_FACE, MISSING, NOFACE, OK,
                                   REPEAT_GAP, UNRECORDED, cut_reason, edge_verdict,
                                   SegmentSink, Segmenter, face_box, face_leaves_box,
                                   landmarks_near_edge, square_box)
from pipeline.build import build, config_overrides
from tasks.common.settings import CropSettings
from tasks.crop import CropPortraits
from tasks.layout import Layout
from tasks.media.video_io import count_frames


# ----------------------------------------------------------------------------- geometry
def test_square_box_centred_with_margin():
    box = square_box([100, 100, 200, 220], margin=0.5, frame_w=1000, frame_h=800)
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 == 240          # max(100, 120) * (1 + 2 * 0.5)
    assert abs((x0 + x1) / 2 - 150) <= 1 and abs((y0 + y1) / 2 - 160) <= 1
    assert all(int(v) % 2 == 0 for v in box)


@pytest.mark.parametrize("face", [[-40, -30, 60, 70], [950, 700, 1010, 790], [0, 300, 50, 350]])
def test_square_box_stays_inside_frame(face):
    x0, y0, x1, y1 = square_box(face, margin=0.6, frame_w=1000, frame_h=800)
    assert 0 <= x0 < x1 <= 1000 and 0 <= y0 < y1 <= 800
    assert x1 - x0 == y1 - y0


def test_square_box_capped_by_short_side():
    x0, y0, x1, y1 = square_box([300, 100, 700, 700], margin=0.6, frame_w=1000, frame_h=800)
    assert (x1 - x0, y0, y1) == (800, 0, 800)


def test_landmarks_near_edge():
    box = (100, 100, 300, 300)            # 200 px; 0.1 -> 20 px band along each border
    inner = np.array([[150, 150], [250, 260]], float)
    assert not landmarks_near_edge(inner, box, 0.1)
    assert landmarks_near_edge(np.vstack([inner, [[115, 200]]]), box, 0.1)     # left band
    assert landmarks_near_edge(np.vstack([inner, [[200, 285]]]), box, 0.1)     # bottom band
    assert landmarks_near_edge(np.vstack([inner, [[200, 320]]]), box, 0.1)     # outside
    assert not landmarks_near_edge(np.vstack([inner, [[125, 200]]]), box, 0.1)


# ----------------------------------------------------------------------------- re-segmentation
class RecordingSink(SegmentSink):
    def __init__(self):
        super().__init__()
        self.segments, self.frames = [], {}

    def start(self, seg):
        self.frames[seg.index] = []

    def frame(self, seg, prepared, index, repeated):
        super().frame(seg, prepared, index, repeated)
        assert prepared[1] is seg.box          # every frame cropped with its segment's box
        self.frames[seg.index].append(index)

    def end(self, seg):
        self.segments.append(seg)


def run_oracle(face_x, present, every=6, missing=(), tol=10.0):
    """A 1-D world: the face sits at face_x[t]; a box is 'ok' while the face is within tol of
    its centre. Records how often detect and check run."""
    calls = {"detect": 0, "check": 0}

    def detect(t):
        calls["detect"] += 1
        return None if not present[t] else np.array([face_x[t] - 5, 0, face_x[t] + 5, 10])

    def prepare(t, box):
        return (t, box)

    def check(t, prepared):
        calls["check"] += 1
        if not present[t]:
            return NOFACE
        centre = (prepared[1][0] + prepared[1][2]) / 2
        return OK if abs(face_x[t] - centre) < tol else EDGE

    sink = RecordingSink()
    n = Segmenter(detect, prepare, check, sink, every).run(
        (t, t) for t in range(len(present)) if t not in missing)
    return n, sink, calls


def assert_partition(n, sink):
    """Every index is in exactly one segment or dropped; segments emit their span in order."""
    seen = []
    for seg in sink.segments:
        assert sink.frames[seg.index] == list(range(seg.start_frame, seg.end_frame))
        seen += sink.frames[seg.index]
    assert len(seen) == len(set(seen))
    assert set(seen).isdisjoint(sink.dropped)
    assert set(seen) | set(sink.dropped) == set(range(n))


def test_segment_ends_exactly_at_first_edge_frame():
    x = np.full(120, 50.0)
    x[40:] = 59.0                                   # moves 9 px: still inside the first box
    x[70:] = 80.0                                   # jumps: frame 70 leaves the first box
    n, sink, calls = run_oracle(x, np.ones(120, bool))
    assert_partition(n, sink)
    starts = [s.start_frame for s in sink.segments]
    assert starts == [0, 70]                        # 70 is not a check frame (checks at 0, 6, ...)
    assert sink.segments[0].end_frame == 70
    assert sink.segments[1].box[0] == 75           # fresh detection at frame 70
    # checks every 6 frames, not every frame: 0, 6, ..., 66 (12) and 72 (fails); the walk back over
    # 67..70 (4, 70 fails); the new segment's start at 70, then 76, ..., 118 (8) and the last frame 119
    assert calls["check"] == 12 + 1 + 4 + 1 + 8 + 1


def test_faceless_span_is_dropped_exactly_and_face_found_again():
    present = np.ones(100, bool)
    present[33:47] = False
    n, sink, _ = run_oracle(np.full(100, 50.0), present)
    assert_partition(n, sink)
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, 33), (47, 100)]
    assert set(sink.dropped) == set(range(33, 47))
    assert sink.dropped_ranges() == [{"start_frame": 33, "end_frame": 47, "reason": NOFACE}]


def test_face_reappearing_at_the_very_end():
    present = np.ones(60, bool)
    present[40:58] = False
    n, sink, _ = run_oracle(np.full(60, 50.0), present)
    assert_partition(n, sink)
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, 40), (58, 60)]


def test_short_recorder_gap_is_filled_long_gap_ends_segment():
    missing = {10, 11} | set(range(40, 60))
    n, sink, _ = run_oracle(np.full(100, 50.0), np.ones(100, bool), missing=missing)
    assert_partition(n, sink)
    assert [(s.start_frame, s.end_frame) for s in sink.segments] == [(0, 40), (60, 100)]
    assert sink.segments[0].repeated_frames == [10, 11]
    assert {sink.dropped[i] for i in range(40, 60)} == {MISSING}


def test_face_at_frame_edge_never_starts_a_segment():
    # The face is always 20 px from where any box would be centred: every check fails.
    class Offset(SegmentSink):
        pass
    sink = Offset()
    seg = Segmenter(lambda t: np.array([0, 0, 10, 10]), lambda t, b: (t, b), lambda t, p: EDGE, sink, 6)
    n = seg.run((t, t) for t in range(30))
    assert n == 30 and set(sink.dropped) == set(range(30))
    assert set(sink.dropped.values()) == {EDGE}


def test_each_segment_records_why_it_was_cut():
    # edge at 70, the face gone over [100, 114), a recorder gap [150, 170), forehead out at 200, end at 260
    n = 260
    x = np.full(n, 50.0)
    x[70:] = 80.0
    present = np.ones(n, bool)
    present[100:114] = False
    missing = set(range(150, 170))
    forehead_from = 200

    def check(t, prepared):
        if not present[t]:
            return NOFACE
        centre = (prepared[1][0] + prepared[1][2]) / 2
        if abs(x[t] - centre) >= 10:
            return EDGE
        # the segment that starts after the gap loses the forehead at 200 (a fresh box at 200 fits)
        return FOREHEAD_OUT if t >= forehead_from and prepared[1][1] == 0 else OK

    def detect(t):
        return None if not present[t] else np.array([x[t] - 5, 1 if t >= forehead_from else 0,
                                                      x[t] + 5, 10])

    sink = RecordingSink()
    Segmenter(detect, lambda t, b: (t, b), check, sink, 6).run((t, t) for t in range(n) if t not in missing)
    assert_partition(n, sink)
    got = [(s.start_frame, s.end_frame, s.cut_reason) for s in sink.segments]
    assert got == [(0, 70, EDGE), (70, 100, LOST_FACE), (114, 150, REPEAT_GAP),
                   (170, 200, FOREHEAD_OUT), (200, n, END_OF_VIDEO)]
    assert {sink.dropped[i] for i in range(100, 114)} == {NOFACE}


def test_edge_verdict_tells_edge_landmark_from_forehead_and_old_rows_read():
    lm = np.zeros((68, 2))
    lm[:, 0] = np.linspace(150, 250, 68)
    lm[:, 1] = 150.0
    lm[17:27, 1] = 100.0
    lm[8, 1] = 200.0
    box = (0, 0, 400, 400)
    assert edge_verdict(lm, box, 0.08) == OK
    assert edge_verdict(lm - [0, 70], box, 0.07) == FOREHEAD_OUT     # landmarks clear, forehead cut
    assert edge_verdict(lm - [140, 0], box, 0.07) == EDGE             # a landmark at x = 10
    assert cut_reason({"index": 0, "start_frame": 0, "end_frame": 9}) == UNRECORDED
    assert cut_reason({"cut_reason": LOST_FACE}) == LOST_FACE


def test_segmenter_holds_a_bounded_number_of_frames():
    present = np.ones(400, bool)
    present[100:300] = False
    live = []

    class Counting(SegmentSink):
        pass

    def detect(t):
        return None if not present[t] else np.array([45, 0, 55, 10])

    seg = Segmenter(detect, lambda t, b: (t, b), lambda t, p: OK if present[t] else NOFACE, Counting(), 6)

    def frames():
        for t in range(400):
            live.append(len(seg.pending) + len(seg.held) + len(seg.replay))
            yield t, t

    seg.run(frames())
    assert max(live) <= 7


# ----------------------------------------------------------------------------- pixels
def test_crop_to_i420_matches_an_rgb_reference():
    import cv2
    rng = np.random.default_rng(0)
    rgb = cv2.resize(rng.integers(20, 235, (6, 10, 3), np.uint8), (320, 192), interpolation=cv2.INTER_CUBIC)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj422p")
    box = (64, 32, 192, 160)
    i420 = crop_to_i420(frame, box, 64)
    assert i420.shape == (96, 64)
    out = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    back = out.to_ndarray(format="rgb24")          # swscale: BT.601 limited range by default
    ref = cv2.resize(rgb[32:160, 64:192], (64, 64), interpolation=cv2.INTER_AREA)
    diff = back.astype(int) - ref.astype(int)
    assert np.abs(diff).mean() < 4
    # Full range (JPEG) -> limited range (H.264) is converted, not just relabelled: same contrast
    # (relabelling would stretch it by 255/219), and no shift beyond swscale's own round trip (~1.4).
    assert abs(back.std() / ref.std() - 1) < 0.04
    assert np.abs(diff.mean(axis=(0, 1))).max() < 2.5


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One subject, one song, 480x272, 6 s: an excursion, then a face-less span."""
    from demo.capture import make_demo_capture
    root = tmp_path_factory.mktemp("crop_demo")
    make_demo_capture(root / "raw", root / "truth", width=480, height=272, seconds=6.0,
                      n_subjects=1, n_songs=1, seed=0)
    subject = sorted(p.name for p in (root / "raw").iterdir())[0]
    song = sorted(p.name for p in (root / "raw" / subject / "songs").iterdir())[0]
    truth = json.loads((root / "truth" / subject / song / "truth.json").read_text())
    visible = np.load(root / "truth" / subject / song / "truth.npz")["face_visible"]
    return root, subject, song, truth, visible


@pytest.fixture
def crop_settings():
    with config_overrides(crop={"output_size": 256, "keyframe_interval": 30}):
        yield


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.mp4"))}


def test_crop_stage_end_to_end(demo, tmp_path, crop_settings):
    root, subject, song, truth, visible = demo
    with config_overrides(paths={"raw_dir": root / "raw", "processed_dir": tmp_path / "processed"}):
        assert build(CropPortraits(subject=subject, song=song), log_level="ERROR").ok
        lay = Layout.from_config()
        out_dir = lay.portrait_dir(subject, song)
        report = json.loads(lay.segments_json(subject, song).read_text())
        assert lay.validation_report(subject).is_file()

    segs = report["segments"]
    n = report["frame_count"]
    assert n == truth["frames"] and report["fps"] == 30
    assert report["params"]["crop"]["output_size"] == 256
    assert len(segs) >= 2 and segs[0]["start_frame"] <= 3        # face found at the start
    e0, e1 = truth["excursion_frames"]
    f0, f1 = truth["faceless_frames"]
    # Re-segmentation happens at the excursion.
    cuts = {s["end_frame"] for s in segs} | {s["start_frame"] for s in segs}
    assert any(e0 <= c <= e1 for c in cuts), (cuts, (e0, e1))
    for s in segs:
        span = np.arange(s["start_frame"], s["end_frame"])
        # No frame of the face-less span in any segment.
        assert visible[span].all() and (span[-1] < f0 or span[0] >= f1), (s, (f0, f1))
        x0, y0, x1, y1 = s["box"]
        assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 272 and x1 - x0 == y1 - y0
        # One output frame per source frame; square, 30 fps; keyframes every keyframe_interval.
        with av.open(str(out_dir / s["video"])) as c:
            st = c.streams.video[0]
            assert (st.codec_context.width, st.codec_context.height) == (256, 256)
            assert st.codec_context.name == "h264" and st.average_rate == 30
            keys = [i for i, p in enumerate(c.demux(st)) if p.size and p.is_keyframe]
        assert keys == list(range(0, s["end_frame"] - s["start_frame"], 30))
    for s in segs:
        assert count_frames(out_dir / s["video"]) == s["end_frame"] - s["start_frame"]
    # Frames in no segment are accounted for, with reasons.
    in_segs = sum(s["end_frame"] - s["start_frame"] for s in segs)
    dropped = sum(d["end_frame"] - d["start_frame"] for d in report["dropped"])
    assert in_segs + dropped == n
    assert any(d["reason"] == NOFACE and d["start_frame"] <= f0 + 6 for d in report["dropped"])
    # Why each segment ended: at the excursion the face left the portrait, before the face-less span
    # the face was lost, at the end the recording ended.
    reasons = [(s["end_frame"], s["cut_reason"]) for s in segs]
    assert all(r in CUT_REASONS for _, r in reasons), reasons
    assert any(e0 <= e <= e1 and r in (EDGE, FOREHEAD_OUT) for e, r in reasons), reasons
    assert any(f0 - 6 <= e <= f0 and r == LOST_FACE for e, r in reasons), reasons
    assert [r for e, r in reasons if e == n] in ([], [END_OF_VIDEO]), reasons
    assert not list(out_dir.glob(".*tmp*"))

    # A rerun (after a killed run left a stale temp behind) gives the same bytes.
    first = _digests(out_dir)
    first_json = (out_dir / "segments.json").read_bytes()
    rerun_dir = tmp_path / "rerun"
    rerun_dir.mkdir()
    (rerun_dir / ".segment_000.tmp-1-deadbeef.mp4").write_bytes(b"half")
    (rerun_dir / "segment_007.mp4").write_bytes(b"stale from a killed run")
    video = root / "raw" / subject / "songs" / song / "color.mkv"
    crop_video(video, rerun_dir, CropSettings(output_size=256, keyframe_interval=30))
    assert _digests(rerun_dir) == first
    assert (rerun_dir / "segments.json").read_bytes() == first_json
    assert not list(rerun_dir.glob(".*tmp*"))
    shutil.rmtree(rerun_dir)


def test_face_box_includes_the_forehead():
    # a frontal face: brows at y=100, chin at y=200, landmarks well inside a 400 px portrait
    lm = np.zeros((68, 2))
    lm[:, 0] = np.linspace(150, 250, 68)
    lm[:, 1] = 150.0
    lm[17:27, 1] = 100.0
    lm[8, 1] = 200.0
    fb = face_box(lm)
    assert fb[1] == pytest.approx(50.0)          # brows - 0.5 x (chin - brows)
    box = (0, 0, 400, 400)
    assert not face_leaves_box(lm, box, 0.08)
    # shifted up by 70 px, every landmark is still 30 px (> 8 %) from the top, but the forehead
    # is cut off: the old landmark-only test kept this frame
    up = lm - [0, 70]
    assert not landmarks_near_edge(up, box, 0.07)
    assert face_leaves_box(up, box, 0.07)
