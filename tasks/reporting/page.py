"""Dataset statistics as a self-contained HTML page: figures embedded as base64 PNGs, the subjects'
scan-fit pictures copied beside the page (`scan_fit/<subject>.png`, linked relatively), so the
report folder can be moved or published as a whole.

The measurements, figures and the thresholds that flag a sequence are described in
`tasks.reporting.figures`. An empty train/val/test split is warned about in the page and the log.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from tasks.capture.raw_layout import read_json
from tasks.common.atomic import write_bytes_atomic, write_json_atomic
from tasks.common.names import check_name, remove_inside
from tasks.common.progress import Progress
from tasks.dataset.metadata import read_metadata
from tasks.reporting.figures import (
    F0_MAX_CLIPS,
    F0_MAX_FRAMES,
    F0_MAX_SECONDS,
    F0_RANGE,
    POOR_FIT_FRACTION,
    ROSE_FRACTION,
    TEMPO_MAX_SECONDS,
    WORST_COUNT,
    LandmarkError,
    chroma_figure,
    dominant_f0,
    duration_figure,
    evenly_spaced,
    figure_png,
    frame_figure,
    hist_figure,
    landmark_error,
    landmark_error_figure,
    mouth_opening,
    pick_frame,
    qc_figure,
    qc_scalars,
    read_mono,
    read_video_frame,
    share_figure,
    song_tempo,
    worst_sequences,
)

log = logging.getLogger("singinghead")

SCAN_FIT_DIR = "scan_fit"  # the copies of processed/<subject>/shape/fit.png, beside index.html


class ReportPaths(Protocol):
    """Where the per-segment files the report reads are; the stage passes its `tasks.layout.Layout`."""

    def frames_npz(self, subject: str, song: str, segment: int) -> Path: ...
    def motion_qc(self, subject: str, song: str, segment: int) -> Path: ...


def build_report(
    root: Path,
    out_dir: Path,
    paths: ReportPaths,
    task=None,
    *,
    portrait_size: int | None = None,
    scan_figures: Mapping[str, Path] | None = None,
) -> dict:
    """Write out_dir/index.html, out_dir/report.json and out_dir/scan_fit/; returns the numbers.

    `root` is the assembled dataset; `paths` finds the per-frame landmarks and refinement QC;
    `portrait_size` is the crop's output size in px (used where a QC record does not name the size it
    measured in); `scan_figures` maps each subject to its scan-fit picture (fit.png), copied into
    the report folder (a subject without one is named in the notes).
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
    if manifest.get("flags"):
        stats["flags"] = manifest["flags"]

    empty = empty_splits(root, manifest)
    warnings = [f"The {s} split is empty: {why}." for s, why in empty]
    for what, by_subject in sorted((manifest.get("flags") or {}).items()):
        warnings += [f"FLAGGED {what} of {subject}: {'; '.join(map(str, reasons))}."
                     for subject, reasons in sorted(by_subject.items())]
    for w in warnings:
        log.warning("dataset report: %s", w)
    stats["empty_splits"] = [s for s, _ in empty]

    figs["shares"] = (
        "Shares (over clips)" if clips else "Shares (over sequences)",
        figure_png(share_figure(clips or seqs)),
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
            figure_png(hist_figure(f0s, "Vocal dominant frequency", "Hz")),
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
            figure_png(hist_figure(tempos, "Song tempo", "BPM", bins=20)),
        )
    example = sorted(r["id"] for r in clips)[:1]
    if example:
        y, sr = read_mono(root / "bgm_seqs" / f"{example[0]}_bgm.wav")
        figs["chroma"] = (
            f"Example chromagram: BGM of {example[0]}",
            figure_png(chroma_figure(y, sr, f"{example[0]} BGM")),
        )

    mouth, qc = [], defaultdict(list)
    errors: list[LandmarkError] = []
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
            rec = read_json(qp)
            for k, v in qc_scalars(rec).items():
                qc[k].append(v)
            err = landmark_error(r["id"], rec, portrait_size)
            if err is not None:
                errors.append(err)
        progress.update(1)
    progress.close()
    if mouth:
        m = np.concatenate(mouth)
        stats["mouth_opening"] = {"frames": int(len(m)), "median": float(np.median(m)) if len(m) else None}
        figs["mouth"] = (
            "Mouth opening per frame: inner-lip distance |p62-p66| / face height |p27-p8|",
            figure_png(hist_figure(m.tolist(), "Mouth opening", "inner-lip gap / face height", bins=40)),
        )
    else:
        notes.append("No per-frame landmarks found under processed/: no mouth-opening figure.")
    durations = [int(r["frames"]) / fps for r in seqs]
    per_subject: dict[str, float] = defaultdict(float)
    for r, d in zip(seqs, durations):
        per_subject[r["subject"]] += d / 60
    if seqs:
        figs["durations"] = ("Durations", figure_png(duration_figure(durations, dict(per_subject))))
    stats["hours"] = round(sum(durations) / 3600, 4)
    if qc:
        figs["qc"] = (
            f"Refinement QC per sequence ({len(seqs)} sequences; keys as written by the refinement stage)",
            figure_png(qc_figure(dict(qc))),
        )
        stats["qc_keys"] = sorted(qc)
    else:
        notes.append("No refinement QC records (_qc.json) found: no QC figures.")

    fit_section = ""
    if errors:
        by_id = {r["id"]: r for r in seqs}
        flagged = [e for e in errors if e.flags()]
        worst = worst_sequences(errors, WORST_COUNT)
        stats["landmark_error"] = {
            "sequences": len(errors),
            "thresholds": {"poor_fit_fraction_of_portrait": POOR_FIT_FRACTION, "rose_fraction": ROSE_FRACTION},
            "flagged": {e.seq_id: e.flags() for e in flagged},
            "worst": [e.seq_id for e in worst],
        }
        if flagged:
            log.warning(
                "dataset report: %d of %d sequences flagged for their landmark fit (see %s): %s",
                len(flagged), len(errors), out_dir / "index.html", ", ".join(e.seq_id for e in flagged),
            )
        stills = {e.seq_id: _still_png(root, paths, by_id[e.seq_id], e) for e in worst}
        fit_section = render_fit_section(errors, flagged, worst, stills, by_id)
    else:
        notes.append("No landmark_rmse_px in the refinement QC records: no before/after landmark error figure.")

    scans = _copy_scan_figures(out_dir, scan_figures or {})
    stats["scan_fit_figures"] = sorted(scans)
    missing = sorted(set(scan_figures or {}) - set(scans))
    if missing:
        notes.append("No scan-fit figure (fit.png) for " + ", ".join(missing) + ": no scan, or the fit drew none.")

    html_text = render_html(manifest, stats, figs, notes, warnings=warnings, fit_section=fit_section, scans=scans)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "report.json", stats)
    write_bytes_atomic(out_dir / "index.html", html_text.encode("utf-8"))  # last: the task's output
    return stats


