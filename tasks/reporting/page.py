"""Dataset statistics as a self-contained HTML page (PNG figures embedded as base64).

The measurements and figures are described in `tasks.reporting.figures`.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Protocol

import numpy as np

from tasks.capture.raw_layout import read_json
from tasks.common.atomic import write_bytes_atomic, write_json_atomic
from tasks.common.progress import Progress
from tasks.dataset.metadata import read_metadata
from tasks.reporting.figures import (
    F0_MAX_CLIPS,
    F0_MAX_FRAMES,
    F0_MAX_SECONDS,
    F0_RANGE,
    TEMPO_MAX_SECONDS,
    chroma_figure,
    dominant_f0,
    duration_figure,
    evenly_spaced,
    hist_figure,
    mouth_opening,
    qc_figure,
    qc_scalars,
    read_mono,
    share_figure,
    song_tempo,
)


class ReportPaths(Protocol):
    """Where the per-segment files the report reads are; the stage passes its `tasks.layout.Layout`."""

    def frames_npz(self, subject: str, song: str, segment: int) -> Path: ...
    def motion_qc(self, subject: str, song: str, segment: int) -> Path: ...


def build_report(root: Path, out_dir: Path, paths: ReportPaths, task=None) -> dict:
    """Write out_dir/index.html (self-contained) and out_dir/report.json; returns the numbers.

    `root` is the assembled dataset; `paths` finds the per-frame landmarks and refinement QC.
    """
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
        fr = paths.frames_npz(r["subject"], r["song"], seg)
        if fr.exists():
            with np.load(fr) as z:
                if "landmarks" in z.files:
                    mouth.append(
                        mouth_opening(z["landmarks"], z["landmark_ok"] if "landmark_ok" in z.files else None)
                    )
        qp = paths.motion_qc(r["subject"], r["song"], seg)
        if qp.exists():
            for k, v in qc_scalars(read_json(qp)).items():
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
