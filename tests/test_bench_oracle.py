"""bench/end_to_end.py's oracle: the truth's frame-pixel landmarks taken into a crop segment's portrait."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.end_to_end import GROUPS, head_yaw_deg, oracle_landmarks  # noqa: E402


def test_oracle_landmarks_follow_the_crop_box():
    rng = np.random.default_rng(0)
    T = 10
    lmk = rng.uniform(150, 450, size=(T + 5, 68, 2))
    lmk[7, 3] = [90.0, 200.0]                    # left of the box: not in the portrait
    visible = np.ones(T + 5, bool)
    visible[8] = False                           # portrait frame 3: the face is covered
    truth = {"landmarks": lmk.astype(np.float32), "face_visible": visible}
    seg = {"start_frame": 5, "end_frame": 5 + T, "box": [100, 50, 500, 450], "repeated_frames": []}
    out, ok = oracle_landmarks(truth, seg, 200)
    assert out.shape == (T, 68, 2)
    # portrait frame t is recording frame 5 + t; the 400 px box becomes 200 px
    np.testing.assert_allclose(out, (lmk[5:5 + T] - [100, 50]) * 0.5, atol=1e-4)
    expected = visible[5:5 + T].copy()
    expected[2] = False                          # recording frame 7: a landmark outside the box
    assert list(ok) == list(expected)
    with pytest.raises(SystemExit, match="repeated"):
        oracle_landmarks(truth, {**seg, "repeated_frames": [3]}, 200)


def test_groups_cover_the_68_once_and_yaw_is_about_the_vertical():
    covered = np.concatenate([np.arange(68)[sl] for sl in GROUPS.values()])
    assert sorted(covered) == list(range(68))
    assert head_yaw_deg(np.array([[0.0, np.radians(25), 0.0]]))[0] == pytest.approx(25.0)
    assert head_yaw_deg(np.array([[np.radians(25), 0.0, 0.0]]))[0] == pytest.approx(0.0, abs=1e-9)
