"""Video frames to audio samples: the one rule every cut uses (segment audio, dataset clips, the loader).

Frame t at `fps` starts at sample round(t*sr/fps), halves rounded up, computed in exact rational
arithmetic: float `round` rounds halves to even and drifts at 29.97 fps, so two cuts of the same span
could start a sample apart (11025 Hz at 30 fps puts every odd frame on a half sample).
"""
from __future__ import annotations

import math
from fractions import Fraction


def exact_fraction(x: float) -> Fraction:
    """`x` as the nearest fraction with a denominator up to 10^6 (30000/1001 for 29.97...)."""
    return Fraction(x).limit_denominator(1_000_000)


def frame_sample(t: int, sr: int, fps: float) -> int:
    """round(t*sr/fps), halves rounded up, in exact rational arithmetic (no float drift)."""
    return math.floor(Fraction(int(t) * int(sr)) / exact_fraction(fps) + Fraction(1, 2))
