"""The dataset report's landmark-fit QC: before/after figure, flagged and worst sequences with a frame
each, scan-fit figures copied beside the page, empty-split warnings, panels that do not overlap.

The per-subject outputs are the small stand-ins of `dataset_helpers.make_subject_outputs`; the QC
records are rewritten here with known landmark errors, and the report runs as DatasetReport runs it.
"""
from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
from dataset_helpers import SIZE, make_subject_outputs
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.layout_engine import ConstrainedLayoutEngine

from pipeline.build import config_overrides
from tasks.assemble import AssembleDataset
from tasks.common.atomic import write_json_atomic
from tasks.dataset.metadata import read_metadata
from tasks.layout import Layout
from tasks.report import DatasetReport
from tasks.reporting.figures import (
    POOR_FIT_FRACTION,
    WORST_COUNT,
    LandmarkError,
    duration_figure,
    figure_png,
    flag_reasons,
    frame_figure,
    landmark_error_figure,
    new_figure,
    pick_frame,
    qc_figure,
    read_video_frame,
    share_figure,
)


@pytest.fixture
def layout(luigi_paths):
    return Layout.from_config()


def _assemble(luigi_paths, plan=None):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, plan)
    return AssembleDataset().assemble()


def _run_report(layout):
    with config_overrides(crop={"output_size": SIZE}):
        DatasetReport().run()
    page = (layout.report_dir() / "index.html").read_text()
    stats = json.loads((layout.report_dir() / "report.json").read_text())
    return page, stats


def _qc(before, after, size=SIZE):
    """A refinement QC record as RefineMotion writes it (the keys the report reads)."""
    return {"landmark_rmse_px": {"before": before, "after": after, "frames_measured": 50},
            "outlier_fraction": {"expression": 0.01}, "params": {"image_size": size}}


def _png_bytes():
    fig = new_figure(2, 2)
    fig.subplots().plot([0, 1], [1, 0])
    return figure_png(fig)


def test_report_flags_poor_and_worse_fits_shows_worst_frames_and_copies_scan_fits(luigi_paths, layout):
    _assemble(luigi_paths)
    seqs = sorted((r for r in read_metadata(layout.dataset_root()) if r["kind"] == "sequence"),
                  key=lambda r: r["id"])
    assert len(seqs) >= 3
    # known errors (px of the 64 px portrait; 5 % is 3.2 px): one poor fit, one that rose, the rest fine
    poor, rose = seqs[0], seqs[1]
    values = {poor["id"]: (5.0, 4.0), rose["id"]: (1.0, 1.5)}
    for k, r in enumerate(seqs[2:]):
        values[r["id"]] = (2.0, 1.0 + 0.1 * k)
    for r in seqs:
        write_json_atomic(layout.motion_qc(r["subject"], r["song"], int(r["source_segment"])), _qc(*values[r["id"]]))
    # a scan fit picture for the first subject only
    subjects = sorted({r["subject"] for r in seqs})
    fit_png = _png_bytes()
    (layout.shape_dir(subjects[0]) / "fit.png").write_bytes(fit_png)

    page, stats = _run_report(layout)

    err = stats["landmark_error"]
    assert err["sequences"] == len(seqs)
    assert set(err["flagged"]) == {poor["id"], rose["id"]}
    assert any("poor fit" in why for why in err["flagged"][poor["id"]])
    assert any("error rose" in why for why in err["flagged"][rose["id"]])
    assert not any("poor fit" in why for why in err["flagged"][rose["id"]])
    by_after = sorted(values, key=lambda i: (-values[i][1], i))
    assert err["worst"] == by_after[:WORST_COUNT] and err["worst"][0] == poor["id"]

    # the page: the before/after figure, the flagged table with its reasons, a frame per worst sequence
    assert "Landmark error before and after refinement" in page
    flagged_table = page.split("<table class='flagged'>")[1].split("</table>")[0]
    assert poor["id"] in flagged_table and rose["id"] in flagged_table and "poor fit" in flagged_table
    assert seqs[2]["id"] not in flagged_table
    worst_table = page.split("<table class='worst'>")[1].split("</table>")[0]
    n_worst = min(WORST_COUNT, len(seqs))
    assert worst_table.count("data:image/png;base64,") == n_worst
    assert worst_table.index(poor["id"]) < worst_table.index(by_after[1])

    # scan fits: copied beside the page and linked relatively; the subject without one is named
    copy = layout.report_dir() / "scan_fit" / f"{subjects[0]}.png"
    assert copy.read_bytes() == fit_png
    assert f"src='scan_fit/{subjects[0]}.png'" in page
    assert stats["scan_fit_figures"] == [subjects[0]]
    assert f"No scan-fit figure (fit.png) for {', '.join(subjects[1:])}" in page
    # self-contained: every image is embedded or inside the report folder
    for src in re.findall(r"src='([^']*)'", page):
        assert src.startswith("data:image/png;base64,") or (layout.report_dir() / src).is_file()
    assert str(layout.processed) not in page

    # a rerun gives the same bytes; a scan figure that went away leaves no stale copy
    before = (layout.report_dir() / "index.html").read_bytes()
    page2, _ = _run_report(layout)
    assert page2.encode() == before
    (layout.shape_dir(subjects[0]) / "fit.png").unlink()
    page3, stats3 = _run_report(layout)
    assert not copy.exists() and stats3["scan_fit_figures"] == [] and "scan_fit/" not in page3


