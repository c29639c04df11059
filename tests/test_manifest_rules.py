"""The dataset manifest's provenance, metadata.csv and the data card, function by function
(tasks.dataset.manifest, tasks.dataset.metadata, tasks.dataset.card): which stage wrote a record, which
records count, models found at any depth and merged, paths cut to names, the tool version from a checkout,
metadata rows and the card's sections. The assembled manifest as a whole is tested in test_assemble.py."""

from __future__ import annotations

import configparser
import csv
import io
import json
import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

from tasks.common.errors import PipelineInputError
from tasks.dataset import manifest as M
from tasks.dataset.card import LAYOUT, data_card
from tasks.dataset.metadata import METADATA_COLUMNS, metadata_csv_bytes, metadata_rows, read_metadata
from tasks.dataset.plan import SequencePlan


def test_stage_of_a_record_its_output_then_its_folder_then_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outputs = {Path("S1/frames/segment_000.npz"): "Estimate", tmp_path / "S1/motion/m.npz": "Refine",
               tmp_path / "S1/motion/n.npz": "Smooth", tmp_path / "S1/scan/fit.json": "ScanFit"}
    def stage(p):
        return M.stage_of_record(tmp_path / p, Path(p).relative_to("S1"), outputs)
    assert stage("S1/scan/fit.json") == "ScanFit"  # its own output (relative paths resolve from the cwd)
    assert stage("S1/frames/segment_000.json") == "Estimate"  # beside the one stage's output
    assert stage("S1/motion/qc.json") == "qc"  # two stages share the folder: its name
    assert stage("S1/other/x.json") == "x"
    # the same folder, not one that sorts before or after it
    one = {tmp_path / "S1/a/o.npz": "A"}
    assert M.stage_of_record(tmp_path / "S1/b/x.json", Path("b/x.json"), one) == "x"
    assert M.stage_of_record(tmp_path / "S1/0/x.json", Path("0/x.json"), one) == "x"
    assert M.stage_of_record(Path("S1/frames/a.json"), Path("frames/a.json"), outputs) == "Estimate"


def _write(p: Path, obj) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


def test_gather_records_keeps_those_with_models_or_parameters(tmp_path, caplog):
    subj = tmp_path / "S1"
    model = {"name": "MTCNN", "kind": "real", "files": []}
    _write(subj / "a.json", {"model": model})
    _write(subj / "b" / "c.json", {"params": {"x": 1}})
    _write(subj / "d.json", {"parameters": {"y": 2}})
    _write(subj / "e.json", {"config": {"z": 3}})
    _write(subj / "f.json", {"other": 1, "model": {"name": "n", "kind": "guess"}})  # neither
    _write(subj / "g.json", [model])  # not a record
    _write(subj / "done.json", {"params": {"x": 1}})  # the subject stage's summary
    _write(subj / ".hidden.json", {"params": {"x": 1}})
    (subj / "0.json").symlink_to(subj / "gone.json")  # sorted first; unreadable: left out, the rest read
    outputs = {subj / "b" / "c.npz": "StageC"}
    with caplog.at_level(logging.WARNING, logger="singinghead"):
        got = M.gather_records(subj, tmp_path / "elsewhere" / "done.json", outputs)
    assert got == [("a", {"model": model}), ("StageC", {"params": {"x": 1}}), ("d", {"parameters": {"y": 2}}),
                   ("e", {"config": {"z": 3}})]
    assert f"record {subj / '0.json'} vanished while the manifest was gathered: left out" in caplog.text


@pytest.mark.parametrize("where, stage, fix", [
    ("b/c.json", "StageC", "rerun the stage that wrote it: singinghead rerun --subject S1 --from StageC"),
    ("x.json", None, "rerun the subject: singinghead rerun --subject S1"),    # no stage known: the subject
])
def test_a_corrupt_stage_record_stops_the_manifest_and_names_the_rerun(tmp_path, where, stage, fix):
    """Leaving a damaged record out could drop the line that says a stand-in model made the data."""
    subj = tmp_path / "S1"
    _write(subj / "a.json", {"model": {"name": "procedural head", "kind": "stand-in", "files": []}})
    (subj / where).parent.mkdir(parents=True, exist_ok=True)
    (subj / where).write_text('{"model": {"name": "EMOCA v2", "kind": ')          # cut short
    with pytest.raises(PipelineInputError) as err:
        M.gather_records(subj, subj / "done.json", {subj / "b" / "c.npz": "StageC"})
    assert err.value.path == str(subj / where)
    assert "not readable" in str(err.value) and err.value.fix == fix
    assert ("--from" in err.value.fix) == (stage is not None)


