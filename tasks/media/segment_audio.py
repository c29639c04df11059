"""Sample-accurate dry vocal and BGM for every portrait segment of a song.

Time bases (CONTRACTS.md): vocal time = video time + `audio_offset_s` (song.json). The original
song, and so `bgm.wav` (separated from it, or the capture's accompaniment.wav), is assumed to be
aligned with vocal.wav -- the singer performs along with it and the demo capture
(demo.capture) writes it that way -- so the same offset applies to both.

Sample spans: a segment of T frames that starts at source frame `start_frame` gets
round(T*sr/fps) samples, and frame t of the segment (t from 0) spans samples
[round(t*sr/fps), round((t+1)*sr/fps)) of its wavs, as for every motion file in the dataset.
Its first sample is video time round(start_frame*sr/fps)/sr; every segment of a song is cut from
one resampled track shifted by the whole number of samples round(offset*sr), so spacing between
segments is exact and the only rounding is half a dataset sample (31 us at 16 kHz) at each start.

Plain code: the `SegmentAudio` stage (`tasks.segment_audio`) passes the paths (`SongAudioFiles`)
and the `[audio]`/`[dataset]` settings.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from tasks.capture.raw_layout import read_json
from tasks.common.atomic import atomic_dir, file_sha256, write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.progress import Progress
from tasks.common.settings import AudioSettings, DatasetSettings, recorded_params
from tasks.common.timebase import exact_fraction, frame_sample
from tasks.media.audio_io import convert, cut, level_stats, read_audio, write_wav

log = logging.getLogger("singinghead")

SEGMENT_SUBTYPE = "FLOAT"       # float32: no requantisation, BGM peaks above full scale kept
MAX_OFFSET_S = 10.0             # a larger |audio_offset_s| is a typo or a wrong file, not a late start
SILENT_PEAK_DBFS = -90.0        # below this the microphone recorded nothing (error)
QUIET_PEAK_DBFS = -40.0         # below this the gain was far too low (warning)
CLIP_LEVEL = 0.999              # |sample| at or above this counts as clipped
CLIP_FRACTION_WARN = 1e-4       # more than 0.01 % of samples clipped (warning)


# ----------------------------------------------------------------------------- spans
def frame_sample_edges(n_frames: int, sr: int, fps: float) -> np.ndarray:
    """(n_frames+1,) int64: frame t of a segment spans samples [edges[t], edges[t+1])."""
    return np.array([frame_sample(t, sr, fps) for t in range(n_frames + 1)], dtype=np.int64)


def segment_span(start_frame: int, end_frame: int, sr: int, fps: float) -> tuple[int, int]:
    """(first sample in video time, number of samples) of source frames [start_frame, end_frame)."""
    return frame_sample(start_frame, sr, fps), frame_sample(end_frame - start_frame, sr, fps)


def offset_samples(offset_s: float, sr: int) -> int:
    """round(offset*sr), halves up: vocal/BGM sample = video sample + this."""
    return math.floor(exact_fraction(offset_s) * sr + Fraction(1, 2))


# ----------------------------------------------------------------------------- checks
def check_vocal_levels(x: np.ndarray, path: Path) -> tuple[dict, list[str]]:
    """Level stats of the microphone track and warnings; a silent track is an error."""
    stats = level_stats(x, CLIP_LEVEL)
    peak_db = stats["peak_dbfs"]
    if peak_db is None or peak_db < SILENT_PEAK_DBFS:
        raise PipelineInputError(path, f"the microphone track is silent (peak "
                                 f"{'-inf' if peak_db is None else f'{peak_db:.1f}'} dBFS)",
                                 "the wrong input or a muted channel was recorded: export the vocal take again")
    warnings = []
    if peak_db < QUIET_PEAK_DBFS:
        warnings.append(f"{path}: microphone track is very quiet (peak {peak_db:.1f} dBFS): check the input gain")
    if stats["clipped_fraction"] > CLIP_FRACTION_WARN:
        warnings.append(f"{path}: microphone track is clipped ({100 * stats['clipped_fraction']:.3f} % of samples "
                        f"at full scale): the input gain was too high; the vocal is distorted")
    return stats, warnings


def check_timing(offset_s: float, vocal_s: float, video_s: float, tolerance_s: float,
                 vocal_path: Path, song_json: Path) -> float:
    """Offset and length sanity; returns the length mismatch (vocal end - video end, seconds).

    The vocal covers video time [-offset, vocal_s - offset]; its end should meet the video's end
    within `tolerance_s` (a take recorded to a different file, or a wrong offset, does not).
    """
    if not math.isfinite(offset_s) or abs(offset_s) > MAX_OFFSET_S:
        raise PipelineInputError(song_json, f"audio_offset_s = {offset_s} s is beyond +-{MAX_OFFSET_S} s",
                                 "measure the offset again (vocal time = video time + offset, in seconds)")
    if offset_s >= vocal_s or -offset_s >= video_s:
        raise PipelineInputError(song_json, f"audio_offset_s = {offset_s} s puts the whole video outside "
                                 f"{vocal_path.name} ({vocal_s:.3f} s of audio, {video_s:.3f} s of video)",
                                 "measure the offset again (vocal time = video time + offset)")
    mismatch = (vocal_s - offset_s) - video_s
    if abs(mismatch) > tolerance_s:
        raise PipelineInputError(vocal_path, f"the vocal ends {abs(mismatch):.3f} s "
                                 f"{'after' if mismatch > 0 else 'before'} the video ({vocal_s:.3f} s of audio, "
                                 f"offset {offset_s} s, {video_s:.3f} s of video; tolerance {tolerance_s} s)",
                                 "check that vocal.wav is the take of this video and audio_offset_s is right, "
                                 "or raise [audio] duration_tolerance_s")
    return mismatch


# ----------------------------------------------------------------------------- one song
@dataclass(frozen=True)
class SongAudioFiles:
    """What one song's cut reads and writes (the stage takes them from the layout)."""
    segments_json: Path      # the crop stage's segments.json (segments, fps, frame_count)
    song_json: Path          # raw song.json (audio_offset_s)
    vocal_wav: Path          # raw vocal.wav (the dry vocal)
    bgm_wav: Path            # SeparateBGM's bgm.wav
    bgm_record: Path         # its bgm.json (the method is recorded when present)
    out_dir: Path            # the audio/ folder, written whole
    out_record: Path         # audio.json
    segment_wavs: Callable[[int], tuple[Path, Path]]   # segment index -> (vocal, bgm) wav in out_dir


