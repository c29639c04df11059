"""The dataset report's measurements and figures (PNG bytes), the kind the SingingHead paper shows:
- shares of music genre, professional vs amateur, gender and language (counted over clips, or over
  sequences when there are no clips);
- vocal dominant frequency: per clip, the median fundamental frequency (librosa.pyin, 65-1047 Hz)
  over its voiced frames of the dry vocal; pyin is slow, so at most `F0_MAX_CLIPS` clips (evenly
  spaced over the sorted ids), `F0_MAX_SECONDS` and `F0_MAX_FRAMES` frames of each, at 8 kHz with
  0.5-semitone bins (see `dominant_f0`);
- song tempo: librosa.feature.tempo of the BGM, one value per (subject, song), from its longest
  sequence (at most `TEMPO_MAX_SECONDS`);
- an example chromagram (librosa.feature.chroma_stft of the first clip's BGM);
- mouth opening per frame from the per-frame landmarks: inner-lip distance |p62 - p66| divided by
  face height |p27 - p8| (68-point iBUG indices, 0-based), frames with `landmark_ok` only;
- sequence durations and minutes per subject;
- refinement QC per sequence from motion `_qc.json`: every numeric value found (nested keys joined
  by '.'), reprojection error, jitter and outlier fractions first; keys a stage does not write are
  simply absent.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import librosa  # a lazy loader: its submodules load on first use
import librosa.display
import numpy as np
import soundfile as sf
from matplotlib.figure import Figure  # figures without pyplot: no backend or global state involved

F0_MAX_CLIPS = 300
F0_MAX_SECONDS = 8.0
F0_MAX_FRAMES = 200
F0_SR = 8000
F0_RANGE = (65.0, 1047.0)  # C2..C6: low bass to high soprano
TEMPO_MAX_SECONDS = 60.0
QC_MAX_PANELS = 12


# ----------------------------------------------------------------------------- measurements
def dominant_f0(y: np.ndarray, sr: int) -> float | None:
    """Median f0 (Hz) over voiced frames of mono `y` (N,), or None when nothing is voiced.

    pyin on a budget (about 20x faster than its defaults, within a few percent): the vocal is
    resampled to 8 kHz (4 kHz Nyquist is far above C6), at most `F0_MAX_FRAMES` frames are analysed,
    and pitch bins are 0.5 semitone instead of 0.1.
    """
    y8 = librosa.resample(y.astype(np.float32), orig_sr=sr, target_sr=F0_SR, res_type="soxr_hq")
    hop = max(int(0.02 * F0_SR), int(np.ceil(len(y8) / F0_MAX_FRAMES)))
    if len(y8) < 512:
        return None
    f0, voiced, _ = librosa.pyin(
        y8, fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=F0_SR, frame_length=512, hop_length=hop, resolution=0.5
    )
    f0 = f0[voiced & np.isfinite(f0)]
    return float(np.median(f0)) if len(f0) else None


def song_tempo(y: np.ndarray, sr: int) -> float:
    return float(np.atleast_1d(librosa.feature.tempo(y=y.astype(np.float32), sr=sr))[0])


def mouth_opening(landmarks: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
    """(T,68,2) landmarks -> (T',) inner-lip gap / face height over frames with ok landmarks."""
    lm = np.asarray(landmarks, np.float64)
    if ok is not None:
        lm = lm[np.asarray(ok, bool)]
    gap = np.linalg.norm(lm[:, 62] - lm[:, 66], axis=1)
    height = np.linalg.norm(lm[:, 27] - lm[:, 8], axis=1)
    good = height > 1e-6
    return gap[good] / height[good]


def qc_scalars(rec: dict, prefix: str = "") -> dict[str, float]:
    """Every finite number in a QC record, nested keys joined by '.' (model records skipped)."""
    out = {}
    for k, v in rec.items():
        if k in ("model", "models", "params", "parameters", "config", "head_model", "estimator"):
            continue
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and np.isfinite(v):
            out[key] = float(v)
        elif isinstance(v, dict):
            out.update(qc_scalars(v, key + "."))
    return out


def read_mono(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    info = sf.info(str(path))
    stop = None if max_seconds is None else int(max_seconds * info.samplerate)
    y, sr = sf.read(str(path), dtype="float32", stop=stop, always_2d=True)
    return y.mean(axis=1), int(sr)


def evenly_spaced(items: list, n: int) -> list:
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


# ----------------------------------------------------------------------------- figures
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def share_figure(rows: list[dict]) -> bytes:
    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    for ax, (key, title) in zip(
        axes,
        (
            ("genre", "Music genre"),
            ("professional", "Professional vs amateur"),
            ("gender", "Gender"),
            ("language", "Language"),
        ),
    ):
        names = {"true": "professional", "false": "amateur"} if key == "professional" else {}
        c = Counter(names.get(r.get(key), r.get(key)) or "unknown" for r in rows)
        labels = sorted(c, key=lambda k: (-c[k], k))
        ax.pie(
            [c[k] for k in labels],
            labels=[f"{k} ({c[k]})" for k in labels],
            autopct="%1.0f%%",
            textprops={"fontsize": 8},
        )
        ax.set_title(title)
    return _png(fig)


def hist_figure(values: list[float], title: str, xlabel: str, bins: int = 30) -> bytes:
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    ax.hist(values, bins=bins, color="#4477aa")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(fig)


def duration_figure(durations: list[float], minutes_per_subject: dict[str, float]) -> bytes:
    fig = Figure(figsize=(12, 3.4))
    a, b = fig.subplots(1, 2)
    a.hist(durations, bins=30, color="#4477aa")
    a.set_title("Sequence duration")
    a.set_xlabel("seconds")
    a.set_ylabel("sequences")
    subs = sorted(minutes_per_subject)
    b.bar(subs, [minutes_per_subject[s] for s in subs], color="#228833")
    b.set_title("Minutes of sequences per subject")
    b.tick_params(axis="x", rotation=90, labelsize=7)
    return _png(fig)


def chroma_figure(y: np.ndarray, sr: int, title: str) -> bytes:
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, hop_length=512)
    fig = Figure(figsize=(10, 3))
    ax = fig.subplots()
    img = librosa.display.specshow(chroma, y_axis="chroma", x_axis="time", sr=sr, hop_length=512, ax=ax)
    fig.colorbar(img, ax=ax)
    ax.set_title(title)
    return _png(fig)


QC_SKIP = ("segment", "fps", "frames", "iterations", "seconds", "frames_measured", "device")


def qc_panels(keys: list[str]) -> list[str]:
    """The QC keys worth a histogram: bookkeeping dropped, 'x.before' dropped where 'x.after' exists,
    reprojection error first, then outliers, then jitter, then the rest."""
    keys = [k for k in keys if not any(part in QC_SKIP for part in k.split("."))]
    keys = [k for k in keys if not (k.endswith(".before") and k[: -len("before")] + "after" in keys)]

    def rank(k: str) -> tuple[int, str]:
        low = k.lower()
        for i, group in enumerate((("reproj", "rmse"), ("outlier",), ("jitter",))):
            if any(g in low for g in group):
                return i, k
        return 3, k

    return sorted(keys, key=rank)[:QC_MAX_PANELS]


def qc_figure(per_key: dict[str, list[float]]) -> bytes:
    keys = qc_panels(list(per_key))
    cols = min(3, max(1, len(keys)))
    rows = max(1, (len(keys) + cols - 1) // cols)
    fig = Figure(figsize=(5 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys):
        ax.hist(per_key[k], bins=20, color="#aa3377")
        ax.set_title(k, fontsize=9)
        ax.set_ylabel("sequences")
    return _png(fig)
