"""`python -m tasks.evaluation` (tasks/evaluation/__main__.py) the way a dataset user calls it, in process:
its defaults (the test split, result.json in the working folder), what it prints and writes, and its exit
codes. test_light_env.py runs the same command in a bare virtual environment; here every argument is
checked."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from test_evaluate import TEST_IDS, _write_preds, release  # noqa: F401  (release is a fixture)

from flame_fit.procedural import write_procedural_head_model
from tasks.evaluation.__main__ import main, parser


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    return write_procedural_head_model(tmp_path_factory.mktemp("head_cli"), seed=0, n_vertices=2000)


def _args(preds, rel, head, *extra):
    return [str(preds), "--release", str(rel), "--flame", str(head["model"]),
            "--landmark-embedding", str(head["landmark_embedding"]), *extra]


def test_ground_truth_scores_zero_and_the_result_lands_in_the_working_folder(
        tmp_path, release, head, monkeypatch, capsys):  # noqa: F811
    rel, gt = release
    preds = _write_preds(tmp_path / "preds", gt, lambda m: m)
    monkeypatch.chdir(tmp_path)
    assert main(_args(preds, rel, head)) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "result.json").read_text())       # the default --out
    assert res["split"] == "test" and res["clips"] == len(TEST_IDS)   # the default --split
    for k in ("lve_mean", "ve_mean", "fdd", "meandist_pose"):
        assert res["metrics"][k] == pytest.approx(0.0, abs=1e-6), k
    assert "lve_mean" in out and out.rstrip().endswith("wrote result.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp file left


def test_split_out_and_device_are_passed_through(tmp_path, release, head, capsys):  # noqa: F811
    rel, gt = release
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "id0_1_0_0.pkl").write_bytes(pickle.dumps({"expcodes": gt["id0_1_0_0"][:, :50],
                                                         "posecodes": gt["id0_1_0_0"][:, 50:] + 0.1}))
    out = tmp_path / "sub" / "train.json"
    out.parent.mkdir()
    assert main(_args(preds, rel, head, "--split", "train", "--out", str(out), "--device", "cpu")) == 0
    res = json.loads(out.read_text())
    assert res["split"] == "train" and res["clips"] == 1
    assert res["metrics"]["meandist_pose"] > 0.01        # the offset prediction is scored, not the truth
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {out}")


@pytest.mark.parametrize("breakage, named", [
    ("prediction", "id1_2_0_0.pkl"),       # a prediction that is not a pickle
    ("model", "nowhere.pkl"),              # a FLAME file that is not there
    ("release", "no_release"),             # a release folder that is not there
])
def test_bad_input_is_exit_2_with_the_file_named_and_no_result(
        tmp_path, release, head, breakage, named, capsys):  # noqa: F811
    rel, gt = release
    preds = _write_preds(tmp_path / "preds", gt, lambda m: m)
    h = dict(head)
    if breakage == "prediction":
        (preds / "id1_2_0_0.pkl").write_bytes(b"not a pickle")
    elif breakage == "model":
        h["model"] = tmp_path / "nowhere.pkl"
    else:
        rel = tmp_path / "no_release"
    out = tmp_path / "r.json"
    assert main(_args(preds, rel, h, "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and "Traceback" not in err
    assert not out.exists()


def test_the_help_names_the_files_a_user_must_bring():
    p = parser()
    assert p.prog == "python -m tasks.evaluation"
    assert p.description.startswith("`python -m tasks.evaluation`: the 3D metrics for a dataset user")
    text = p.format_help()
    for needle in ("PRED_DIR", "--release DIR", "--flame MODEL.pkl", "--landmark-embedding FILE",
                   "--masks FLAME_masks.pkl", "default test", "default result.json", "default cpu"):
        assert needle in text, needle
    with pytest.raises(SystemExit) as e:
        p.parse_args(["preds", "--release", "r", "--flame", "f", "--landmark-embedding", "l",
                      "--split", "dev"])
    assert e.value.code == 2
    a = p.parse_args(["preds", "--release", "r", "--flame", "f", "--landmark-embedding", "l"])
    assert (a.split, a.out, a.device, a.masks) == ("test", "result.json", "cpu", None)


@pytest.mark.parametrize("left_out", ["--release", "--flame", "--landmark-embedding"])
def test_each_model_and_release_argument_is_required(left_out, capsys):
    args = {"--release": "r", "--flame": "f", "--landmark-embedding": "l"}
    argv = ["preds"] + [x for k, v in args.items() if k != left_out for x in (k, v)]
    with pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    assert e.value.code == 2
    assert f"the following arguments are required: {left_out}" in capsys.readouterr().err


def test_python_dash_m_runs_the_command():
    """`python -m tasks.evaluation` is the documented entry point: run as a module, it parses its
    arguments (here --help: usage on stdout, exit 0)."""
    r = subprocess.run([sys.executable, "-m", "tasks.evaluation", "--help"], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m tasks.evaluation")
