"""Native EMOCA v2: random-weight checkpoints in the official layout, loaded through the real path."""
from __future__ import annotations

import importlib.util
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from camera_reference import crop_pixels_in_frame, orthographic_pixels
from flame_fit.camera import ndc_to_pixels, orth_project
from tasks.estimation import emoca as E
from tasks.common.errors import ModelFileError

CKPT_NAME = "deca-epoch=01-val_loss=0.5.ckpt"


@pytest.fixture(scope="module")
def base_state():
    """Random E_flame + E_expression (width 56) weights with EMOCA's Lightning key names, plus
    keys EMOCA checkpoints also carry and the loader must ignore.

    E_expression's backbone shares most tensors with E_flame (torch.save then writes them once,
    keeping the file ~100 MB) but not conv1, a layer3 BN and layer4's last conv, so loading the
    wrong backbone into a slot changes the output."""
    torch.manual_seed(0)
    enc = E.ResnetEncoder(236)
    # BN running stats away from (0, 1) so that eval-mode statistics matter in the comparison
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {f"deca.E_flame.{k}": v for k, v in enc.state_dict().items()}
    for k, v in enc.encoder.state_dict().items():
        own = k in ("conv1.weight", "layer3.2.bn2.running_var", "layer4.2.conv3.weight")
        state[f"deca.E_expression.encoder.{k}"] = v * 1.5 if own else v
    g = torch.Generator().manual_seed(1)
    state["deca.E_expression.layers.0.weight"] = torch.randn(1024, 2048, generator=g) * 0.02
    state["deca.E_expression.layers.0.bias"] = torch.randn(1024, generator=g) * 0.02
    state["deca.flame.neck_pose"] = torch.zeros(1, 3)
    state["deca.E_detail.layers.0.weight"] = torch.zeros(4, 4)
    state["emonet_loss.backbone.weight"] = torch.zeros(2)
    return with_width(state, 56)


def with_width(state: dict, width: int) -> dict:
    s = dict(state)
    g = torch.Generator().manual_seed(width)
    s["deca.E_expression.layers.2.weight"] = torch.randn(width, 1024, generator=g) * 0.01
    s["deca.E_expression.layers.2.bias"] = torch.randn(width, generator=g) * 0.01
    return s


def write_model(root, state: dict, *, jaw: bool, glob: bool, backbone: str = "deca_clone", extra=None):
    """<root>/cfg.yaml + <root>/detail/checkpoints/<CKPT_NAME>, saved the way Lightning saves."""
    model = {"deca_class": "ExpDECA", "expression_backbone": backbone, "exp_deca_jaw_pose": jaw,
             "exp_deca_global_pose": glob, "n_exp": 50, "n_shape": 100, "n_pose": 6,
             "resume_training": True, "pretrained_modes_path": "${inout.full_run_dir}"}
    cfg = {"coarse": {"model": dict(model), "learning": {"lr": 1e-4}},
           "detail": {"model": dict(model), "inout": {"full_run_dir": "/x"}}}
    (root / "detail" / "checkpoints").mkdir(parents=True)
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.4.9", "state_dict": state}
    ckpt.update(extra or {})
    torch.save(ckpt, root / "detail" / "checkpoints" / CKPT_NAME)
    return root


def reference_encode(state: dict, images: torch.Tensor, prefix: str) -> torch.Tensor:
    """Independent forward: torchvision's ResNet-50 (adaptive pool == AvgPool(7) at 224) + the MLP."""
    with torch.device("meta"):
        net = torchvision.models.resnet50()
    net.fc = torch.nn.Identity()
    enc = {k[len(prefix) + 8:]: v for k, v in state.items() if k.startswith(prefix + "encoder.")}
    missing, unexpected = net.load_state_dict(enc, strict=False, assign=True)
    assert not unexpected and not missing
    net.eval()
    with torch.no_grad():
        f = net(images)
        h = F.relu(F.linear(f, state[prefix + "layers.0.weight"], state[prefix + "layers.0.bias"]))
        return F.linear(h, state[prefix + "layers.2.weight"], state[prefix + "layers.2.bias"])


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 224, 224)


def test_load_checkpoint_and_encode_matches_reference(tmp_path, base_state, images, caplog):
    state = with_width(base_state, 53)
    write_model(tmp_path, state, jaw=True, glob=False)
    with caplog.at_level("INFO", logger="singinghead"):
        loaded = E.load_emoca(tmp_path)
    # the log tells the user which encoder each pose comes from
    assert any(r.getMessage().endswith("(E_expression width 53: global from E_flame, jaw from E_expression)")
               for r in caplog.records)
    assert loaded.layout.width == 53 and loaded.layout.jaw_pose and not loaded.layout.global_pose
    assert loaded.checkpoint.name == CKPT_NAME
    assert not loaded.encoder.training
    with torch.no_grad():
        out = loaded.encoder(images)
    code = reference_encode(state, images, "deca.E_flame.")
    exp_code = reference_encode(state, images, "deca.E_expression.")
    torch.testing.assert_close(out["shape"], code[:, :100], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["cam"], code[:, 206:209], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["exp"], exp_code[:, :50], rtol=1e-4, atol=1e-5)
    # jaw from E_expression, global from E_flame
    torch.testing.assert_close(out["pose"][:, :3], code[:, 200:203], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["pose"][:, 3:], exp_code[:, 50:53], rtol=1e-4, atol=1e-5)
    assert out["light"].shape == (2, 9, 3)
    rec = E.emoca_model_record(loaded)
    assert rec["kind"] == "real" and len(rec["files"]) == 2 and rec["jaw_from_expression_encoder"]


@pytest.mark.parametrize("glob,jaw,width", [(False, False, 50), (True, False, 53), (False, True, 53),
                                            (True, True, 56)])
def test_merge_follows_expdeca(glob, jaw, width):
    layout = E.ExpressionLayout(global_pose=glob, jaw_pose=jaw)
    assert layout.width == width
    code, exp_code = torch.randn(3, 236), torch.randn(3, width)
    out = E.merge_codes(code, exp_code, layout)
    assert torch.equal(out["exp"], exp_code[:, :50])
    assert torch.equal(out["shape"], code[:, :100]) and torch.equal(out["tex"], code[:, 100:150])
    assert torch.equal(out["cam"], code[:, 206:209])
    want_g = exp_code[:, 50:53] if glob else code[:, 200:203]
    want_j = exp_code[:, -3:] if jaw else code[:, 203:206]
    assert torch.equal(out["pose"][:, :3], want_g) and torch.equal(out["pose"][:, 3:], want_j)


