"""Validation's model-file checks (tasks/capture/model_checks.py): an embedding set without a model is a
warning naming it, a refused FLAME file keeps the loader's own fix, and a model that fails in a way no loader
foresaw is still reported as that file's problem instead of crashing validation."""
from __future__ import annotations

import pickle

import pytest

from tasks.capture import model_checks as MC
from tasks.common.settings import BgmSettings, EmocaSettings, FlameSettings


def test_embedding_without_a_model_is_a_warning_naming_the_embedding(tmp_path):
    assert MC.check_flame(FlameSettings()) == []
    emb = str(tmp_path / "landmark_embedding.npy")
    got = MC.check_flame(FlameSettings(landmark_embedding_path=emb))
    assert len(got) == 1 and got[0]["path"] == emb and got[0]["level"] == "warning"
    assert "procedural stand-in is used and this file is ignored" in got[0]["problem"]


def test_a_refused_flame_file_keeps_the_loaders_own_fix(tmp_path):
    model, emb = tmp_path / "generic_model.pkl", tmp_path / "landmark_embedding.npy"
    model.write_bytes(pickle.dumps({"v_template": [[0.0, 0.0, 0.0]]}, protocol=2))
    emb.write_bytes(b"")
    got = MC.check_flame(FlameSettings(model_path=str(model), landmark_embedding_path=str(emb)))
    assert len(got) == 1 and got[0]["path"] == str(model) and got[0]["level"] == "error"
    assert got[0]["problem"].startswith("missing FLAME entries ['f', 'shapedirs'")
    assert got[0]["fix"] == "use generic_model.pkl / flame2023.pkl from the FLAME download"


def _boom(*args, **kwargs):
    raise KeyError("state_dict")


@pytest.mark.parametrize("stage", ["flame", "emoca", "bgm"])
def test_an_unforeseen_loader_failure_is_reported_as_the_files_problem(tmp_path, monkeypatch, stage):
    if stage == "flame":
        model, emb = tmp_path / "generic_model.pkl", tmp_path / "landmark_embedding.npy"
        model.write_bytes(b"x")
        emb.write_bytes(b"x")
        monkeypatch.setattr(MC, "load_flame", _boom)
        cfg = FlameSettings(model_path=str(model), landmark_embedding_path=str(emb))
        got, path, what = MC.check_flame(cfg), model, "the [flame] model"
    elif stage == "emoca":
        monkeypatch.setattr(MC, "load_emoca", _boom)
        got = MC.check_emoca(EmocaSettings(checkpoint_dir=str(tmp_path)))
        path, what = tmp_path, "the [emoca] model"
    else:
        monkeypatch.setattr(MC, "load_demucs", _boom)
        got = MC.check_bgm(BgmSettings(demucs_repo=str(tmp_path), demucs_model="htdemucs"))
        path, what = tmp_path, "Demucs model 'htdemucs'"
    assert len(got) == 1, got
    assert got[0]["path"] == str(path) and got[0]["level"] == "error" and got[0]["fix"]
    assert got[0]["problem"] == f"{what} does not load (KeyError: 'state_dict')"
