"""Dataset plan rules (tasks.dataset.plan): the numbers that go into ids, songs numbered by their
position among the subject's raw song folders, two songs that would share an id refused, an invalid
song.json named. JSON only: no video is read."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.common.atomic import write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.dataset.plan import check_unique_ids, plan_subject, subject_number
from tasks.layout import Layout


def _layout(root):
    return Layout(root / "raw", root / "processed", root / "processed" / "release")


def _subject(lay, subject, songs, with_sequences):
    """Raw song folders `songs`; subject_done.json lists one 60-frame sequence of each song in
    `with_sequences`."""
    for song in songs:
        (lay.raw / subject / "songs" / song).mkdir(parents=True, exist_ok=True)
    write_json_atomic(lay.subject_done(subject), {"sequences": [
        {"song": song, "segment": 0, "start_frame": 0, "end_frame": 60, "video": "segment_000.mp4"}
        for song in with_sequences]})


@settings(max_examples=20, deadline=None)
@given(prefix=st.from_regex(r"[A-Za-z]{0,4}[0-9]{1,4}[_-][A-Za-z]{0,3}", fullmatch=True),
       number=st.integers(0, 99999))
def test_the_subject_number_is_the_last_number_in_the_folder_name(prefix, number):
    # e.g. lab2024_S015 -> 15: a year or site code before the subject's own number does not count
    assert subject_number(f"{prefix}S{number:03d}") == number
    assert subject_number(f"{prefix}{number}") == number


def test_unnumbered_songs_are_numbered_by_their_place_among_all_the_subjects_song_folders(tmp_path):
    # a_intro has no usable sequence; b_verse is still the 2nd song folder, c_chorus the 3rd
    lay = _layout(tmp_path)
    _subject(lay, "S007", ["a_intro", "b_verse", "c_chorus"], ["b_verse", "c_chorus"])
    kept, _ = plan_subject(lay, "S007", 30.0, 1.0, 30)
    assert [p.seq_id for p in kept] == ["id7_2_0", "id7_3_0"]
    assert [p.clip_ids for p in kept] == [["id7_2_0_0", "id7_2_0_1"], ["id7_3_0_0", "id7_3_0_1"]]


def test_two_songs_with_the_same_leading_number_are_refused_naming_the_second(tmp_path):
    lay = _layout(tmp_path)
    _subject(lay, "S001", ["01_first", "1_second", "2_third"], ["01_first", "1_second", "2_third"])
    kept, _ = plan_subject(lay, "S001", 30.0, 1.0, 30)
    check_unique_ids([kept[0], kept[2]])            # distinct ids pass
    with pytest.raises(PipelineInputError) as e:
        check_unique_ids(kept)
    assert e.value.path == str(lay.raw_song_dir("S001", "1_second"))
    assert "id1_1_0" in e.value.problem and "S001/01_first" in e.value.problem


def test_an_invalid_song_json_is_named(tmp_path):
    lay = _layout(tmp_path)
    _subject(lay, "S001", ["001_song"], ["001_song"])
    lay.song_json("S001", "001_song").write_text('{"title": "x",')
    with pytest.raises(PipelineInputError) as e:
        plan_subject(lay, "S001", 30.0, 1.0, 30)
    assert e.value.path == str(lay.song_json("S001", "001_song")) and "not valid JSON" in e.value.problem
