"""tasks.head_model: the configured FLAME files or the generated procedural stand-in, and the files
the make-head-model command writes."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from flame_fit.flame import PROCEDURAL_NAME, load_flame
from tasks import head_model
from tasks.common.atomic import atomic_dir
from tasks.common.errors import ModelFileError, PipelineInputError
from tasks.common.settings import DeviceSettings, FlameSettings
from tasks.head_model import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from tasks.devices import gpu_resources, torch_device
from tasks.layout import Layout
from pipeline.build import config_overrides


@pytest.fixture(autouse=True)
def clear_cache():
    """Each test loads its own files; the model cache is emptied afterwards."""
    yield
    head_model._CACHE.clear()


def make_head_model(out, seed=head_model.PROCEDURAL_SEED, n_vertices=4000):
    """What `singinghead make-head-model OUT --seed S --n-vertices N` does: write atomically, load back."""
    with atomic_dir(out) as tmp:
        write_procedural_head_model(tmp, seed=seed, n_vertices=n_vertices)
    return load_flame(out / MODEL_FILE, out / EMBEDDING_FILE)


def test_procedural_model_generated_once_and_named_as_stand_in(tmp_path, caplog):
    folder = tmp_path / "models" / "procedural_head"
    # Through the task plumbing: [flame] read from the config, as a Luigi task does.
    with config_overrides(flame={"model_path": "", "landmark_embedding_path": "", "procedural_model_dir": folder}):
        with caplog.at_level("WARNING", logger="singinghead"):
            model, record = head_model.head_model_for_task(Layout(tmp_path / "raw", tmp_path / "p", tmp_path / "r"),
                                                           "cpu")
    assert (folder / "generic_model.pkl").is_file() and (folder / "landmark_embedding.npy").is_file()
    assert not model.is_real and model.name == PROCEDURAL_NAME
    assert record["name"] == PROCEDURAL_NAME and record["kind"] == "stand-in"
    assert {f["path"] for f in record["files"]} == {str(folder / "generic_model.pkl"),
                                                    str(folder / "landmark_embedding.npy")}
    assert all(len(f["sha256"]) == 64 for f in record["files"])
    assert "STAND-IN" in caplog.text and PROCEDURAL_NAME in caplog.text
    mtime = (folder / "generic_model.pkl").stat().st_mtime_ns
    cfg = FlameSettings(procedural_model_dir=str(folder))
    again, record2 = head_model.get_head_model(cfg, tmp_path / "unused", "cpu")
    assert again is model and record2 == record                           # cached per files+device
    head_model._CACHE.clear()
    head_model.get_head_model(cfg, tmp_path / "unused", "cpu")
    assert (folder / "generic_model.pkl").stat().st_mtime_ns == mtime        # not regenerated
    assert not list(folder.parent.glob(".*tmp*"))                           # no temporaries left
    out = model(torch.zeros(1, 100), torch.zeros(1, 50), torch.zeros(1, 3))
    assert out.landmarks.shape == (1, 68, 3)


def test_default_procedural_folder_is_under_models_dir(tmp_path):
    models = tmp_path / "processed" / "_models"
    model, record = head_model.get_head_model(FlameSettings(), models, "cpu")
    folder = head_model.default_procedural_dir(models)
    assert folder.parent == models and head_model.PROCEDURAL_VERSION in folder.name
    assert {f["path"] for f in record["files"]} == {str(folder / MODEL_FILE), str(folder / EMBEDDING_FILE)}
    assert not model.is_real


def test_configured_files_give_a_real_record(tmp_path):
    make_head_model(tmp_path / "m", seed=3, n_vertices=1500)
    with open(tmp_path / "m" / "generic_model.pkl", "rb") as f:
        raw = pickle.load(f)
    for k in ("procedural", "description", "seed"):                        # a file in FLAME's own layout
        raw.pop(k)
    (tmp_path / "generic_model.pkl").write_bytes(pickle.dumps(raw, protocol=2))
    cfg = FlameSettings(model_path=str(tmp_path / "generic_model.pkl"),
                        landmark_embedding_path=str(tmp_path / "m" / "landmark_embedding.npy"))
    model, record = head_model.get_head_model(cfg, tmp_path / "_models", "cpu")
    assert model.is_real and record["kind"] == "real" and record["name"] == "FLAME"
    assert record["n_shape"] == 100 and record["n_expr"] == 50


def test_bad_configuration_raises_model_file_error(tmp_path):
    cfg = FlameSettings(model_path=str(tmp_path / "nope.pkl"), landmark_embedding_path=str(tmp_path / "nope.npy"))
    with pytest.raises(ModelFileError, match="nope.pkl.*not found.*fix"):
        head_model.get_head_model(cfg, tmp_path / "_models", "cpu")
    cfg = FlameSettings(model_path=str(tmp_path / "nope.pkl"), landmark_embedding_path="")
    with pytest.raises(ModelFileError, match="landmark_embedding_path"):
        head_model.get_head_model(cfg, tmp_path / "_models", "cpu")


def test_make_head_model_writes_loadable_seeded_files(tmp_path):
    a = make_head_model(tmp_path / "a", n_vertices=1500)
    assert "procedural head model, not FLAME" in a.name                   # what the command prints
    make_head_model(tmp_path / "b", seed=1, n_vertices=1500)
    a = load_flame(tmp_path / "a" / "generic_model.pkl", tmp_path / "a" / "landmark_embedding.npy")
    b = load_flame(tmp_path / "b" / "generic_model.pkl", tmp_path / "b" / "landmark_embedding.npy")
    assert 1000 < a.n_vertices < 2000 and not a.is_real
    assert not np.allclose(a.shapedirs.numpy(), b.shapedirs.numpy())
    torch.testing.assert_close(a.v_template, b.v_template)                  # seed changes the bases only


def _gpus(monkeypatch, n: int) -> None:
    """Pretend torch sees `n` GPUs (the suite runs on CPU-only machines)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_devices_from_settings_or_names(monkeypatch):
    _gpus(monkeypatch, 2)
    assert torch_device(DeviceSettings(torch_device="cpu")) == torch.device("cpu")
    assert torch_device("cuda:1") == torch.device("cuda:1")
    assert torch_device(DeviceSettings()) == torch.device("cuda")                   # auto, with a GPU
    with config_overrides(device={"torch_device": "cpu"}):
        assert torch_device() == torch.device("cpu")                        # a task's [device]
        assert gpu_resources() == {}
    assert gpu_resources(device="cuda") == {"gpu": 1}                        # claimed only on CUDA
    assert gpu_resources(uses_gpu=False, device=DeviceSettings(torch_device="cuda")) == {}
    assert gpu_resources(device=DeviceSettings(torch_device="cpu")) == {}
    _gpus(monkeypatch, 0)
    assert torch_device(DeviceSettings()) == torch.device("cpu")                    # auto, without one


@pytest.mark.parametrize("gpus, name, said", [(0, "cuda", "sees no GPU"), (0, "cuda:0", "sees no GPU"),
                                              (2, "cuda:2", "2 GPU(s) on this machine (cuda:0 to cuda:1)")])
def test_a_gpu_that_is_not_there_is_refused_when_the_task_is_scheduled(monkeypatch, gpus, name, said):
    _gpus(monkeypatch, gpus)
    with pytest.raises(PipelineInputError, match="use auto") as err:
        gpu_resources(device=DeviceSettings(torch_device=name))              # Luigi asks this first
    assert said in str(err.value) and repr(name) in str(err.value)
    with pytest.raises(PipelineInputError):
        torch_device(name)
