"""Capture validation: check raw/ against the contract before any heavy work (plain code).

Every subject and song is checked and every problem is reported at once, each with the path at
fault and what to do: files present, JSON well formed, the video readable with a colour track
of the right rate (size recorded; not 3840x2160 is a warning), the video complete (its first and
last frames decode and its packets reach the duration in its header), audio readable, and the
audio long enough to cover the video at `audio_offset_s`. The scan, when present, is only
checked to exist and be non-empty here; loading it is the scan-fit stage's job.

A problem is a dict {path, problem, fix, level} with level 'error' or 'warning'. The stage task
(`tasks.validate.ValidateCapture`) and the `validate` command call `validate_capture(_details)`.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import soundfile as sf

from tasks.capture import raw_layout as R
from tasks.common.errors import PipelineInputError
from tasks.common.settings import AudioSettings, DatasetSettings
from tasks.media.video_io import find_color_stream, open_video, probe_video, stream_fps

GENRES = ("art", "country", "hip-hop", "rock", "folk", "rnb", "theater", "march")
SUBJECT_KEYS = {"subject_id": str, "gender": str, "professional": bool}
SONG_KEYS = {"title": str, "genre": str, "language": str, "audio_offset_s": (int, float)}
EXPECTED_SIZE = (3840, 2160)
FPS_TOLERANCE = 0.01          # relative
EDGE_FRAMES = 3               # frames decoded at each end of the video
TRUNCATION_TOLERANCE_S = 0.5  # packets may stop this much short of the header's duration
ERROR, WARNING = "error", "warning"


def _problem(path, problem: str, fix: str, level: str = ERROR) -> dict:
    return {"path": str(path), "problem": problem, "fix": fix, "level": level}


def _from_error(e: PipelineInputError, level: str = ERROR) -> dict:
    return _problem(e.path, e.problem, e.fix, level)


# ----------------------------------------------------------------------------- files
def check_json(path: Path, keys: dict, problems: list) -> dict | None:
    """Load a JSON object and check its required keys and their types."""
    if not path.is_file():
        problems.append(_problem(path, "file is missing", f"write {path.name} as described in raw/README.md"))
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(_problem(path, f"not valid JSON ({e})", "fix the syntax (a JSON linter shows where)"))
        return None
    if not isinstance(data, dict):
        problems.append(_problem(path, "must hold a JSON object", "write {\"key\": value, ...}"))
        return None
    for key, typ in keys.items():
        if key not in data:
            problems.append(_problem(path, f"required key '{key}' is missing", f"add \"{key}\""))
        elif not isinstance(data[key], typ) or (typ in ((int, float),) and isinstance(data[key], bool)):
            want = "number" if isinstance(typ, tuple) else typ.__name__
            problems.append(_problem(path, f"key '{key}' must be a {want}, got {data[key]!r}",
                                     f"set \"{key}\" to a {want}"))
    return data


# ----------------------------------------------------------------------------- video
def check_video(path: Path, problems: list, want_fps: int) -> dict | None:
    """Open, find the colour track, check rate/size (`want_fps`: [dataset] fps), decode the first and
    last frames, and compare the packets' end with the header's duration. Returns facts about the
    video (None if unusable)."""
    n0 = len(problems)
    try:
        info = probe_video(path)
    except PipelineInputError as e:
        problems.append(_from_error(e))
        return None
    facts = {"path": str(path), "track": info.title or f"stream {info.stream_index}", "codec": info.codec,
             "width": info.width, "height": info.height, "fps": float(info.fps),
             "duration_s": info.duration_s}
    if abs(float(info.fps) - want_fps) > FPS_TOLERANCE * want_fps:
        problems.append(_problem(path, f"colour track runs at {float(info.fps):.3f} fps, not {want_fps}",
                                 f"record at {want_fps} fps (k4arecorder --rate {want_fps}) or convert "
                                 f"with ffmpeg -r {want_fps}"))
    if (info.width, info.height) != EXPECTED_SIZE:
        problems.append(_problem(path, f"colour track is {info.width}x{info.height}, not "
                                 f"{EXPECTED_SIZE[0]}x{EXPECTED_SIZE[1]} (accepted; faces may be small)",
                                 "record with --color-mode 2160p for full-quality portraits", WARNING))
    try:
        with open_video(path) as c:
            s = find_color_stream(c, path)
            tb = Fraction(s.time_base)
            fps = stream_fps(s)
            # First frames must decode.
            got = 0
            for pkt in c.demux(s):
                for _ in pkt.decode():
                    got += 1
                if got >= EDGE_FRAMES or pkt.size == 0:
                    break
            if got == 0:
                problems.append(_problem(path, "no frame of the colour track decodes",
                                         "re-copy the recording from the capture machine"))
                return None
            first_pts = s.start_time if s.start_time is not None else 0
            # Last frames: seek close to the end (cheap: the index, not every packet) and decode.
            end_s = info.duration_s
            if end_s:
                target = first_pts + int((max(end_s - 1.0, 0.0)) / tb)
                c.seek(target, stream=s, backward=True, any_frame=False)
            last_pts, tail_frames = None, 0
            for pkt in c.demux(s):
                if pkt.pts is not None:
                    last_pts = pkt.pts if last_pts is None else max(last_pts, pkt.pts)
                for _ in pkt.decode():
                    tail_frames += 1
            if tail_frames == 0:
                problems.append(_problem(path, "the last frames of the colour track do not decode",
                                         "the file is incomplete: re-copy the recording"))
            if last_pts is not None:
                stream_end = float((last_pts - first_pts) * tb) + 1.0 / float(fps)
                facts["packets_end_s"] = stream_end
                facts["frame_count"] = int(round(stream_end * float(fps)))
                if end_s and stream_end < end_s - TRUNCATION_TOLERANCE_S:
                    problems.append(_problem(path, f"video is truncated: frames stop at {stream_end:.2f} s "
                                             f"but the file says {end_s:.2f} s",
                                             "re-copy the complete recording from the capture machine"))
                elif not end_s:
                    facts["duration_s"] = stream_end
    except PipelineInputError as e:
        problems.append(_from_error(e))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        problems.append(_problem(path, f"video is corrupt or truncated ({e})",
                                 "re-copy the recording from the capture machine"))
    if any(p["level"] == ERROR for p in problems[n0:]):
        return None
    return facts


# ----------------------------------------------------------------------------- audio
def check_audio(path: Path, problems: list, what: str) -> dict | None:
    if not path.is_file():
        problems.append(_problem(path, f"{what} is missing", f"put the {what} at this path"))
        return None
    try:
        info = sf.info(str(path))
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        problems.append(_problem(path, f"{what} is not readable audio ({e})",
                                 "re-export it as WAV/FLAC (or MP3) that libsndfile opens"))
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        problems.append(_problem(path, f"{what} holds no samples", "re-export the recording"))
        return None
    return {"path": str(path), "sample_rate": int(info.samplerate), "channels": int(info.channels),
            "duration_s": info.frames / info.samplerate}


def check_durations(video: dict, audio: dict, offset: float, problems: list, tol: float) -> None:
    """vocal time = video time + offset: the audio must cover [offset, offset + video duration]."""
    v_dur = video.get("duration_s")
    if not v_dur:
        return
    a_dur = audio["duration_s"]
    path = audio["path"]
    if offset < -tol:
        problems.append(_problem(path, f"audio_offset_s = {offset:.3f}: the first {-offset:.2f} s of video "
                                 "have no audio", "check audio_offset_s in song.json (vocal time = video "
                                 "time + offset)"))
    need = v_dur + offset
    if need > a_dur + tol:
        problems.append(_problem(path, f"audio is {a_dur:.2f} s but the video ({v_dur:.2f} s) at offset "
                                 f"{offset:.3f} s needs {need:.2f} s", "check audio_offset_s in song.json "
                                 "and that the audio file is complete"))


# ----------------------------------------------------------------------------- one capture
def validate_subject(subject_dir: Path, fps: int, tolerance_s: float) -> tuple[list[dict], dict]:
    """All problems of one subject folder, and the facts gathered (for the report).

    `fps`: the colour track's required rate ([dataset] fps); `tolerance_s`: how far audio may fall
    short of the video ([audio] duration_tolerance_s)."""
    problems: list[dict] = []
    facts: dict = {"subject": subject_dir.name, "songs": {}}
    if not subject_dir.is_dir():
        problems.append(_problem(subject_dir, "subject folder is missing",
                                 "check [paths] raw_dir and the subject id"))
        return problems, facts
    subj = check_json(subject_dir / R.SUBJECT_FILE, SUBJECT_KEYS, problems)
    if subj and isinstance(subj.get("subject_id"), str) and subj["subject_id"] != subject_dir.name:
        problems.append(_problem(subject_dir / R.SUBJECT_FILE,
                                 f"subject_id '{subj['subject_id']}' differs from the folder name "
                                 f"'{subject_dir.name}'", "rename the folder or fix subject_id", WARNING))
    scan_dir = subject_dir / "scan"
    if scan_dir.is_dir():
        scans = [scan_dir / n for n in R.SCAN_NAMES if (scan_dir / n).exists()]
        if not scans:
            problems.append(_problem(scan_dir, "scan/ holds neither head.obj nor head.ply; the subject's "
                                     "shape will be the monocular estimate",
                                     "export the light-stage mesh as scan/head.obj or head.ply", WARNING))
        for s in scans:
            if s.stat().st_size == 0:
                problems.append(_problem(s, "scan file is empty", "re-export the mesh from Metashape"))
        facts["scan"] = [str(s) for s in scans]
    songs_dir = subject_dir / "songs"
    songs = sorted(p for p in songs_dir.iterdir() if p.is_dir()) if songs_dir.is_dir() else []
    if not songs:
        problems.append(_problem(songs_dir, "no song folders", "put each take under songs/<song_id>/"))
    tol = tolerance_s
    for song_dir in songs:
        sf_ = {}
        facts["songs"][song_dir.name] = sf_
        song = check_json(song_dir / R.SONG_FILE, SONG_KEYS, problems)
        if song and isinstance(song.get("genre"), str) and song["genre"] not in GENRES:
            problems.append(_problem(song_dir / R.SONG_FILE, f"genre '{song['genre']}' is not one of "
                                     f"{', '.join(GENRES)}", "use one of the 8 SingingHead genres"))
        offset = song.get("audio_offset_s") if song else None
        offset = float(offset) if isinstance(offset, (int, float)) and not isinstance(offset, bool) else None
        if offset is not None and not math.isfinite(offset):
            problems.append(_problem(song_dir / R.SONG_FILE, "audio_offset_s is not finite",
                                     "set a number"))
            offset = None
        video_path = R.find_color_video(song_dir)
        video = None
        if video_path is None:
            problems.append(_problem(song_dir / R.COLOR_VIDEO, "colour video is missing",
                                     "copy the Kinect recording here as color.mkv "
                                     "(or any video ffmpeg reads)"))
        else:
            video = check_video(video_path, problems, fps)
            sf_["video"] = video
        vocal = check_audio(song_dir / R.VOCAL_FILE, problems, "dry vocal recording")
        sf_["vocal"] = vocal
        acc_path = song_dir / R.ACCOMPANIMENT_FILE
        if acc_path.exists():
            sf_["accompaniment"] = check_audio(acc_path, problems, "accompaniment")
        originals = [song_dir / n for n in R.ORIGINAL_STEMS if (song_dir / n).exists()]
        if originals:
            sf_["original"] = check_audio(originals[0], problems, "original song")
        elif not acc_path.exists():
            problems.append(_problem(song_dir / "original.wav", "neither the original song "
                                     "(original.wav|flac|mp3) nor accompaniment.wav is present",
                                     "add the original song (vocals included) so the BGM can be separated"))
        if video and offset is not None:
            for key in ("vocal", "accompaniment", "original"):
                if sf_.get(key):
                    check_durations(video, sf_[key], offset, problems, tol)
    return problems, facts


def validate_capture(raw_dir: str | Path, subjects: list[str] | None, dataset: DatasetSettings,
                     audio: AudioSettings) -> list[dict]:
    """Every problem of the capture under raw_dir (of the given subjects; None: all), each a dict
    {path, problem, fix, level} with level 'error' or 'warning'.

    `dataset.fps` is the required video rate, `audio.duration_tolerance_s` the audio's slack."""
    return validate_capture_details(raw_dir, subjects, dataset, audio)[0]


def validate_capture_details(raw_dir: str | Path, subjects: list[str] | None, dataset: DatasetSettings,
                             audio: AudioSettings) -> tuple[list[dict], dict]:
    """validate_capture's problems and the facts gathered per subject (for the report)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        return [_problem(raw_dir, "capture folder does not exist",
                         "check [paths] raw_dir / --paths-raw-dir")], {}
    names = subjects if subjects is not None else R.list_subjects(raw_dir)
    if not names:
        return [_problem(raw_dir, "no subject folders (with subject.json or songs/)",
                         "lay the capture out as in raw/README.md")], {}
    problems, facts = [], {}
    for name in names:
        p, f = validate_subject(raw_dir / name, dataset.fps, audio.duration_tolerance_s)
        problems += p
        facts[name] = f
    return problems, facts


def errors_of(problems: list[dict]) -> list[dict]:
    return [p for p in problems if p.get("level", ERROR) == ERROR]


# ----------------------------------------------------------------------------- report
def format_problems(problems: list[dict]) -> str:
    lines = []
    for p in problems:
        lines.append(f"{p['level'].upper():7s} {p['path']}: {p['problem']}")
        if p.get("fix"):
            lines.append(f"        fix: {p['fix']}")
    return "\n".join(lines)
