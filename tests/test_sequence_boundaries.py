"""The 3-second rule at its boundary: a segment of exactly [dataset] min_sequence_seconds (3.0 s = 90
frames at 30 fps) is usable everywhere it is decided (the layout's usable segments, which the estimate,
refine and subject stages take; the dataset plan) and one frame less is not."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.common.atomic import write_json_atomic
from tasks.common.settings import DatasetSettings
from tasks.dataset.plan import plan_subject
from tasks.layout import Layout

SONG = "001_pop_song"


def test_the_shipped_minimum_is_90_frames():
    assert DatasetSettings().min_sequence_frames == 90
    assert DatasetSettings(min_sequence_seconds=3.0, fps=25).min_sequence_frames == 75


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(85, 95), min_size=1, max_size=6))
def test_a_segment_of_exactly_3_seconds_is_kept_one_frame_less_is_not(tmp_path_factory, lengths):
    root = tmp_path_factory.mktemp("b")
    lay = Layout(root / "raw", root / "processed", root / "processed" / "release")
    (root / "raw" / "S001" / "songs" / SONG).mkdir(parents=True)
    segs, start = [], 0
    for k, n in enumerate(lengths):
        segs.append({"index": k, "start_frame": start, "end_frame": start + n,
                     "video": f"segment_{k:03d}.mp4"})
        start += n + 10
    write_json_atomic(lay.segments_json("S001", SONG), {"segments": segs})
    usable = [s["index"] for s in lay.usable_segments("S001", SONG, DatasetSettings().min_sequence_frames)]
    assert usable == [k for k, n in enumerate(lengths) if n >= 90]

    # the dataset plan applies the same rule to what the subject stage listed
    write_json_atomic(lay.subject_done("S001"), {"sequences": [
        {"song": SONG, "segment": s["index"], "start_frame": s["start_frame"], "end_frame": s["end_frame"],
         "video": s["video"]} for s in segs]})
    kept, dropped = plan_subject(lay, "S001", 30.0, 3.0, 30)
    assert [p.source_segment for p in kept] == usable
    assert dropped == len(lengths) - len(usable)
    assert all(len(p.clip_ids) == p.frames // 30 for p in kept)