def test_width_must_match_config(tmp_path, base_state):
    write_model(tmp_path, with_width(base_state, 56), jaw=True, glob=False)
    with pytest.raises(ModelFileError, match="predicts 56 values but cfg.yaml"):
        E.load_emoca(tmp_path)


def test_missing_and_mismatched_keys_are_named(tmp_path, base_state):
    state = with_width(base_state, 50)
    del state["deca.E_expression.encoder.layer3.2.bn2.running_var"]
    state["deca.E_flame.layers.0.bias"] = torch.zeros(1000)
    write_model(tmp_path, state, jaw=False, glob=False)
    with pytest.raises(ModelFileError) as err:
        E.load_emoca(tmp_path)
    msg = str(err.value)
    assert "deca.E_flame.layers.0.bias" in msg and "(1000,)" in msg
    # E_flame is checked first; the E_expression key is reported once E_flame is whole
    state["deca.E_flame.layers.0.bias"] = base_state["deca.E_flame.layers.0.bias"]
    with pytest.raises(ModelFileError, match=r"deca\.E_expression\.encoder\.layer3\.2\.bn2\.running_var"):
        E.build_encoder(state, E.ExpressionLayout())


def _config_object():
    """An OmegaConf DictConfig as EMOCA's hyper-parameters pickle it; when omegaconf is not
    installed, a same-named class in fake `omegaconf.dictconfig` modules (removed after saving)."""
    if importlib.util.find_spec("omegaconf") is not None:
        from omegaconf import OmegaConf
        return OmegaConf.create({"n_exp": 50, "deca_class": "ExpDECA"}), {}
    pkg, mod = types.ModuleType("omegaconf"), types.ModuleType("omegaconf.dictconfig")

    def init(self, content):
        self._content = dict(content)

    DictConfig = type("DictConfig", (), {"__module__": mod.__name__, "__init__": init})
    mod.DictConfig, pkg.dictconfig = DictConfig, mod
    return DictConfig({"n_exp": 50, "deca_class": "ExpDECA"}), {"omegaconf": pkg, "omegaconf.dictconfig": mod}


def test_config_classes_in_checkpoint_and_parallel_variant(tmp_path, base_state, images):
    """A checkpoint whose hyper-parameters pickle OmegaConf classes (not installed here) loads with
    torch's weights-only loader, the classes read as inert records; the deca_parallel layout
    (SecondHeadResnet) is recognised from its key names."""
    g = torch.Generator().manual_seed(7)
    state = {k: v for k, v in base_state.items() if not k.startswith("deca.E_expression.")}
    for k, v in base_state.items():
        if k.startswith("deca.E_flame."):
            state["deca.E_expression.resnet." + k[len("deca.E_flame."):]] = v
    state["deca.E_expression.layers.0.weight"] = torch.randn(1024, 2048, generator=g) * 0.01
    state["deca.E_expression.layers.0.bias"] = torch.zeros(1024)
    state["deca.E_expression.layers.2.weight"] = torch.randn(50, 1024, generator=g) * 0.01
    state["deca.E_expression.layers.2.bias"] = torch.zeros(50)
    config, fake_modules = _config_object()
    sys.modules.update(fake_modules)
    try:
        write_model(tmp_path, state, jaw=False, glob=False, backbone="deca_parallel",
                    extra={"hyper_parameters": {"model_params": config}})
    finally:
        for name in fake_modules:
            del sys.modules[name]
    ckpt = tmp_path / "detail" / "checkpoints" / CKPT_NAME
    with pytest.raises(pickle.UnpicklingError):               # not loadable by weights_only alone
        torch.load(ckpt, weights_only=True)
    loaded = E.load_emoca(tmp_path)
    assert loaded.layout.parallel
    with torch.no_grad():
        out = loaded.encoder(images)
        code = reference_encode(state, images, "deca.E_flame.")
        feats = loaded.encoder.E_flame.encoder(images)
        w = {k: state[f"deca.E_expression.layers.{k}"] for k in ("0.weight", "0.bias", "2.weight", "2.bias")}
        exp_ref = F.linear(F.relu(F.linear(feats, w["0.weight"], w["0.bias"])), w["2.weight"], w["2.bias"])
    torch.testing.assert_close(out["shape"], code[:, :100], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["exp"], exp_ref, rtol=1e-4, atol=1e-5)


# -- checkpoints as EMOCA's environment writes them (Lightning 1.4.9, omegaconf 2.0.6) -------------
def emoca_cfg(*, glob: bool, jaw: bool) -> dict:
    """cfg.yaml content shaped like EMOCA v2's (coarse/detail stages, model/learning/inout sections)."""
    model = {"deca_class": "ExpDECA", "expression_backbone": "deca_clone", "exp_deca_jaw_pose": jaw,
             "exp_deca_global_pose": glob, "n_exp": 50, "n_shape": 100, "n_tex": 50, "n_pose": 6, "n_cam": 3,
             "n_light": 27, "use_emonet_loss": True, "resume_training": True,
             "pretrained_modes_path": "${inout.full_run_dir}/../coarse", "flame_lmk_embedding_path": "???",
             "emonet_model_path": None, "train_coarse": False, "image_size": 224,
             "mediapipe_lmk_weights": [0.5, 1.0, 2], "max_epochs": 4}
    return {"coarse": {"model": dict(model, mode="coarse"), "learning": {"lr": 1e-4},
                       "inout": {"full_run_dir": "/ps/emoca/coarse"}},
            "detail": {"model": dict(model, mode="detail"),
                       "learning": {"lr": 5e-5, "optimizer": "Adam", "gpu_memory_min_gb": 30,
                                    "checkpoint_after_training": "best", "val_check_interval": 0.2},
                       "inout": {"full_run_dir": "/ps/emoca/detail", "random_id": "7e4c8b1",
                                 "time": "2022_05_06_10-23-05"}}}


