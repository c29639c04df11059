"""The report's yield against a hand-computed tiny dataset: minutes recorded / in segments / in
sequences / in clips, where the rest was lost, why each segment ended, and old segments.json files."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from dataset_helpers import make_subject_outputs

from pipeline.build import config_overrides
from tasks.assemble import AssembleDataset
from tasks.common.atomic import write_json_atomic
from tasks.layout import Layout
from tasks.report import DatasetReport
from tasks.reporting.data_yield import (LOSS_FACE, LOSS_MISSING, LOSS_NOFACE, LOSS_REMAINDER, LOSS_SHORT,
                                        LOSS_UNACCOUNTED, song_yield)

# dataset_helpers.DEFAULT_PLAN's segments (frames, end exclusive), with the recording around them
SONGS = {
    ("S001", "001_country_take-me-home"): {
        "frame_count": 800,
        "segments": [(100, 600, "edge landmark"), (650, 710, "repeat gap")],        # 710-650 = 60 < 90: short
        "dropped": [(0, 100, "no face"), (600, 650, "edge landmark"),
                    (710, 800, "frames missing from the recording")],
    },
    ("S001", "002_rock_we-will"): {
        "frame_count": 400,
        "segments": [(100, 350, "lost face")],
        "dropped": [(0, 100, "forehead out"), (350, 400, "no face")],
    },
    ("S002", "003_folk_scarborough"): {
        "frame_count": 690,
        "segments": [(100, 340, "forehead out"), (390, 690, "end of video")],
        "dropped": [(0, 100, "no face"), (340, 390, "forehead out")],
    },
}
# by hand, in frames at 30 fps (clips of 240 frames, sequences of at least 90):
#   recorded 800 + 400 + 690 = 1890; segments 560 + 250 + 540 = 1350; sequences 500 + 250 + 540 = 1290
#   clips 2*240 + 240 + 2*240 = 1200; remainders 20 + 10 + 60 = 90; short 60
#   face left the portrait (edge, forehead) 50 + 100 + 50 = 200; no face 100 + 50 + 100 = 250; missing 90
#   1200 + 90 + 60 + 200 + 250 + 90 = 1890
MIN = 30 * 60


def _segments_json(spec):
    return {"segments": [{"index": k, "start_frame": a, "end_frame": b, "video": f"segment_{k:03d}.mp4",
                          "cut_reason": why} for k, (a, b, why) in enumerate(spec["segments"])],
            "dropped": [{"start_frame": a, "end_frame": b, "reason": why} for a, b, why in spec["dropped"]],
            "frame_count": spec["frame_count"], "fps": 30.0, "params": {"margin": 0.6}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of DEFAULT_PLAN's subjects with SONGS' segments.json, built once: (folder, stats, page)."""
    tmp = tmp_path_factory.mktemp("yield")
    raw, processed = tmp / "raw", tmp / "processed"
    raw.mkdir()
    processed.mkdir()
    paths = {"raw_dir": raw, "processed_dir": processed, "release_dir": processed / "release"}
    with config_overrides(paths=paths, crop={"output_size": 64}):
        make_subject_outputs(raw, processed)
        layout = Layout.from_config()
        for (subject, song), spec in SONGS.items():
            write_json_atomic(layout.segments_json(subject, song), _segments_json(spec))
            for k, (a, b, _) in enumerate(spec["segments"]):
                if b - a >= 90:   # a QC record with the keys the refinement writes (flame_fit.refine)
                    write_json_atomic(layout.motion_qc(subject, song, k), _qc(a / 100))
        AssembleDataset().assemble()
        DatasetReport().run()
    folder = layout.report_dir()
    return folder, json.loads((folder / "report.json").read_text()), (folder / "index.html").read_text()


def _qc(x: float) -> dict:
    return {"frames": 240,
            "landmark_rmse_px": {"before": 2.0 + x, "after": 1.0 + x, "after_vs_smoothed": 0.5,
                                 "frames_measured": 200},
            "jitter": {"global_orient_deg": {"before": 0.2, "after": 0.05 * x},
                       "jaw_pose_deg": {"before": 0.2, "after": 0.1 + x / 10},
                       "landmarks_px": {"before": 0.5, "after": 0.1 + x / 20}},
            "outlier_fraction": {"expression": 0.01 * x, "jaw_pose": 0.02},
            "landmark_detections_failed": 0.01 * x, "iterations": 100, "converged": True,
            "params": {"image_size": 64}}


