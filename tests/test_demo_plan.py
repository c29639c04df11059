"""The demo's plan fills the dataset: where the crop stage will cut each truth-capture song (its
geometric checks run on the true landmarks, no pixels rendered), how many 8 s clips that leaves,
and that the song-disjoint split then gives train, val and test at least one clip each."""
from __future__ import annotations

import numpy as np
import pytest

from demo.capture import plan_capture, song_audio
from demo.scan import procedural_head_model
from demo.truth_capture import SONG_S, event_times, song_geometry, subject_geometry
from tasks.dataset.splits import SPLITS, split_clips, split_lists
from tasks.faces.segmenter import face_box, face_leaves_box, square_box

W, H, FPS = 3840, 2160, 30
MARGIN, EDGE = 0.6, 0.08              # luigi.cfg [crop]
MIN_SEQ, CLIP = 90, 240               # luigi.cfg [dataset]: 3 s, 8 s at 30 fps


def detector_box(landmarks: np.ndarray) -> np.ndarray:
    """(4,) about where MTCNN puts its face box: the 68 landmarks' box, its top raised by 15 % of
    the brows-to-chin height (MTCNN's box starts a little above the brows)."""
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    return np.array([x0, y0 - 0.15 * (landmarks[8, 1] - landmarks[17:27, 1].mean()), x1, y1])


def crop_segments(landmarks: np.ndarray, visible: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frames of the crop stage's segments, its rules applied to known landmarks
    (T,68,2): a segment starts on a visible face with a box from the face (with its forehead) and
    the [crop] margin, and ends at the first frame whose face leaves that box or the frame."""
    segs, t, T = [], 0, len(landmarks)
    while t < T:
        if not visible[t]:
            t += 1
            continue
        box = square_box(detector_box(landmarks[t]), MARGIN, W, H)
        s = t
        while t < T and visible[t] and not face_leaves_box(landmarks[t], box, EDGE):
            t += 1
        if t == s:
            t += 1
        else:
            segs.append((s, t))
    return segs


@pytest.fixture(scope="module")
def demo_plan():
    """{(subject, song): segments} for the demo's default capture (2 subjects x 2 songs)."""
    model = procedural_head_model()
    n = int(round(SONG_S * FPS))
    out = {}
    for subj in plan_capture(2, 2, 0):
        shape, _, _, fh = subject_geometry(model, 0 * 1000 + subj["variant"])
        for song in subj["songs"]:
            loud = song_audio(song, n, FPS)[-1]
            motion, _, _, lmk, visible = song_geometry(model, shape, fh, loud, song["seed"], n, FPS, W, H)
            out[(subj["subject_id"], song["song_id"])] = (crop_segments(lmk, visible), motion)
    return out


def test_every_song_gives_two_clips_around_its_events(demo_plan):
    assert event_times(SONG_S) is not None
    for key, (segs, motion) in demo_plan.items():
        e0, e1 = motion["excursion"]
        h0, h1 = motion["offframe"]
        lengths = [b - a for a, b in segs]
        clips = sum(n // CLIP for n in lengths if n >= MIN_SEQ)
        # the excursion re-segments, the face leaves the frame, and an 8 s clip fits before and between
        assert any(a < e1 <= b or e0 < b <= e1 for a, b in segs[1:] + segs[:1]), (key, segs)
        assert all(not (a < h0 + 15 < b) for a, b in segs), (key, segs)
        assert clips == 2, (key, segs)
        print(key, segs, (e0, e1), (h0, h1))


def test_the_demo_fills_every_split_song_disjoint(demo_plan):
    clips = []
    for (subject, song), (segs, _) in demo_plan.items():
        for k, (a, b) in enumerate(s for s in segs if s[1] - s[0] >= MIN_SEQ):
            clips += [{"id": f"{subject}_{song}_{k}_{c}", "subject": subject, "song": song}
                      for c in range((b - a) // CLIP)]
    lists = split_lists(split_clips(clips, seed=0))
    assert all(lists[s] for s in SPLITS), lists
    song_of = {c["id"]: c["song"] for c in clips}
    songs = [{song_of[c] for c in lists[s]} for s in SPLITS]
    assert not (songs[0] & songs[1] or songs[0] & songs[2] or songs[1] & songs[2])