def write_official_model(root, state: dict, *, glob: bool, jaw: bool):
    """An EMOCA v2 model folder as the download unpacks it: cfg.yaml + a Lightning-1.4.9 checkpoint
    whose hyper-parameters are omegaconf 2.0.6 objects.  Returns (folder, hyper-parameters as plain
    containers per OmegaConf.to_container)."""
    from upstream_files import emoca_hparams_pickle, lightning_checkpoint

    cfg = emoca_cfg(glob=glob, jaw=jaw)
    hp_pickle, hp_plain = emoca_hparams_pickle(cfg)
    (root / "detail" / "checkpoints").mkdir(parents=True)
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    lightning_checkpoint(root / "detail" / "checkpoints" / CKPT_NAME, state, hp_pickle)
    return root, hp_plain


@pytest.mark.parametrize("glob,jaw,width", [(False, False, 50), (True, False, 53), (False, True, 53),
                                            (True, True, 56)])
def test_official_format_checkpoints_load_in_all_four_layouts(tmp_path, base_state, images, glob, jaw, width):
    """The four E_expression layouts of EMOCA v2 (global / jaw pose from E_flame or E_expression), in
    the checkpoint format EMOCA's environment writes, load through the real path and give exactly
    the codes of the same weights in a bare Lightning dict (which loaded before)."""
    state = with_width(base_state, width)
    official, hp_plain = write_official_model(tmp_path / "official", state, glob=glob, jaw=jaw)
    ckpt = official / "detail" / "checkpoints" / CKPT_NAME
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)))
    assert {"builtins.dict", "builtins.int", "builtins.list", "collections.defaultdict", "typing.Any",
            "omegaconf.dictconfig.DictConfig", "omegaconf.nodes.AnyNode"} <= names
    with pytest.raises(pickle.UnpicklingError):          # torch's weights-only loader alone refuses it
        torch.load(ckpt, weights_only=True)
    before = write_model(tmp_path / "before", state, jaw=jaw, glob=glob)
    got, ref = E.load_emoca(official), E.load_emoca(before)
    assert got.layout == ref.layout and got.layout.width == width
    with torch.no_grad():
        out, want = got.encoder(images), ref.encoder(images)
    assert out.keys() == want.keys()
    for key in out:
        assert torch.equal(out[key], want[key]), key
    # the hyper-parameters come back as the plain containers omegaconf itself gives
    hp = E.read_checkpoint(ckpt)["hyper_parameters"]
    assert hp == hp_plain
    assert hp["model_params"]["exp_deca_jaw_pose"] is jaw and hp["model_params"]["mode"] == "detail"
    assert hp["inout_params"]["full_run_dir"] == "/ps/emoca/detail"
    assert "omegaconf" not in sys.modules


def test_checkpoint_writer_is_torch_save(tmp_path):
    """The fixture writer's archive is torch.save's: without hyper-parameters its bytes equal a plain
    torch.save of the same dict, and the spliced hyper-parameters keep omegaconf's globals."""
    from upstream_files import emoca_hparams_pickle, globals_in, lightning_checkpoint

    state = {"deca.E_flame.layers.0.weight": torch.arange(6.0).view(2, 3)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = lightning_checkpoint(tmp_path / "a" / "x.ckpt", state)
    b = lightning_checkpoint(tmp_path / "b" / "x.ckpt", state, pickle_module=pickle)
    assert a.read_bytes() == b.read_bytes()
    # a Lightning 1.4 checkpoint without hyper-parameters (callbacks keyed by class, optimizer state)
    got = E.load_state_dict(a)
    assert list(got) == list(state) and torch.equal(got["deca.E_flame.layers.0.weight"], state[
        "deca.E_flame.layers.0.weight"])
    hp_pickle, _ = emoca_hparams_pickle(emoca_cfg(glob=False, jaw=True))
    c = lightning_checkpoint(tmp_path / "c.ckpt", state, hp_pickle)
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(c) as zc:
        assert [n.split("/", 1)[1] for n in za.namelist()] == [n.split("/", 1)[1] for n in zc.namelist()]
        data = zc.read(next(n for n in zc.namelist() if n.endswith("/data.pkl")))
    assert globals_in(hp_pickle) <= globals_in(data)
    assert "__builtin__ long" in globals_in(data)        # how protocol 2 names int


def _hparams_with(tmp_path, obj):
    p = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"deca.E_flame.layers.0.weight": torch.ones(2)}, "hyper_parameters": obj}, p)
    return p


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __call__(self, *args):
        raise AssertionError("only for pickling")

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("name,obj", [
    ("type", _Reduce(type, "Made", (object,), {})),                 # three arguments create a class
    ("object", _Reduce(object)),
    ("getattr", _Reduce(getattr, dict, "fromkeys")),                # reaches a method of an allowed type
    ("setattr", _Reduce(setattr, _Reduce(dict), "x", 1)),
    ("compile", _Reduce(compile, "1", "f", "eval")),
    ("vars", _Reduce(vars)),
    ("globals", _Reduce(globals)),
    ("print", _Reduce(print, "x")),
])
def test_only_inert_builtins_are_allowed(tmp_path, name, obj):
    """Allowing dict/list/int must not open the rest of builtins: each builtin that acts or reaches
    other objects is refused by name."""
    p = _hparams_with(tmp_path, {"model_params": obj})
    with pytest.raises(ModelFileError, match=rf"refused.*'builtins\.{name}'") as err:
        E.load_state_dict(p)
    assert "cannot read" not in str(err.value)


def test_inert_builtins_called_with_arguments_give_plain_values(tmp_path):
    """What REDUCE/NEWOBJ can do with the allowed names: build values; defaultdict's factory is
    dropped (the plain dict it becomes never calls anything)."""
    import collections
    hp = {"d": _Reduce(dict, [("a", 1)]), "l": _Reduce(list, (1, 2)), "i": _Reduce(int, "7"),
          "t": _Reduce(tuple, [1]), "f": _Reduce(float, "0.5"), "s": _Reduce(str, 3),
          "dd": collections.defaultdict(list, {"k": [1]}), "fs": frozenset({2})}
    got = E.read_checkpoint(_hparams_with(tmp_path, hp))["hyper_parameters"]
    assert got == {"d": {"a": 1}, "l": [1, 2], "i": 7, "t": (1,), "f": 0.5, "s": "3", "dd": {"k": [1]},
                   "fs": frozenset({2})}
    assert type(got["dd"]) is dict


