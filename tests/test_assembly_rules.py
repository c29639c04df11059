"""`assemble_dataset` rule by rule, on tiny inputs: what the manifest counts and flags, what the log
says, the subject shape it accepts, and that `threads` bounds how many sequences are cut at once.

Most tests need no video: a subject whose sequences are listed in subject_done.json is planned from
the JSON alone, and where the cutting itself does not matter `write_sequence` is replaced by a stand-in
that records when it runs. One test cuts real (64x64, 95- and 130-frame) portraits.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from dataset_helpers import make_subject_outputs

from tasks.capture.raw_layout import read_json
from tasks.common.atomic import write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.settings import AudioSettings, DatasetSettings
from tasks.dataset import assembly
from tasks.dataset.assembly import _scan_fit_flags, assemble_dataset
from tasks.layout import Layout
from tasks.media.clips import ClipEncoding

SONG = "001_pop_song"
ENC = ClipEncoding(crf=20, preset="ultrafast", keyint=30)


def _layout(tmp_path):
    return Layout(tmp_path / "raw", tmp_path / "processed", tmp_path / "processed" / "release")


def _subject(lay, subject="S001", lengths=(), shape=None, report=None):
    """Raw folders, subject_done.json listing one sequence per length (no video), shapes/<subject>.npy."""
    (lay.raw / subject / "songs" / SONG).mkdir(parents=True, exist_ok=True)
    seqs, start = [], 0
    for k, n in enumerate(lengths):
        seqs.append({"song": SONG, "segment": k, "start_frame": start, "end_frame": start + n,
                     "frames": n, "video": f"segment_{k:03d}.mp4"})
        start += n + 10
    write_json_atomic(lay.subject_done(subject), {"subject": subject, "sequences": seqs,
                                                  "segments_too_short": 0})
    lay.shape_dir(subject).mkdir(parents=True, exist_ok=True)
    np.save(lay.scan_shape_npy(subject), np.zeros(100, np.float32) if shape is None else shape)
    if report is not None:
        write_json_atomic(lay.scan_fit_report(subject), report)


def _assemble(lay, subjects=("S001",), clip_frames=30, **kw):
    return assemble_dataset(
        subjects=list(subjects), root=lay.dataset_root(), paths=lay,
        dataset=DatasetSettings(clip_frames=clip_frames, min_sequence_seconds=1.0),
        audio=AudioSettings(), encoding=ENC, config_record=(), stage_outputs={}, **kw)


class _Cutter:
    """Stands in for write_sequence: one record per clip, and the most calls seen running at once."""

    def __init__(self, seconds=0.15):
        self.seconds, self.running, self.most = seconds, 0, 0
        self.lock = threading.Lock()

    def __call__(self, plan, root, shape, fps, sr, clip_frames, encoding, channels=1):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return [{"id": cid, "seq_start_frame": k * clip_frames, "method": "stream-copy",
                 "frames": clip_frames, "first_frame": k * clip_frames, "exact": True}
                for k, cid in enumerate(plan.clip_ids)]


class _Task:
    """The two Luigi hooks Progress calls."""

    def __init__(self):
        self.reports = []

    def set_progress_percentage(self, pct):
        self.reports.append(pct)

    def set_status_message(self, msg):
        self.reports[-1] = (self.reports[-1], msg)


# ----------------------------------------------------------------------------- threads and progress
@pytest.mark.parametrize("threads", [None, 0, 1])
def test_one_thread_cuts_one_sequence_at_a_time(tmp_path, monkeypatch, threads):
    # the default, and any value below 1, is one sequence at a time (what a small machine asks for)
    lay = _layout(tmp_path)
    _subject(lay, lengths=(30, 30, 30))
    cutter = _Cutter()
    monkeypatch.setattr(assembly, "write_sequence", cutter)
    manifest = _assemble(lay, **({} if threads is None else {"threads": threads}))
    assert cutter.most == 1 and manifest["counts"]["clips"] == 3


def test_threads_cut_that_many_sequences_at_once(tmp_path, monkeypatch):
    lay = _layout(tmp_path)
    _subject(lay, lengths=(30, 30, 30, 30))
    cutter = _Cutter(seconds=0.3)
    monkeypatch.setattr(assembly, "write_sequence", cutter)
    _assemble(lay, threads=2)
    assert cutter.most == 2


def test_progress_reaches_every_sequence_and_no_more(tmp_path, monkeypatch):
    lay = _layout(tmp_path)
    _subject(lay, lengths=(30, 60, 30))
    monkeypatch.setattr(assembly, "write_sequence", _Cutter(seconds=0.0))
    task = _Task()
    _assemble(lay, task=task)
    assert task.reports[-1] == (100, "assemble sequences: 3/3")
    assert all(pct <= 100 and int(msg.split(": ")[1].split("/")[0]) <= 3 for pct, msg in task.reports)


# ----------------------------------------------------------------------------- the subject shape
@pytest.mark.parametrize("n", [99, 101])
def test_a_subject_shape_that_is_not_100_values_is_refused_naming_the_file(tmp_path, n):
    lay = _layout(tmp_path)
    _subject(lay, shape=np.ones(n, np.float32))
    with pytest.raises(PipelineInputError) as e:
        _assemble(lay)
    assert e.value.path == str(lay.scan_shape_npy("S001")) and f"({n},)" in e.value.problem
    assert not lay.dataset_root().exists()


# ----------------------------------------------------------------------------- flags
@pytest.mark.parametrize("report, flagged", [
    (None, []),                                                   # no report.json: nothing flagged
    ({"source": "scan fit"}, []),
    ({"flagged": None}, []),
    ({"flagged": []}, []),
    ({"flagged": ["scale 3.1 outside [0.5, 2]", "rms 9 mm"]}, ["scale 3.1 outside [0.5, 2]", "rms 9 mm"]),
    ({"flagged": "rms 9 mm"}, ["rms 9 mm"]),                      # one reason written by hand
])
def test_scan_fit_flags_are_read_as_a_list_of_reasons(tmp_path, report, flagged):
    path = tmp_path / "report.json"
    if report is not None:
        write_json_atomic(path, report)
    assert _scan_fit_flags(path) == flagged


def test_a_flagged_scan_fit_and_a_song_linked_outside_raw_are_flagged_in_the_manifest(tmp_path, caplog):
    lay = _layout(tmp_path)
    _subject(lay, "S001", report={"source": "scan fit", "flagged": ["rms 9 mm"]})
    _subject(lay, "S002")
    outside = tmp_path / "other_disk" / SONG
    outside.mkdir(parents=True)
    (lay.raw / "S002" / "songs" / SONG).rmdir()
    (lay.raw / "S002" / "songs" / SONG).symlink_to(outside, target_is_directory=True)
    with caplog.at_level("WARNING", logger="singinghead"):
        manifest = _assemble(lay, subjects=("S001", "S002"))
    assert manifest["flags"] == {"scan_fit": {"S001": ["rms 9 mm"]},
                                 "links_outside_raw": {"S002": [f"S002/songs/{SONG}"]}}
    assert read_json(lay.dataset_root() / "manifest.json")["flags"] == manifest["flags"]
    assert [r for r in caplog.records if "FLAGGED" in r.getMessage()]


def test_a_dataset_with_nothing_flagged_has_no_flags_and_logs_none(tmp_path, caplog):
    lay = _layout(tmp_path)
    _subject(lay, report={"source": "scan fit", "flagged": []})
    with caplog.at_level("WARNING", logger="singinghead"):
        manifest = _assemble(lay)
    assert "flags" not in manifest and "flags" not in read_json(lay.dataset_root() / "manifest.json")
    assert not [r for r in caplog.records if "FLAGGED" in r.getMessage() or "STAND-IN" in r.getMessage()]


# ----------------------------------------------------------------------------- real cutting
def test_manifest_counts_the_frames_left_over_and_the_stream_copies(tmp_path, caplog):
    # 95 and 130 frames in 30-frame clips: 3 + 4 clips, 5 + 10 frames left over; a keyframe every 30
    # frames (closed groups of pictures), so every clip is a stream copy
    lay = _layout(tmp_path)
    make_subject_outputs(lay.raw, lay.processed, {"S001": {SONG: [95, 130]}}, keyint=30)
    with caplog.at_level("WARNING", logger="singinghead"):
        manifest = _assemble(lay)
    counts = manifest["counts"]
    assert (counts["sequence_frames"], counts["clips"], counts["clip_frames_dropped"]) == (225, 7, 15)
    assert manifest["clip_cutting"] == {"stream_copy": 7, "re_encoded": []}
    # the stand-in the fixture's records name is said in the log, not only in the manifest
    assert manifest["stand_ins"] and all(
        any(name in r.getMessage() for r in caplog.records if "STAND-IN" in r.getMessage())
        for name in manifest["stand_ins"])
