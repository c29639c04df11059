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
  simply absent;
- landmark error before and after refinement per sequence (`landmark_rmse_px.before/.after` of the
  QC record, in % of the portrait size), with the sequences it flags (`flag_reasons`): a poor fit,
  RMSE after refinement above `POOR_FIT_FRACTION` (5 %) of the portrait size (51 px of a 1024 px
  portrait: the landmarks then miss the face's parts, not just jitter), or an error that rose,
  after above before by more than `ROSE_FRACTION` (10 %: refinement smooths, so a small rise on a
  clean sequence is expected, a large one means the fit drifted);
- one still frame per worst sequence with its detected landmarks drawn (PyAV decode).

Every figure is a matplotlib `Figure` with the constrained layout engine (`new_figure`), so titles,
tick labels and colour bars of neighbouring panels never overlap; no pyplot.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import librosa  # a lazy loader: its submodules load on first use
import librosa.display
import numpy as np
import soundfile as sf
from matplotlib.figure import Figure  # figures without pyplot: no backend or global state involved
from matplotlib.ticker import MaxNLocator

from tasks.media.video_io import iter_frames
from tasks.reporting.data_yield import CATEGORIES, minutes

F0_MAX_CLIPS = 300
F0_MAX_SECONDS = 8.0
F0_MAX_FRAMES = 200
F0_SR = 8000
F0_RANGE = (65.0, 1047.0)  # C2..C6: low bass to high soprano
TEMPO_MAX_SECONDS = 60.0
QC_MAX_PANELS = 12
POOR_FIT_FRACTION = 0.05  # landmark RMSE after refinement above this share of the portrait size
ROSE_FRACTION = 0.10  # landmark RMSE after above before by more than this share
WORST_COUNT = 6  # sequences listed with a frame each
ERROR_MAX_ROWS = 60  # sequences drawn as bars (the worst); the scatter shows them all
PNG_DPI = 90  # a 12 inch figure is 1080 px: the page's width, so the type is shown at its size
FONT = 11  # readable type: axis labels and titles of the report's figures (ticks one or two smaller)


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
def new_figure(width: float, height: float) -> Figure:
    """A Figure laid out by the constrained engine: panels, titles and labels never overlap."""
    return Figure(figsize=(width, height), layout="constrained")


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of `fig`, identical on reruns (no software/date metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def share_figure(rows: list[dict]) -> Figure:
    fig = new_figure(12, 3.4)   # the page's width: the type is not shrunk
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
            textprops={"fontsize": FONT - 1},
        )
        ax.set_title(title, fontsize=FONT + 1)
    return fig


def hist_figure(values: list[float], title: str, xlabel: str, bins: int = 30) -> Figure:
    fig = new_figure(6, 3.4)
    ax = fig.subplots()
    ax.hist(values, bins=bins, color="#4477aa")
    ax.set_title(title, fontsize=FONT + 1)
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel("count", fontsize=FONT)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def duration_figure(durations: list[float], minutes_per_subject: dict[str, float]) -> Figure:
    fig = new_figure(12, 3.4)
    a, b = fig.subplots(1, 2)
    a.hist(durations, bins=30, color="#4477aa")
    a.set_title("Sequence duration")
    a.set_xlabel("seconds")
    a.set_ylabel("sequences")
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    subs = sorted(minutes_per_subject)
    b.bar(subs, [minutes_per_subject[s] for s in subs], color="#228833")
    b.set_title("Minutes of sequences per subject")
    b.tick_params(axis="x", rotation=90, labelsize=7)
    return fig


def chroma_figure(y: np.ndarray, sr: int, title: str) -> Figure:
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, hop_length=512)
    fig = new_figure(10, 3)
    ax = fig.subplots()
    img = librosa.display.specshow(chroma, y_axis="chroma", x_axis="time", sr=sr, hop_length=512, ax=ax)
    fig.colorbar(img, ax=ax)
    ax.set_title(title)
    return fig


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


_QC_GROUP_WORDS = {"global_orient": "head rotation", "neck_pose": "neck rotation", "jaw_pose": "jaw rotation",
                   "cam": "camera", "expression": "expression", "landmarks": "landmarks", "shape": "shape"}


def _words(name: str) -> str:
    base = name.removesuffix("_deg").removesuffix("_px")
    return _QC_GROUP_WORDS.get(base, base.replace("_", " "))


