"""ba_pose scores the global and neck pose: all six of their columns (50..55 of the 59), none of the
expression or jaw columns, averaged over the samples. No head model needed."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.evaluation import metrics as M
from tasks.evaluation.evaluate import pose_beat_alignment

T = 80
BEATS = np.array([30, 50, 70])      # music beats, in frames


def _moving_only(column: int) -> np.ndarray:
    """(T, 59) at rest but one column, a cosine whose speed falls to zero at frames 10, 30, 50, 70 (the
    kinematic beats found are 30, 50, 70: the one at 10 is too close to the start for the smoothing)."""
    m = np.zeros((T, 59))
    m[:, column] = 0.2 * np.cos(2 * np.pi * (np.arange(T) - 10) / 40)
    return m


@pytest.mark.parametrize("column", [50, 51, 52, 53, 54, 55])
def test_motion_in_any_global_or_neck_column_aligns_with_the_beats(column):
    score = pose_beat_alignment(np.stack([_moving_only(column)]), BEATS)
    # its speed minima fall on the beats: the alignment is (close to) perfect
    assert score == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("column", [0, 49, 56, 58])
def test_expression_and_jaw_motion_is_not_pose(column):
    # a pose at rest has no kinematic beat: BA 0 (beat_alignment's stated limit)
    assert pose_beat_alignment(np.stack([_moving_only(column)]), BEATS) == 0.0


def test_the_score_is_the_mean_over_samples():
    pred = np.stack([_moving_only(50), _moving_only(56), _moving_only(55)])
    one = M.beat_alignment_score(_moving_only(50)[:, 50:56], None, beats=BEATS)
    assert pose_beat_alignment(pred, BEATS) == pytest.approx(2 * one / 3, rel=1e-12)