def test_yield_and_cut_reasons_match_the_hand_count(report):
    _, stats, page = report

    y = stats["yield"]
    want = {"recorded": 1890, "segments": 1350, "sequences": 1290, "clips": 1200}
    assert y["minutes"] == {k: pytest.approx(v / MIN, abs=1e-4) for k, v in want.items()}
    lost = {LOSS_REMAINDER: 90, LOSS_SHORT: 60, LOSS_FACE: 200, LOSS_NOFACE: 250, LOSS_MISSING: 90}
    assert {k: v for k, v in y["lost_minutes"].items() if v} == {k: pytest.approx(v / MIN, abs=1e-4)
                                                                 for k, v in lost.items()}
    assert y["cut_reasons"] == {"edge landmark": 1, "forehead out": 1, "lost face": 1, "repeat gap": 1,
                                "end of video": 1}
    song = y["per_song"]["S001/001_country_take-me-home"]
    assert song["clips"] == pytest.approx(480 / MIN, abs=1e-4)
    assert song["lost"][LOSS_SHORT] == pytest.approx(60 / MIN, abs=1e-4)
    assert song["cut_reasons"] == {"edge landmark": 1, "repeat gap": 1}

    # the page says it in words: the summary, the minutes table, the lost frames, the cut reasons
    assert "40 s of 63 s recorded (63 %) ended in clips</b>; 43 s are in sequences" in page
    table = page.split("<table class='yield'>")[1].split("</table>")[0]
    assert re.search(r"Recorded \(3 songs\)</th><td class='num'>1\.05</td><td class='num'>100\.0 %", table)
    assert re.search(r"In 8 s clips</th><td class='num'>0\.67</td><td class='num'>63\.5 %", table)
    losses = page.split("<table class='losses'>")[1].split("</table>")[0]
    assert "segments under 3 s" in losses and "remainders under 8 s" in losses and "no face found" in losses
    cuts = page.split("<table class='cuts'>")[1].split("</table>")[0]
    for reason in ("edge landmark", "forehead out", "lost face", "repeat gap", "end of video"):
        assert re.search(rf"<th>{reason}</th><td class='num'>1</td>", cuts), reason
    # counts in words, not raw keys or JSON
    counts = page.split("<table class='counts'>")[1].split("</table>")[0]
    assert "Segments left out for being shorter than 3 s" in counts and "sequences_kept" not in counts
    assert "{" not in page.split("<h2>Splits</h2>")[1].split("</table>")[0]
    # QC in words, with units and the threshold that flags a sequence (5 % of the 64 px portrait)
    assert stats["qc_keys"] and "Refinement quality per sequence" in page


def test_old_segments_json_without_cut_reasons_or_length_still_reads():
    old = {"segments": [{"index": 0, "start_frame": 10, "end_frame": 400, "video": "segment_000.mp4"},
                        {"index": 1, "start_frame": 420, "end_frame": 480, "video": "segment_001.mp4"}]}
    s = song_yield("S001", "001_x", old, [(10, 400)], 240, 90, 30.0)
    assert not s.recorded_known and s.recorded == 480
    assert s.segments == 450 and s.sequences == 390 and s.clips == 240
    assert s.lost[LOSS_SHORT] == 60 and s.lost[LOSS_REMAINDER] == 150 and s.lost[LOSS_UNACCOUNTED] == 30
    assert sum(s.by_category().values()) == s.recorded
    assert dict(s.cut_reasons()) == {"not recorded": 2}


# ----------------------------------------------------------------------------- in a real browser
# Run in the page after load: every <img> decoded (naturalWidth > 0), no two boxes of figures,
# images, tables, headings, paragraphs and captions overlapping (unless one holds the other), nothing
# wider than the window. The verdict is written into the DOM, which --dump-dom prints.
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const out = {images: 0, broken: [], overlaps: [], too_wide: [], width: window.innerWidth,
               height: document.documentElement.scrollHeight};
  for (const img of document.images) {
    out.images += 1;
    if (!img.complete || img.naturalWidth === 0) out.broken.push(img.alt || img.src.slice(0, 60));
  }
  const els = [...document.querySelectorAll('img,table,h1,h2,h3,p,figcaption,ul')];
  const boxes = els.map(e => e.getBoundingClientRect());
  const name = e => e.tagName + ':' + (e.alt || e.textContent || '').trim().slice(0, 40);
  for (let i = 0; i < els.length; i++) {
    if (boxes[i].right > window.innerWidth + 1) out.too_wide.push(name(els[i]));
    for (let j = i + 1; j < els.length; j++) {
      if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
      const a = boxes[i], b = boxes[j];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1) out.overlaps.push([name(els[i]), name(els[j])]);
    }
  }
  const pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = 'CHECK' + JSON.stringify(out) + 'END';
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium here: `make test` installs Debian's chromium (apt-get install chromium)")


