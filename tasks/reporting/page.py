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
    SONGS_PER_TIMELINE,
    pick_frame,
    qc_figure,
    qc_scalars,
    read_mono,
    read_video_frame,
    share_figure,
    song_tempo,
    timeline_figure,
    worst_sequences,
    yield_figure,
)
from tasks.reporting.data_yield import CATEGORIES, SongYield, cut_reason_counts, minutes, song_yield, totals

log = logging.getLogger("singinghead")

SCAN_FIT_DIR = "scan_fit"  # the copies of processed/<subject>/shape/fit.png, beside index.html


class ReportPaths(Protocol):
    """Where the per-segment files the report reads are; the stage passes its `tasks.layout.Layout`."""

    def frames_npz(self, subject: str, song: str, segment: int) -> Path: ...
    def motion_qc(self, subject: str, song: str, segment: int) -> Path: ...
    def segments_json(self, subject: str, song: str) -> Path: ...
    def list_songs(self, subject: str) -> list[str]: ...


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

    songs = song_yields(manifest, meta, paths, notes)
    yield_section = ""
    if songs:
        stats["yield"] = yield_stats(songs, fps)
        yield_section = render_yield_section(songs, fps, manifest)
    else:
        notes.append("No crop segments (segments.json) found under processed/: no yield or timeline.")

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
        thresholds = {}
        if portrait_size:
            thresholds["landmark_rmse_px.after"] = (
                POOR_FIT_FRACTION * portrait_size,
                f"px ({100 * POOR_FIT_FRACTION:g} % of the {portrait_size} px portrait)")
        figs["qc"] = (
            f"Refinement quality per sequence ({len(seqs)} sequences)",
            figure_png(qc_figure(dict(qc), thresholds)),
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

    html_text = render_html(manifest, stats, figs, notes, warnings=warnings, fit_section=fit_section,
                            scans=scans, yield_section=yield_section)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "report.json", stats)
    write_bytes_atomic(out_dir / "index.html", html_text.encode("utf-8"))  # last: the task's output
    return stats


def song_yields(manifest: dict, meta: list[dict], paths: ReportPaths, notes: list[str]) -> list[SongYield]:
    """SongYield of every song of the dataset's subjects that has a segments.json (the crop's output),
    songs whose every segment was too short included."""
    fps = float(manifest["dataset"]["fps"])
    min_frames = int(round(float(manifest["dataset"].get("min_sequence_seconds", 3.0)) * fps))
    spans: dict[tuple[str, str], list] = defaultdict(list)
    clip_frames: dict[tuple[str, str], int] = defaultdict(int)
    for r in meta:
        key = (r["subject"], r["song"])
        if r["kind"] == "sequence":
            spans[key].append((int(r["start_frame"]), int(r["end_frame"])))
        elif r["kind"] == "clip":
            clip_frames[key] += int(r["frames"])
    out = []
    for subject in sorted(manifest.get("subjects", {})):
        songs = sorted(set(paths.list_songs(subject)) | {s for (subj, s) in spans if subj == subject})
        for song in songs:
            seg_file = paths.segments_json(subject, song)
            if not seg_file.is_file():
                notes.append(f"No segments.json for {subject} / {song}: left out of the yield.")
                continue
            out.append(song_yield(subject, song, read_json(seg_file), spans.get((subject, song), []),
                                  clip_frames.get((subject, song), 0), min_frames, fps))
            if not out[-1].recorded_known:
                notes.append(f"{subject} / {song}: segments.json does not record the recording's length "
                             "(an older crop): recorded minutes count to the last segment's end.")
    return out


def yield_stats(songs: list[SongYield], fps: float) -> dict:
    """report.json's yield: minutes recorded / in segments / in sequences / in clips, losses by
    category, cut reasons, and the same per song."""
    def mins(frames: int) -> float:
        return round(minutes(frames, fps), 4)

    t = totals(songs)
    return {
        "minutes": {k: mins(t[k]) for k in ("recorded", "segments", "sequences", "clips")},
        "lost_minutes": {c: mins(v) for c, v in t["lost"].items()},
        "cut_reasons": cut_reason_counts(songs),
        "per_song": {f"{s.subject}/{s.song}": {"recorded": mins(s.recorded), "segments": mins(s.segments),
                                                "sequences": mins(s.sequences), "clips": mins(s.clips),
                                                "lost": {c: mins(v) for c, v in s.lost.items() if v},
                                                "cut_reasons": dict(sorted(s.cut_reasons().items()))}
                     for s in songs},
    }