def test_best_checkpoint_selection_and_missing_files(tmp_path):
    ck = tmp_path / "detail" / "checkpoints"
    (ck / "sub").mkdir(parents=True)
    for name in ("last.ckpt", "deca-epoch=03-val_loss=0.70.ckpt", "sub/deca-epoch=09-val_loss=0.40.ckpt",
                 "deca-epoch=05-val_loss=0.40.ckpt"):
        (ck / name).write_bytes(b"x")
    # ties: the later one in sorted order wins (EMOCA's `<=`)
    assert E.find_checkpoint(tmp_path).name == "deca-epoch=09-val_loss=0.40.ckpt"
    with pytest.raises(ModelFileError, match="cfg.yaml is missing"):
        E.read_model_config(tmp_path)
    with pytest.raises(ModelFileError, match="no \\*.ckpt"):
        E.find_checkpoint(tmp_path / "detail")  # a folder without checkpoints
    (ck / "deca-epoch=05-val_loss=0.40.ckpt").write_bytes(b"not a checkpoint")
    (ck / "sub" / "deca-epoch=09-val_loss=0.40.ckpt").unlink()
    with pytest.raises(ModelFileError, match="cannot read the checkpoint"):
        E.load_state_dict(E.find_checkpoint(tmp_path))


def test_crop_matches_skimage_warp():
    from skimage.transform import SimilarityTransform, estimate_transform, warp
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    lmk = rng.uniform([150, 40], [290, 200], (68, 2))  # box runs past the right edge
    box = E.crop_boxes_from_landmarks(lmk[None])[0]
    left, right, top, bottom = lmk[:, 0].min(), lmk[:, 0].max(), lmk[:, 1].min(), lmk[:, 1].max()
    old = (right - left + bottom - top) / 2 * 1.1
    size = int(old * 1.25)
    assert box[2] == size
    cx, cy = right - (right - left) / 2, bottom - (bottom - top) / 2
    h = size / 2
    src = np.array([[cx - h, cy - h], [cx - h, cy + h], [cx + h, cy - h]])
    tform = estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]]))
    ref = warp(img / 255.0, tform.inverse, output_shape=(224, 224)).transpose(2, 0, 1)
    ours = E.crop_image(img, box)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert isinstance(tform, SimilarityTransform)


def test_crop_camera_converts_to_portrait_camera():
    """Known 3D points seen by the crop camera land, in the portrait, where the portrait camera puts them
    (reference: camera_reference, from DECA's projection and skimage's crop transform)."""
    rng = np.random.default_rng(3)
    N, W = 5, 1024
    X = rng.normal(0, 0.1, (N, 68, 3))
    crop_cam = np.c_[rng.uniform(5, 10, N), rng.normal(0, 0.02, (N, 2))]
    boxes = np.c_[rng.uniform(300, 700, (N, 2)), np.floor(rng.uniform(200, 600, N))]
    cam = E.crop_cam_to_portrait(crop_cam, boxes, W)
    for i in range(N):
        want = crop_pixels_in_frame(X[i], crop_cam[i], boxes[i])
        np.testing.assert_allclose(orthographic_pixels(X[i], cam[i], W), want, atol=1e-6)
    # the project's own projection agrees with the reference too
    got = ndc_to_pixels(orth_project(torch.tensor(X), torch.tensor(cam)), W).numpy()
    np.testing.assert_allclose(got, np.stack([orthographic_pixels(X[i], cam[i], W) for i in range(N)]),
                               atol=1e-6)
    # a hand-checked case: a point at the origin seen by an untranslated crop camera is the box centre
    c = E.crop_cam_to_portrait(np.array([[7.0, 0.0, 0.0]]), np.array([[400.0, 300.0, 224.0]]), W)[0]
    centre = orthographic_pixels(np.zeros((1, 3)), c, W)[0]
    np.testing.assert_allclose(centre, [400.0 - 112 + 112 * 224 / 223, 300.0 - 112 + 112 * 224 / 223],
                               atol=1e-9)


class _MeanEncoder(torch.nn.Module):
    """Cheap stand-in network for the batching test: codes are the crop's mean colour."""

    def forward(self, images):
        m = images.mean(dim=(1, 2, 3))[:, None]
        return {"shape": m.repeat(1, 100), "exp": m.repeat(1, 50), "pose": m.repeat(1, 6),
                "cam": torch.cat([torch.ones_like(m) * 8, m * 0, m * 0], 1)}


def test_runner_batches_in_frame_order():
    rng = np.random.default_rng(5)
    frames = [np.full((64, 64, 3), v, np.uint8) for v in (10, 50, 90, 130, 170)]
    lmk = rng.uniform(20, 44, (68, 2))
    runner = E.EmocaRunner(_MeanEncoder(), "cpu", batch_size=2, image_size=64)
    for f in frames:
        runner.add(f, lmk)
    out = runner.finish()
    assert out["shape"].shape == (5, 100) and out["cam"].shape == (5, 3) and out["crop_boxes"].shape == (5, 3)
    means = out["expression"][:, 0]
    assert np.all(np.diff(means) > 0)  # frame order survives batching
    X = np.random.default_rng(6).normal(0, 0.1, (68, 3))  # known points: the portrait camera sees them where
    for i in range(5):                                     # the crop camera does (independent reference)
        want = crop_pixels_in_frame(X, out["crop_cam"][i], out["crop_boxes"][i])
        np.testing.assert_allclose(orthographic_pixels(X, out["cam"][i], 64), want, atol=1e-3)


def test_torch_crop_equals_numpy_crop():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    # inside; off the left and bottom edges; off the right and top edges
    for box in ([120.3, 90.7, 150.0], [10.0, 190.0, 131.0], [230.0, 15.0, 101.0]):
        ours = E.crop_image_torch(torch.from_numpy(img), box).numpy()
        np.testing.assert_allclose(ours, E.crop_image(img, box), atol=1e-5)


