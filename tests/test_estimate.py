"""EstimateFrames / SubjectShape: landmarks + per-frame FLAME on small portrait videos."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import skimage.data
import torch
import yaml

from camera_reference import crop_pixels_in_frame, orthographic_pixels
from demo.synthetic_motion import MotionSpec, generate_sequence
from flame_fit.flame import load_flame
from flame_fit.landmark_fit import FitParams, fit_segment
from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from pipeline.build import build, config_overrides
from flame_fit.camera import ndc_to_pixels, orth_project
from tasks.common.errors import PipelineInputError
from tasks.common.settings import EmocaSettings
from tasks.estimate import EstimateFrames, SubjectShape
from tasks.estimation import emoca as E
from tasks.estimation.frames import FRAME_KEYS, estimate_video
from tasks import config
from tasks.common.settings import FlameSettings
from tasks.head_model import get_head_model
from tasks.layout import Layout

SIZE = 384


@pytest.fixture(scope="module")
def head_model(tmp_path_factory):
    with config_overrides(flame={"model_path": "", "procedural_model_dir": tmp_path_factory.mktemp("head")}):
        yield get_head_model(config.read(FlameSettings), Layout.from_config().models_dir(), "cpu")


def portrait_frames(n: int) -> list[np.ndarray]:
    """The astronaut's face framed like a portrait, drifting and nodding a little."""
    face = skimage.data.astronaut()[8:228, 113:333]
    base = cv2.resize(face, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(n):
        M = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), 4 * math.sin(i / 3), 1.0)
        M[:, 2] += (1.5 * i, 0.5 * i)
        out.append(cv2.warpAffine(base, M, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT))
    return out


