"""bench/end_to_end.py's oracle: the truth's frame-pixel landmarks taken into a crop segment's portrait."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.end_to_end import GROUPS, head_yaw_deg, oracle_landmarks, surface_contour  # noqa: E402


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


def test_surface_contour_is_the_frontal_contour_carried_by_the_head():
    # The model's dynamic contour keeps the chin and the side turning towards the camera on their
    # frontal surface points and moves the far side's points that go out of view onto the cheek's
    # outline; the surface contour is the frontal points carried along by the head: the same points
    # at yaw 0, and at 30 degrees the same on the near side and chin, apart on the far side only.
    import torch
    from demo.scan import procedural_head_model
    from demo.truth_render import project
    model = procedural_head_model()
    T = 3
    yaw = np.radians([0.0, 30.0, -30.0])
    truth = {"shape": np.zeros(100, np.float32), "expression": np.zeros((T, 50), np.float32),
             "jaw_pose": np.zeros((T, 3), np.float32), "neck_pose": np.zeros((T, 3), np.float32),
             "global_orient": np.stack([np.zeros(T), yaw, np.zeros(T)], 1).astype(np.float32),
             "camera": np.array([[2000.0, 320.0, 240.0]] * T, np.float32)}
    with torch.no_grad():
        out = model(torch.zeros(T, 100), torch.zeros(T, 50), torch.as_tensor(truth["global_orient"]),
                    torch.zeros(T, 3), torch.zeros(T, 3))
    lmk = np.stack([project(out.landmarks[t].double().numpy(), truth["camera"][t]) for t in range(T)])
    face_h = np.ptp(lmk[0, :, 1])
    sc = surface_contour(model, truth, 0, T)
    assert sc.shape == (T, 17, 2)
    np.testing.assert_allclose(sc[0], lmk[0, :17], atol=1e-3)
    for t, near, far in ((1, np.r_[0:9], np.r_[13:17]), (2, np.r_[8:17], np.r_[0:4])):   # yaw +30, -30
        off = np.linalg.norm(sc[t] - lmk[t, :17], axis=1)
        np.testing.assert_allclose(off[near], 0.0, atol=1e-3)
        assert (off[far] > 0.002 * face_h).all() and off[far].max() > 0.05 * face_h, (t, off, face_h)
        assert off.max() < 0.2 * face_h                         # both stay on the face's lower edge
