"""Box-plot outlier detection and replacement on series with known outliers."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _centred_median_reference(x: np.ndarray, window: int) -> np.ndarray:
    """Frame by frame: the median of the frames within window//2 of t, the half-width shrunk
    symmetrically where an end (either end) is nearer."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    T, h = len(flat), window // 2
    out = np.empty(T)
    for t in range(T):
        k = min(t, T - 1 - t, h)
        out[t] = np.linalg.norm(flat[t] - np.median(flat[t - k:t + k + 1], axis=0))
    return out


@settings(max_examples=120, deadline=None)
@given(T=st.integers(1, 24), half=st.integers(0, 5), D=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_running_median_is_the_centred_median_of_the_frames_around(T, half, D, seed):
    """The rule of running_median_distances for every length, also series shorter than the window
    (regression: a 3- or 4-frame track took a reference from the wrong end through a negative index, so
    its end frames got a distance and an inner frame was measured against the last one)."""
    x = np.random.default_rng(seed).integers(-50, 50, (T, D)).astype(np.float64)
    d = running_median_distances(x, 2 * half + 1)
    assert d.shape == (T,)
    np.testing.assert_allclose(d, _centred_median_reference(x, 2 * half + 1), rtol=0, atol=1e-9)
    assert d[0] == 0.0 and d[-1] == 0.0            # ends have no neighbours on one side: never judged


def test_short_tracks_by_hand():
    np.testing.assert_array_equal(running_median_distances(np.array([[0.0], [1.0], [2.0], [10.0]])), 0.0)
    np.testing.assert_array_equal(running_median_distances(np.array([[0.0], [9.0], [5.0]])), [0.0, 4.0, 0.0])
    np.testing.assert_array_equal(running_median_distances(np.array([[0.0], [8.0], [0.0], [0.0], [0.0]]), 3),
                                  [0.0, 8.0, 0.0, 0.0, 0.0])


def test_distances_to_mean_by_hand():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [2.0, 6.0]])     # mean (2, 1.5)
    np.testing.assert_allclose(distances_to_mean(x), [2.5, 1.5, 2.5, 4.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(distances_to_mean(x.reshape(4, 2, 1)), [2.5, 1.5, 2.5, 4.5], rtol=0, atol=1e-12)


def test_box_plot_fences_by_hand():
    # four frames are enough: Q1 = 0, Q3 = 2.5, upper fence 6.25
    assert boxplot_outliers(np.array([0.0, 0.0, 0.0, 10.0])).tolist() == [False, False, False, True]
    assert not boxplot_outliers(np.array([0.0, 0.0, 1e6])).any()      # three say nothing
    # a value on a fence is inside: IQR 0 puts both fences on the common value
    d = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    assert boxplot_outliers(d).tolist() == [True] + [False] * 7 + [True]
    # Q1 = 2, Q3 = 4 (1..5): fences [-1, 7] at scale 1.5, [-4, 10] at 3; both sides count
    d = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 7.0, -1.0, 3.0, 3.0])
    q1, q3 = np.percentile(d, [25, 75])
    assert (q1, q3) == (2.0, 4.0)
    assert not boxplot_outliers(d, 1.5).any()                          # -1 and 7 sit on the fences
    for bump, flagged in ((1e-9, True), (-1e-9, False)):
        e = d.copy()
        e[7], e[8] = 7.0 + bump, -1.0 - bump
        assert boxplot_outliers(e, 1.5).tolist() == [False] * 7 + [flagged, flagged] + [False] * 2
    e = d.copy()
    e[7], e[8] = 9.0, -3.0
    assert boxplot_outliers(e, 1.5)[[7, 8]].all() and not boxplot_outliers(e, 3.0).any()


def _lerp_reference(x, bad):
    """Nearest good frame on each side, straight-line weights; ends copy their nearest good frame."""
    out = x.astype(np.float64).copy()
    good = np.flatnonzero(~bad)
    for t in np.flatnonzero(bad):
        left, right = good[good < t], good[good > t]
        if not len(left):
            out[t] = x[right[0]]
        elif not len(right):
            out[t] = x[left[-1]]
        else:
            a, b = left[-1], right[0]
            out[t] = x[a] + (t - a) / (b - a) * (x[b].astype(np.float64) - x[a])
    return out


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 30), seed=st.integers(0, 10**6), p=st.floats(0.0, 1.0))
def test_interpolation_rule_for_any_mask(T, seed, p):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10, (T, 2, 3))
    bad = rng.random(T) < p
    before = x.copy()
    out = interpolate_frames(x, bad)
    assert out is not x and out.dtype == x.dtype
    np.testing.assert_array_equal(x, before)
    if bad.all():
        np.testing.assert_array_equal(out, x)                  # nothing to interpolate from: as is
    else:
        np.testing.assert_allclose(out, _lerp_reference(x, bad), rtol=0, atol=1e-9)
        np.testing.assert_array_equal(out[~bad], x[~bad])


