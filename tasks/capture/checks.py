"""Capture validation: check raw/ against the contract before any heavy work (plain code).

Every subject and song is checked and every problem is reported at once, each with the path at
fault and what to do:
- names: subject and song folders must be plain names the dataset ids can use (a subject number
  in the subject folder's name, no two subjects or two songs of a subject on one number);
- JSON: well formed, of bounded size, nesting and numbers, with the required keys and types;
- files are read bounded (tasks.common.bounded): a FIFO, a device or a folder is refused by what
  it is, never waited on; subject, scan and song folders linked outside raw/ are a warning;
- the scan (when present) loads as a triangle mesh with finite vertices and some area (the scan
  fit's loader, .mtl and texture included), its scan.json parses as the fit parses it and names a
  known unit, and without one (with landmarks.json) a unit makes its head a head (a warning
  otherwise: the scan fit refuses it unless [scan_fit] units = free); its landmarks.json (when
  present) holds 68 finite points, and an uncoloured scan has one;
- the video: readable, a colour track of the right rate (size recorded; not 3840x2160 is a
  warning), no rotation or flip to apply on display (refused), first and last frames decode, its
  packets reach the duration in its header, and its timestamps (read by demuxing only) neither
  jump nor leave frames out unnoticed (missing or duplicated frames are a warning with the count
  the crop stage will repair, also in the facts);
- audio readable, without NaN or infinite samples, and the vocal (and original/accompaniment)
  lasting as long as the video at `audio_offset_s`, within `[audio] duration_tolerance_s`;
- the model files set in `[flame]`, `[emoca]`, `[bgm]`, loaded as their stages load them
  (`tasks.capture.model_checks`).

A problem is a dict {path, problem, fix, level} with level 'error' or 'warning'. The stage task
(`tasks.validate.ValidateCapture`) and the `validate` command call `validate_capture(_details)`.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from tasks.capture import raw_layout as R
from tasks.capture.model_checks import check_model_files
from tasks.common.bounded import (DuplicateKey, MAX_JSON_BYTES, MAX_MEDIA_BYTES, check_regular_file,
                                  no_duplicate_keys, read_bounded)
from tasks.common.errors import PipelineInputError
from tasks.common.names import check_name
from tasks.common.settings import AudioSettings, BgmSettings, DatasetSettings, EmocaSettings, FlameSettings
from tasks.dataset.plan import song_number, subject_number
from tasks.media.audio_io import NONFINITE_FIX
from tasks.media.video_io import (display_transform, find_color_stream, frame_timing, open_video, packet_times,
                                  probe_video, stream_fps)
from tasks.scans.scan_io import (LANDMARK_FIX, SCAN_FIX, declared_scale, load_scan, load_scan_landmarks,
                                 scan_units)

GENRES = ("art", "country", "hip-hop", "rock", "folk", "rnb", "theater", "march")
SUBJECT_KEYS = {"subject_id": str, "gender": str, "professional": bool}
SONG_KEYS = {"title": str, "genre": str, "language": str, "audio_offset_s": (int, float)}
EXPECTED_SIZE = (3840, 2160)
FPS_TOLERANCE = 0.01          # relative
EDGE_FRAMES = 3               # frames decoded at each end of the video
TRUNCATION_TOLERANCE_S = 0.5  # packets may stop this much short of the header's duration
# Consecutive colour packets further apart than this are broken timestamps, not dropped frames:
# a recorder under load drops single frames or a few, never seconds of them at once.
MAX_TIMESTAMP_STEP_S = 5.0
MAX_JSON_NUMBER = 1e15        # larger numbers in these files are typing accidents
MAX_OFFSET_S = 3600.0         # |audio_offset_s| beyond an hour is not an offset between two recorders
ERROR, WARNING = "error", "warning"


def _problem(path, problem: str, fix: str, level: str = ERROR) -> dict:
    return {"path": str(path), "problem": problem, "fix": fix, "level": level}


def _from_error(e: PipelineInputError, level: str = ERROR) -> dict:
    return _problem(e.path, e.problem, e.fix, level)


# ----------------------------------------------------------------------------- files
class _BadNumber(ValueError):
    pass


def _parse_int(text: str) -> int:
    # Bounded before int(): a 400-digit number would later overflow float(), and Python refuses
    # to parse more than 4300 digits with a ValueError of its own.
    if len(text.lstrip("-")) > 15:
        raise _BadNumber(f"the number {text[:12]}... has {len(text.lstrip('-'))} digits")
    return int(text)


def _parse_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or abs(v) > MAX_JSON_NUMBER:
        raise _BadNumber(f"the number {text[:24]} is {'too large' if math.isfinite(v) else 'not finite'}")
    return v


def _parse_constant(text: str):
    raise _BadNumber(f"{text} is not a number (JSON has no NaN or Infinity)")


def read_json_checked(path: Path) -> tuple[object, str | None]:
    """(data, None), or (None, what is wrong) for a file that is not small, well-formed JSON with
    finite numbers of sane size. Never raises for the file's content."""
    try:
        text = read_bounded(path, MAX_JSON_BYTES, "a small JSON file").decode("utf-8")
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant, object_pairs_hook=no_duplicate_keys), None
    except PipelineInputError as e:
        return None, e.problem
    except DuplicateKey as e:
        return None, f"not usable JSON: {e} (which one is meant?)"
    except _BadNumber as e:
        return None, f"not usable JSON: {e}"
    except RecursionError:
        return None, "not usable JSON: nested too deeply"
    except UnicodeDecodeError as e:
        return None, f"not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})"
    except (ValueError, OverflowError, MemoryError) as e:   # json.JSONDecodeError is a ValueError
        return None, f"not valid JSON ({str(e)[:200]})"
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"