def qc_label(key: str) -> tuple[str, str, float]:
    """(title in words, unit, factor applied to the values) of a QC key as the refinement writes it
    (`flame_fit.refine`: landmark_rmse_px.*, jitter.<group>.after, outlier_fraction.<group>, ...)."""
    parts = key.split(".")
    head, last = parts[0], parts[-1]
    second_diff = "mean |2nd difference| per frame"
    if head == "landmark_rmse_px":
        what = {"after": "Landmark error after refinement",
                "before": "Landmark error of the per-frame estimates",
                "after_vs_smoothed": "Fit vs smoothed landmarks"}.get(last, f"Landmark error ({last})")
        return what, "px, RMSE over the 68 landmarks", 1.0
    if head == "outlier_fraction":
        group = f": {_words(parts[1])}" if len(parts) > 1 else ""
        return f"Outlier frames{group}", "% of the sequence's frames", 100.0
    if head == "landmark_detections_failed":
        return "Frames without detected landmarks", "% of the sequence's frames", 100.0
    if head == "jitter":
        group = parts[1] if len(parts) > 1 else ""
        stage = {"after": "after refinement", "before": "before refinement"}.get(last, "")
        unit = ("degrees, " if group.endswith("_deg") else "px, " if group.endswith("_px") else "") + second_diff
        what = f"Jitter of {_words(group)}" if group else "Jitter"
        return " ".join(x for x in (what, stage) if x), unit, 1.0
    if head.startswith("reprojection_error"):
        return f"Reprojection error ({last})" if len(parts) > 1 else "Reprojection error", "px", 1.0
    if head == "loss":
        return "Final fit objective", "optimiser loss, no unit", 1.0
    if head == "loss_terms":
        return f"Fit objective term: {last.replace('_', ' ')}", "no unit", 1.0
    return key.replace(".", " / ").replace("_", " ").capitalize(), "as recorded", 1.0


def qc_figure(per_key: dict[str, list[float]],
              thresholds: dict[str, tuple[float, str]] | None = None) -> Figure:
    """A histogram per QC key (`qc_panels`): titled in words with its unit, integer sequence counts,
    and the flag threshold drawn and named where one applies (`thresholds`: key -> (value in the
    key's unit, its unit and why in words, e.g. "px (5 % of the 1024 px portrait)")); panels without
    one say so."""
    thresholds = thresholds or {}
    keys = qc_panels(list(per_key))
    cols = min(3, max(1, len(keys)))
    rows = max(1, (len(keys) + cols - 1) // cols)
    fig = new_figure(3.9 * cols, 3.3 * rows)   # 3 panels fit the page's width without shrinking the type
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys):
        title, unit, factor = qc_label(k)
        vals = np.asarray(per_key[k], np.float64) * factor
        edge = thresholds[k][0] * factor if k in thresholds else None
        # bins over the drawn range (the threshold included), fewer when there are few sequences
        span = vals if edge is None else np.append(vals, edge)
        positive = bool(np.all(np.isfinite(span)) and span.size and span.min() >= 0)
        if positive:
            span = np.append(span, 0.0)    # non-negative quantities are drawn from 0: their scale shows
            if span.max() == 0:
                span = np.append(span, 1.0)    # all zero: a unit range, not -0.5..0.5
        ax.hist(vals, bins=np.histogram_bin_edges(span, bins=min(20, max(6, len(vals)))), color="#aa3377")
        if positive:
            ax.set_xlim(left=0)
        if edge is not None:
            ax.axvline(edge, color="#cc3311", ls="--", lw=1.5)
            sub = f"flagged above {edge:.3g} {thresholds[k][1]}"
        else:
            sub = "no flag threshold"
        ax.set_title(f"{title}\n{sub}", fontsize=FONT)
        ax.set_xlabel(unit, fontsize=FONT - 1)
        ax.set_ylabel("sequences", fontsize=FONT)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))   # 5 labels fit a panel's width
        ax.tick_params(labelsize=FONT - 1)
    return fig