def render_yield_section(songs: list[SongYield], fps: float, manifest: dict) -> str:
    """The yield part of the page: the minutes table, where frames were lost (figure), the cut
    reasons (table) and the per-song timelines."""
    e = html.escape
    t = totals(songs)
    rec = max(t["recorded"], 1)
    min_s = manifest["dataset"].get("min_sequence_seconds", 3.0)
    clip_s = int(manifest["dataset"].get("clip_frames", 240)) / fps

    def row(label: str, frames: int) -> str:
        return (f"<tr><th>{e(label)}</th><td class='num'>{minutes(frames, fps):.2f}</td>"
                f"<td class='num'>{100 * frames / rec:.1f} %</td></tr>")

    parts = [
        "<h2 id='yield'>Yield: where the recorded minutes went</h2>",
        "<table class='yield'><tr><th></th><th>minutes</th><th>of recorded</th></tr>",
        row(f"Recorded ({len(songs)} songs)", t["recorded"]),
        row("In portrait segments (a face followed with a fixed crop)", t["segments"]),
        row(f"In dataset sequences (segments of at least {min_s:g} s)", t["sequences"]),
        row(f"In {clip_s:g} s clips", t["clips"]),
        "</table>",
        "<h3>Lost frames</h3><table class='losses'><tr><th>why</th><th>minutes</th><th>of recorded</th></tr>",
    ]
    words = {"segments under the minimum sequence length": f"segments under {min_s:g} s",
             "remainders shorter than a clip": f"remainders under {clip_s:g} s (sequence ends in no clip)",
             "in clips": f"in {clip_s:g} s clips"}
    for c in CATEGORIES[1:]:
        if t["lost"][c]:
            parts.append(row(words.get(c, c), t["lost"][c]))
    parts.append("</table>")
    parts.append("<figure>" + _img(figure_png(yield_figure(songs, fps, words)), "yield per song") +
                 "<figcaption>Each song's recorded minutes by where they went.</figcaption></figure>")
    counts = cut_reason_counts(songs)
    parts.append("<h3>Why segments ended</h3><table class='cuts'><tr><th>cut reason</th><th>segments</th>"
                 "<th>meaning</th></tr>")
    meaning = {
        "edge landmark": "a face landmark came too close to the portrait's border",
        "forehead out": "the forehead above the brows left the portrait",
        "lost face": "the face the segment followed was no longer found in its portrait",
        "repeat gap": "the recorder dropped more frames than can be repeated over",
        "end of video": "the recording ended",
        "not recorded": "segments.json written before cut reasons were recorded",
    }
    for reason, n in counts.items():
        parts.append(f"<tr><th>{e(reason)}</th><td class='num'>{n}</td>"
                     f"<td>{e(meaning.get(reason, ''))}</td></tr>")
    parts.append("</table>")
    for k in range(0, len(songs), SONGS_PER_TIMELINE):
        chunk = songs[k:k + SONGS_PER_TIMELINE]
        more = f" (songs {k + 1}-{k + len(chunk)} of {len(songs)})" if len(songs) > SONGS_PER_TIMELINE else ""
        parts.append("<figure>" + _img(figure_png(timeline_figure(chunk, fps)), f"segment timeline{more}") +
                     f"<figcaption>Segments over time{e(more)}: a marker at each segment's end says why it "
                     "ended; thin bars are dropped frames.</figcaption></figure>")
    return "\n".join(parts)


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


def _duration(minutes: float) -> str:
    """Minutes in the unit that reads best: seconds under 2 min, hours from 2 h."""
    if minutes < 2:
        return f"{60 * minutes:.0f} s"
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


COUNT_WORDS = {
    "subjects": "Subjects",
    "sequences_kept": "Sequences (face-stable segments of at least {min_s:g} s)",
    "sequences_dropped_short": "Segments left out for being shorter than {min_s:g} s",
    "sequence_frames": "Frames in sequences",
    "clips": "Clips ({clip_frames} frames = {clip_s:g} s each)",
    "clip_frames_dropped": "Frames of sequences in no clip (remainders under {clip_s:g} s)",
}


