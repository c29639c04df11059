"""Train/val/test splits of clips: 80/5/15, deterministic for a seed.

By default clips are split by group, a group being one song of one subject: clips of the same
performance are near-duplicates of each other, so a group never spans two splits. Groups are
assigned greedily (largest first, ties in a seeded order) to the split furthest below its target,
then single-group moves that bring the clip counts closer to the targets are applied until none
helps. With few groups the exact ratios are out of reach; the achieved ratios are reported. Every
split with a non-zero fraction gets at least one group (one clip, split per clip) whenever there are
at least as many groups as such splits: a small pilot dataset (the demo: 4 songs) then has a
validation and a test split to run on, although their shares are far from 5 and 15 %. Splits that
come out filled anyway are exactly what they were before this rule.
`split_by_song=False` gives the plain per-clip split (a seeded shuffle cut at the targets).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

SPLITS = ("train", "val", "test")


def target_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Clip counts per split summing to n (largest remainder)."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: (-(raw[i] - counts[i]), i))[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_per_clip(ids: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    counts = target_counts(len(order), fractions)
    wanted = [i for i in range(3) if fractions[i] > 0]
    if len(order) >= len(wanted):
        for i in wanted:   # an empty split takes a clip from the largest one
            if counts[i] == 0:
                counts[max(range(3), key=lambda j: (counts[j], -j))] -= 1
                counts[i] = 1
    out, k = {}, 0
    for split, c in zip(SPLITS, counts):
        for cid in order[k : k + c]:
            out[cid] = split
        k += c
    return out


def _error(sizes: list[int], targets: list[float]) -> float:
    return sum(abs(s - t) for s, t in zip(sizes, targets))


def assign_groups(group_sizes: dict, seed: int, fractions: tuple[float, float, float]) -> dict:
    """{group: split} so that the clip counts per split come as close as they can to the targets."""
    total = sum(group_sizes.values())
    targets = [total * f for f in fractions]
    order = sorted(group_sizes, key=str)
    random.Random(seed).shuffle(order)
    rank = {g: i for i, g in enumerate(order)}
    sizes = [0, 0, 0]
    assign = {}
    for g in sorted(order, key=lambda g: (-group_sizes[g], rank[g])):
        # the split furthest below its target (relative, so a 5 % split is not starved)
        k = max(range(3), key=lambda i: ((targets[i] - sizes[i]) / max(targets[i], 1e-9), -i))
        assign[g] = k
        sizes[k] += group_sizes[g]
    improved = True
    while improved:  # each accepted move strictly lowers the error, so this ends
        improved = False
        for g in order:
            best, best_err = assign[g], _error(sizes, targets)
            for k in range(3):
                if k == assign[g]:
                    continue
                trial = list(sizes)
                trial[assign[g]] -= group_sizes[g]
                trial[k] += group_sizes[g]
                if _error(trial, targets) < best_err - 1e-9:
                    best, best_err = k, _error(trial, targets)
            if best != assign[g]:
                sizes[assign[g]] -= group_sizes[g]
                sizes[best] += group_sizes[g]
                assign[g] = best
                improved = True
    wanted = [k for k in range(3) if fractions[k] > 0]
    if len(order) >= len(wanted) and any(k not in assign.values() for k in wanted):
        fill_empty_splits(assign, group_sizes, targets, wanted, order)
    return {g: SPLITS[k] for g, k in assign.items()}


def fill_empty_splits(assign: dict, group_sizes: dict, targets: list[float], wanted: list[int],
                      order: list) -> None:
    """Give each split in `wanted` at least one group (assign {group: split index}, changed in place):
    an empty split takes the group whose move costs least, then single moves and pairwise swaps
    that lower the error are applied while no wanted split loses its last group. Runs only for
    few groups (some split came out empty), so its quadratic search costs nothing."""
    def sizes():
        out = [0, 0, 0]
        for g, k in assign.items():
            out[k] += group_sizes[g]
        return out

    def count(k):
        return sum(1 for v in assign.values() if v == k)

    def error_if(changes):
        out = [0, 0, 0]
        for g, k in {**assign, **changes}.items():
            out[k] += group_sizes[g]
        return _error(out, targets)

    for k in wanted:
        if count(k) == 0:
            movable = [g for g in order if count(assign[g]) > 1]
            assign[min(movable, key=lambda g: (error_if({g: k}), order.index(g)))] = k
    improved = True
    while improved:  # each accepted change strictly lowers the error, so this ends
        improved = False
        err = _error(sizes(), targets)
        for a in order:
            for b in order:
                ka, kb = assign[a], assign[b]
                if ka == kb:
                    continue
                # move a to b's split (if a's split keeps a group), or swap a and b
                options = ([{a: kb}] if count(ka) > 1 or ka not in wanted else []) + [{a: kb, b: ka}]
                for change in options:
                    e = error_if(change)
                    if e < err - 1e-9:
                        assign.update(change)
                        err, improved = e, True
                        break
                if improved:
                    break
            if improved:
                break


def split_clips(
    clips: list[dict],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.80, 0.05, 0.15),
    by_song: bool = True,
) -> dict[str, str]:
    """{clip id: 'train' | 'val' | 'test'}. `clips`: dicts with 'id', 'subject', 'song'."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    if not by_song:
        return split_per_clip([c["id"] for c in clips], seed, fractions)
    groups: dict = defaultdict(list)
    for c in clips:
        groups[(c["subject"], c["song"])].append(c["id"])
    g_split = assign_groups({g: len(v) for g, v in groups.items()}, seed, fractions)
    return {cid: g_split[g] for g, ids in groups.items() for cid in ids}


def achieved_ratios(split_of: dict[str, str]) -> dict[str, float]:
    n = max(len(split_of), 1)
    c = Counter(split_of.values())
    return {s: round(c.get(s, 0) / n, 6) for s in SPLITS}


def split_lists(split_of: dict[str, str]) -> dict[str, list[str]]:
    """{split: sorted ids}."""
    out = {s: [] for s in SPLITS}
    for cid, s in split_of.items():
        out[s].append(cid)
    return {s: sorted(v) for s, v in out.items()}