# -- rules of the loader, checked on tiny files (no ResNet weights needed) ---------------------------
def test_encoder_checks_its_input_and_gives_every_code_in_its_shape():
    """On the meta device (no weights, no arithmetic): the 224x224 RGB batch rule and the output shapes
    of both E_expression variants."""
    for layout, exp_width in ((E.ExpressionLayout(jaw_pose=True), 53),
                              (E.ExpressionLayout(parallel=True), 50)):
        with torch.device("meta"):
            enc = E.EmocaEncoder(layout)
            for bad in (torch.zeros(3, 224, 224), torch.zeros(1, 3, 112, 112), torch.zeros(1, 1, 224, 224),
                        torch.zeros(1, 3, 224, 223), torch.zeros(1, 4, 224, 224), torch.zeros(2, 3, 256, 256),
                        torch.zeros(1, 3, 224, 225)):
                with pytest.raises(ValueError, match=r"EMOCA wants \(B, 3, 224, 224\) images, got") as err:
                    enc(bad)
                assert str(err.value).endswith(f"got {tuple(bad.shape)}")      # RGBA, a 256 crop: named
            if layout.parallel:                 # (deca_clone's forward: the reference test above)
                out = enc(torch.zeros(2, 3, 224, 224))
                assert {k: tuple(v.shape) for k, v in out.items()} == {"shape": (2, 100), "tex": (2, 50),
                        "exp": (2, 50), "pose": (2, 6), "cam": (2, 3), "light": (2, 9, 3)}
        assert hasattr(enc, "E_expression_head") == layout.parallel
        assert hasattr(enc, "E_expression") != layout.parallel
        last = (enc.E_expression_head if layout.parallel else enc.E_expression.layers)[2]
        assert last.out_features == exp_width


def test_code_layout_and_width_errors():
    code = torch.arange(2 * 236, dtype=torch.float32).reshape(2, 236)
    out = E.split_flame_code(code)
    assert out["light"].shape == (2, 9, 3)
    assert torch.equal(out["light"][1], code[1, 209:].reshape(9, 3))      # SH band by colour, row-major
    assert torch.equal(out["pose"], code[:, 200:206]) and torch.equal(out["exp"], code[:, 150:200])
    with pytest.raises(ValueError, match="must have 236 values, got 235"):
        E.split_flame_code(code[:, :235])
    with pytest.raises(ValueError, match="must have 236 values, got 237$"):    # one too many is no code either
        E.split_flame_code(torch.zeros(2, 237))
    with pytest.raises(ValueError, match="must have 236 values, got 5$"):      # the values are on the last axis
        E.split_flame_code(torch.zeros(2, 236, 5))
    with pytest.raises(ValueError, match="must have 53 values, got 50"):
        E.merge_codes(code, torch.zeros(2, 50), E.ExpressionLayout(global_pose=True))
    with pytest.raises(ValueError, match="must have 50 values, got 51$"):
        E.merge_codes(code, torch.zeros(2, 51), E.ExpressionLayout())
    with pytest.raises(ValueError, match="must have 50 values, got 7$"):
        E.merge_codes(code, torch.zeros(2, 50, 7), E.ExpressionLayout())
    assert E.ExpressionLayout(n_exp=60, global_pose=True).width == 63


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_checkpoint_choice_falls_back_to_last_then_coarse(tmp_path):
    with pytest.raises(ModelFileError, match="EMOCA model folder does not exist"):
        E.find_checkpoint(tmp_path / "nope")
    ck = tmp_path / "detail" / "checkpoints"
    _touch(ck / "model.ckpt")                          # no number after '=': not a candidate
    _touch(tmp_path / "coarse" / "checkpoints" / "deca-epoch=02-val_loss=0.9.ckpt")
    _touch(tmp_path / "coarse" / "checkpoints" / "deca-epoch=01-val_loss=1.3.ckpt")
    coarse = tmp_path / "coarse" / "checkpoints"
    assert E.find_checkpoint(tmp_path) == coarse / "deca-epoch=02-val_loss=0.9.ckpt"
    # Lightning names a second file of an existing name `<name>-v1.ckpt`: no number after the '='
    _touch(ck / "deca-epoch=03-val_loss=0.70-v1.ckpt")
    assert E.find_checkpoint(tmp_path) == coarse / "deca-epoch=02-val_loss=0.9.ckpt"
    _touch(ck / "last.ckpt")                            # EMOCA's 'best' finds nothing numbered: last
    assert E.find_checkpoint(tmp_path) == ck / "last.ckpt"
    _touch(ck / "x-val_loss=0.3.ckpt")
    _touch(ck / "x-val_loss=0.25.ckpt")
    _touch(ck / "x-val_loss=2.ckpt")
    assert E.find_checkpoint(tmp_path) == ck / "x-val_loss=0.25.ckpt"   # the smallest value
    assert E.find_checkpoint(tmp_path, "coarse").parent.parent.name == "coarse"
    with pytest.raises(ModelFileError) as err:
        E.find_checkpoint(tmp_path / "coarse")
    assert err.value.path == str(tmp_path / "coarse" / "detail" / "checkpoints")


