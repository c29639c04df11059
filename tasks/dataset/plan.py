"""Which recorded segments become dataset sequences and clips, and what they are called.

Ids: clip `id<subject>_<song>_<segment>_<clip>`, sequence `id<subject>_<song>_<segment>`.
`<subject>` is the number in the subject folder name (S015 -> 15); `<song>` the leading number of
the song folder (003_country_... -> 3; a folder without one gets its 1-based position among the
subject's songs). `<segment>` numbers a song's kept sequences 0, 1, ... in time order and `<clip>`
numbers a sequence's 8 s clips 0, 1, ... from its start (both counted from 0, as in the official
example id0_10_0_0); metadata.csv maps each id back to the crop stage's segment index and frame span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tasks.capture.raw_layout import read_json
from tasks.common.errors import PipelineInputError


class DatasetPaths(Protocol):
    """The input paths the assembly reads; the stage passes its `tasks.layout.Layout`."""

    def raw_subject_dir(self, subject: str) -> Path: ...
    def raw_song_dir(self, subject: str, song: str) -> Path: ...
    def subject_json(self, subject: str) -> Path: ...
    def song_json(self, subject: str, song: str) -> Path: ...
    def list_songs(self, subject: str) -> list[str]: ...
    def subject_out(self, subject: str) -> Path: ...
    def subject_done(self, subject: str) -> Path: ...
    def scan_shape_npy(self, subject: str) -> Path: ...
    def segment_vocal_wav(self, subject: str, song: str, segment: int) -> Path: ...
    def segment_bgm_wav(self, subject: str, song: str, segment: int) -> Path: ...
    def portrait_dir(self, subject: str, song: str) -> Path: ...
    def motion_npz(self, subject: str, song: str, segment: int) -> Path: ...


# ----------------------------------------------------------------------------- ids
def subject_number(subject: str, subject_dir: Path | None = None) -> int:
    """S015 -> 15 (the digits in the folder name); `subject_dir` is named in the error."""
    digits = re.findall(r"\d+", subject)
    if not digits:
        raise PipelineInputError(
            subject_dir if subject_dir is not None else Path(subject),
            "subject folder name holds no number",
            "name subject folders like S001, S002, ... (the number goes into clip ids)",
        )
    return int(digits[-1])


def song_number(song: str, songs: list[str]) -> int:
    """'003_country_take-me-home' -> 3; without a leading number: 1-based position in `songs`."""
    m = re.match(r"\d+", song)
    return int(m.group()) if m else sorted(songs).index(song) + 1


def clip_id(subj: int, song: int, segment: int, clip: int) -> str:
    return f"id{subj}_{song}_{segment}_{clip}"


def sequence_id(subj: int, song: int, segment: int) -> str:
    return f"id{subj}_{song}_{segment}"


# ----------------------------------------------------------------------------- plan
@dataclass
class SequencePlan:
    """One kept sequence and where its inputs are."""

    seq_id: str
    subject: str
    song: str
    segment_number: int  # counted from 0 among the song's kept sequences
    source_segment: int  # the crop stage's segment index
    start_frame: int  # span in the recording's frame numbering, end exclusive
    end_frame: int
    video: Path
    motion: Path
    vocal: Path
    bgm: Path
    song_dir: Path  # the raw song folder (named when two songs give the same id)
    meta: dict = field(default_factory=dict)
    clip_ids: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


def read_optional_json(path: Path) -> dict:
    """The file's JSON, {} when it is absent (read_json names an invalid file in a PipelineInputError)."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return {}


def subject_meta(subject_json: Path) -> dict:
    s = read_optional_json(subject_json)
    prof = s.get("professional", "")
    return {"gender": str(s.get("gender", "")), "professional": "" if prof == "" else str(bool(prof)).lower()}


def song_meta(song_json: Path) -> dict:
    s = read_optional_json(song_json)
    return {
        "genre": str(s.get("genre", "")),
        "language": str(s.get("language", "")),
        "title": str(s.get("title", "")),
    }


def plan_subject(
    paths: DatasetPaths, subject: str, fps: float, min_seconds: float, clip_frames: int
) -> tuple[list[SequencePlan], int]:
    """(kept sequences, number dropped for being shorter than `min_seconds`) of one subject.

    Reads `subject_done.json`; segments the subject stage already left out count as dropped.
    """
    done_path = paths.subject_done(subject)
    if not done_path.exists():
        raise PipelineInputError(
            done_path,
            "is missing",
            f"build the subject first (luigi --module pipeline "
            f"BuildSubject --subject {subject} --local-scheduler)",
        )
    done = read_json(done_path)
    subj_no = subject_number(subject, paths.raw_subject_dir(subject))
    songs = paths.list_songs(subject) or sorted({s["song"] for s in done["sequences"]})
    smeta = subject_meta(paths.subject_json(subject))
    min_frames = int(round(min_seconds * fps))
    dropped = int(done.get("segments_too_short", 0))
    kept: list[SequencePlan] = []
    per_song: dict[str, int] = {}
    for s in sorted(done["sequences"], key=lambda s: (s["song"], s["start_frame"], s["segment"])):
        frames = int(s["end_frame"]) - int(s["start_frame"])
        if frames < min_frames:
            dropped += 1
            continue
        seg_no = per_song.get(s["song"], 0)  # from 0, as the official id0_10_0_0
        per_song[s["song"]] = seg_no + 1
        song_no = song_number(s["song"], songs)
        seg = int(s["segment"])
        plan = SequencePlan(
            seq_id=sequence_id(subj_no, song_no, seg_no),
            subject=subject,
            song=s["song"],
            segment_number=seg_no,
            source_segment=seg,
            start_frame=int(s["start_frame"]),
            end_frame=int(s["end_frame"]),
            # from the layout, not the paths recorded at build time: processed/ may have moved since
            video=paths.portrait_dir(subject, s["song"]) / Path(s["video"]).name,
            motion=paths.motion_npz(subject, s["song"], seg),
            vocal=paths.segment_vocal_wav(subject, s["song"], seg),
            bgm=paths.segment_bgm_wav(subject, s["song"], seg),
            song_dir=paths.raw_song_dir(subject, s["song"]),
            meta={
                **smeta,
                **song_meta(paths.song_json(subject, s["song"])),
                "subject_number": subj_no,
                "song_number": song_no,
            },
        )
        plan.clip_ids = [clip_id(subj_no, song_no, seg_no, k) for k in range(frames // clip_frames)]
        kept.append(plan)
    return kept, dropped


def check_unique_ids(plans: list[SequencePlan]) -> None:
    seen: dict[str, SequencePlan] = {}
    for p in plans:
        if p.seq_id in seen:
            q = seen[p.seq_id]
            raise PipelineInputError(
                p.song_dir,
                f"gives the same id {p.seq_id} as {q.subject}/{q.song}",
                "give every subject a distinct number and every song of a subject a distinct "
                "leading number",
            )
        seen[p.seq_id] = p