def check_json(path: Path, keys: dict, problems: list) -> dict | None:
    """Load a JSON object and check its required keys and their types."""
    if not path.is_file():
        problems.append(_problem(path, "file is missing", f"write {path.name} as described in raw/README.md"))
        return None
    data, bad = read_json_checked(path)
    if bad:
        problems.append(_problem(path, bad, "fix the file (a JSON linter shows where): a small JSON object "
                                 "as described in raw/README.md"))
        return None
    if not isinstance(data, dict):
        problems.append(_problem(path, f"must hold a JSON object, not a {type(data).__name__}",
                                 "write {\"key\": value, ...}"))
        return None
    for key, typ in keys.items():
        if key not in data:
            problems.append(_problem(path, f"required key '{key}' is missing", f"add \"{key}\""))
        elif not isinstance(data[key], typ) or (typ in ((int, float),) and isinstance(data[key], bool)):
            want = "number" if isinstance(typ, tuple) else typ.__name__
            problems.append(_problem(path, f"key '{key}' must be a {want}, got {_short(data[key])}",
                                     f"set \"{key}\" to a {want}"))
    return data


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


# ----------------------------------------------------------------------------- names
ID_RULE = ("dataset ids are id<subject>_<song>_<segment>_<clip>: <subject> is the last number in the "
           "subject folder's name (S015 -> 15), <song> the leading number of the song folder's name "
           "(003_country_take-me-home -> 3; without one, its position among the subject's songs)")


def _reserved_problem(path: Path, name: str, what: str, reserved: frozenset[str]) -> dict | None:
    if name.casefold() not in reserved:
        return None
    where = "processed/" if what == "subject" else "processed/<subject>/"
    return _problem(path, f"{what} folder name '{name}' is the name of one of the pipeline's own outputs in "
                    f"{where} ({', '.join(sorted(reserved))}): their files would overwrite each other",
                    f"rename the {what} folder (e.g. with a leading number, 003_{name})")


