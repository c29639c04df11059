"""tasks.head_model: the configured FLAME files or the generated procedural stand-in, and the
make-head-model command."""
from __future__ import annotations

import argparse
import contextlib
import pickle

import numpy as np
import pytest
import torch

from flame_fit.flame import PROCEDURAL_NAME, load_flame
from tasks import head_model
from tasks.common.errors import ModelFileError
from conftest import luigi_options


@pytest.fixture
def flame_cfg():
    """Set [flame] keys for one test; restore them (and the model cache) afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda **kw: stack.enter_context(luigi_options(flame=kw))
    head_model._CACHE.clear()


def _cli(argv):
    parser = argparse.ArgumentParser()
    head_model.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_procedural_model_generated_once_and_named_as_stand_in(tmp_path, flame_cfg, caplog):
    folder = tmp_path / "models" / "procedural_head"
    flame_cfg(model_path="", landmark_embedding_path="", procedural_model_dir=folder)
    with caplog.at_level("WARNING", logger="singinghead"):
        model, record = head_model.get_head_model("cpu")
    assert (folder / "generic_model.pkl").is_file() and (folder / "landmark_embedding.npy").is_file()
    assert not model.is_real and model.name == PROCEDURAL_NAME
    assert record["name"] == PROCEDURAL_NAME and record["kind"] == "stand-in"
    assert {f["path"] for f in record["files"]} == {str(folder / "generic_model.pkl"),
                                                    str(folder / "landmark_embedding.npy")}
    assert all(len(f["sha256"]) == 64 for f in record["files"])
    assert "STAND-IN" in caplog.text and PROCEDURAL_NAME in caplog.text
    mtime = (folder / "generic_model.pkl").stat().st_mtime_ns
    again, record2 = head_model.get_head_model("cpu")
    assert again is model and record2 == record                           # cached per files+device
    head_model._CACHE.clear()
    head_model.get_head_model("cpu")
    assert (folder / "generic_model.pkl").stat().st_mtime_ns == mtime        # not regenerated
    assert not list(folder.parent.glob(".*tmp*"))                           # no temporaries left
    out = model(torch.zeros(1, 100), torch.zeros(1, 50), torch.zeros(1, 3))
    assert out.landmarks.shape == (1, 68, 3)


def test_configured_files_give_a_real_record(tmp_path, flame_cfg):
    assert _cli(["make-head-model", str(tmp_path / "m"), "--seed", "3", "--n-vertices", "1500"]) == 0
    with open(tmp_path / "m" / "generic_model.pkl", "rb") as f:
        raw = pickle.load(f)
    for k in ("procedural", "description", "seed"):                        # a file in FLAME's own layout
        raw.pop(k)
    (tmp_path / "generic_model.pkl").write_bytes(pickle.dumps(raw, protocol=2))
    flame_cfg(model_path=tmp_path / "generic_model.pkl",
              landmark_embedding_path=tmp_path / "m" / "landmark_embedding.npy")
    model, record = head_model.get_head_model("cpu")
    assert model.is_real and record["kind"] == "real" and record["name"] == "FLAME"
    assert record["n_shape"] == 100 and record["n_expr"] == 50


def test_bad_configuration_raises_model_file_error(tmp_path, flame_cfg):
    flame_cfg(model_path=tmp_path / "nope.pkl", landmark_embedding_path=tmp_path / "nope.npy")
    with pytest.raises(ModelFileError, match="nope.pkl.*not found.*fix"):
        head_model.get_head_model("cpu")
    flame_cfg(model_path=tmp_path / "nope.pkl", landmark_embedding_path="")
    with pytest.raises(ModelFileError, match="landmark_embedding_path"):
        head_model.get_head_model("cpu")


def test_make_head_model_cli_writes_loadable_seeded_files(tmp_path, capsys):
    assert _cli(["make-head-model", str(tmp_path / "a"), "--n-vertices", "1500"]) == 0
    assert "procedural head model, not FLAME" in capsys.readouterr().out
    assert _cli(["make-head-model", str(tmp_path / "b"), "--seed", "1", "--n-vertices", "1500"]) == 0
    a = load_flame(tmp_path / "a" / "generic_model.pkl", tmp_path / "a" / "landmark_embedding.npy")
    b = load_flame(tmp_path / "b" / "generic_model.pkl", tmp_path / "b" / "landmark_embedding.npy")
    assert 1000 < a.n_vertices < 2000 and not a.is_real
    assert not np.allclose(a.shapedirs.numpy(), b.shapedirs.numpy())
    torch.testing.assert_close(a.v_template, b.v_template)                  # seed changes the bases only