def test_model_config_sections_and_bad_files(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg.yaml"

    def read(text):
        cfg.write_text(text) if isinstance(text, str) else cfg.write_bytes(text)
        return E.read_model_config(tmp_path)

    assert read("detail: {model: {n_exp: 1}}\ncoarse: {model: {n_exp: 2}}\n") == {"n_exp": 1}
    assert read("detail: {learning: {}}\ncoarse: {model: {n_exp: 2}}\n") == {"n_exp": 2}
    assert read("detail: [1]\ncoarse: {model: {n_exp: 2}}\n") == {"n_exp": 2}
    assert read("model: {n_exp: 3}\n") == {"n_exp": 3}
    for text in ("", "detail: {model: 5}\n", "[1, 2]\n", "model: [1]\n"):
        with pytest.raises(ModelFileError, match="no detail.model / coarse.model section"):
            read(text)
    for text in ("detail: {model: [\n", b"detail: \xff\xfe\n"):
        with pytest.raises(ModelFileError, match="cfg.yaml is not valid YAML") as err:
            read(text)
        assert err.value.path == str(cfg)
    monkeypatch.setattr(E, "MAX_JSON_BYTES", 8)
    with pytest.raises(ModelFileError, match="more than") as err:
        read("model: {n_exp: 3}\n")
    assert err.value.path == str(cfg)


@pytest.mark.parametrize("value,want", [(True, True), (False, False), ("True", True), (" yes ", True),
                                        ("1", True), ("false", False), ("no", False), ("", False), (1, True),
                                        (None, False)])
def test_config_flags_read_as_omegaconf_writes_them(value, want):
    layout = E.layout_from_config({"exp_deca_jaw_pose": value, "exp_deca_global_pose": value})
    assert layout.jaw_pose is want and layout.global_pose is want


def test_layout_from_config_refuses_what_it_cannot_run(tmp_path):
    assert E.layout_from_config({}) == E.ExpressionLayout()               # EMOCA's defaults
    assert E.layout_from_config({"deca_class": "EMOCA", "n_exp": "60"}).n_exp == 60
    assert E.layout_from_config({"expression_backbone": "deca_parallel"}).parallel
    want = {"n_shape": 100, "n_tex": 50, "n_pose": 6, "n_cam": 3, "n_light": 27}
    assert E.layout_from_config(dict(want)) == E.ExpressionLayout()
    for key, n in want.items():
        with pytest.raises(ModelFileError, match=rf"{key}={n + 1} but EMOCA's code layout has {n}") as err:
            E.layout_from_config({key: n + 1}, tmp_path / "cfg.yaml")
        assert err.value.path == str(tmp_path / "cfg.yaml")
        with pytest.raises(ModelFileError, match=rf"{key}={n - 1} but EMOCA's code layout has {n}"):
            E.layout_from_config({key: str(n - 1)}, tmp_path / "cfg.yaml")      # fewer is as wrong as more
    with pytest.raises(ModelFileError, match="deca_class 'DECA' is not EMOCA's ExpDECA"):
        E.layout_from_config({"deca_class": "DECA"})
    with pytest.raises(ModelFileError, match="expression_backbone 'emonet_split' is unsupported"):
        E.layout_from_config({"expression_backbone": "emonet_split"})


def test_checkpoint_globals_become_inert_values_or_are_refused():
    assert E._stand_in("builtins.dict") is dict and E._stand_in("builtins.bool") is bool
    assert E._stand_in("collections.defaultdict")(list, {"a": 1}) == {"a": 1}
    assert E._defaultdict_as_dict() == {} and E._defaultdict_as_dict(None, [("k", 2)]) == {"k": 2}
    rec = E._stand_in("omegaconf.listconfig.ListConfig")
    assert issubclass(rec, E._ConfigRecord) and rec is E._stand_in("omegaconf.listconfig.ListConfig")
    assert rec.__name__ == "ListConfig" and repr(rec(1, 2)) == "<record of omegaconf.listconfig.ListConfig>"
    assert rec(1, 2)._args == (1, 2)
    for name in ("os.system", "builtins.eval", "numpy.load", "collectionsx.X", "omegaconfx.Y", "torch.load"):
        assert E._stand_in(name) is None, name
    # records back to plain values, as OmegaConf.to_container(resolve=False)
    lst, node, other = rec(), E._config_record("omegaconf.nodes.AnyNode")(), E._config_record("gdl.Mode")()
    node.__setstate__({"_val": "${x}"})
    lst.__setstate__({"_content": [node, (1, node), {"k": node}]})
    other.__setstate__({"_val": 3})
    assert E.plain_config({"a": lst, "b": other}) == {"a": ["${x}", (1, "${x}"), {"k": "${x}"}], "b": other}
    empty = E._config_record("omegaconf.dictconfig.DictConfig")()        # no state: left as it is
    assert E.plain_config(empty) is empty


def test_checkpoint_files_that_hold_no_weights(tmp_path, monkeypatch):
    import collections
    p = tmp_path / "a.ckpt"
    torch.save([1, 2], p)
    with pytest.raises(ModelFileError, match="checkpoint holds no state_dict"):
        E.read_checkpoint(p)
    torch.save({"state_dict": {1: torch.zeros(1)}}, p)
    with pytest.raises(ModelFileError, match="checkpoint holds no state_dict"):
        E.load_state_dict(p)
    torch.save({"state_dict": [torch.zeros(1)]}, p)
    with pytest.raises(ModelFileError, match="checkpoint holds no state_dict"):
        E.load_state_dict(p)
    torch.save({"deca.E_flame.x": torch.ones(2)}, p)                    # a bare state dict
    assert list(E.load_state_dict(p)) == ["deca.E_flame.x"]
    with pytest.raises(ModelFileError, match="is a directory|not a regular file") as err:
        E.load_state_dict(tmp_path)
    assert err.value.path == str(tmp_path)
    hp = collections.defaultdict(list, a=[1])
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": hp}, p)
    assert E.read_checkpoint(p)["hyper_parameters"] == {"a": [1]}
    # torch's legacy (non-zip) format: the globals cannot be listed, the weights-only refusal is reported
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": collections.defaultdict(list)}, p,
               _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match=r"cannot read the checkpoint \(UnpicklingError: Weights only"):
        E.read_checkpoint(p)
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": hp}, p)
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(ModelFileError, match=r"collections.defaultdict.*needs torch >= 2.6") as err:
        E.read_checkpoint(p)
    assert "cannot read" not in str(err.value)                         # its own message, not re-wrapped