def check_subject_names(raw_dir: Path, names: list[str], problems: list,
                        reserved: frozenset[str] = frozenset()) -> list[str]:
    """Each subject folder name must be a plain name, not one of `reserved` (processed/'s own entries),
    holding a subject number no other subject folder under `raw_dir` has (AssembleDataset would
    otherwise fail at the end of a build).  Returns the names that are plain folder names (only those
    are opened as paths)."""
    plain = []
    numbers: dict[int, list[str]] = {}
    for other in R.list_subjects(raw_dir):
        try:
            numbers.setdefault(subject_number(other), []).append(other)
        except PipelineInputError:
            pass
    for name in names:
        path = raw_dir / name
        try:
            check_name(name, "subject")
        except PipelineInputError as e:
            problems.append(_problem(path, e.problem, e.fix))
            continue
        clash_reserved = _reserved_problem(path, name, "subject", reserved)
        if clash_reserved:
            problems.append(clash_reserved)
            continue
        plain.append(name)
        try:
            n = subject_number(name, path)
        except PipelineInputError:
            problems.append(_problem(path, f"subject folder name '{name}' holds no number, so it has no "
                                     f"dataset id ({ID_RULE})", "rename the folder like S001, S002, ... "
                                     "(and subject_id in its subject.json)"))
            continue
        clash = [o for o in numbers.get(n, []) if o != name]
        if clash:
            problems.append(_problem(path, f"subject folders '{name}' and {', '.join(repr(c) for c in clash)} "
                                     f"both get subject number {n} ({ID_RULE})",
                                     "rename the folders so each holds its own subject number"))
    return plain


def check_song_names(subject_dir: Path, songs: list[str], problems: list,
                     reserved: frozenset[str] = frozenset()) -> None:
    """Each song folder name must be plain, not one of `reserved` (processed/<subject>/'s own entries)
    and give the song a number no other song of the subject gets; a name without a leading number is
    a warning (its number is its position)."""
    numbers: dict[int, list[str]] = {}
    for song in songs:
        path = subject_dir / "songs" / song
        try:
            check_name(song, "song")
        except PipelineInputError as e:
            problems.append(_problem(path, e.problem, e.fix))
            continue
        clash_reserved = _reserved_problem(path, song, "song", reserved)
        if clash_reserved:
            problems.append(clash_reserved)
        n = song_number(song, songs)
        numbers.setdefault(n, []).append(song)
        if not song[:1].isdigit():
            problems.append(_problem(path, f"song folder name '{song}' has no leading number: its song "
                                     f"number in the dataset ids is its position ({n}), which changes when "
                                     "song folders are added or renamed", "rename it like 003_country_title",
                                     WARNING))
    for n, same in numbers.items():
        for song in same[1:]:
            problems.append(_problem(subject_dir / "songs" / song, f"song folders '{same[0]}' and '{song}' "
                                     f"both get song number {n} ({ID_RULE})",
                                     "rename the song folders so each starts with its own number"))


# ----------------------------------------------------------------------------- scan
def check_scan(subject_dir: Path, problems: list) -> list[str]:
    """The scan mesh (and landmarks.json) loaded as the scan-fit stage loads them."""
    scan_dir = subject_dir / "scan"
    if not scan_dir.is_dir():
        return []
    scans = [scan_dir / n for n in R.SCAN_NAMES if (scan_dir / n).exists()]
    if not scans:
        problems.append(_problem(scan_dir, "scan/ holds neither head.obj nor head.ply; the subject's "
                                 "shape will be the monocular estimate",
                                 "export the light-stage mesh as scan/head.obj or head.ply", WARNING))
    lm = scan_dir / R.SCAN_LANDMARKS
    loaded = {}
    for k, s in enumerate(scans):
        if s.stat().st_size == 0:
            problems.append(_problem(s, "scan file is empty", "re-export the mesh from Metashape"))
            continue
        try:
            scan = loaded[s] = load_scan(s)
            # the scan the fit uses (tasks.capture.raw_layout.find_scan); its units: check_scan_units
            if k == 0 and not scan.has_color and not lm.exists() and not lm.is_symlink():
                problems.append(_problem(lm, f"is missing, and {s.name} has neither a texture nor vertex "
                                         "colours: the scan fit cannot place its landmarks automatically",
                                         f"{LANDMARK_FIX}; or {SCAN_FIX}"))
        except PipelineInputError as e:
            problems.append(_from_error(e))
        except Exception as e:  # noqa: BLE001 - a damaged mesh can break the reader in many ways
            problems.append(_problem(s, f"cannot read the scan ({type(e).__name__}: {e})",
                                     "re-export the mesh from Metashape as OBJ or PLY"))
    landmarks = None
    if lm.exists():
        _, bad = read_json_checked(lm)
        if bad:
            problems.append(_problem(lm, bad, "write scan/landmarks.json as {\"landmarks\": [[x, y, z], ...]} "
                                     "with 68 points"))
        else:
            try:
                landmarks = load_scan_landmarks(lm)
            except PipelineInputError as e:
                problems.append(_from_error(e))
    if scans:
        check_scan_units(scans[0], loaded.get(scans[0]), landmarks, problems)
    return [str(s) for s in scans]