def empty_splits(root: Path, manifest: dict) -> list[tuple[str, str]]:
    """(split, why) for each split with a non-zero target that holds no clip in its `<split>.txt`."""
    out = []
    for split, target in (manifest.get("splits", {}).get("target") or {}).items():
        if not target:
            continue  # a split configured to be empty is not a surprise
        listing = Path(root) / f"{split}.txt"
        if not listing.is_file():
            out.append((split, f"{listing.name} is missing"))
        elif not any(line.strip() for line in listing.read_text(encoding="utf-8").splitlines()):
            n = manifest.get("counts", {}).get("clips", 0)
            out.append((split, f"{listing.name} lists no clip (target {100 * float(target):g} % of {n} clips; "
                               "with split_by_song whole songs are assigned, so a few songs cannot fill "
                               "every split: add recordings or set [dataset] split_by_song = false)"))
    return out


def _still_png(root: Path, paths: ReportPaths, row: dict, err: LandmarkError) -> bytes | None:
    """One frame of the sequence's video (the dataset's sequences/<id>/video.mp4) with its detected
    landmarks, as PNG; None when the video or the landmarks cannot be read."""
    video = Path(root) / "sequences" / row["id"] / "video.mp4"
    frames_npz = paths.frames_npz(row["subject"], row["song"], int(row["source_segment"]))
    lm, ok = None, None
    if frames_npz.is_file():
        with np.load(frames_npz) as z:
            if "landmarks" in z.files:
                lm = z["landmarks"]
                ok = z["landmark_ok"] if "landmark_ok" in z.files else None
    index = pick_frame(ok, int(row["frames"]))
    rgb = read_video_frame(video, index) if video.is_file() else None
    if rgb is None:
        log.warning("dataset report: no frame %d in %s", index, video)
        return None
    # landmarks are in portrait pixels; the sequence video is the portrait, possibly at another size
    scale = rgb.shape[1] / err.portrait_size if err.portrait_size else 1.0
    points = lm[index] if lm is not None and index < len(lm) else None
    title = f"{row['id']} frame {index}: after {err.after:.1f} px"
    return figure_png(frame_figure(rgb, points, title, scale))