def test_backbone_and_width_are_read_from_the_weights(tmp_path):
    clone = {"deca.E_flame.a": 0, "deca.E_expression.encoder.conv1.weight": 0}
    assert E.detect_backbone(clone) == "deca_clone"
    assert E.detect_backbone({"deca.E_expression.resnet.conv1.weight": 0}) == "deca_parallel"
    with pytest.raises(ModelFileError, match="a DECA checkpoint, not EMOCA") as err:
        E.detect_backbone({"deca.E_flame.a": 0, "deca.E_expression.layers.0.weight": 0}, tmp_path / "c")
    assert err.value.path == str(tmp_path / "c")
    with pytest.raises(ModelFileError, match="neither deca.E_flame"):
        E.detect_backbone({"E_flame.a": 0})
    assert E.expression_width({"deca.E_expression.layers.2.weight": torch.zeros(53, 4)}) == 53
    with pytest.raises(ModelFileError, match=r"lacks deca.E_expression.layers.2.weight"):
        E.expression_width({"deca.E_expression.layers.0.weight": torch.zeros(53, 4)})
    # load_emoca cross-checks cfg.yaml against the weights before building anything
    tiny = {"deca.E_flame.layers.2.weight": torch.zeros(236, 4),
            "deca.E_expression.encoder.conv1.weight": torch.zeros(1),
            "deca.E_expression.layers.2.weight": torch.zeros(53, 4)}
    write_model(tmp_path / "a", tiny, jaw=False, glob=False, backbone="deca_parallel")
    with pytest.raises(ModelFileError, match="keys say deca_clone but cfg.yaml says deca_parallel"):
        E.load_emoca(tmp_path / "a")
    parallel = {"deca.E_expression.resnet.conv1.weight": torch.zeros(1),
                "deca.E_expression.layers.2.weight": torch.zeros(50, 4)}
    write_model(tmp_path / "d", parallel, jaw=False, glob=False)                 # cfg.yaml: deca_clone
    with pytest.raises(ModelFileError, match="keys say deca_parallel but cfg.yaml says deca_clone"):
        E.load_emoca(tmp_path / "d")
    write_model(tmp_path / "b", tiny, jaw=False, glob=True)
    with pytest.raises(ModelFileError, match="missing weight"):        # width 53 fits: the weights are next
        E.load_emoca(tmp_path / "b")
    write_model(tmp_path / "c", tiny, jaw=False, glob=False)
    with pytest.raises(ModelFileError, match=r"predicts 53 values .*n_exp=50, exp_deca_global_pose=False"):
        E.load_emoca(tmp_path / "c")
    write_model(tmp_path / "e", tiny, jaw=True, glob=True)                   # fewer values than cfg.yaml says
    with pytest.raises(ModelFileError, match=r"predicts 53 values .*exp_deca_jaw_pose=True\) implies 56"):
        E.load_emoca(tmp_path / "e")


def test_strict_load_names_what_is_missing_and_converts_dtypes(tmp_path):
    net = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(13)])
    with pytest.raises(ModelFileError, match=r"26 missing weight\(s\): x\.0\.bias, x\.0\.weight, x\.1\.bias, "
                       r"x\.1\.weight, x\.10\.bias, [^|]*, x\.2\.weight \.\.\. -- fix") as err:
        E._load_strict(net, {}, "x", tmp_path)
    assert str(err.value).count("x.") == 12 and str(err.value).startswith(str(tmp_path))
    with pytest.raises(ModelFileError, match=r"2 missing weight\(s\): x\.bias, x\.weight -- fix"):
        E._load_strict(torch.nn.Linear(2, 2), {}, "x", tmp_path)
    twelve = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(6)])
    with pytest.raises(ModelFileError, match=r"12 missing weight\(s\): .*x\.5\.weight -- fix"):    # all named
        E._load_strict(twelve, {}, "x", tmp_path)
    with pytest.raises(ModelFileError, match=r"13 missing weight\(s\): .*x\.5\.weight \.\.\. -- fix"):
        E._load_strict(torch.nn.Sequential(*twelve, torch.nn.Linear(2, 2, bias=False)), {}, "x", tmp_path)
    full = {k: torch.full(v.shape, 0.5, dtype=torch.float64) for k, v in net.state_dict().items()}
    bad = dict(full, **{f"{i}.bias": torch.zeros(3) for i in range(13)})
    with pytest.raises(ModelFileError,
                       match=r"13 shape mismatch\(es\): x\.0\.bias: checkpoint \(3,\) vs model \(2,\)"
                       ) as err:
        E._load_strict(net, bad, "x", tmp_path)
    assert str(err.value).count("checkpoint (3,)") == 12 and "missing" not in str(err.value)
    E._load_strict(net, dict(full, extra=torch.zeros(1)), "x", tmp_path)
    assert all(p.dtype == torch.float32 and bool((p == 0.5).all()) for p in net.parameters())


def test_parallel_checkpoint_may_store_the_shared_backbone_under_the_second_head():
    """SecondHeadResnet keeps the backbone it shares with E_flame as `deca.E_expression.resnet.*`; a
    checkpoint without `deca.E_flame.*` takes E_flame from there, one with both uses E_flame's."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in E.ResnetEncoder(236).state_dict().items()}
    resnet = {f"deca.E_expression.resnet.{k}": torch.full(s, 2.0) for k, s in shapes.items()}
    head = {f"deca.E_expression.layers.{k}": torch.full(s, 3.0) for k, s in
            (("0.weight", (1024, 2048)), ("0.bias", (1024,)), ("2.weight", (50, 1024)), ("2.bias", (50,)))}
    layout = E.ExpressionLayout(parallel=True)
    enc = E.build_encoder({**resnet, **head}, layout)
    assert not enc.training
    assert float(enc.E_flame.layers[2].bias[0]) == 2.0
    assert float(enc.E_flame.encoder.conv1.weight[0, 0, 0, 0]) == 2.0
    assert float(enc.E_expression_head[2].bias[0]) == 3.0
    assert float(enc.E_expression_head[0].weight[0, 0]) == 3.0
    flame = {f"deca.E_flame.{k}": torch.full(s, 5.0) for k, s in shapes.items()}
    enc = E.build_encoder({**resnet, **head, **flame}, layout)
    assert float(enc.E_flame.layers[2].bias[0]) == 5.0
    with pytest.raises(ModelFileError, match=r"deca\.E_expression\.layers\.2\.bias"):
        E.build_encoder({**flame, **{k: v for k, v in head.items() if not k.endswith("2.bias")}}, layout)


def test_model_record_names_the_model_folder_and_the_layout(tmp_path):
    ckpt = _touch(tmp_path / "EMOCA_v2_mp" / "detail" / "checkpoints" / CKPT_NAME)
    cfg = _touch(tmp_path / "EMOCA_v2_mp" / "cfg.yaml")
    layout = E.ExpressionLayout(global_pose=True, parallel=True)
    rec = E.emoca_model_record(E.LoadedEmoca(None, layout, ckpt, cfg))
    assert rec["name"] == "EMOCA v2 (EMOCA_v2_mp)" and rec["kind"] == "real"
    assert [f["path"] for f in rec["files"]] == [str(ckpt), str(cfg)]
    assert rec["expression_width"] == 53 and rec["global_from_expression_encoder"]
    assert not rec["jaw_from_expression_encoder"] and rec["expression_backbone"] == "deca_parallel"
    rec = E.emoca_model_record(E.LoadedEmoca(None, E.ExpressionLayout(), ckpt, cfg))
    assert rec["expression_backbone"] == "deca_clone" and not rec["global_from_expression_encoder"]


def test_crop_matches_skimage_warp_off_the_top_left_corner():
    from skimage.transform import estimate_transform, warp
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    for box in ([10.4, 20.6, 101.0], [140.2, 115.7, 90.0], [75.0, 60.0, 224.0]):
        cx, cy, s = box
        src = np.array([[cx - s / 2, cy - s / 2], [cx - s / 2, cy + s / 2], [cx + s / 2, cy - s / 2]])
        tform = estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]]))
        ref = warp(img / 255.0, tform.inverse, output_shape=(224, 224)).transpose(2, 0, 1)
        np.testing.assert_allclose(E.crop_image(img, box), ref, atol=2e-5)
    A = E.crop_to_image_affine([100.0, 50.0, 223.0])
    np.testing.assert_allclose(A @ [223, 223, 1], [100.0 + 111.5, 50.0 + 111.5])


class _CountingEncoder(torch.nn.Module):
    """Records batch sizes; codes: pose = (frame mean, then 1..5), cam = [8, 0, 0]."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, images):
        self.batches.append(len(images))
        m = images.mean(dim=(1, 2, 3))[:, None].double()
        return {"shape": m.repeat(1, 100), "exp": m.repeat(1, 50),
                "pose": torch.cat([m, torch.arange(1.0, 6.0, dtype=torch.float64).expand(len(m), 5)], 1),
                "cam": torch.cat([torch.full_like(m, 8.0), m * 0, m * 0], 1)}