def check_scan_units(scan_path: Path, scan, landmarks, problems: list) -> None:
    """scan.json readable with a known unit; without it, with hand-placed landmarks, a unit that makes
    the head a head (a warning otherwise: the scan fit refuses it unless `[scan_fit] units = free`)."""
    units_json = scan_path.parent / R.SCAN_UNITS
    if units_json.exists():
        _, bad = read_json_checked(units_json)
        if bad:
            problems.append(_problem(units_json, bad, 'write scan/scan.json as {"units": "mm"} (mm, cm, m or in)'))
            return
    try:
        declared, _ = declared_scale(scan_path)
    except PipelineInputError as e:
        problems.append(_from_error(e))
        return
    if declared is not None or scan is None or landmarks is None:
        return
    try:
        scan_units(scan_path, scan.vertices, landmarks, "infer")
    except PipelineInputError as e:
        problems.append(_problem(e.path, f"{e.problem}; the scan fit refuses it unless "
                                 "[scan_fit] units = free", e.fix, WARNING))


# ----------------------------------------------------------------------------- video
def check_video(path: Path, problems: list, want_fps: int) -> dict | None:
    """Open, find the colour track, check rate/size (`want_fps`: [dataset] fps), refuse a display
    rotation/flip, decode the first and last frames, compare the packets' end with the header's
    duration, and read every packet's timestamp (demux only) for jumps and missing/duplicate frames.
    Returns facts about the video (None if unusable); `duration_s` is the timestamps' span when
    they are sound."""
    n0 = len(problems)
    try:
        info = probe_video(path)
    except PipelineInputError as e:
        problems.append(_from_error(e))
        return None
    facts = {"path": str(path), "track": info.title or f"stream {info.stream_index}", "codec": info.codec,
             "width": info.width, "height": info.height, "fps": float(info.fps),
             "duration_s": info.duration_s, "header_duration_s": info.duration_s}
    if abs(float(info.fps) - want_fps) > FPS_TOLERANCE * want_fps:
        problems.append(_problem(path, f"colour track runs at {float(info.fps):.3f} fps, not {want_fps}",
                                 f"record at {want_fps} fps (k4arecorder --rate {want_fps}) or convert "
                                 f"with ffmpeg -r {want_fps}"))
    if (info.width, info.height) != EXPECTED_SIZE:
        problems.append(_problem(path, f"colour track is {info.width}x{info.height}, not "
                                 f"{EXPECTED_SIZE[0]}x{EXPECTED_SIZE[1]} (accepted; faces may be small)",
                                 "record with k4arecorder --color-mode 2160p for full-quality portraits",
                                 WARNING))
    try:
        jumps = check_timing(path, problems, facts)
        with open_video(path) as c:
            s = find_color_stream(c, path)
            tb = Fraction(s.time_base)
            fps = stream_fps(s)
            # First frames must decode.
            got, first = 0, None
            for pkt in c.demux(s):
                for frame in pkt.decode():
                    first = frame if first is None else first
                    got += 1
                if got >= EDGE_FRAMES or pkt.size == 0:
                    break
            if got == 0:
                problems.append(_problem(path, "no frame of the colour track decodes",
                                         "re-copy the recording from the capture machine"))
                return None
            # The crop stage reads stored pixels; a player would rotate/flip them first, so the two
            # would disagree about where the face is. Refused rather than guessed.
            transform = display_transform(s, first)
            if transform:
                problems.append(_problem(path, f"the video carries {transform}: it is meant to be turned "
                                         "before display, which the pipeline does not do",
                                         "re-export it upright without rotation metadata (ffmpeg -i in.mp4 "
                                         "-c:v libx264 -crf 12 out.mkv turns the pixels and drops the flag)"))
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
                facts.setdefault("frame_count", int(round(stream_end * float(fps))))
                if jumps:
                    pass      # a stray timestamp also stretches the header's duration: not truncation
                elif end_s and stream_end < end_s - TRUNCATION_TOLERANCE_S:
                    problems.append(_problem(path, f"video is truncated: frames stop at {stream_end:.2f} s "
                                             f"but the file says {end_s:.2f} s",
                                             "re-copy the complete recording from the capture machine"))
                elif not end_s and "timing_duration_s" not in facts:
                    facts["duration_s"] = stream_end
    except PipelineInputError as e:
        problems.append(_from_error(e))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        problems.append(_problem(path, f"video is corrupt or truncated ({e})",
                                 "re-copy the recording from the capture machine"))
    if any(p["level"] == ERROR for p in problems[n0:]):
        return None
    return facts


