"""Where every input and output lives: raw/ (the capture) and processed/ (each stage's output).

These paths are the contract between stages (see `processed/README.md`). A stage builds one
`Layout` from `[paths]` (`Layout.from_config()`) and passes the paths it needs to plain code
explicitly; nothing below the stage modules resolves a path on its own.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

from tasks import config
from tasks.capture import raw_layout as R
from tasks.common.errors import PipelineInputError
from tasks.common.settings import PathSettings


def segment_name(index: int) -> str:
    return f"segment_{index:03d}"


@dataclass(frozen=True)
class Layout:
    raw: Path
    processed: Path
    release: Path

    @classmethod
    def from_settings(cls, s: PathSettings) -> "Layout":
        """Relative `[paths]` (the shipped luigi.cfg's `raw`, `processed`) are taken from the working
        directory now, once: every output path, target and guarded delete then names the same file
        however it is compared or joined (a relative root joined twice named nothing, issue 17)."""
        processed = Path(s.processed_dir).absolute()
        release = Path(s.release_dir).absolute() if s.release_dir else processed / "release"
        return cls(Path(s.raw_dir).absolute(), processed, release)

    @classmethod
    def from_config(cls) -> "Layout":
        """The layout of `[paths]` as configured now (command-line overrides included)."""
        return cls.from_settings(config.read(PathSettings))

    # ------------------------------------------------------------------------- raw/
    def raw_subject_dir(self, subject: str) -> Path:
        return self.raw / subject

    def raw_song_dir(self, subject: str, song: str) -> Path:
        return self.raw / subject / "songs" / song

    def subject_json(self, subject: str) -> Path:
        return self.raw_subject_dir(subject) / R.SUBJECT_FILE

    def song_json(self, subject: str, song: str) -> Path:
        return self.raw_song_dir(subject, song) / R.SONG_FILE

    def vocal_wav(self, subject: str, song: str) -> Path:
        return self.raw_song_dir(subject, song) / R.VOCAL_FILE

    def list_subjects(self) -> list[str]:
        return R.list_subjects(self.raw)

    def check_capture(self, subjects: list[str] | None = None) -> list[str]:
        """The capture's subjects; PipelineInputError (one line: what, and the fix) when the capture
        root is missing, holds no subject, or lacks one of `subjects`. Called before any work, so a
        wrong path never builds (and ships) an empty dataset."""
        give_root = ("give the capture root: [paths] raw_dir in luigi.cfg, `singinghead run --raw-dir DIR` "
                     "or `luigi --module pipeline BuildSingingHead --paths-raw-dir DIR`")
        if not self.raw.is_dir():
            raise PipelineInputError(self.raw, "the capture folder does not exist", give_root)
        known = self.list_subjects()
        if not known:
            raise PipelineInputError(self.raw, "the capture folder holds no subject "
                                     "(<subject>/subject.json and <subject>/songs/, see raw/README.md)",
                                     f"copy the capture into it, or {give_root}; the demo capture: "
                                     "`singinghead demo-capture --out DIR`")
        for s in subjects or ():
            if s not in known:
                shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                raise PipelineInputError(self.raw / s, f"no such subject in the capture (subjects: {shown})",
                                         "give one of those subject ids (its folder name), or the capture "
                                         "root that holds it")
        return known

    def list_songs(self, subject: str) -> list[str]:
        return R.list_songs(self.raw_subject_dir(subject))

    def color_video_path(self, subject: str, song: str) -> Path:
        """The song's colour video (`find_color_video`); color.mkv's path when there is none."""
        d = self.raw_song_dir(subject, song)
        return R.find_color_video(d) or d / R.COLOR_VIDEO

    def original_song_path(self, subject: str, song: str) -> Path | None:
        return R.find_original_song(self.raw_song_dir(subject, song))

    def scan_path(self, subject: str) -> Path | None:
        return R.find_scan(self.raw_subject_dir(subject))

    # ------------------------------------------------------------------------- processed/
    def subject_out(self, subject: str) -> Path:
        return self.processed / subject

    def song_out(self, subject: str, song: str) -> Path:
        return self.processed / subject / song

    def validation_report(self, subject: str) -> Path:
        return self.subject_out(subject) / "validation.json"

    def validation_failed_report(self, subject: str) -> Path:
        """Written instead of validation.json when a capture fails, so heavy stages never start."""
        return self.subject_out(subject) / "validation_failed.json"

    def portrait_dir(self, subject: str, song: str) -> Path:
        return self.song_out(subject, song) / "portrait"

    def segments_json(self, subject: str, song: str) -> Path:
        return self.portrait_dir(subject, song) / "segments.json"

    def bgm_wav(self, subject: str, song: str) -> Path:
        return self.song_out(subject, song) / "bgm.wav"

    def bgm_record(self, subject: str, song: str) -> Path:
        return self.song_out(subject, song) / "bgm.json"

    def segment_audio_dir(self, subject: str, song: str) -> Path:
        return self.song_out(subject, song) / "audio"

    def segment_vocal_wav(self, subject: str, song: str, segment: int) -> Path:
        """The dry vocal cut to one portrait segment, at the dataset's rate and channels."""
        return self.segment_audio_dir(subject, song) / f"{segment_name(segment)}_vocal.wav"

    def segment_bgm_wav(self, subject: str, song: str, segment: int) -> Path:
        return self.segment_audio_dir(subject, song) / f"{segment_name(segment)}_bgm.wav"

    def segment_audio_record(self, subject: str, song: str) -> Path:
        return self.segment_audio_dir(subject, song) / "audio.json"

    def frames_dir(self, subject: str, song: str) -> Path:
        return self.song_out(subject, song) / "frames"

    def frames_npz(self, subject: str, song: str, segment: int) -> Path:
        return self.frames_dir(subject, song) / f"{segment_name(segment)}.npz"

    def frames_record(self, subject: str, song: str, segment: int) -> Path:
        return self.frames_npz(subject, song, segment).with_suffix(".json")

    def monocular_shape_npz(self, subject: str) -> Path:
        return self.subject_out(subject) / "monocular_shape.npz"

    def shape_dir(self, subject: str) -> Path:
        return self.subject_out(subject) / "shape"

    def scan_shape_npy(self, subject: str) -> Path:
        """The subject's final FLAME shape (100,) float32: the scan fit, or the monocular mean."""
        return self.shape_dir(subject) / "shape.npy"

    def scan_fit_report(self, subject: str) -> Path:
        return self.shape_dir(subject) / "report.json"

    def motion_dir(self, subject: str, song: str) -> Path:
        return self.song_out(subject, song) / "motion"

    def motion_npz(self, subject: str, song: str, segment: int) -> Path:
        return self.motion_dir(subject, song) / f"{segment_name(segment)}.npz"

    def motion_qc(self, subject: str, song: str, segment: int) -> Path:
        return self.motion_dir(subject, song) / f"{segment_name(segment)}_qc.json"

    def previews_dir(self) -> Path:
        """`singinghead preview`'s own folder: no stage writes or deletes there (a rerun's guarded
        delete of motion/ never meets a preview, nor a preview a stage output)."""
        return self.processed / "previews"

    def motion_preview(self, subject: str, song: str, segment: int) -> Path:
        return self.previews_dir() / f"{subject}_{song}_{segment_name(segment)}.mp4"

    def dataset_preview(self, dataset_id: str) -> Path:
        """The preview of a sequence or clip id of the dataset."""
        return self.previews_dir() / f"{dataset_id}.mp4"

    def subject_done(self, subject: str) -> Path:
        return self.subject_out(subject) / "subject_done.json"

    def dataset_root(self) -> Path:
        return self.processed / "dataset" / "SingingHead"

    def report_dir(self) -> Path:
        return self.processed / "dataset" / "report"

    def release_root(self) -> Path:
        return self.release

    def build_summary_json(self) -> Path:
        """BuildSingingHead's output, written when the whole build (release verified) is done."""
        return self.processed / "build_summary.json"

    def models_dir(self) -> Path:
        return self.processed / "_models"

    # ------------------------------------------------------------------------- crop segments
    def load_segments(self, subject: str, song: str) -> list[dict]:
        """The crop stage's segments (index, start_frame, end_frame, box, video)."""
        return R.read_json(self.segments_json(subject, song))["segments"]

    def find_segment(self, subject: str, song: str, index: int) -> dict:
        """The segment of segments.json with this index, or a PipelineInputError naming the file."""
        seg_file = self.segments_json(subject, song)
        if not seg_file.is_file():
            raise PipelineInputError(seg_file, "no portrait segments for this song", "run CropPortraits first")
        for seg in self.load_segments(subject, song):
            if int(seg["index"]) == int(index):
                return seg
        raise PipelineInputError(seg_file, f"no segment {index}", "pick a segment listed in segments.json")

    def usable_segments(self, subject: str, song: str, min_frames: int) -> list[dict]:
        """Segments long enough to become dataset sequences; shorter ones stay in segments.json only."""
        return [s for s in self.load_segments(subject, song) if (s["end_frame"] - s["start_frame"]) >= min_frames]

    def usable_plan(self, subject: str, min_frames: int) -> list[tuple[str, dict]]:
        """(song, segment) of every usable segment of every song of the subject, songs sorted."""
        return [(song, seg) for song in self.list_songs(subject)
                for seg in self.usable_segments(subject, song, min_frames)]


# ----------------------------------------------------------------------------- reserved names
_PROBE = "subject-name-probe"


@functools.lru_cache(maxsize=1)
def reserved_names() -> dict[str, frozenset[str]]:
    """{'subject': names of processed/'s own entries, 'song': names of processed/<subject>/'s own
    entries}, read off the Layout's methods, so a new output is reserved the day it is added.

    processed/<subject>/<song>/ sits beside the subject's own outputs (shape/, validation.json, ...)
    and processed/<subject>/ beside dataset/, _models/, ...: a song or subject folder of one of these
    names would have a stage replace the other's files.  Compared case-folded (macOS and Windows disks
    ignore case)."""
    lay = Layout(Path("raw"), Path("processed"), Path("processed") / "release")
    subject_out = lay.subject_out(_PROBE)
    subject_level, top_level = set(), {"release"}
    for name, fn in inspect.getmembers(Layout, inspect.isfunction):
        params = list(inspect.signature(fn).parameters)[1:]
        if name.startswith("_") or not all(p == "subject" for p in params):
            continue
        out = fn(lay, _PROBE) if params else fn(lay)
        if not isinstance(out, Path):
            continue
        for parent, names in ((subject_out, subject_level), (lay.processed, top_level)):
            if parent in out.parents:
                first = out.relative_to(parent).parts[0]
                # the stem too: a song 'monocular_shape' beside 'monocular_shape.npz' invites mistakes
                names.update({first.casefold(), Path(first).stem.casefold()})
    top_level.discard(_PROBE.casefold())
    return {"subject": frozenset(top_level), "song": frozenset(subject_level)}


def check_not_reserved(name: str, what: str = "subject") -> str:
    """`name`, or PipelineInputError when its processed/ folder would be one of the pipeline's own
    outputs (`reserved_names`)."""
    reserved = reserved_names().get(what, frozenset())
    if name.casefold() in reserved:
        where = "processed/" if what == "subject" else "processed/<subject>/"
        raise PipelineInputError(f"{what} name {name!r}", f"'{name}' is the name of one of the pipeline's "
                                 f"own outputs in {where} ({', '.join(sorted(reserved))}), so the two "
                                 "would overwrite each other",
                                 f"rename the {what} folder (e.g. with a leading number, 003_{name})")
    return name