def _browser(chromium: str, *args: str, height: int = 900) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--no-first-run", "--disable-extensions", f"--window-size=1280,{height}",
             "--virtual-time-budget=10000"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


def test_page_in_a_headless_browser_loads_every_image_and_nothing_overlaps(report, tmp_path):
    chromium = _chromium()
    folder, _, page = report
    # the report folder as a user opens it, plus the check script (the report itself stays untouched)
    copy = tmp_path / "report"
    shutil.copytree(folder, copy)
    (copy / "index.html").write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    r = _browser(chromium, "--dump-dom", (copy / "index.html").as_uri())
    m = re.search(r"<pre id=\"layout-check\">CHECK(.*?)END</pre>", r.stdout, re.S)
    assert m, f"no verdict from chromium (rc {r.returncode}): {r.stderr[-2000:]}"
    verdict = json.loads(html.unescape(m.group(1)))
    n_img = page.count("<img ")
    assert verdict["images"] == n_img and n_img >= 5
    assert verdict["broken"] == []
    assert verdict["overlaps"] == []
    assert verdict["too_wide"] == []
    # a screenshot of the page as it is, kept beside the test's files
    shot = tmp_path / "report.png"
    r = _browser(chromium, f"--screenshot={shot}", folder.joinpath("index.html").as_uri(),
                 height=min(int(verdict["height"]), 16000))
    assert shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"))
    assert px.shape[1] == 1280 and px.std() > 10       # not a blank page


def test_qc_histograms_are_titled_in_words_with_units_threshold_and_integer_counts():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tasks.reporting.figures import PNG_DPI, qc_figure

    rng = np.random.default_rng(0)
    per_key = {"landmark_rmse_px.after": rng.uniform(1, 5, 23).tolist(),
               "landmark_rmse_px.before": rng.uniform(1, 5, 23).tolist(),     # 'after' exists: not drawn
               "outlier_fraction.jaw_pose": rng.uniform(0, 0.2, 23).tolist(),
               # values whose default ticks (0.2025, 0.2050, ...) collide at the page's resolution
               "jitter.global_orient_deg.after": [0.204694, 0.219767] + rng.uniform(0.205, 0.219, 21).tolist(),
               "seconds.total": rng.uniform(0, 9, 23).tolist()}                 # bookkeeping: not drawn
    fig = qc_figure(per_key, {"landmark_rmse_px.after": (3.2, "px (5 % of the 64 px portrait)")})
    fig.set_dpi(PNG_DPI)                   # as the page shows it
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.axison]
    titles = [ax.get_title() for ax in axes]
    assert titles == ["Landmark error after refinement\nflagged above 3.2 px (5 % of the 64 px portrait)",
                      "Outlier frames: jaw rotation\nno flag threshold",
                      "Jitter of head rotation after refinement\nno flag threshold"]
    assert [ax.get_xlabel() for ax in axes] == ["px, RMSE over the 68 landmarks",
                                                "% of the sequence's frames",
                                                "degrees, mean |2nd difference| per frame"]
    assert [line.get_xdata()[0] for line in axes[0].lines] == [3.2]             # the threshold, drawn
    assert max(p.get_x() + p.get_width() for p in axes[1].patches) > 1          # fractions shown as %
    for ax in axes:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ax.get_title()
        assert ax.get_ylabel() == "sequences" and ax.title.get_fontsize() >= 10
        # tick labels readable: none overlaps its neighbour
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        gaps = [b.x0 - a.x1 for a, b in zip(boxes, boxes[1:])]
        assert min(gaps) >= 3, (ax.get_title(), [t.get_text() for t in ax.get_xticklabels()], gaps)
    # a quantity that is zero for every sequence (no outliers at all) is drawn from 0, not -0.5
    zero = qc_figure({"outlier_fraction.cam": [0.0] * 5})
    FigureCanvasAgg(zero).draw()
    assert [ax.get_xlim()[0] for ax in zero.axes if ax.axison] == [0.0]
