"""Reading, converting, cutting and writing audio; no Luigi, no file layout.

Arrays are `(T, C)` float32 ("frames x channels", soundfile's order) unless a docstring says
otherwise. Every writer goes through `tasks.common.atomic.atomic_path` with an explicit format, and
float WAVs are written without libsndfile's PEAK chunk (it carries a wall-clock timestamp, so
the same samples would give different bytes on a rerun).
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tasks.common.atomic import atomic_path
from tasks.common.bounded import MAX_MEDIA_BYTES, check_regular_file
from tasks.common.errors import PipelineInputError

# libsndfile's SFC_SET_ADD_PEAK_CHUNK (sndfile.h); soundfile does not wrap it.
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) of an audio file, without reading its samples."""
    path = Path(path)
    check_regular_file(path, MAX_MEDIA_BYTES, "the audio file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError for unreadable files
        raise PipelineInputError(path, f"cannot read audio header ({e})",
                                 "re-export the file as WAV/FLAC (or MP3) that libsndfile can open") from e
    return int(info.frames), int(info.samplerate), int(info.channels)


NONFINITE_FIX = ("re-export the recording as 16/24-bit PCM WAV or FLAC (a float file with NaN or "
                 "infinite samples comes from a broken export or effect chain)")


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any libsndfile format (WAV, FLAC, OGG, MP3) -> ((T, C) float32, sample_rate).

    Integer PCM is scaled to [-1, 1) by soundfile; float files keep their values (no clipping).
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(path, "audio file is missing", "put the recording at this path")
    check_regular_file(path, MAX_MEDIA_BYTES, "the audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise PipelineInputError(path, f"cannot decode audio ({e})",
                                 "re-export the file as WAV/FLAC (or MP3) that libsndfile can open") from e
    if data.shape[0] == 0:
        raise PipelineInputError(path, "audio file holds no samples", "re-export the recording")
    if not np.isfinite(data).all():
        raise PipelineInputError(path, f"audio holds {int((~np.isfinite(data)).sum())} NaN or infinite "
                                 "sample(s)", NONFINITE_FIX)
    return np.ascontiguousarray(data), int(sr)


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(T, C) -> (T, channels): downmix by the mean, or copy a mono track to every channel.

    More channels than asked (and not a downmix to mono) keeps the first ones, as demucs does.
    """
    c = x.shape[1]
    if c == channels:
        return x
    if channels == 1:
        return x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    if c == 1:
        return np.repeat(x, channels, axis=1)
    if c > channels:
        return np.ascontiguousarray(x[:, :channels])
    raise ValueError(f"cannot make {channels} channels from {c} (not mono)")


def resampled_length(n: int, sr_in: int, sr_out: int) -> int:
    """Length `resample` returns for n input samples: ceil(n * sr_out / sr_in)."""
    return -(-n * sr_out // sr_in)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """(T, C) at sr_in -> (ceil(T*sr_out/sr_in), C) at sr_out, float32.

    Polyphase FIR (scipy's Kaiser-window design): exact rational ratio, no time shift (sample n
    of the output is time n/sr_out of the input), deterministic.
    """
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    ratio = Fraction(sr_out, sr_in)
    y = resample_poly(x, ratio.numerator, ratio.denominator, axis=0)
    return np.ascontiguousarray(y, dtype=np.float32)


def convert(x: np.ndarray, sr_in: int, sr_out: int, channels: int) -> np.ndarray:
    """Channels first (cheaper when downmixing), then rate: (T, C) -> (T', channels)."""
    return resample(to_channels(x, channels), sr_in, sr_out)


def write_wav(path: str | Path, x: np.ndarray, sr: int, subtype: str = "FLOAT") -> None:
    """Atomically write (T, C) (or (T,)) samples as WAV with the given subtype, deterministic bytes.

    No level changes: FLOAT keeps values above full scale; PCM subtypes clip them (libsndfile).
    int16 and float64 samples are passed to libsndfile as they are (int16 into PCM_16 is exact);
    anything else is converted to float32.
    """
    x = np.asarray(x)
    if x.dtype not in (np.int16, np.float32, np.float64):
        x = x.astype(np.float32)
    if x.ndim == 1:
        x = x[:, None]
    with atomic_path(path) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=int(sr), channels=x.shape[1],
                          subtype=subtype, format="WAV") as f:
            # Must precede the first write; PEAK holds a timestamp (see module docstring).
            sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
            f.write(x)


def cut(x: np.ndarray, start: int, stop: int, path: str | Path, sr: int, what: str) -> np.ndarray:
    """x[start:stop] of a (T, C) track, or a PipelineInputError saying how many seconds are missing.

    `start`/`stop` are sample indices in the track's own time base (they may fall outside it);
    `path` is the file the track came from, named in the error.
    """
    n = x.shape[0]
    if start >= 0 and stop <= n:
        return x[start:stop]
    before = max(0, -start) / sr
    after = max(0, stop - n) / sr
    parts = []
    if before > 0:
        parts.append(f"{before:.3f} s before its start")
    if after > 0:
        parts.append(f"{after:.3f} s after its end")
    raise PipelineInputError(
        path, f"does not cover {what}: needs samples [{start}, {stop}) at {sr} Hz "
              f"({start / sr:.3f}-{stop / sr:.3f} s in its own time) but holds {n} "
              f"({n / sr:.3f} s); missing {' and '.join(parts)}",
        "check audio_offset_s in song.json and that the recording runs for the whole take")


def level_stats(x: np.ndarray, clip_level: float = 0.999) -> dict:
    """Peak and RMS in dBFS and the fraction of samples at full scale, of a (T, C) track."""
    a = np.abs(x)
    peak = float(a.max()) if a.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if a.size else 0.0
    return {
        "peak": peak,
        "peak_dbfs": 20 * math.log10(peak) if peak > 0 else None,
        "rms_dbfs": 20 * math.log10(rms) if rms > 0 else None,
        "clipped_fraction": float(np.count_nonzero(a >= clip_level)) / max(a.size, 1),
    }