def render_counts(manifest: dict) -> str:
    """The counts and splits tables, in words (manifest.json's `counts` and `splits`)."""
    e = html.escape
    counts, splits, ds = manifest.get("counts", {}), manifest.get("splits", {}), manifest.get("dataset", {})
    fps = float(ds.get("fps", 30.0))
    clip_frames = int(ds.get("clip_frames", 240))
    fmt = {"min_s": float(ds.get("min_sequence_seconds", 3.0)), "clip_frames": clip_frames,
           "clip_s": clip_frames / fps}
    parts = ["<h2>Counts</h2><table class='counts'>"]
    for k in [k for k in COUNT_WORDS if k in counts] + [k for k in counts if k not in COUNT_WORDS]:
        v = counts[k]
        if k == "clips_per_split":
            continue   # in the splits table
        label = COUNT_WORDS.get(k, k.replace("_", " ").capitalize()).format(**fmt)
        value = f"{v:,}" if isinstance(v, int) else e(str(v))
        if k.endswith("frames") or k == "clip_frames_dropped":
            value += f" ({v / fps / 60:.1f} min)" if isinstance(v, int) else ""
        parts.append(f"<tr><th>{e(label)}</th><td class='num'>{value}</td></tr>")
    parts.append("</table>")
    target, achieved = splits.get("target") or {}, splits.get("achieved") or {}
    per_split = counts.get("clips_per_split") or {}
    names = [s for s in ("train", "val", "test") if s in target or s in per_split] or sorted(target)
    parts.append("<h2>Splits</h2><table class='splits'><tr><th>split</th><th>clips</th>"
                 "<th>share of clips</th><th>target share</th></tr>")
    for sp in names:
        a = achieved.get(sp)
        tg = target.get(sp)
        parts.append(f"<tr><th>{e(sp)}</th><td class='num'>{per_split.get(sp, '-')}</td>"
                     f"<td class='num'>{'-' if a is None else f'{100 * float(a):.1f} %'}</td>"
                     f"<td class='num'>{'-' if tg is None else f'{100 * float(tg):.1f} %'}</td></tr>")
    parts.append("</table>")
    by_song = splits.get("by_song")
    if by_song is not None:
        parts.append("<p>" + ("Each song of a subject goes whole into one split, so no song is in two splits."
                              if by_song else "Clips are split one by one: a song's clips may be in several "
                              "splits.") + "</p>")
    return "\n".join(parts)


def render_html(
    manifest: dict,
    stats: dict,
    figs: dict[str, tuple[str, bytes]],
    notes: list[str],
    warnings: list[str] = (),
    fit_section: str = "",
    scans: Mapping[str, str] | None = None,
    yield_section: str = "",
) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SingingHead dataset report</title>",
        "<style>body{font-family:sans-serif;font-size:16px;line-height:1.4;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}"
        ".warn{background:#fee;border:1px solid #c33;padding:.6em}"
        "img{max-width:100%;height:auto;display:block}"
        "figure{margin:.5em 0 1.5em}figcaption{color:#555;font-size:14px}"
        "td.still img{max-width:260px}</style></head><body>",
        "<h1>SingingHead dataset report</h1>",
        f"<p>Tool version {e(str(manifest.get('tool', {}).get('version', '?')))}; "
        f"{stats['sequences']} sequences ({stats['hours']} h), {stats['clips']} clips of "
        f"{manifest.get('dataset', {}).get('clip_frames', 240)} frames.</p>",
    ]
    if "yield" in stats:
        m = stats["yield"]["minutes"]
        share = 100 * m["clips"] / m["recorded"] if m["recorded"] else 0.0
        parts.append(f"<p class='summary'><b>{_duration(m['clips'])} of {_duration(m['recorded'])} recorded "
                     f"({share:.0f} %) ended in clips</b>; {_duration(m['sequences'])} are in sequences. "
                     "<a href='#yield'>Where the rest went</a>.</p>")
    if manifest.get("stand_ins"):
        parts.append(
            "<p class='warn'><b>Built with stand-in models</b> (not the real models; results test the "
            "pipeline, they are not a dataset release): " + e(", ".join(manifest["stand_ins"])) + "</p>"
        )
    for w in warnings:
        parts.append(f"<p class='warn empty-split'><b>Warning:</b> {e(w)}</p>")
    parts.append(render_counts(manifest))
    if yield_section:
        parts.append(yield_section)
    for key, (caption, png) in figs.items():
        parts.append(f"<h2>{e(caption)}</h2><figure>" + _img(png, key) + "</figure>")
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