def test_interpolation_keeps_the_dtype():
    x = np.array([[0.0], [0.0], [3.0]], np.float32)
    out = interpolate_frames(x, np.array([False, True, False]))
    assert out.dtype == np.float32 and out[1, 0] == 1.5


def test_outlier_fractions_by_hand():
    masks = {"b": np.array([True, False, False, False]), "a": np.zeros(0, bool), "c": np.ones(3, bool)}
    assert outlier_fractions(masks) == {"a": 0.0, "b": 0.25, "c": 1.0}
    assert list(outlier_fractions(masks)) == ["a", "b", "c"]


@pytest.mark.parametrize("scale", [1.5, 3.0])
def test_replace_outliers_uses_the_mean_distance_and_its_scale(scale):
    # distances to the mean (0): 8 frames at 1, two at 4.5, flagged at any scale (IQR 0)
    x = np.zeros((10, 1))
    x[:8, 0] = [1, -1, 1, -1, 1, -1, 1, -1]
    x[8, 0], x[9, 0] = 4.5, -4.5
    fixed, bad = replace_outliers(x, scale)
    assert bad.tolist() == [False] * 8 + [True, True]
    np.testing.assert_array_equal(fixed[8:], [[-1.0], [-1.0]])      # the nearest good frame (frame 7)
    groups, masks = replace_group_outliers({"z": x, "a": x[:8]}, scale)
    assert list(groups) == ["a", "z"] and masks["z"].tolist() == bad.tolist()
    np.testing.assert_array_equal(groups["z"], fixed)


def test_defaults_window_7_and_fences_at_1_5():
    x = np.zeros((12, 1))
    x[4, 0] = x[5, 0] = x[6, 0] = 10.0          # a 3-frame plateau: a 7-frame median sees 4 zeros around it
    np.testing.assert_array_equal(running_median_distances(x), running_median_distances(x, 7))
    assert not np.array_equal(running_median_distances(x, 7), running_median_distances(x, 5))
    # Q1 = 2.5, Q3 = 7.5 (IQR 5): the upper fence is 15 at 1.5, 20 at 2.5
    d = np.array([-3.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17.0])
    assert boxplot_outliers(d).tolist() == boxplot_outliers(d, 1.5).tolist() == [False] * 10 + [True]
    x = d[:, None] - d.mean()                    # distances to the mean are |d - mean|: same ranks here
    assert replace_outliers(x)[1].tolist() == replace_outliers(x, 1.5)[1].tolist()
    assert replace_outliers(x)[1].tolist() != replace_outliers(x, 2.5)[1].tolist()
    assert replace_group_outliers({"g": x})[1]["g"].tolist() == replace_outliers(x, 1.5)[1].tolist()
    # distances 1 (x6), 2, 2, 3, 3: Q1 = 1, Q3 = 2; the 3s lie inside the fence at 1.5 (3.5), outside at 0.5
    x = np.array([1.0, -1, 1, -1, 1, -1, 2, -2, 3, -3])[:, None]
    assert not replace_outliers(x)[1].any() and not replace_group_outliers({"g": x})[1]["g"].any()
    assert replace_outliers(x, 0.5)[1].tolist() == [False] * 8 + [True, True]


def test_three_frames_are_never_judged_even_with_tight_fences():
    # at scale 0.1 the quartiles of three frames would flag 10 (Q3 = 5, fence 5.5): three say nothing
    assert not boxplot_outliers(np.array([0.0, 0.0, 10.0]), 0.1).any()
    assert boxplot_outliers(np.array([0.0, 0.0, 0.0, 10.0]), 0.1)[-1]


def test_fences_sit_at_the_25th_and_75th_percentiles():
    # 1..9 between two extremes: Q1 = 2.5, Q3 = 7.5 exactly (linear interpolation), IQR 5, fences [-2.5, 12.5]
    inner = np.arange(1.0, 10.0)
    on = np.concatenate([[-2.5], inner, [12.5]])
    assert not boxplot_outliers(on, 1.0).any()
    for eps in (1e-6, 1e-3):
        out = np.concatenate([[-2.5 - eps], inner, [12.5 + eps]])
        assert boxplot_outliers(out, 1.0).tolist() == [True] + [False] * 9 + [True]