def _song_offset(song_json: Path) -> float:
    try:
        meta = read_json(song_json)
    except FileNotFoundError:
        raise PipelineInputError(song_json, "song.json is missing", "write song.json with audio_offset_s") from None
    off = meta.get("audio_offset_s", 0.0)
    if not isinstance(off, (int, float)) or isinstance(off, bool):
        raise PipelineInputError(song_json, f"audio_offset_s is {off!r}, not a number of seconds",
                                 "set audio_offset_s to a number (0.0 when in sync)")
    return float(off)


def segment_song_audio(files: SongAudioFiles, acfg: AudioSettings, dcfg: DatasetSettings, subject: str, song: str,
                       task=None) -> dict:
    """Cut vocal and BGM for every segment of segments.json; writes the audio/ folder and audio.json.

    `acfg`: `[audio]` (rate, channels, duration tolerance); `dcfg`: `[dataset]` (fps when
    segments.json has none, min_sequence_seconds); `subject`/`song` name the record; `task`: the
    Luigi task to report progress to, or None. Returns the record.
    """
    sr, channels = int(acfg.sample_rate), int(acfg.channels)
    seg_doc = read_json(files.segments_json)
    segments = seg_doc["segments"]
    fps = float(seg_doc.get("fps") or dcfg.fps)
    song_json = files.song_json
    offset = _song_offset(song_json)
    vocal_path = files.vocal_wav
    bgm_path = files.bgm_wav

    vocal, vsr = read_audio(vocal_path)
    vocal_stats, warnings = check_vocal_levels(vocal, vocal_path)
    video_frames = int(seg_doc.get("frame_count") or max([s["end_frame"] for s in segments], default=0))
    video_s = video_frames / fps
    mismatch = check_timing(offset, vocal.shape[0] / vsr, video_s, float(acfg.duration_tolerance_s),
                            vocal_path, song_json)
    for w in warnings:
        log.warning("CAPTURE PROBLEM %s", w)
    bgm, bsr = read_audio(bgm_path)
    vocal_ds = convert(vocal, vsr, sr, channels)
    bgm_ds = convert(bgm, bsr, sr, channels)
    off_n = offset_samples(offset, sr)
    min_frames = round(dcfg.min_sequence_seconds * fps)

    rows, cuts = [], []
    for seg in segments:
        i, s, e = int(seg["index"]), int(seg["start_frame"]), int(seg["end_frame"])
        a0, n = segment_span(s, e, sr, fps)
        what = f"segment {i} (video frames [{s}, {e}) = {s / fps:.3f}-{e / fps:.3f} s, offset {offset} s)"
        # Both cut (and checked) before anything is written: a coverage error leaves no partial folder.
        v = cut(vocal_ds, a0 + off_n, a0 + off_n + n, vocal_path, sr, what)
        b = cut(bgm_ds, a0 + off_n, a0 + off_n + n, bgm_path, sr, what)
        cuts.append((i, v, b))
        rows.append({"index": i, "start_frame": s, "end_frame": e, "frames": e - s, "usable": (e - s) >= min_frames,
                     "samples": n, "video_samples": [a0, a0 + n], "source_samples": [a0 + off_n, a0 + off_n + n],
                     "source_seconds": [(a0 + off_n) / sr, (a0 + off_n + n) / sr],
                     "vocal": files.segment_wavs(i)[0].name, "bgm": files.segment_wavs(i)[1].name})

    out_dir = files.out_dir
    prog = Progress(task, max(len(cuts), 1), f"audio {song}")
    with atomic_dir(out_dir) as tmp:       # the folder appears whole: no stale segments of an older crop
        for i, v, b in cuts:
            vocal_out, bgm_out = files.segment_wavs(i)
            write_wav(tmp / vocal_out.name, v, sr, SEGMENT_SUBTYPE)
            write_wav(tmp / bgm_out.name, b, sr, SEGMENT_SUBTYPE)
            prog.update(1)
    prog.close()
    for row in rows:
        row["vocal_sha256"] = file_sha256(out_dir / row["vocal"])
        row["bgm_sha256"] = file_sha256(out_dir / row["bgm"])

    bgm_rec_path = files.bgm_record
    bgm_method = read_json(bgm_rec_path).get("method") if bgm_rec_path.is_file() else None
    params = recorded_params(acfg)
    params["dataset"] = {"fps": dcfg.fps, "min_sequence_seconds": dcfg.min_sequence_seconds}
    params["fixed"] = {"subtype": SEGMENT_SUBTYPE, "max_offset_s": MAX_OFFSET_S, "silent_peak_dbfs": SILENT_PEAK_DBFS,
                       "quiet_peak_dbfs": QUIET_PEAK_DBFS, "clip_level": CLIP_LEVEL,
                       "clip_fraction_warn": CLIP_FRACTION_WARN,
                       "resampler": "scipy.signal.resample_poly (channels first: mean downmix / copy upmix)"}
    record = {
        "subject": subject, "song": song, "sample_rate": sr, "channels": channels, "subtype": SEGMENT_SUBTYPE,
        "fps": fps,
        "frame_to_samples": "frame t of a segment (t from 0) spans samples [round(t*sr/fps), round((t+1)*sr/fps)) "
                            "of its wavs; a segment of T frames holds round(T*sr/fps) samples and starts at video "
                            "sample round(start_frame*sr/fps)",
        "audio_offset_s": offset, "offset_samples": off_n,
        "time_base": "file time = video time + audio_offset_s for vocal.wav and for bgm.wav (the original song / "
                     "accompaniment is assumed aligned with vocal.wav, as the demo capture writes it)",
        "video": {"frame_count": video_frames, "duration_s": video_s},
        "vocal": {"path": str(vocal_path), "sha256": file_sha256(vocal_path), "sample_rate": vsr,
                  "channels": int(vocal.shape[1]), "frames": int(vocal.shape[0]), "duration_s": vocal.shape[0] / vsr,
                  "levels": vocal_stats, "end_minus_video_end_s": mismatch},
        "bgm": {"path": str(bgm_path), "sha256": file_sha256(bgm_path), "sample_rate": bsr,
                "channels": int(bgm.shape[1]), "frames": int(bgm.shape[0]), "method": bgm_method},
        "warnings": warnings,
        "segments": rows,
        "params": params,
    }
    write_json_atomic(files.out_record, record)
    return record