def test_empty_split_is_warned_in_page_and_log(luigi_paths, layout, caplog):
    # one song: grouped by song, all its clips go to one split and the other two stay empty
    manifest = _assemble(luigi_paths, plan={"S001": {"001_pop_one": [300]}})
    clips = [r for r in read_metadata(layout.dataset_root()) if r["kind"] == "clip"]
    used = {r["split"] for r in clips}
    expected_empty = sorted(s for s, f in manifest["splits"]["target"].items() if f > 0 and s not in used)
    assert len(expected_empty) == 2
    with caplog.at_level(logging.WARNING, logger="singinghead"):
        page, stats = _run_report(layout)
    assert sorted(stats["empty_splits"]) == expected_empty
    warned = [m for m in caplog.messages if "split is empty" in m]
    assert len(warned) == 2 and all(any(s in m for m in warned) for s in expected_empty)
    for s in expected_empty:
        assert re.search(rf"class='warn empty-split'><b>Warning:</b> The {s} split is empty", page)
    # the stand-in QC records of the helper have no landmark_rmse_px: said so, no figure
    assert "No landmark_rmse_px" in page and "landmark_error" not in stats


def test_flag_thresholds():
    size = 1000
    edge = POOR_FIT_FRACTION * size
    assert flag_reasons(edge, edge, size) == []                    # at the threshold: fine
    assert len(flag_reasons(edge + 1, edge + 1, size)) == 1        # above it: a poor fit
    assert flag_reasons(10.0, 11.0, size) == []                    # +10 %: fine
    assert "error rose" in flag_reasons(10.0, 11.2, size)[0]       # +12 %: flagged
    assert flag_reasons(10.0, 11.2, None)[0].startswith("error rose")  # no size: only the rise is judged
    assert "not measured" in flag_reasons(3.0, float("nan"), size)[0]
    e = LandmarkError("id0_1_0", 4.0, 2.0, 64)
    assert e.change == pytest.approx(-0.5) and e.percent(e.after) == pytest.approx(3.125)


def _overlap_area(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0) * max(h, 0)


def test_figures_are_constrained_and_panels_do_not_overlap():
    rng = np.random.default_rng(0)
    errors = [LandmarkError(f"id{k}_12_{k % 3}_long_sequence_name", float(b), float(a), 1024)
              for k, (b, a) in enumerate(rng.uniform(5, 80, size=(30, 2)))]
    qc = {f"group.metric_with_a_long_name_{k}": rng.normal(size=20).tolist() for k in range(7)}
    figs = {
        "landmark_error": landmark_error_figure(errors),
        "qc": qc_figure(qc),
        "durations": duration_figure(rng.uniform(3, 60, 40).tolist(), {f"S{k:03d}": 3.0 * k for k in range(20)}),
        "shares": share_figure([{"genre": g, "professional": "true", "gender": "f", "language": "en"}
                                for g in ("pop", "rock", "folk", "country")]),
    }
    for name, fig in figs.items():
        assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine), name
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # runs the layout engine
        renderer = canvas.get_renderer()
        boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible() and ax.axison]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert _overlap_area(boxes[i], boxes[j]) < 1.0, (name, i, j)
    # 30 sequences: a row of bars each, flagged ids in red
    bars = figs["landmark_error"].axes[0]
    labels = bars.get_yticklabels()
    assert len(labels) == 30
    red = {lab.get_text() for lab in labels if lab.get_color() == "#cc3311"}
    assert red == {e.seq_id for e in errors if e.flags()} and red


def test_still_frame_is_the_frame_asked_for_with_landmarks_drawn(tmp_path):
    from dataset_helpers import write_portrait

    video = tmp_path / "v.mp4"
    write_portrait(video, 50)  # frame i has row i % 64 white
    for i in (0, 37):
        rgb = read_video_frame(video, i)
        rows = rgb.min(axis=2).mean(axis=1)
        assert int(np.argmax(rows)) == i
    assert read_video_frame(video, 50) is None
    ok = np.array([False, False, True, True, True, False])
    assert pick_frame(ok, 6) == 3 and pick_frame(np.zeros(6, bool), 6) == 3
    lm = np.random.default_rng(0).uniform(10, 50, size=(68, 2))
    fig = frame_figure(rgb, lm, "x", scale=0.5)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), lm * 0.5)
