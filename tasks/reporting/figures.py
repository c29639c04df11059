"""Dataset statistics as a self-contained HTML page (PNG figures embedded as base64).

Figures, the kind the SingingHead paper shows:
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

import base64
import html
import io
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

import luigi
import numpy as np

from tasks import layout
from tasks.common.atomic import write_bytes_atomic, write_json_atomic
from tasks.common.progress import Progress

log = logging.getLogger("singinghead")

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
    import librosa

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
    import librosa

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
    import soundfile as sf

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
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def share_figure(rows: list[dict]) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
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
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(values, bins=bins, color="#4477aa")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(fig)


def duration_figure(durations: list[float], minutes_per_subject: dict[str, float]) -> bytes:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.4))
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
    import librosa
    import librosa.display
    import matplotlib.pyplot as plt

    chroma = librosa.feature.chroma_stft(y=y, sr=sr, hop_length=512)
    fig, ax = plt.subplots(figsize=(10, 3))
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
    import matplotlib.pyplot as plt

    keys = qc_panels(list(per_key))
    cols = min(3, max(1, len(keys)))
    rows = max(1, (len(keys) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys):
        ax.hist(per_key[k], bins=20, color="#aa3377")
        ax.set_title(k, fontsize=9)
        ax.set_ylabel("sequences")
    return _png(fig)


# ----------------------------------------------------------------------------- the report
def build_report(root: Path, out_dir: Path, task=None) -> dict:
    """Write out_dir/index.html (self-contained) and out_dir/report.json; returns the numbers."""
    import matplotlib

    matplotlib.use("Agg")  # no display in batch runs
    from tasks.assemble import read_metadata

    root, out_dir = Path(root), Path(out_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    meta = read_metadata(root)
    clips = [r for r in meta if r["kind"] == "clip"]
    seqs = [r for r in meta if r["kind"] == "sequence"]
    fps = float(manifest["dataset"]["fps"])
    figs: dict[str, tuple[str, bytes]] = {}
    notes: list[str] = []
    stats: dict = {"clips": len(clips), "sequences": len(seqs)}

    figs["shares"] = (
        "Shares (over clips)" if clips else "Shares (over sequences)",
        share_figure(clips or seqs),
    )

    f0_clips = evenly_spaced(sorted(r["id"] for r in clips), F0_MAX_CLIPS)
    progress = Progress(task, len(f0_clips) + len(seqs), "report")
    f0s = []
    for cid in f0_clips:
        y, sr = read_mono(root / "audio_seqs" / f"{cid}.wav", F0_MAX_SECONDS)
        f = dominant_f0(y, sr)
        if f is not None:
            f0s.append(f)
        progress.update(1)
    stats["dominant_f0_hz"] = {
        "clips_measured": len(f0_clips),
        "voiced": len(f0s),
        "median": float(np.median(f0s)) if f0s else None,
    }
    if f0s:
        figs["f0"] = (
            f"Vocal dominant frequency (median voiced pyin f0 per clip, {len(f0s)} clips)",
            hist_figure(f0s, "Vocal dominant frequency", "Hz"),
        )
    else:
        notes.append("No voiced vocal found: no dominant-frequency figure.")

    longest: dict[tuple[str, str], dict] = {}
    for r in seqs:
        k = (r["subject"], r["song"])
        if k not in longest or int(r["frames"]) > int(longest[k]["frames"]):
            longest[k] = r
    tempos = []
    for k in sorted(longest):
        y, sr = read_mono(root / "sequences" / longest[k]["id"] / "bgm.wav", TEMPO_MAX_SECONDS)
        tempos.append(song_tempo(y, sr))
    stats["tempo_bpm"] = {"songs": len(tempos), "median": float(np.median(tempos)) if tempos else None}
    if tempos:
        figs["tempo"] = (
            f"Song tempo (librosa.feature.tempo of the BGM, {len(tempos)} songs)",
            hist_figure(tempos, "Song tempo", "BPM", bins=20),
        )
    example = sorted(r["id"] for r in clips)[:1]
    if example:
        y, sr = read_mono(root / "bgm_seqs" / f"{example[0]}_bgm.wav")
        figs["chroma"] = (
            f"Example chromagram: BGM of {example[0]}",
            chroma_figure(y, sr, f"{example[0]} BGM"),
        )

    mouth, qc = [], defaultdict(list)
    for r in seqs:
        seg = int(r["source_segment"])
        fr = layout.frames_npz(r["subject"], r["song"], seg)
        if fr.exists():
            with np.load(fr) as z:
                if "landmarks" in z.files:
                    mouth.append(
                        mouth_opening(z["landmarks"], z["landmark_ok"] if "landmark_ok" in z.files else None)
                    )
        qp = layout.motion_qc(r["subject"], r["song"], seg)
        if qp.exists():
            for k, v in qc_scalars(layout.read_json(qp)).items():
                qc[k].append(v)
        progress.update(1)
    progress.close()
    if mouth:
        m = np.concatenate(mouth)
        stats["mouth_opening"] = {"frames": int(len(m)), "median": float(np.median(m)) if len(m) else None}
        figs["mouth"] = (
            "Mouth opening per frame: inner-lip distance |p62-p66| / face height |p27-p8|",
            hist_figure(m.tolist(), "Mouth opening", "inner-lip gap / face height", bins=40),
        )
    else:
        notes.append("No per-frame landmarks found under processed/: no mouth-opening figure.")
    durations = [int(r["frames"]) / fps for r in seqs]
    per_subject: dict[str, float] = defaultdict(float)
    for r, d in zip(seqs, durations):
        per_subject[r["subject"]] += d / 60
    if seqs:
        figs["durations"] = ("Durations", duration_figure(durations, dict(per_subject)))
    stats["hours"] = round(sum(durations) / 3600, 4)
    if qc:
        figs["qc"] = (
            f"Refinement QC per sequence ({len(seqs)} sequences; keys as written by the refinement stage)",
            qc_figure(dict(qc)),
        )
        stats["qc_keys"] = sorted(qc)
    else:
        notes.append("No refinement QC records (_qc.json) found: no QC figures.")

    html_text = render_html(manifest, stats, figs, notes)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "report.json", stats)
    write_bytes_atomic(out_dir / "index.html", html_text.encode("utf-8"))  # last: the task's output
    return stats


def render_html(manifest: dict, stats: dict, figs: dict[str, tuple[str, bytes]], notes: list[str]) -> str:
    e = html.escape
    counts = manifest.get("counts", {})
    splits = manifest.get("splits", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SingingHead dataset report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".warn{background:#fee;border:1px solid #c33;padding:.6em}img{max-width:100%}</style></head><body>",
        "<h1>SingingHead dataset report</h1>",
        f"<p>Tool version {e(str(manifest.get('tool', {}).get('version', '?')))}; "
        f"{stats['sequences']} sequences ({stats['hours']} h), {stats['clips']} clips of "
        f"{manifest.get('dataset', {}).get('clip_frames', 240)} frames.</p>",
    ]
    if manifest.get("stand_ins"):
        parts.append(
            "<p class='warn'><b>Built with stand-in models</b> (not the real models; results test the "
            "pipeline, they are not a dataset release): " + e(", ".join(manifest["stand_ins"])) + "</p>"
        )
    parts.append("<h2>Counts and splits</h2><table>")
    for k, v in counts.items():
        parts.append(f"<tr><th>{e(k)}</th><td>{e(json.dumps(v))}</td></tr>")
    parts.append(f"<tr><th>split target</th><td>{e(json.dumps(splits.get('target')))}</td></tr>")
    parts.append(f"<tr><th>split achieved</th><td>{e(json.dumps(splits.get('achieved')))}</td></tr>")
    parts.append(
        f"<tr><th>grouped by (subject, song)</th><td>{e(str(splits.get('by_song')))}</td></tr></table>"
    )
    for key, (caption, png) in figs.items():
        parts.append(
            f"<h2>{e(caption)}</h2><img alt='{e(key)}' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        )
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append(
        "<h2>Definitions</h2><ul>"
        f"<li>Dominant frequency: median f0 over voiced frames (librosa.pyin, {F0_RANGE[0]:.0f}-"
        f"{F0_RANGE[1]:.0f} Hz, 0.5-semitone bins, at most {F0_MAX_FRAMES} frames at 8 kHz) of each "
        f"clip's dry vocal; at most {F0_MAX_CLIPS} clips, evenly spaced over the sorted ids, first "
        f"{F0_MAX_SECONDS:.0f} s of each.</li>"
        "<li>Tempo: librosa.feature.tempo of the BGM of each song's longest sequence.</li>"
        "<li>Mouth opening: |landmark 62 - landmark 66| / |landmark 27 - landmark 8| (iBUG 68, 0-based),"
        " frames with reliable landmarks.</li></ul></body></html>\n"
    )
    return "\n".join(parts)


class DatasetReport(luigi.Task):
    """Statistics of the assembled dataset: `dataset/report/index.html`."""

    def requires(self):
        from tasks.assemble import AssembleDataset

        return AssembleDataset()

    def output(self):
        return luigi.LocalTarget(str(layout.report_dir() / "index.html"))

    def run(self):
        build_report(layout.dataset_root(), layout.report_dir(), task=self)