def check_timing(path: Path, problems: list, facts: dict) -> bool:
    """Every colour packet's timestamp (no decoding): a jump is an error naming the frame and its
    time; missing or repeated frame times are a warning with the count the crop stage repairs
    (`facts['timing']`, like segments.json's `repeated_frames` / `dropped`). Sound timestamps set
    `facts['duration_s']` and `frame_count`. Returns whether the timestamps jump."""
    times = packet_times(path)
    timing = frame_timing(times, MAX_TIMESTAMP_STEP_S)
    facts["timing"] = timing
    if times.error:
        problems.append(_problem(path, f"video is corrupt or truncated: reading its packets stopped after "
                                 f"{len(times.pts)} frame(s) ({times.error})",
                                 "re-copy the recording from the capture machine"))
    for j in timing["jumps"]:
        problems.append(_problem(path, f"timestamps jump: frame {j['frame']} is stamped at {j['time_s']:.3f} s "
                                 f"after the first frame, the frame before it at {j['previous_time_s']:.3f} s",
                                 "the recording's timestamps are broken: remux it with regenerated "
                                 "timestamps (ffmpeg -fflags +genpts -i in -c copy out.mkv) or re-copy it"))
    if timing["jumps"] or "frame_count" not in timing:
        return bool(timing["jumps"])
    facts["duration_s"] = facts["timing_duration_s"] = timing["duration_s"]
    facts["frame_count"] = timing["frame_count"]
    if timing["repaired_frames"]:
        longest = max(timing["gaps"], key=lambda g: g["missing"], default=None)
        where = (f"; longest gap {longest['missing']} frame(s) after frame {longest['after_frame']} "
                 f"({longest['time_s']:.2f} s)") if longest else ""
        problems.append(_problem(path, f"irregular frame timing: {timing['repaired_frames']} frame(s) will be "
                                 f"repaired by the crop stage ({timing['missing_frames']} missing from the "
                                 f"timestamps in {timing['n_gaps']} gap(s), repeated from the frame before or "
                                 f"ending a segment at long gaps; {timing['duplicate_frames']} with a repeated "
                                 f"timestamp, dropped){where}",
                                 "nothing to do for a few frames; many mean the recorder was overloaded "
                                 "(USB bandwidth, disk speed): check the capture machine", WARNING))
    if times.no_pts:
        problems.append(_problem(path, f"{times.no_pts} colour packet(s) carry no timestamp",
                                 "remux with regenerated timestamps (ffmpeg -fflags +genpts)", WARNING))
    return False