def _copy_scan_figures(out_dir: Path, scan_figures: Mapping[str, Path]) -> dict[str, str]:
    """Copy each subject's fit.png to out_dir/scan_fit/<subject>.png; {subject: relative link}.

    Copies of subjects no longer given are removed, so the folder matches the page."""
    folder = Path(out_dir) / SCAN_FIT_DIR
    links = {}
    for subject in sorted(scan_figures):
        src = Path(scan_figures[subject])
        if not src.is_file():
            continue
        name = f"{check_name(subject)}.png"
        write_bytes_atomic(folder / name, src.read_bytes())
        links[subject] = f"{SCAN_FIT_DIR}/{name}"
    if folder.is_dir():
        keep = {Path(v).name for v in links.values()}
        for old in sorted(folder.glob("*.png")):
            if old.name not in keep:
                remove_inside(out_dir, old.relative_to(out_dir))
    return links


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def render_fit_section(
    errors: list[LandmarkError],
    flagged: list[LandmarkError],
    worst: list[LandmarkError],
    stills: dict[str, bytes | None],
    by_id: dict[str, dict],
) -> str:
    """The landmark-fit part of the page: the before/after figure, flagged and worst sequences."""
    e = html.escape
    parts = [
        "<h2 id='landmark-fit'>Landmark error before and after refinement</h2>",
        f"<p>Landmark RMSE of each sequence, before (the per-frame estimates) and after refinement, "
        f"over frames with reliable landmarks. A sequence is <b>flagged</b> when its fit is poor (RMSE "
        f"after refinement above {100 * POOR_FIT_FRACTION:g} % of the portrait size) or its error rose "
        f"(after above before by more than {100 * ROSE_FRACTION:g} %).</p>",
        _img(figure_png(landmark_error_figure(errors)), "landmark_error"),
    ]

    def row_cells(x: LandmarkError) -> str:
        r = by_id[x.seq_id]
        change = f"{100 * x.change:+.0f} %" if np.isfinite(x.change) else "-"
        share = f"{x.percent(x.after):.1f} %" if x.portrait_size else "-"
        return (f"<td>{e(x.seq_id)}</td><td>{e(r['subject'])} / {e(r['song'])} / segment "
                f"{e(str(r['source_segment']))}</td><td>{x.before:.2f}</td><td>{x.after:.2f}</td>"
                f"<td>{change}</td><td>{share}</td>")

    head = ("<tr><th>sequence</th><th>subject / song / crop segment</th><th>RMSE before (px)</th>"
            "<th>RMSE after (px)</th><th>change</th><th>after, of portrait</th>")
    if flagged:
        parts.append(f"<h3>Flagged sequences ({len(flagged)} of {len(errors)})</h3>"
                     f"<table class='flagged'>{head}<th>why</th></tr>")
        for x in sorted(flagged, key=lambda x: x.seq_id):
            parts.append(f"<tr>{row_cells(x)}<td>{e('; '.join(x.flags()))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append(f"<p>No sequence flagged ({len(errors)} measured).</p>")
    parts.append(f"<h3>Worst sequences (the {len(worst)} largest errors after refinement)</h3>"
                 f"<table class='worst'>{head}<th>frame with detected landmarks</th></tr>")
    for x in worst:
        png = stills.get(x.seq_id)
        still = _img(png, f"frame of {x.seq_id}") if png else "no frame could be read"
        parts.append(f"<tr>{row_cells(x)}<td class='still'>{still}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)


def render_html(
    manifest: dict,
    stats: dict,
    figs: dict[str, tuple[str, bytes]],
    notes: list[str],
    warnings: list[str] = (),
    fit_section: str = "",
    scans: Mapping[str, str] | None = None,
) -> str:
    e = html.escape
    counts = manifest.get("counts", {})
    splits = manifest.get("splits", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SingingHead dataset report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".warn{background:#fee;border:1px solid #c33;padding:.6em}img{max-width:100%}"
        "td.still img{max-width:260px}</style></head><body>",
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
    for w in warnings:
        parts.append(f"<p class='warn empty-split'><b>Warning:</b> {e(w)}</p>")
    parts.append("<h2>Counts and splits</h2><table>")
    for k, v in counts.items():
        parts.append(f"<tr><th>{e(k)}</th><td>{e(json.dumps(v))}</td></tr>")
    parts.append(f"<tr><th>split target</th><td>{e(json.dumps(splits.get('target')))}</td></tr>")
    parts.append(f"<tr><th>split achieved</th><td>{e(json.dumps(splits.get('achieved')))}</td></tr>")
    parts.append(
        f"<tr><th>grouped by (subject, song)</th><td>{e(str(splits.get('by_song')))}</td></tr></table>"
    )
    for key, (caption, png) in figs.items():
        parts.append(f"<h2>{e(caption)}</h2>" + _img(png, key))
    if fit_section:
        parts.append(fit_section)
    if scans:
        parts.append("<h2 id='scan-fit'>Scan fits (processed/&lt;subject&gt;/shape/fit.png)</h2>")
        for subject, link in scans.items():
            parts.append(f"<h3>{e(subject)}</h3><a href='{e(link)}'><img alt='scan fit {e(subject)}' "
                         f"src='{e(link)}'></a>")
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
        " frames with reliable landmarks.</li>"
        "<li>Landmark error: RMSE in portrait pixels between the detected landmarks and the model's "
        "projected landmarks, before (per-frame estimates) and after refinement, from the refinement's "
        f"QC record; flagged when after &gt; {100 * POOR_FIT_FRACTION:g} % of the portrait size or after &gt; "
        f"before x {1 + ROSE_FRACTION:g}. The frame shown for a sequence is the middle one of its frames "
        "with reliable landmarks.</li></ul></body></html>\n"
    )
    return "\n".join(parts)