def test_runner_batch_sizes_and_outputs():
    rng = np.random.default_rng(5)
    lmk = rng.uniform(20, 44, (68, 2))
    frames = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(5)]
    for batch_size, batches in ((2, [2, 2, 1]), (0, [1] * 5), (5, [5]), (4, [4, 1])):
        enc = _CountingEncoder()
        runner = E.EmocaRunner(enc, "cpu", batch_size=batch_size, image_size=64)
        for f in frames:
            runner.add(f, lmk)
            assert sum(c is not None for c in runner._crops) < max(batch_size, 1)  # encoded crops are let go
        out = runner.finish()
        assert enc.batches == batches and all(c is None for c in runner._crops)
    assert all(v.dtype == np.float32 for v in out.values())
    assert out["global_orient"][:, 1:].tolist() == [[1, 2]] * 5
    assert out["jaw_pose"].tolist() == [[3, 4, 5]] * 5
    np.testing.assert_allclose(out["crop_cam"], [[8, 0, 0]] * 5)
    np.testing.assert_allclose(out["crop_boxes"], np.repeat(E.crop_boxes_from_landmarks(lmk[None]), 5, 0))
    np.testing.assert_allclose(out["cam"], E.crop_cam_to_portrait(out["crop_cam"], out["crop_boxes"], 64),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="no frames were given to EMOCA"):
        E.EmocaRunner(_CountingEncoder(), "cpu").finish()


def test_runner_defaults_are_the_pipelines():
    """A runner made without sizes batches as `[emoca] batch_size` and maps cameras into the crop
    stage's portrait (`[crop] output_size`), the frames the estimation stage hands it."""
    from tasks.common.settings import CropSettings, EmocaSettings
    runner = E.EmocaRunner(_CountingEncoder(), "cpu")
    assert runner.image_size == CropSettings().output_size and runner.batch_size == EmocaSettings().batch_size


def test_crop_boxes_for_a_whole_track():
    """The estimation stage boxes a segment's (T, 68, 2) track in one call: each frame's box is its own
    landmarks' box (hand-computed here as EMOCA's kpt68 rule: centre, int(mean side * 1.1 * 1.25))."""
    rng = np.random.default_rng(8)
    track = rng.uniform([30, 60], [200, 260], (3, 68, 2))
    track[1] *= 0.5                                        # frames of different sizes and places
    boxes = E.crop_boxes_from_landmarks(track)
    assert boxes.shape == (3, 3)
    for lm, box in zip(track, boxes):
        (left, top), (right, bottom) = lm.min(0), lm.max(0)
        want = [(left + right) / 2, (top + bottom) / 2, int((right - left + bottom - top) / 2 * 1.1 * 1.25)]
        np.testing.assert_allclose(box, want, rtol=1e-12)


@pytest.mark.parametrize("version", ["2.6.0+cu124", "2.6.1", "2.6.0a0+ecf3bae40a.nv25.01"])
def test_torch_2_6_reads_configuration_objects(tmp_path, monkeypatch, version):
    """safe_globals' (obj, name) form came with torch 2.6: from 2.6 on (also NVIDIA containers'
    pre-release version strings such as 2.6.0a0+...nv25.01) a checkpoint with configuration objects loads."""
    import collections
    p = _hparams_with(tmp_path, collections.defaultdict(list, a=[1]))
    monkeypatch.setattr(torch, "__version__", version)
    assert E.read_checkpoint(p)["hyper_parameters"] == {"a": [1]}


def test_omegaconf_container_without_content_stays_a_record(tmp_path):
    """A DictConfig whose pickled state lacks `_content` (not omegaconf 2.0/2.1's layout) is kept as a
    record in the hyper-parameters instead of failing the load; a node's `_val` is still read."""
    from upstream_files import fake_classes

    with fake_classes({"omegaconf.dictconfig.DictConfig": {}, "omegaconf.nodes.AnyNode": {}}) as cls:
        odd = cls["omegaconf.dictconfig.DictConfig"]()
        odd.__dict__.update(_metadata={"key": "model"}, _parent=None)
        node = cls["omegaconf.nodes.AnyNode"]()
        node.__dict__.update(_val=3, _content=[1])
        p = _hparams_with(tmp_path, {"model_params": odd, "n": node})
    hp = E.read_checkpoint(p)["hyper_parameters"]
    assert repr(hp["model_params"]) == "<record of omegaconf.dictconfig.DictConfig>"
    assert hp["n"] == 3                                    # a node is its value, whatever else it holds


def test_expression_layout_is_fixed_once_loaded():
    """The layout checked against the checkpoint's weights is shared by LoadedEmoca and the encoder's
    merge: it cannot be changed afterwards (and can key a cache)."""
    import dataclasses
    layout = E.ExpressionLayout(jaw_pose=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.jaw_pose = False
    assert {layout: 1}[E.ExpressionLayout(jaw_pose=True)] == 1