# ----------------------------------------------------------------------------- landmark error
@dataclass(frozen=True)
class LandmarkError:
    """One sequence's landmark RMSE (px, portrait pixels) before and after refinement."""

    seq_id: str
    before: float
    after: float
    portrait_size: int | None  # the portrait's side in px the RMSE is measured in; None: unknown

    def percent(self, px: float) -> float:
        """px as % of the portrait size (NaN when the size is unknown)."""
        return 100.0 * px / self.portrait_size if self.portrait_size else float("nan")

    @property
    def change(self) -> float:
        """(after - before) / before; NaN when before is 0 or not measured."""
        ok = math.isfinite(self.before) and math.isfinite(self.after) and self.before > 0
        return (self.after - self.before) / self.before if ok else float("nan")

    @property
    def severity(self) -> float:
        """Sort key of the worst list: after in % of the portrait, or in px when the size is unknown."""
        if not math.isfinite(self.after):
            return math.inf  # nothing measured is worse than any measured error
        return self.percent(self.after) if self.portrait_size else self.after

    def flags(self) -> list[str]:
        return flag_reasons(self.before, self.after, self.portrait_size)


def landmark_error(seq_id: str, qc: dict, portrait_size: int | None) -> LandmarkError | None:
    """The QC record's `landmark_rmse_px` as a LandmarkError, or None when the record has none.

    The portrait size is the one the refinement measured in (`params.image_size` of the record),
    else `portrait_size` (the crop stage's output size).
    """
    rm = qc.get("landmark_rmse_px")
    if not isinstance(rm, dict) or "after" not in rm:
        return None
    size = (qc.get("params") or {}).get("image_size") or portrait_size

    def num(v) -> float:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")

    return LandmarkError(seq_id, num(rm.get("before")), num(rm.get("after")), int(size) if size else None)


def flag_reasons(before: float, after: float, portrait_size: int | None) -> list[str]:
    """Why a sequence's fit needs a look (empty when it does not):
    - poor fit: RMSE after > POOR_FIT_FRACTION of the portrait size;
    - rose: after > before * (1 + ROSE_FRACTION);
    - not measured: no finite RMSE after refinement (no frame with reliable landmarks)."""
    if not math.isfinite(after):
        return ["landmark error not measured (no frame with reliable landmarks)"]
    out = []
    if portrait_size and after > POOR_FIT_FRACTION * portrait_size:
        out.append(f"poor fit: RMSE after refinement {after:.1f} px = {100 * after / portrait_size:.1f} % of the "
                   f"{portrait_size} px portrait (> {100 * POOR_FIT_FRACTION:g} %)")
    if math.isfinite(before) and after > before * (1 + ROSE_FRACTION):
        rise = f"+{100 * (after - before) / before:.0f} %" if before > 0 else "from 0"
        out.append(f"error rose: {before:.1f} -> {after:.1f} px ({rise}, > {100 * ROSE_FRACTION:g} %)")
    return out


def worst_sequences(errors: list[LandmarkError], n: int = WORST_COUNT) -> list[LandmarkError]:
    """The n sequences with the largest error after refinement (ties by id)."""
    return sorted(errors, key=lambda e: (-e.severity, e.seq_id))[:n]