def write_mp4(path, frames, fps=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = SIZE, SIZE, "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def random_emoca_folder(root, jaw=True):
    """A random-weight EMOCA model folder in the official layout (backbones share storage so the
    file stays ~100 MB)."""
    layout_ = E.ExpressionLayout(jaw_pose=jaw)
    with torch.device("meta"):
        enc = E.EmocaEncoder(layout_)
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in enc.state_dict().items():
        if k.startswith("E_expression.encoder."):
            continue
        if k.endswith("running_var") or (k.endswith(".weight") and v.ndim == 1):
            t = torch.ones(v.shape)
        elif k.endswith("num_batches_tracked"):
            t = torch.zeros((), dtype=torch.long)
        elif v.ndim == 1:
            t = torch.zeros(v.shape)
        else:
            fan_in = int(np.prod(v.shape[1:]))
            t = torch.randn(v.shape, generator=g) * math.sqrt((2.0 if v.ndim == 4 else 0.1) / fan_in)
        state["deca." + k] = t
    for k in list(state):
        if k.startswith("deca.E_flame.encoder."):
            state[k.replace("E_flame", "E_expression")] = state[k]
    (root / "detail" / "checkpoints").mkdir(parents=True)
    model = {"deca_class": "ExpDECA", "expression_backbone": "deca_clone", "exp_deca_jaw_pose": jaw,
             "exp_deca_global_pose": False, "n_exp": 50}
    (root / "cfg.yaml").write_text(yaml.safe_dump({"coarse": {"model": model}, "detail": {"model": model}}))
    torch.save({"state_dict": state, "epoch": 1, "pytorch-lightning_version": "1.4.9"},
               root / "detail" / "checkpoints" / "deca-epoch=01-val_loss=0.5.ckpt")
    return root


def test_weight_free_estimate(tmp_path, head_model):
    video = write_mp4(tmp_path / "segment_000.mp4", portrait_frames(10))
    arrays, record = estimate_video(video, device="cpu", expected_frames=10, head_model=head_model)
    T = 10
    want = {"landmarks": (T, 68, 2), "landmark_ok": (T,), "confidence": (T,), "boxes": (T, 4),
            "shape": (T, 100), "expression": (T, 50), "global_orient": (T, 3), "jaw_pose": (T, 3),
            "cam": (T, 3), "crop_boxes": (T, 3)}
    for k in FRAME_KEYS:
        assert arrays[k].shape == want[k], k
        assert arrays[k].dtype == (np.bool_ if k == "landmark_ok" else np.float32), k
        assert np.isfinite(arrays[k]).all(), k
    assert arrays["landmark_ok"].all()
    assert np.ptp(arrays["shape"], axis=0).max() == 0  # one shape per segment
    assert record["estimator"]["kind"] == "stand-in" and "stand-in" in record["estimator"]["name"]
    assert record["head_model"]["kind"] == "stand-in" and record["params"]["fit"]["iters"] > 0
    assert record["tracking"]["frames_ok"] == T and len(record["landmark_models"]) == 2
    # the fitted model, seen through the fitted portrait camera, lands on the detected landmarks
    model = head_model[0]
    with torch.no_grad():
        t = {k: torch.as_tensor(arrays[k]) for k in ("shape", "expression", "global_orient", "jaw_pose")}
        lmk3d = model.landmarks(t["shape"], t["expression"], t["global_orient"], None, t["jaw_pose"])
        px = ndc_to_pixels(orth_project(lmk3d, torch.as_tensor(arrays["cam"])), SIZE).numpy()
    face = np.ptp(arrays["landmarks"][0], axis=0).mean()
    err = np.linalg.norm(px - arrays["landmarks"], axis=-1).mean()
    assert err < 0.08 * face, (err, face)
    np.testing.assert_allclose(np.sqrt((np.linalg.norm(px - arrays["landmarks"], axis=-1) ** 2).mean(-1)),
                               arrays["fit_rmse_px"], rtol=1e-3, atol=1e-3)
    with pytest.raises(PipelineInputError, match="has 10 frames but segments.json says 12"):
        estimate_video(video, device="cpu", expected_frames=12, head_model=head_model)


def test_emoca_estimate(tmp_path, head_model):
    video = write_mp4(tmp_path / "segment_000.mp4", portrait_frames(5))
    model_dir = random_emoca_folder(tmp_path / "EMOCA_v2_test")
    arrays, record = estimate_video(video, emoca=EmocaSettings(checkpoint_dir=str(model_dir), batch_size=2),
                                    device="cpu", head_model=head_model)
    assert arrays["expression"].shape == (5, 50) and arrays["shape"].shape == (5, 100)
    assert np.isfinite(arrays["cam"]).all() and arrays["landmark_ok"].all()
    assert record["estimator"]["kind"] == "real" and record["estimator"]["jaw_from_expression_encoder"]
    assert {f["path"].rsplit("/", 1)[-1] for f in record["estimator"]["files"]} == {
        "deca-epoch=01-val_loss=0.5.ckpt", "cfg.yaml"}
    # crops follow EMOCA's rule on the tracked landmarks, and the camera is the portrait-frame one
    boxes = E.crop_boxes_from_landmarks(arrays["landmarks"])
    np.testing.assert_allclose(arrays["crop_boxes"], boxes, atol=1e-3)
    X = np.random.default_rng(2).normal(0, 0.1, (68, 3))  # known points; an independent reference projects
    for i in range(len(arrays["cam"])):
        want = crop_pixels_in_frame(X, arrays["crop_cam"][i], arrays["crop_boxes"][i])
        np.testing.assert_allclose(orthographic_pixels(X, arrays["cam"][i], SIZE), want, atol=1e-3)
    # the random encoder sees different crops, so the codes differ per frame
    assert np.ptp(arrays["expression"], axis=0).max() > 0


def test_luigi_tasks_write_frames_and_subject_shape(luigi_paths, head_model):
    raw, processed = luigi_paths
    layout = Layout.from_config()
    subject, song = "S1", "001_demo"
    (raw / subject / "songs" / song).mkdir(parents=True)
    (raw / subject / "subject.json").write_text("{}")
    frames = portrait_frames(10)
    pdir = layout.portrait_dir(subject, song)
    write_mp4(pdir / "segment_000.mp4", frames)
    write_mp4(pdir / "segment_001.mp4", frames[:3])
    segs = [{"index": 0, "start_frame": 5, "end_frame": 15, "box": [0, 0, 1, 1], "video": "segment_000.mp4"},
            {"index": 1, "start_frame": 40, "end_frame": 43, "box": [0, 0, 1, 1], "video": "segment_001.mp4"}]
    # segments.json present = CropPortraits complete, so Luigi never runs the crop stage here
    layout.segments_json(subject, song).write_text(json.dumps({"segments": segs}))
    with config_overrides(dataset={"min_sequence_seconds": "0.3"}, emoca={"checkpoint_dir": ""}):
        assert build(SubjectShape(subject=subject), log_level="WARNING").ok
        assert EstimateFrames(subject=subject, song=song, segment=0).complete()
    assert not layout.frames_npz(subject, song, 1).exists()  # 3 frames < 0.3 s x 30 fps
    rec = json.loads(layout.frames_record(subject, song, 0).read_text())
    assert rec["estimator"]["kind"] == "stand-in" and rec["segment"] == 0 and rec["frames"] == 10
    assert rec["config"]["dataset"]["min_sequence_seconds"] == 0.3
    with np.load(layout.frames_npz(subject, song, 0)) as z:
        seg_shape = z["shape"]
        assert z["landmarks"].shape == (10, 68, 2)
    with np.load(layout.monocular_shape_npz(subject)) as z:
        assert z["shape"].shape == (100,) and z["shape"].dtype == np.float32 and int(z["n_frames"]) == 10
        np.testing.assert_allclose(z["shape"], seg_shape.mean(0), rtol=1e-6)


def test_per_frame_fit_on_exact_landmarks_lbfgs_reaches_a_lower_energy(tmp_path):
    """Known truth: the model's own landmarks of a synthetic sequence. The default 100 Adam steps stop
    short of the energy's minimum (kept on purpose, see FitParams.optimizer); L-BFGS with the same
    step budget gets closer to it."""
    write_procedural_head_model(tmp_path, seed=0, n_vertices=1500)
    model = load_flame(tmp_path / MODEL_FILE, tmp_path / EMBEDDING_FILE).eval()
    torch.set_num_threads(1)
    spec = MotionSpec(frames=20, landmark_noise_px=0.0, landmark_outlier_rate=0.0, landmark_fail_rate=0.0,
                      neck_deg=0.0)
    lmk = generate_sequence(model, spec, seed=2).truth["landmarks"]
    ok = np.ones(len(lmk), bool)
    adam = fit_segment(model, lmk, ok, spec.image_size, FitParams())
    lbfgs = fit_segment(model, lmk, ok, spec.image_size, FitParams(optimizer="lbfgs"))
    assert lbfgs["loss"] < 0.85 * adam["loss"]
    assert np.mean(lbfgs["rmse_px"]) < np.mean(adam["rmse_px"])