def test_model_records_are_found_under_any_key_in_lists_and_four_levels_deep():
    def m(name, kind="real"):
        return {"name": name, "kind": kind}
    rec = {"b": m("B", "stand-in"), "a": [m("A"), {"x": m("X")}], "c": {"name": "not", "kind": "other"},
           "d": {"1": {"2": {"3": m("deep")}}}, "e": {"1": {"2": {"3": {"4": m("too deep")}}}},
           "f": [[[m("L3")]]], "g": "model", "h": 3, "i": [[[[m("L4 lists down")]]]]}
    assert [x["name"] for x in M._model_list(rec)] == ["A", "X", "B", "deep", "L3"]
    assert M._model_list(m("top")) == [m("top")]
    assert M._model_list([m("A"), 1, None]) == [m("A")]
    # a model record is taken whole, not searched further
    assert M._model_list({"name": "N", "kind": "real", "inner": m("I")}) == [{"name": "N", "kind": "real",
                                                                               "inner": m("I")}]
    assert M._model_list({"kind": "real"}) == [] and M._model_list("x") == []


def test_provenance_merges_models_by_content_and_parameters_by_value():
    files = [{"path": "/home/lab/models/b.pt", "sha256": "22"}, {"name": "a.pt", "sha256": "11"}, "junk"]
    emoca = {"name": "EMOCA", "kind": "real", "files": files}
    records = [
        ("Estimate", {"model": emoca, "params": {"ckpt": "/home/lab/x.ckpt", "n": 1}}),
        ("Refine", {"models": [emoca, {"name": "procedural head", "kind": "stand-in"}],
                    "parameters": {"n": 1}, "config": {"n": 1}}),
        ("Estimate", {"params": {"ckpt": "C:\\lab\\x.ckpt", "n": 1}}),
        ("Estimate", {"params": {"n": 2}}),
        ("Refine", {"params": {"n": 1}}),
        ("Estimate", {"params": {"n": 1, "ckpt": "x.ckpt"}}),  # the same parameters in another key order
        ("Crop", {"model": {"name": "MTCNN", "kind": "real"}, "params": "not a dict"}),
        ("Crop", {"model": {"name": "EMOCA", "kind": "real", "files": [{"name": "a.pt", "sha256": None}]}}),
    ]
    got = M.collect_provenance(records)
    assert got["models"] == [
        {"name": "EMOCA", "kind": "real", "files": [{"name": "a.pt", "sha256": "11"}, {"name": "b.pt", "sha256": "22"}],
         "used_by": ["Estimate", "Refine"]},  # ties by name and kind: by the files' JSON ('"11"' < 'null')
        {"name": "EMOCA", "kind": "real", "files": [{"name": "a.pt", "sha256": None}], "used_by": ["Crop"]},
        {"name": "MTCNN", "kind": "real", "files": [], "used_by": ["Crop"]},
        {"name": "procedural head", "kind": "stand-in", "files": [], "used_by": ["Refine"]},
    ]
    assert got["stand_ins"] == ["procedural head"]
    # one entry per distinct value, absolute paths cut to names first (so /home/... and C:\... are one)
    assert got["stage_parameters"] == {"Estimate": [{"ckpt": "x.ckpt", "n": 1}, {"n": 2}], "Refine": [{"n": 1}]}
    assert list(got["stage_parameters"]) == ["Estimate", "Refine"]
    assert M.collect_provenance([("S", {"model": {"name": 7, "kind": "unknown-kind"}})])["models"] == []
    odd = M.collect_provenance([("S", {"model": {"name": 7, "kind": "stand-in"}})])
    assert odd["models"] == [{"name": "7", "kind": "stand-in", "files": [], "used_by": ["S"]}]
    assert odd["stand_ins"] == ["7"]


def test_paths_are_cut_to_names_whatever_os_wrote_them():
    for p, name in (("/m/x.th", "x.th"), ("C:\\m\\x.th", "x.th"), ("C:/m/x.th", "x.th"), ("~/m/x", "x"),
                    ("~\\m\\x", "x"), ("\\\\server\\share\\x", "x"), ("/data/raw/", "raw"), ("/", "/")):
        assert M.is_absolute_path(p), p
        assert M.names_only(p) == name, p
    for p in ("rel/x.th", "x", "~user/x", "C:x", "", "http://a/b", " /a"):
        assert not M.is_absolute_path(p), p
        assert M.names_only(p) == p
    assert M.file_name("a/b\\c") == "c" and M.file_name(Path("/a/b")) == "b" and M.file_name(None) == "None"
    rec = {"a": ["/x/y.wav", ("C:\\z",), {"b": "/q/"}], "n": 3, "t": None, "s": "keep/me"}
    assert M.names_only(rec) == {"a": ["y.wav", ["z"], {"b": "q"}], "n": 3, "t": None, "s": "keep/me"}


