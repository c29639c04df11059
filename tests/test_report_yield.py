"""The report's yield against a hand-computed tiny dataset: minutes recorded / in segments / in
sequences / in clips, where the rest was lost, why each segment ended, and old segments.json files."""
from __future__ import annotations

import json
import re

import pytest
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
        "dropped": [(0, 100, "no face"), (600, 650, "edge landmark"), (710, 800, "frames missing from the recording")],
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


def test_yield_and_cut_reasons_match_the_hand_count(luigi_paths):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed)
    layout = Layout.from_config()
    for (subject, song), spec in SONGS.items():
        write_json_atomic(layout.segments_json(subject, song), _segments_json(spec))
    AssembleDataset().assemble()
    with config_overrides(crop={"output_size": 64}):
        DatasetReport().run()
    stats = json.loads((layout.report_dir() / "report.json").read_text())
    page = (layout.report_dir() / "index.html").read_text()

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
    assert "0.7 of 1.1 recorded minutes (63 %) ended in clips" in page
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


def test_old_segments_json_without_cut_reasons_or_length_still_reads():
    old = {"segments": [{"index": 0, "start_frame": 10, "end_frame": 400, "video": "segment_000.mp4"},
                        {"index": 1, "start_frame": 420, "end_frame": 480, "video": "segment_001.mp4"}]}
    s = song_yield("S001", "001_x", old, [(10, 400)], 240, 90, 30.0)
    assert not s.recorded_known and s.recorded == 480
    assert s.segments == 450 and s.sequences == 390 and s.clips == 240
    assert s.lost[LOSS_SHORT] == 60 and s.lost[LOSS_REMAINDER] == 150 and s.lost[LOSS_UNACCOUNTED] == 30
    assert sum(s.by_category().values()) == s.recorded
    assert dict(s.cut_reasons()) == {"not recorded": 2}