def landmark_error_figure(errors: list[LandmarkError]) -> Figure:
    """Left: per sequence, RMSE before and after refinement as bars side by side (the
    `ERROR_MAX_ROWS` worst when there are more), flagged sequences' ids in red. Right: after vs
    before for every sequence, with the no-change diagonal and the flag thresholds.
    Values in % of the portrait size when every sequence's size is known, else in px."""
    relative = all(e.portrait_size for e in errors)
    unit = "% of portrait size" if relative else "px"

    def val(e: LandmarkError, px: float) -> float:
        return e.percent(px) if relative else px

    shown = sorted(worst_sequences(errors, ERROR_MAX_ROWS), key=lambda e: e.seq_id)
    rows = len(shown)
    fig = new_figure(12, max(3.8, 0.3 * rows + 1.6))
    bars, scatter = fig.subplots(1, 2, width_ratios=(1.4, 1))
    y = np.arange(rows)
    h = 0.4
    bars.barh(y - h / 2, [val(e, e.before) for e in shown], height=h, color="#bbbbbb", label="before")
    bars.barh(y + h / 2, [val(e, e.after) for e in shown], height=h, color="#4477aa", label="after")
    bars.set_yticks(y, [e.seq_id for e in shown], fontsize=FONT - 2)
    for label, e in zip(bars.get_yticklabels(), shown):
        if e.flags():
            label.set_color("#cc3311")
            label.set_fontweight("bold")
    bars.invert_yaxis()
    if relative:
        bars.axvline(100 * POOR_FIT_FRACTION, color="#cc3311", ls="--", lw=1, label="poor-fit threshold")
    bars.set_xlabel(f"landmark RMSE ({unit})", fontsize=FONT)
    more = f", the {rows} worst of {len(errors)}" if rows < len(errors) else ""
    bars.set_title(f"Before and after refinement per sequence{more} (flagged in red)", fontsize=FONT)
    bars.legend(fontsize=FONT - 2, loc="lower right")

    pts = [(val(e, e.before), val(e, e.after), bool(e.flags())) for e in errors]
    pts = [p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1])]
    if pts:
        b, a, f = (np.array(v) for v in zip(*pts))
        scatter.scatter(b[~f], a[~f], s=14, color="#4477aa", label="ok")
        scatter.scatter(b[f], a[f], s=18, color="#cc3311", label="flagged")
        top = float(max(b.max(), a.max(), 1e-6)) * 1.08
        line = np.array([0.0, top])
        scatter.plot(line, line, color="#888888", lw=1, label="no change")
        scatter.plot(line, line * (1 + ROSE_FRACTION), color="#ee7733", lw=1, ls=":",
                     label=f"rose by {100 * ROSE_FRACTION:g} %")
        if relative:
            scatter.axhline(100 * POOR_FIT_FRACTION, color="#cc3311", ls="--", lw=1, label="poor fit")
        scatter.set_xlim(0, top)
        scatter.set_ylim(0, max(top, 100 * POOR_FIT_FRACTION * 1.1 if relative else top))
    scatter.set_xlabel(f"before ({unit})", fontsize=FONT)
    scatter.set_ylabel(f"after ({unit})", fontsize=FONT)
    scatter.set_title("After vs before, every sequence", fontsize=FONT)
    scatter.legend(fontsize=FONT - 2, loc="upper left")
    return fig


# ----------------------------------------------------------------------------- still frames
def read_video_frame(path: Path, index: int) -> np.ndarray | None:
    """Frame `index` (0-based) of a video as (H, W, 3) uint8 RGB, or None when the video is shorter.

    Decodes from the start (PyAV): a report reads a handful of frames, seeking is not worth its
    keyframe bookkeeping here."""
    for idx, frame in iter_frames(path):
        if idx >= index:
            return frame.to_ndarray(format="rgb24")
    return None