def test_tool_version_from_a_checkout_without_the_package(tmp_path, monkeypatch):
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    want = cfg["metadata"]["version"]

    def missing(name):
        assert name == "singinghead"
        raise PackageNotFoundError(name)
    monkeypatch.setattr(M, "version", missing)
    assert M.tool_version() == want
    # a checkout elsewhere: its own setup.cfg, or "unknown"
    fake = tmp_path / "repo" / "tasks" / "dataset" / "manifest.py"
    monkeypatch.setattr(M, "__file__", str(fake))
    (tmp_path / "repo").mkdir()
    assert M.tool_version() == "unknown"
    (tmp_path / "repo" / "setup.cfg").write_text("[metadata]\nname = x\nversion = 9.8.7rc1\n")
    assert M.tool_version() == "9.8.7rc1"
    (tmp_path / "repo" / "setup.cfg").write_text("[metadata]\nname = x\n")
    assert M.tool_version() == "unknown"
    monkeypatch.setattr(M, "version", lambda name: "1.2.3")
    assert M.tool_version() == "1.2.3"


def test_config_parameters_records_each_section_with_names_only():
    @dataclass
    class Paths:
        SECTION = "paths"
        raw: str = "/home/lab/raw"
        n: int = 3

    @dataclass
    class Release:
        SECTION = "release"
        fmt: str = "zips"
    assert M.config_parameters([Paths(), Release()]) == {"paths": {"raw": "raw", "n": 3},
                                                         "release": {"fmt": "zips"}}


# ----------------------------------------------------------------------------- metadata.csv
def _plan(**kw):
    base = dict(subject="S001", song="001_rock_x", segment_number=0, source_segment=2, seq_id="id1_1_0",
                start_frame=100, end_frame=700, clip_ids=["id1_1_0_0", "id1_1_0_1"], video=Path("v"),
                motion=Path("m"), vocal=Path("a"), bgm=Path("b"), song_dir=Path("s"),
                meta={"subject_number": 1, "song_number": 1, "genre": "rock", "language": "en",
                      "professional": True, "gender": "female"})
    base.update(kw)
    return SequencePlan(**base)


def test_metadata_rows_one_per_sequence_and_clip():
    p = _plan()
    recs = {"id1_1_0_0": {"frames": 240, "seq_start_frame": 0, "method": "copy"},
            "id1_1_0_1": {"frames": 240, "seq_start_frame": 240, "method": "reencode"}}
    rows = metadata_rows([p], recs, {"id1_1_0_0": "train", "id1_1_0_1": "val"})
    base = {"subject": "S001", "subject_number": 1, "song": "001_rock_x", "song_number": 1, "segment": 0,
            "source_segment": 2, "genre": "rock", "language": "en", "professional": True, "gender": "female"}
    assert rows == [
        {**base, "id": "id1_1_0", "kind": "sequence", "clip": "", "frames": 600, "seq_start_frame": 0,
         "start_frame": 100, "end_frame": 700, "split": "mixed", "video_method": "copy"},
        {**base, "id": "id1_1_0_0", "kind": "clip", "clip": 0, "frames": 240, "seq_start_frame": 0,
         "start_frame": 100, "end_frame": 340, "split": "train", "video_method": "copy"},
        {**base, "id": "id1_1_0_1", "kind": "clip", "clip": 1, "frames": 240, "seq_start_frame": 240,
         "start_frame": 340, "end_frame": 580, "split": "val", "video_method": "reencode"},
    ]
    one = metadata_rows([p], recs, {"id1_1_0_0": "test", "id1_1_0_1": "test"})
    assert one[0]["split"] == "test"
    none = metadata_rows([_plan(clip_ids=[])], {}, {})
    assert none[0]["split"] == "" and len(none) == 1


def test_metadata_rows_sorted_by_id_sequence_first_and_written_in_the_column_order(tmp_path):
    a = _plan(seq_id="id1_1_0", clip_ids=["id1_1_0_0"])
    b = _plan(seq_id="id0_1_0", clip_ids=["id0_1_0_0"])
    recs = {c: {"frames": 240, "seq_start_frame": 0, "method": "copy"} for c in ("id1_1_0_0", "id0_1_0_0")}
    rows = metadata_rows([a, b], recs, {"id1_1_0_0": "train", "id0_1_0_0": "train"})
    assert [(r["id"], r["kind"]) for r in rows] == [("id0_1_0", "sequence"), ("id0_1_0_0", "clip"),
                                                    ("id1_1_0", "sequence"), ("id1_1_0_0", "clip")]
    # a clip whose id sorts like its sequence's still comes after it
    same = metadata_rows([_plan(seq_id="w", clip_ids=["x"]), _plan(seq_id="x", clip_ids=["y"])],
                         {c: recs["id0_1_0_0"] for c in "xy"}, {"x": "val", "y": "val"})
    assert [(r["id"], r["kind"]) for r in same] == [("w", "sequence"), ("x", "sequence"), ("x", "clip"),
                                                    ("y", "clip")]
    data = metadata_csv_bytes(rows + [{"id": "partial"}])
    text = data.decode("utf-8")
    assert text.splitlines()[0] == ",".join(METADATA_COLUMNS) and "\r" not in text
    (tmp_path / "metadata.csv").write_bytes(data)
    back = read_metadata(tmp_path)
    assert [r["id"] for r in back] == [r["id"] for r in rows] + ["partial"]
    assert back[1] == {k: str(rows[1][k]) for k in METADATA_COLUMNS}
    assert back[-1] == {k: ("partial" if k == "id" else "") for k in METADATA_COLUMNS}
    assert list(csv.reader(io.StringIO(text)))[1][METADATA_COLUMNS.index("professional")] == "True"


