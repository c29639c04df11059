"""Song-grouped splits against a brute-force oracle: on a dataset where the greedy start leaves a split
empty (fill_empty_splits then moves and swaps songs), the result still has the best counts any
assignment of whole songs reaches."""

from __future__ import annotations

import itertools
from collections import Counter

from tasks.dataset.splits import SPLITS, split_clips

SHIPPED = (0.80, 0.05, 0.15)


def _best_error(sizes, fractions):
    """Least sum |clips in split - target| over every assignment of whole songs that fills each split."""
    n = sum(sizes)
    targets = [n * f for f in fractions]
    best = float("inf")
    for assign in itertools.product(range(3), repeat=len(sizes)):
        if len(set(assign)) < 3:
            continue
        counts = [sum(s for s, k in zip(sizes, assign) if k == j) for j in range(3)]
        best = min(best, sum(abs(c - t) for c, t in zip(counts, targets)))
    return best, targets


def test_eight_songs_reach_the_best_counts_any_song_assignment_reaches():
    sizes = [1, 4, 3, 11, 3, 6, 11, 11]          # 50 clips: targets 40 / 2.5 / 7.5
    clips = [{"id": f"id1_{g + 1}_0_{k}", "subject": 1, "song": g + 1} for g, m in enumerate(sizes)
             for k in range(m)]
    split = split_clips(clips, seed=5, fractions=SHIPPED)
    c = Counter(split.values())
    best, targets = _best_error(sizes, SHIPPED)
    assert best == 1.0                            # e.g. 40 / 3 / 7
    assert sum(abs(c[s] - t) for s, t in zip(SPLITS, targets)) == best
    # songs stay whole
    assert all(len({split[f"id1_{g + 1}_0_{k}"] for k in range(m)}) == 1 for g, m in enumerate(sizes))