# ----------------------------------------------------------------------------- audio
def check_audio(path: Path, problems: list, what: str) -> dict | None:
    if not path.exists():
        problems.append(_problem(path, f"{what} is missing", f"put the {what} at this path"))
        return None
    try:
        check_regular_file(path, MAX_MEDIA_BYTES, f"the {what}")
    except PipelineInputError as e:
        problems.append(_from_error(e))
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
    bad = _nonfinite_samples(path, info)
    if bad:
        problems.append(_problem(path, f"{what} holds {bad} NaN or infinite sample(s)", NONFINITE_FIX))
        return None
    return {"path": str(path), "sample_rate": int(info.samplerate), "channels": int(info.channels),
            "duration_s": info.frames / info.samplerate}


def _nonfinite_samples(path: Path, info) -> int:
    """How many samples of a float-coded file are NaN or infinite (integer PCM and decoded formats
    cannot hold any: only FLOAT/DOUBLE subtypes are read), streamed in blocks."""
    if info.subtype not in ("FLOAT", "DOUBLE"):
        return 0
    n = 0
    for block in sf.blocks(str(path), blocksize=1 << 16, dtype="float32", always_2d=True):
        n += int(block.size - np.isfinite(block).sum())
    return n


def check_durations(video: dict, audio: dict, offset: float, problems: list, tol: float,
                    longer_level: str = ERROR) -> None:
    """vocal time = video time + offset: the audio must cover [offset, offset + video duration],
    and end within `tol` of it (`longer_level`: how much audio going on after the video weighs;
    the video is blamed, as a short or cut video is the likely cause)."""
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
    elif a_dur > need + tol:
        problems.append(_problem(video["path"], f"video is {v_dur:.2f} s but {Path(path).name} is {a_dur:.2f} s: "
                                 f"at audio_offset_s {offset:.3f} the video should last about "
                                 f"{a_dur - offset:.2f} s (tolerance {tol:g} s)",
                                 "check that this is the complete recording of this take (re-copy it), that "
                                 f"{Path(path).name} belongs to this take, and audio_offset_s in song.json",
                                 longer_level))