# ----------------------------------------------------------------------------- the data card
def test_the_card_of_a_stand_in_build_says_so_and_fills_every_section():
    manifest = {
        "dataset": {"clip_frames": 240, "fps": 30.0, "audio": "16-bit PCM WAV at 16 kHz", "min_sequence_seconds": 3.0,
                    "numbering": "NUM", "motion_59": "M59"},
        "counts": {"subjects": 2, "sequences_kept": 5, "sequence_frames": 3000, "clips": 9,
                   "clips_per_split": {"train": 7, "val": 1, "test": 1}},
        "splits": {"target": {"train": 0.8}, "by_song": True, "seed": 4},
        "stand_ins": ["procedural head", "remover"],
        "tool": {"name": "singinghead", "version": "0.1.0"},
        "models": [{"name": "MTCNN", "kind": "real", "used_by": ["Crop", "Estimate"],
                    "files": [{"name": "m.pt", "sha256": "0123456789abcdef"}, {"name": "n.pt", "sha256": None}]},
                   {"name": "procedural head", "kind": "stand-in", "used_by": [], "files": []}],
    }
    card = data_card(manifest, "zips", "MySet")
    lines = card.split("\n")
    assert lines[0] == "# MySet: a 4D singing-head dataset (SingingHead layout)"
    assert lines[1] == "" and lines[2] == ("**Built with STAND-IN models (procedural head, remover): this release "
                                           "tests the pipeline and is not a dataset for research use.**")
    assert "Packed as `zips` by singinghead 0.1.0. Check it with" in card
    assert ("- 2 subject(s), 5 face-stable sequence(s) (3000 frames), 9 clip(s) of 240 frames at 30.0 fps."
            in lines)
    assert ("- Splits: train 7, val 1, test 1 clips (target {'train': 0.8}, whole songs per split, seed 4)."
            in lines)
    assert "both 16-bit PCM WAV at 16 kHz." in card and "- Ids: NUM." in lines
    assert "- 59-dim motion where one is needed: M59." in lines
    assert "Segments shorter than 3.0 s are dropped" in card
    assert "- MTCNN (real; used by Crop, Estimate): `m.pt` (sha256 0123456789ab…), `n.pt` (sha256 None…)" in lines
    assert "- procedural head (stand-in; used by ?)" in lines
    assert LAYOUT["zips"] in lines and LAYOUT["tarballs"] not in card
    assert [ln for ln in lines if ln.startswith("## ")] == [
        "## Motivation", "## Composition", "## Collection", "## Preprocessing", "## Uses", "## Distribution",
        "## Maintenance"]
    assert card.endswith("reproduce it.\n")


def test_the_card_of_a_bare_manifest_marks_what_it_does_not_know():
    card = data_card({}, "webdataset", "S")
    lines = card.split("\n")
    assert lines[1] == "" and lines[2] == "Packed as `webdataset` by singinghead . Check it with `singinghead " \
        "verify-release <this folder>` (every file is in SHA256SUMS; release_manifest.json lists every archive " \
        "member with its sha256)."
    assert "STAND-IN" not in card
    assert "- ? subject(s), ? face-stable sequence(s) (? frames), ? clip(s) of ? frames at ? fps." in lines
    assert "- Splits: train ?, val ?, test ? clips (target {}, per clip, seed ?)." in lines
    assert "both 16-bit PCM WAV." in card
    assert "- Ids: id<subject>_<song>_<segment>_<clip>." in lines
    assert "- 59-dim motion where one is needed: exp 0:50 | global 50:53 | neck 53:56 | jaw 56:59." in lines
    assert "Segments shorter than ? s are dropped" in card
    assert "- none recorded" in lines and LAYOUT["webdataset"] in lines
    with pytest.raises(KeyError):
        data_card({}, "tar", "S")
