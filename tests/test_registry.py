"""The stage registry and rerun are read off `requires()`: checked against the tasks themselves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from luigi.task import flatten

import pipeline
from pipeline.build import config_overrides
from pipeline.registry import family_table, format_table, stage_names, stage_of, task_graph
from pipeline.rerun import output_paths, plan_rerun, remove_outputs, rerun_tasks
from tasks.common.errors import PipelineInputError
from tasks.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
SONGS = {"S001": ["001_art_a", "002_rock_b"], "S002": ["001_folk_c"]}


@pytest.fixture
def capture(tmp_path):
    """A capture whose crop has run: raw folders plus segments.json (one long, one short segment)."""
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    for subject, songs in SONGS.items():
        (raw / subject).mkdir(parents=True)
        (raw / subject / "subject.json").write_text("{}")
        for song in songs:
            (raw / subject / "songs" / song).mkdir(parents=True)
            seg = processed / subject / song / "portrait" / "segments.json"
            seg.parent.mkdir(parents=True)
            seg.write_text(json.dumps({"fps": 30.0, "segments": [
                {"index": 0, "start_frame": 0, "end_frame": 300, "video": "segment_000.mp4"},
                {"index": 1, "start_frame": 300, "end_frame": 330, "video": "segment_001.mp4"}]}))
    with config_overrides({"paths": {"raw_dir": raw, "processed_dir": processed}}):
        yield Layout.from_config(), task_graph(pipeline.BuildSingingHead())


def reaches(graph, task, targets) -> bool:
    """Whether `task` depends on one of `targets` through the graph's edges (a plain DFS)."""
    todo, seen = [task], set()
    while todo:
        t = todo.pop()
        if t in targets:
            return True
        if t not in seen:
            seen.add(t)
            todo += graph[t]
    return False


def test_graph_holds_every_stage_per_subject_and_segment(capture):
    lay, graph = capture
    families = {t.task_family for t in graph}
    assert {"ValidateCapture", "CropPortraits", "SeparateBGM", "SegmentAudio", "EstimateFrames",
            "SubjectShape", "FitScanShape", "RefineMotion", "SubjectOutputs", "AssembleDataset",
            "DatasetReport", "PackRelease", "BuildSingingHead"} <= families
    refine = sorted((t.subject, t.song, t.segment) for t in graph if t.task_family == "RefineMotion")
    # only the 300-frame segments (>= 3 s at 30 fps) are refined; the 30-frame ones never are
    assert refine == [("S001", "001_art_a", 0), ("S001", "002_rock_b", 0), ("S002", "001_folk_c", 0)]
    names = stage_names(graph)
    assert names.index("validate") < names.index("crop") < names.index("estimate") < names.index("refine")
    assert names.index("shape") < names.index("refine") and names.index("bgm") < names.index("audio")


def test_every_stage_rerun_set_is_what_requires_says(capture):
    lay, graph = capture
    for stage in stage_names(graph):
        for subject in SONGS:
            start = {t for t in graph if stage_of(t) == stage and t.param_kwargs.get("subject") == subject}
            assert start, (stage, subject)
            got = set(rerun_tasks(graph, subject, stage))
            want = {t for t in graph if reaches(graph, t, start)}
            assert got == want, (stage, subject)
            other = next(s for s in SONGS if s != subject)
            assert not any(t.param_kwargs.get("subject") == other for t in got), (stage, subject)


def test_rerun_from_refine_removes_refinement_and_shared_outputs_only(capture):
    lay, graph = capture
    rel = {str(p.relative_to(lay.processed)) for p in plan_rerun(["S001"], "refine", lay)}
    assert "S001/001_art_a/motion/segment_000.npz" in rel
    assert "S001/subject_done.json" in rel and "build_summary.json" in rel
    assert "dataset/SingingHead/manifest.json" in rel and "release/SHA256SUMS" in rel
    assert not any(r.startswith("S002") for r in rel)
    assert not any("portrait" in r or "frames" in r for r in rel)


def test_remove_outputs_stays_inside_the_roots(capture, tmp_path):
    lay, graph = capture
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    link = lay.processed / "S001" / "shape"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path)                      # a link out of processed/: removed, never followed
    assert remove_outputs([link], lay) == [link]
    assert outside.read_text() == "keep" and not link.is_symlink()
    with pytest.raises(PipelineInputError):
        remove_outputs([tmp_path / "outside.txt"], lay)
    assert outside.exists()


@pytest.mark.parametrize("bad", ["../victim", "/abs/dir", ".hidden", "a/b", ""])
def test_rerun_refuses_names_that_are_not_plain_folder_names(capture, bad):
    lay, _ = capture
    with pytest.raises(PipelineInputError):
        plan_rerun([bad], "validate", lay)


def test_unknown_stage_and_subject_are_clear_errors(capture):
    lay, _ = capture
    with pytest.raises(PipelineInputError, match="choose one of"):
        plan_rerun(["S001"], "paint", lay)
    with pytest.raises(PipelineInputError, match="not a subject"):
        plan_rerun(["S999"], "refine", lay)


def test_architecture_md_holds_the_generated_dag_table(capture):
    lay, graph = capture
    table = format_table(family_table(graph, relative_to=lay.processed))
    text = (ROOT / "ARCHITECTURE.md").read_text()
    begin, end = text.index("<!-- BEGIN DAG"), text.index("<!-- END DAG -->")
    block = text[text.index("\n", begin) + 1:end].strip()
    assert block == table, "ARCHITECTURE.md's DAG table is stale: paste `singinghead stages` output"


def test_every_task_output_is_inside_the_processed_or_release_root(capture):
    lay, graph = capture
    for t in graph:
        for o in flatten(t.output()):
            p = Path(o.path).resolve()
            assert p.is_relative_to(lay.processed.resolve()) or p.is_relative_to(lay.release.resolve()), (t, p)
    assert output_paths([t for t in graph if t.task_family == "BuildSingingHead"])


@pytest.mark.parametrize("bad", ["../raw/H01", "/abs/dir", ".hidden", "a/b", ""])
def test_task_parameters_refuse_names_that_are_not_plain_folder_names(bad):
    from tasks.validate import ValidateCapture
    from tasks.crop import CropPortraits
    with pytest.raises(PipelineInputError):
        ValidateCapture(subject=bad)
    with pytest.raises(PipelineInputError):
        CropPortraits(subject="S001", song=bad)
