"""Where the recorded frames of each song went: the report's yield numbers and timeline.

Every frame of a recording ends in exactly one place (the crop stage's invariant: each frame index is
in one portrait segment or in one dropped range of `segments.json`):

    recorded = in portrait segments + not usable (dropped: no face, edge landmark, forehead out)
               + missing from the recording (recorder gaps too long to repeat over) [+ unaccounted]
    in portrait segments = in sequences + in segments under the minimum length [+ other]
    in sequences = in clips + in remainders shorter than a clip

`unaccounted` is only non-zero for a segments.json written before dropped frames were recorded;
`other` counts segments long enough for a sequence that the dataset does not hold (none, normally).
Numbers are frames; `minutes()` converts them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tasks.faces.segmenter import CUT_REASONS, EDGE, FOREHEAD_OUT, MISSING, NOFACE, UNRECORDED, cut_reason

# Loss categories of the yield figure and table, in drawing order, with their words on the page.
LOSS_SHORT = "segments under the minimum sequence length"
LOSS_REMAINDER = "remainders shorter than a clip"
LOSS_FACE = "face left the portrait (edge landmark, forehead out)"
LOSS_NOFACE = "no face found"
LOSS_MISSING = "frames missing from the recording"
LOSS_OTHER = "long segments not in the dataset"
LOSS_UNACCOUNTED = "not accounted for (segments.json of an older crop)"
KEPT_CLIPS = "in clips"
CATEGORIES = (KEPT_CLIPS, LOSS_REMAINDER, LOSS_SHORT, LOSS_FACE, LOSS_NOFACE, LOSS_MISSING, LOSS_OTHER,
              LOSS_UNACCOUNTED)

_DROP_CATEGORY = {EDGE: LOSS_FACE, FOREHEAD_OUT: LOSS_FACE, NOFACE: LOSS_NOFACE, MISSING: LOSS_MISSING,
                  "edge": LOSS_FACE}   # "edge": the crop's word before edge landmark / forehead out


@dataclass
class SongYield:
    """One song's frames by where they went (see the module docstring), and its timeline."""

    subject: str
    song: str
    fps: float
    recorded: int
    segments: int
    sequences: int
    clips: int
    lost: dict = field(default_factory=dict)        # category -> frames, every category of CATEGORIES
    timeline: list = field(default_factory=list)    # [(start, end, kind, reason)]: kind 'sequence' | 'short'
                                                    # | 'dropped'; reason: cut reason or drop reason
    recorded_known: bool = True                     # False: segments.json has no frame_count

    def by_category(self) -> dict[str, int]:
        return {KEPT_CLIPS: self.clips, **{c: self.lost.get(c, 0) for c in CATEGORIES[1:]}}

    def cut_reasons(self) -> Counter:
        return Counter(r for _, _, kind, r in self.timeline if kind != "dropped")


def song_yield(subject: str, song: str, segments_json: dict, sequence_spans: list[tuple[int, int]],
               clip_frames_total: int, min_frames: int, fps: float) -> SongYield:
    """SongYield of one song.

    segments_json: the crop stage's segments.json content; sequence_spans: [(start_frame, end_frame)]
    of the dataset's sequences of this song (metadata.csv, recording frame numbers); clip_frames_total:
    frames of this song's clips; min_frames: the shortest segment that becomes a sequence.
    """
    segs = sorted(segments_json.get("segments", []), key=lambda s: int(s["start_frame"]))
    dropped = segments_json.get("dropped") or []
    kept = {(int(a), int(b)) for a, b in sequence_spans}
    seg_frames = sum(int(s["end_frame"]) - int(s["start_frame"]) for s in segs)
    seq_frames = sum(b - a for a, b in kept)
    lost: Counter = Counter()
    timeline = []
    for s in segs:
        a, b = int(s["start_frame"]), int(s["end_frame"])
        if (a, b) in kept:
            kind = "sequence"
        elif b - a < min_frames:
            kind = "short"
            lost[LOSS_SHORT] += b - a
        else:
            kind = "other"
            lost[LOSS_OTHER] += b - a
        timeline.append((a, b, kind, cut_reason(s)))
    for d in dropped:
        a, b = int(d["start_frame"]), int(d["end_frame"])
        lost[_DROP_CATEGORY.get(str(d.get("reason")), LOSS_NOFACE)] += b - a
        timeline.append((a, b, "dropped", str(d.get("reason"))))
    ends = [int(s["end_frame"]) for s in segs] + [int(d["end_frame"]) for d in dropped]
    known = "frame_count" in segments_json
    recorded = int(segments_json["frame_count"]) if known else max(ends, default=0)
    lost[LOSS_REMAINDER] = seq_frames - clip_frames_total
    covered = seg_frames + sum(int(d["end_frame"]) - int(d["start_frame"]) for d in dropped)
    lost[LOSS_UNACCOUNTED] = max(0, recorded - covered)
    return SongYield(subject, song, float(fps), recorded, seg_frames, seq_frames, clip_frames_total,
                     {c: int(lost.get(c, 0)) for c in CATEGORIES[1:]}, sorted(timeline), known)


def totals(songs: list[SongYield]) -> dict[str, int]:
    """Frames recorded / in portrait segments / in sequences / in clips, summed over songs, and
    each loss category."""
    out = {k: sum(getattr(s, k) for s in songs) for k in ("recorded", "segments", "sequences", "clips")}
    out["lost"] = {c: sum(s.lost.get(c, 0) for s in songs) for c in CATEGORIES[1:]}
    return out


def minutes(frames: int, fps: float) -> float:
    return frames / fps / 60.0


def cut_reason_counts(songs: list[SongYield]) -> dict[str, int]:
    """How many segments ended for each reason (CUT_REASONS order; UNRECORDED for older files)."""
    c: Counter = Counter()
    for s in songs:
        c.update(s.cut_reasons())
    order = list(CUT_REASONS) + [UNRECORDED]
    return {r: c[r] for r in sorted(c, key=lambda r: (order.index(r) if r in order else len(order), r))}