def pick_frame(landmark_ok: np.ndarray | None, frames: int) -> int:
    """The frame shown for a sequence: the middle one of those with reliable landmarks
    (the middle frame when none is marked)."""
    if landmark_ok is not None:
        good = np.flatnonzero(np.asarray(landmark_ok, bool))
        if len(good):
            return int(good[len(good) // 2])
    return max(frames, 1) // 2


def frame_figure(rgb: np.ndarray, landmarks: np.ndarray | None, title: str, scale: float = 1.0) -> Figure:
    """A still frame (H,W,3) with its detected landmarks (68,2) drawn (portrait px times `scale`)."""
    fig = new_figure(3.2, 3.5)
    ax = fig.subplots()
    ax.imshow(rgb)
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float64) * scale
        ax.scatter(lm[:, 0], lm[:, 1], s=5, color="#33ee55", edgecolors="none")
    ax.set_xlim(0, rgb.shape[1])
    ax.set_ylim(rgb.shape[0], 0)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return fig


# ----------------------------------------------------------------------------- yield and timeline
YIELD_COLORS = {
    "in clips": "#228833",
    "remainders shorter than a clip": "#99cc88",
    "segments under the minimum sequence length": "#ee9944",
    "face left the portrait (edge landmark, forehead out)": "#cc3311",
    "no face found": "#882255",
    "frames missing from the recording": "#888888",
    "long segments not in the dataset": "#aa88cc",
    "not accounted for (segments.json of an older crop)": "#dddddd",
}
# marker and colour of each cut reason on the timeline
CUT_MARKERS = {
    "edge landmark": ("o", "#cc3311"),
    "forehead out": ("^", "#ee7733"),
    "lost face": ("X", "#000000"),
    "repeat gap": ("s", "#777777"),
    "end of video": (">", "#0077bb"),
    "not recorded": (".", "#999999"),
}
TIMELINE_KINDS = {"sequence": ("#228833", "dataset sequence"),
                  "short": ("#ee9944", "segment under the minimum"),
                  "other": ("#aa88cc", "long segment not in the dataset")}
DROP_COLORS = {"edge landmark": "#cc3311", "forehead out": "#ee7733", "no face": "#882255",
               "frames missing from the recording": "#888888"}
SONGS_PER_TIMELINE = 30        # lanes per timeline figure; more songs get more figures


def song_label(subject: str, song: str) -> str:
    return f"{subject} / {song}"


def yield_figure(songs, fps: float, words: dict[str, str] | None = None) -> Figure:
    """Per song, one horizontal bar of its recorded minutes split by where the frames went
    (`tasks.reporting.data_yield.CATEGORIES`, named as `words` says); the legend below the bars."""
    words = words or {}
    fig = new_figure(12, max(2.6, 0.42 * len(songs) + 2.2))
    ax = fig.subplots()
    y = np.arange(len(songs))
    left = np.zeros(len(songs))
    used = [c for c in CATEGORIES if any(s.by_category()[c] for s in songs)]
    for c in used:
        vals = np.array([minutes(s.by_category()[c], fps) for s in songs])
        ax.barh(y, vals, left=left, color=YIELD_COLORS.get(c, "#bbbbbb"), label=words.get(c, c), height=0.7)
        left += vals
    ax.set_yticks(y, [song_label(s.subject, s.song) for s in songs], fontsize=FONT - 1)
    ax.invert_yaxis()
    ax.set_xlabel("minutes of recording", fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT - 1)
    ax.set_title("Where each song's recorded minutes went", fontsize=FONT + 1)
    fig.legend(loc="outside lower center", ncols=min(3, max(1, len(used))), fontsize=FONT - 1, frameon=False)
    return fig


def timeline_figure(songs, fps: float,
                    title: str = "Portrait segments per song and why each ended") -> Figure:
    """One lane per song over time (s): dataset sequences, short segments, dropped frames (thin, by
    reason), and a marker at each segment's end for its cut reason."""
    fig = new_figure(12, max(2.8, 0.55 * len(songs) + 2.4))
    ax = fig.subplots()
    seen_kind, seen_drop, seen_cut = set(), set(), set()
    for i, s in enumerate(songs):
        for a, b, kind, reason in s.timeline:
            x0, w = a / fps, (b - a) / fps
            if kind == "dropped":
                color = DROP_COLORS.get(reason, "#bbbbbb")
                ax.broken_barh([(x0, w)], (i - 0.12, 0.24), color=color,
                               label=None if reason in seen_drop else f"dropped: {reason}")
                seen_drop.add(reason)
                continue
            color, name = TIMELINE_KINDS.get(kind, ("#bbbbbb", kind))
            # a white edge keeps back-to-back segments apart
            ax.broken_barh([(x0, w)], (i - 0.3, 0.6), facecolor=color, edgecolor="white", linewidth=1,
                           label=None if kind in seen_kind else name)
            seen_kind.add(kind)
            marker, mcolor = CUT_MARKERS.get(reason, ("d", "#444444"))
            ax.plot([b / fps], [i], marker=marker, color=mcolor, markersize=10, markeredgewidth=2,
                    markeredgecolor="black" if marker not in "|x" else mcolor, linestyle="none", zorder=5,
                    label=None if reason in seen_cut else f"cut: {reason}")
            seen_cut.add(reason)
    ax.set_yticks(np.arange(len(songs)), [song_label(s.subject, s.song) for s in songs], fontsize=FONT - 1)
    ax.set_ylim(len(songs) - 0.5, -0.5)
    ax.set_xlim(0, max([s.recorded / fps for s in songs] + [1e-3]) * 1.02)
    ax.set_xlabel("time in the recording (seconds)", fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT - 1)
    ax.set_title(title, fontsize=FONT + 1)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)),
                   key=lambda k: (labels[k].startswith("dropped"), labels[k].startswith("cut"), labels[k]))
    fig.legend([handles[k] for k in order], [labels[k] for k in order], loc="outside lower center", ncols=3,
               fontsize=FONT - 1, frameon=False)
    return fig
