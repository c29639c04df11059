"""Box-plot outlier detection and replacement on series with known outliers."""
import numpy as np

from flame_fit.outliers import (boxplot_outliers, distances_to_mean, interpolate_frames, outlier_fractions,
                                replace_group_outliers, replace_outliers, running_median_distances)


def _series(T=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    clean = np.stack([0.2 * np.sin(t / 9.0), 0.1 * np.cos(t / 13.0), 0.05 * np.sin(t / 5.0)], axis=1)
    return clean + rng.normal(0, 0.01, clean.shape)


def test_gross_frames_are_found_and_interpolated_from_neighbours():
    clean = _series()
    x = clean.copy()
    bad_idx = [7, 40, 41, 90]
    x[bad_idx] += np.array([2.0, -1.5, 1.0])
    fixed, mask = replace_outliers(x, scale=1.5)
    assert set(np.flatnonzero(mask)) == set(bad_idx)
    # replaced by the linear interpolation of the nearest good frames, not a copy of one of them
    np.testing.assert_allclose(fixed[7], 0.5 * (x[6] + x[8]), atol=1e-12)
    np.testing.assert_allclose(fixed[40], x[39] + (x[42] - x[39]) / 3.0, atol=1e-12)
    np.testing.assert_allclose(fixed[41], x[39] + 2 * (x[42] - x[39]) / 3.0, atol=1e-12)
    assert np.abs(fixed - clean).max() < 0.1
    good = ~mask
    np.testing.assert_array_equal(fixed[good], x[good])


def test_ends_take_nearest_good_frame_and_input_is_untouched():
    x = _series(60, seed=1)
    bad = np.zeros(60, bool)
    bad[[0, 1, 59]] = True
    before = x.copy()
    out = interpolate_frames(x, bad)
    np.testing.assert_array_equal(out[0], x[2])
    np.testing.assert_array_equal(out[1], x[2])
    np.testing.assert_array_equal(out[59], x[58])
    np.testing.assert_array_equal(x, before)


def test_fences_follow_the_scale():
    d = np.concatenate([np.linspace(1.0, 2.0, 100), [2.6]])
    q1, q3 = np.percentile(d, [25, 75])
    assert 2.6 > q3 + 1.5 * (q3 - q1)
    assert boxplot_outliers(d, 1.5)[-1]
    assert not boxplot_outliers(d, 3.0).any()
    assert distances_to_mean(np.zeros((5, 3))).tolist() == [0.0] * 5


def test_group_fractions_and_clean_group_untouched():
    x = _series(100)
    jaw = _series(100, seed=3)
    x[[10, 20, 30, 40, 50]] += 3.0
    groups, masks = replace_group_outliers({"global_orient": x, "jaw_pose": jaw}, scale=3.0)
    frac = outlier_fractions(masks)
    assert frac["global_orient"] == 0.05
    assert frac["jaw_pose"] == 0.0
    np.testing.assert_array_equal(groups["jaw_pose"], jaw)


def test_running_median_finds_jumps_in_a_singing_track():
    T = 240
    t = np.arange(T, dtype=float)
    rng = np.random.default_rng(2)
    head = np.stack([512 + 60 * np.sin(2 * np.pi * t / 60), 500 + 30 * np.sin(2 * np.pi * t / 90)], 1)
    track = head[:, None, :] + rng.normal(0, 60, (68, 2))
    track[:, 48:68, 1] += 15 * np.abs(np.sin(2 * np.pi * t / 10))[:, None]     # the mouth opens and closes
    track += rng.normal(0, 2.0, track.shape)
    bad = np.sort(rng.choice(np.arange(2, T - 3), 11, replace=False))
    bad = np.append(bad, T - 2)                                              # one next to the end
    track[bad] += rng.uniform(-40, 40, (len(bad), 1, 2)) + rng.normal(0, 8, (len(bad), 68, 2))
    found_by_mean = boxplot_outliers(distances_to_mean(track))
    assert (found_by_mean & np.isin(np.arange(T), bad)).sum() <= 2           # hidden by the head's own motion
    assert np.flatnonzero(boxplot_outliers(running_median_distances(track), 1.5)).tolist() == bad.tolist()