# ----------------------------------------------------------------------------- one capture
def validate_subject(subject_dir: Path, fps: int, tolerance_s: float,
                     reserved_songs: frozenset[str] = frozenset()) -> tuple[list[dict], dict]:
    """All problems of one subject folder, and the facts gathered (for the report).

    `fps`: the colour track's required rate ([dataset] fps); `tolerance_s`: how far audio and video
    lengths may disagree ([audio] duration_tolerance_s)."""
    problems: list[dict] = []
    facts: dict = {"subject": subject_dir.name, "songs": {}}
    if not subject_dir.is_dir():
        problems.append(_problem(subject_dir, "subject folder is missing",
                                 "check [paths] raw_dir and the subject id"))
        return problems, facts
    subj = check_json(subject_dir / R.SUBJECT_FILE, SUBJECT_KEYS, problems)
    if subj and isinstance(subj.get("subject_id"), str) and subj["subject_id"] != subject_dir.name:
        problems.append(_problem(subject_dir / R.SUBJECT_FILE,
                                 f"subject_id {_short(subj['subject_id'])} differs from the folder name "
                                 f"'{subject_dir.name}'", "rename the folder or fix subject_id", WARNING))
    for rel, target in R.links_outside(subject_dir.parent, subject_dir.name):
        problems.append(_problem(subject_dir.parent / rel, f"links outside the capture folder, to {target}: "
                                 "read like the others and recorded in the dataset manifest "
                                 "(links_outside_raw)",
                                 "nothing to do if the link is meant (e.g. a capture on another disk); "
                                 "else replace the link by the folder itself", WARNING))
    scans = check_scan(subject_dir, problems)
    if scans:
        facts["scan"] = scans
    songs_dir = subject_dir / "songs"
    songs = R.list_songs(subject_dir)
    if not songs:
        problems.append(_problem(songs_dir, "no song folders", "put each take under songs/<song_id>/"))
    check_song_names(subject_dir, songs, problems, reserved_songs)
    tol = tolerance_s
    for song_dir in (songs_dir / s for s in songs):
        sf_ = {}
        facts["songs"][song_dir.name] = sf_
        song = check_json(song_dir / R.SONG_FILE, SONG_KEYS, problems)
        if song and isinstance(song.get("genre"), str) and song["genre"] not in GENRES:
            problems.append(_problem(song_dir / R.SONG_FILE, f"genre {_short(song['genre'])} is not one of "
                                     f"{', '.join(GENRES)}", "use one of the 8 SingingHead genres"))
        offset = song.get("audio_offset_s") if song else None
        offset = float(offset) if isinstance(offset, (int, float)) and not isinstance(offset, bool) else None
        if offset is not None and not abs(offset) <= MAX_OFFSET_S:
            problems.append(_problem(song_dir / R.SONG_FILE, f"audio_offset_s = {offset:g} s is not an offset "
                                     f"between two recorders of one take (at most {MAX_OFFSET_S:g} s either way)",
                                     "set audio_offset_s to the seconds the microphone started before the "
                                     "camera (negative if after)"))
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
                    # The dry vocal is the take's clock; the song files may run past the take's end
                    # without harm (only the video's span is cut from them): a warning there.
                    check_durations(video, sf_[key], offset, problems, tol,
                                    ERROR if key == "vocal" else WARNING)
    return problems, facts


def validate_capture(raw_dir: str | Path, subjects: list[str] | None, dataset: DatasetSettings,
                     audio: AudioSettings, flame: FlameSettings, emoca: EmocaSettings,
                     bgm: BgmSettings, reserved: dict[str, frozenset[str]] | None = None) -> list[dict]:
    """Every problem of the capture under raw_dir (of the given subjects; None: all) and of the
    configured model files, each a dict {path, problem, fix, level} with level 'error' or 'warning'.

    `dataset.fps` is the required video rate, `audio.duration_tolerance_s` the audio's slack;
    `flame`, `emoca`, `bgm` name the model files to load (empty settings: the stand-ins, nothing
    to check); `reserved` {'subject': ..., 'song': ...} the folder names processed/ uses itself
    (`tasks.layout.reserved_names`)."""
    return validate_capture_details(raw_dir, subjects, dataset, audio, flame, emoca, bgm, reserved)[0]


def validate_capture_details(raw_dir: str | Path, subjects: list[str] | None, dataset: DatasetSettings,
                             audio: AudioSettings, flame: FlameSettings, emoca: EmocaSettings,
                             bgm: BgmSettings, reserved: dict[str, frozenset[str]] | None = None
                             ) -> tuple[list[dict], dict]:
    """validate_capture's problems and the facts gathered per subject (for the report)."""
    raw_dir = Path(raw_dir)
    problems = check_model_files(flame, emoca, bgm)
    if not raw_dir.is_dir():
        return problems + [_problem(raw_dir, "capture folder does not exist",
                                    "give the capture root: `singinghead validate DIR`, or [paths] "
                                    "raw_dir in luigi.cfg")], {}
    names = subjects if subjects is not None else R.list_subjects(raw_dir)
    if not names:
        return problems + [_problem(raw_dir, "no subject folders (with subject.json or songs/)",
                                    "lay the capture out as in raw/README.md")], {}
    facts = {}
    reserved = reserved or {}
    plain = check_subject_names(raw_dir, list(names), problems, reserved.get("subject", frozenset()))
    for name in plain:
        p, f = validate_subject(raw_dir / name, dataset.fps, audio.duration_tolerance_s,
                                reserved.get("song", frozenset()))
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
