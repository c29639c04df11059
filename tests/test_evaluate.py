"""evaluate(): the 3D metrics end to end on a tiny release, with known truth, and its errors."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import soundfile as sf

from flame_fit.flame import load_flame
from flame_fit.procedural import write_procedural_head_model
from tasks.dataset.flame_pickle import flame_pickle_bytes
from tasks.common.errors import PipelineInputError
from tasks.evaluation.evaluate import METRICS, evaluate, main_table, result_json

T = 30
TEST_IDS = ["id1_2_0_0", "id1_2_0_1"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = write_procedural_head_model(tmp_path_factory.mktemp("head"), seed=0, n_vertices=2000)
    return load_flame(p["model"], p["landmark_embedding"])


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel") / "SingingHead"
    for d in ("flame_seqs", "audio_seqs", "bgm_seqs"):
        (root / d).mkdir(parents=True)
    (root / "train.txt").write_text("id0_1_0_0\n")
    (root / "val.txt").write_text("")
    (root / "test.txt").write_text("".join(i + "\n" for i in TEST_IDS))
    rng = np.random.default_rng(0)
    gt = {}
    for cid in TEST_IDS + ["id0_1_0_0"]:
        s = rng.normal(size=(1, 100)) * 0.5
        # smooth oscillating motion: speed minima (kinematic beats) every 10 frames
        wave = np.sin(2 * np.pi * np.arange(T)[:, None] / 20 + rng.uniform(0, 0.3, size=(1, 59)))
        e = 0.5 * wave[:, :50] * rng.normal(size=(1, 50))
        p = 0.05 * wave[:, 50:] * rng.normal(size=(1, 9))
        (root / "flame_seqs" / f"{cid}.pkl").write_bytes(flame_pickle_bytes(s, e, p))
        audio = rng.normal(size=16000).astype(np.float32) * 0.01
        for k in range(0, 16000, 4000):
            audio[k:k + 200] += np.hanning(200) * 0.8
        sf.write(root / "audio_seqs" / f"{cid}.wav", audio, 16000, subtype="PCM_16")
        sf.write(root / "bgm_seqs" / f"{cid}_bgm.wav", audio, 16000, subtype="PCM_16")
        gt[cid] = np.concatenate([e, p], axis=1).astype(np.float32)
    return root.parent, gt


def _write_preds(d, gt, fn):
    d.mkdir(exist_ok=True)
    for cid in TEST_IDS:
        m = fn(gt[cid].copy())
        (d / f"{cid}.pkl").write_bytes(pickle.dumps({"expcodes": m[..., :50], "posecodes": m[..., 50:]}))
    return d


def test_ground_truth_as_prediction_scores_zero_errors(tmp_path, release, model):
    root, gt = release
    preds = _write_preds(tmp_path / "p", gt, lambda m: np.stack([m, m]))
    r = evaluate(preds, root, "test", head_model=model)
    assert r["clips"] == 2 and r["samples"] == 2 and r["frames"] == [T]
    for k in ("lve_mean", "lve_min", "ve_mean", "ve_min", "fdd", "meandist_pose", "mindist_pose",
              "diversity", "diversity_lmk", "diversity_verts"):
        assert r["metrics"][k] == pytest.approx(0.0, abs=1e-6), k
    assert 0.0 < r["metrics"]["ba_lmk"] <= 1.0 and 0.0 < r["metrics"]["ba_pose"] <= 1.0
    # the beat alignments: beats of the clip's singing (audio_seqs, read here with soundfile) against the
    # global+neck pose and against the 68 landmarks of the full-pose mesh
    import torch
    from tasks.evaluation import metrics as M
    for cid in TEST_IDS:
        audio, sr = sf.read(root / "SingingHead" / "audio_seqs" / f"{cid}.wav", dtype="float32")
        beats = M.audio_beats(audio, sr)
        assert r["per_clip"][cid]["ba_pose"] == pytest.approx(
            M.beat_alignment_score(gt[cid][:, 50:56], None, beats=beats))
        m = torch.as_tensor(gt[cid])
        with torch.no_grad():
            gt_pkl = (root / "SingingHead" / "flame_seqs" / f"{cid}.pkl").read_bytes()
            shape = torch.as_tensor(pickle.loads(gt_pkl)["shapecode"], dtype=torch.float32).reshape(1, 100)
            shape = shape.expand(T, -1)
            v = model(shape=shape, expression=m[:, :50], global_orient=m[:, 50:53], neck_pose=m[:, 53:56],
                      jaw_pose=m[:, 56:59]).vertices
            lmk = model.landmarks3d_static(v).numpy()
        assert r["per_clip"][cid]["ba_lmk"] == pytest.approx(M.beat_alignment_score(lmk, None, beats=beats),
                                                             abs=1e-6)
    assert "not FLAME_masks.pkl" in r["regions"]
    assert json.loads(result_json(r)) == json.loads(json.dumps(r))
    table = main_table(r)
    assert all(k in table for k, _, _ in METRICS)


def test_global_offset_moves_pose_metrics_only_and_jaw_moves_lips(tmp_path, release, model):
    root, gt = release
    d = np.array([0.03, 0.0, 0.04], np.float32)             # |d| = 0.05 rad on the global pose

    def two(m):
        a = m.copy()
        a[:, 50:53] += d
        return np.stack([m, a])
    r = evaluate(_write_preds(tmp_path / "g", gt, two), root, "test", head_model=model)["metrics"]
    # official meshes for LVE/FVE/FDD zero global and neck pose: a global offset changes none of them
    for k in ("lve_mean", "lve_min", "ve_mean", "ve_min", "fdd"):
        assert r[k] == pytest.approx(0.0, abs=1e-6), k
    assert r["meandist_pose"] == pytest.approx(0.05 / 2, rel=1e-4)     # sample 0 exact, sample 1 0.05
    assert r["mindist_pose"] == pytest.approx(0.0, abs=1e-7)
    assert r["diversity_pose"] == pytest.approx(0.05 * math.sqrt(T), rel=1e-4)
    assert r["diversity_lmk"] > 0                                       # landmarks use the full pose

    def jaw(m):
        a = m.copy()
        a[:, 56] += 0.2                                                 # open the jaw
        return np.stack([m, a])
    r = evaluate(_write_preds(tmp_path / "j", gt, jaw), root, "test", head_model=model)["metrics"]
    assert r["lve_min"] == pytest.approx(0.0, abs=1e-6) and r["lve_mean"] > 1e-4
    assert r["ve_min"] == pytest.approx(0.0, abs=1e-6) and r["ve_mean"] > 0
    assert r["lve_mean"] > r["ve_mean"]                 # the lips move most: max over lip vertices


def test_split_metrics_are_means_over_clips_and_pose_distance_leaves_out_the_jaw(tmp_path, release, model):
    """Clip A: global pose off by 0.05 rad; clip B: global off by 0.01 rad and the jaw opened by 0.3 rad.
    The pose distance is on global+neck only (B's is 0.01, not ~0.3); the split's value of every metric is
    the mean over clips, not the min or max."""
    root, gt = release
    a_id, b_id = TEST_IDS
    preds = tmp_path / "ab"
    preds.mkdir()
    a, b = gt[a_id].copy(), gt[b_id].copy()
    a[:, 50] += 0.05
    b[:, 51] += 0.01
    b[:, 56] += 0.3
    for cid, m in ((a_id, a), (b_id, b)):
        (preds / f"{cid}.pkl").write_bytes(pickle.dumps({"motion": m}))
    r = evaluate(preds, root, "test", head_model=model)
    assert r["per_clip"][a_id]["meandist_pose"] == pytest.approx(0.05, rel=1e-4)
    assert r["per_clip"][b_id]["meandist_pose"] == pytest.approx(0.01, rel=1e-3)
    assert r["per_clip"][b_id]["meandist"] == pytest.approx(math.hypot(0.01, 0.3), rel=1e-3)  # 59-d: jaw in
    assert r["metrics"]["meandist_pose"] == pytest.approx(0.03, rel=1e-3)
    assert r["metrics"]["meandist"] == pytest.approx((0.05 + math.hypot(0.01, 0.3)) / 2, rel=1e-3)
    assert r["per_clip"][a_id]["lve_mean"] == pytest.approx(0.0, abs=1e-6)
    assert r["per_clip"][b_id]["lve_mean"] > 1e-4  # so the mean below differs from the min and the max
    for k, _, _ in METRICS:
        assert r["metrics"][k] == pytest.approx((r["per_clip"][a_id][k] + r["per_clip"][b_id][k]) / 2), k


def test_single_sample_predictions_and_motion_key(tmp_path, release, model):
    root, gt = release
    preds = tmp_path / "m"
    preds.mkdir()
    for cid in TEST_IDS:
        (preds / f"{cid}.pkl").write_bytes(pickle.dumps({"motion": gt[cid]}))          # (T,59)
    r = evaluate(preds, root, "test", head_model=model)
    assert r["samples"] == 1 and r["metrics"]["diversity"] == 0.0 and r["metrics"]["lve_mean"] < 1e-6


def test_bad_input_errors(tmp_path, release, model):
    root, gt = release
    ok = lambda m: m[None]
    short = _write_preds(tmp_path / "s", gt, lambda m: m[None, :-1])
    with pytest.raises(PipelineInputError, match=f"has {T - 1} frames, the ground truth clip has {T}"):
        evaluate(short, root, "test", head_model=model)
    wrong = _write_preds(tmp_path / "w", gt, ok)
    (wrong / f"{TEST_IDS[0]}.pkl").write_bytes(pickle.dumps({"expcodes": np.zeros((1, T, 40)),
                                                             "posecodes": np.zeros((1, T, 9))}))
    with pytest.raises(PipelineInputError, match=r"want \(S,T,50\)"):
        evaluate(wrong, root, "test", head_model=model)
    extra = _write_preds(tmp_path / "x", gt, ok)
    (extra / "id0_1_0_0.pkl").write_bytes(pickle.dumps({"motion": gt["id0_1_0_0"]}))
    with pytest.raises(PipelineInputError, match="'id0_1_0_0' is not in the test split"):
        evaluate(extra, root, "test", head_model=model)
    missing = _write_preds(tmp_path / "y", gt, ok)
    (missing / f"{TEST_IDS[1]}.pkl").unlink()
    with pytest.raises(PipelineInputError, match="lacks predictions for 1 of 2"):
        evaluate(missing, root, "test", head_model=model)
    # a release whose ground truth is damaged
    bad_root = tmp_path / "badrel"
    import shutil
    shutil.copytree(root, bad_root)
    (bad_root / "SingingHead" / "flame_seqs" / f"{TEST_IDS[0]}.pkl").write_bytes(b"\x80\x03garbage")
    with pytest.raises(PipelineInputError, match=f"flame_seqs/{TEST_IDS[0]}.pkl"):
        evaluate(_write_preds(tmp_path / "z", gt, ok), bad_root, "test", head_model=model)
    # FLAME without its masks file
    model.is_real = True
    try:
        with pytest.raises(PipelineInputError, match="FLAME_masks.pkl"):
            evaluate(_write_preds(tmp_path / "f", gt, ok), root, "test", head_model=model)
    finally:
        model.is_real = False


def test_prediction_not_named_after_a_clip_id_is_named_first_in_sorted_order(tmp_path, release):
    from tasks.evaluation.evaluate import prediction_ids
    root, gt = release
    preds = _write_preds(tmp_path / "n", gt, lambda m: m[None])
    for name in ("z z.pkl", "a b.pkl"):                        # a space: no plain clip id
        (preds / name).write_bytes(b"")
    with pytest.raises(PipelineInputError, match="is not named after a plain clip id") as e:
        prediction_ids(preds, TEST_IDS, "test")
    assert e.value.path == str(preds / "a b.pkl")


def test_a_split_without_clips_is_named(tmp_path, release, model):
    root, gt = release
    with pytest.raises(PipelineInputError, match="lists no clips") as e:
        evaluate(_write_preds(tmp_path / "v", gt, lambda m: m[None]), root, "val", head_model=model)
    assert e.value.path == str(root / "val.txt")


def test_clips_with_different_sample_counts_are_refused(tmp_path, release, model, monkeypatch):
    import tasks.evaluation.evaluate as E
    monkeypatch.setattr(E, "beats_available", lambda: False)          # no librosa beats: quick
    root, gt = release
    preds = _write_preds(tmp_path / "c", gt, lambda m: np.stack([m, m]))       # 2 samples each
    (preds / f"{TEST_IDS[1]}.pkl").write_bytes(pickle.dumps({"motion": gt[TEST_IDS[1]][None]}))   # 1
    with pytest.raises(PipelineInputError, match="has 1 samples, other clips 2") as e:
        evaluate(preds, root, "test", head_model=model)
    assert e.value.path == str(preds / f"{TEST_IDS[1]}.pkl")
    preds = _write_preds(tmp_path / "d", gt, lambda m: m[None])                # 1 sample each
    (preds / f"{TEST_IDS[1]}.pkl").write_bytes(pickle.dumps({"motion": np.stack([gt[TEST_IDS[1]]] * 2)}))
    with pytest.raises(PipelineInputError, match="has 2 samples, other clips 1"):
        evaluate(preds, root, "test", head_model=model)


def test_unreadable_prediction_quotes_the_first_120_characters_of_the_cause(tmp_path):
    from tasks.evaluation.evaluate import load_prediction
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"motion": [[1.0] * 59, [1.0] * 58]}))            # ragged: ValueError
    with pytest.raises(PipelineInputError, match="does not hold numeric arrays") as e:
        load_prediction(p, 2)
    cause = str(e.value.__cause__)
    assert len(cause) > 120
    assert f"(ValueError: {cause[:120]}) -- fix" in str(e.value)


def test_main_table_aligns_its_columns_and_notes_the_skipped_metrics():
    from tasks.evaluation.evaluate import NO_LIBROSA
    vals = {k: 2.0 for k, _, _ in METRICS}
    vals.update(lve_mean=0.000123456789, fdd=-1234567.0, ve_min=0.5, ba_pose=None, ba_lmk=None)
    shown = {"lve_mean": "0.000123457", "fdd": "-1.23457e+06", "ve_min": "0.5",
             "ba_pose": "n/a", "ba_lmk": "n/a"}
    r = {"split": "test", "clips": 2, "samples": 3, "head_model": "hm", "regions": "rg", "metrics": vals,
         "skipped": {"ba_pose": NO_LIBROSA, "ba_lmk": NO_LIBROSA}}
    text = main_table(r)
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == "SingingHead 3D metrics: test split, 2 clips x 3 samples; head model: hm; regions: rg"
    rows = [("metric", "value", "unit", "key")]
    rows += [(label, shown.get(k, "2"), unit, k) for k, label, unit in METRICS]
    w = [max(len(r_[i]) for r_ in rows) for i in range(4)]
    assert w[0] == len("pose distance, mean over samples") and w[1] == len("-1.23457e+06")
    # text columns left-aligned, values right-aligned, two spaces between columns
    fmt = lambda a, b, c, d: f"{a:<{w[0]}}  {b:>{w[1]}}  {c:<{w[2]}}  {d:<{w[3]}}"
    assert lines[1] == fmt(*rows[0])
    assert lines[2] == "  ".join("-" * x for x in w)
    assert lines[3:3 + len(METRICS)] == [fmt(*row) for row in rows[1:]]
    assert lines[3 + len(METRICS):] == [f"n/a: ba_lmk, ba_pose: {NO_LIBROSA}"]
    r["skipped"], r["metrics"]["ba_pose"], r["metrics"]["ba_lmk"] = {}, 0.25, 0.75
    assert len(main_table(r).splitlines()) == 3 + len(METRICS)            # nothing skipped: no note


def test_result_json_is_sorted_indented_and_refuses_nan():
    assert result_json({"b": 1, "a": [0.5]}) == '{\n  "a": [\n    0.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        result_json({"a": float("nan")})


def test_prediction_ids_errors_list_at_most_five_names(tmp_path):
    from tasks.evaluation.evaluate import prediction_ids
    with pytest.raises(PipelineInputError, match="is not a folder of predictions"):
        prediction_ids(tmp_path / "absent", ["a"], "test")
    d = tmp_path / "p"
    d.mkdir()
    ids = [f"c{i}" for i in range(7)]
    with pytest.raises(PipelineInputError, match=r"lacks predictions for 7 of 7 clips of the test split, "
                                                 r"e\.g\. \['c0', 'c1', 'c2', 'c3', 'c4'\] -- fix"):
        prediction_ids(d, ids, "test")
    for i in range(7):
        (d / f"x{i}.pkl").write_bytes(b"")
    with pytest.raises(PipelineInputError, match=r"clip id 'x0' is not in the val split \(7 such file\(s\): "
                                                 r"\['x0', 'x1', 'x2', 'x3', 'x4'\]\)") as e:
        prediction_ids(d, ids, "val")
    assert e.value.path == str(d / "x0.pkl")


@pytest.mark.parametrize("d, msg", [
    ({"motion": np.zeros((0, 3, 59))}, "holds no sample"),
    ({"motion": np.full((1, 3, 59), np.nan)}, "holds NaN or infinite values"),
    ({"motion": np.full((1, 3, 59), -np.inf)}, "holds NaN or infinite values"),
    ({"motion": np.full((1, 3, 59), 1000.5)}, r"holds values up to 1e\+03, far .* \(at most 1000 accepted\)"),
    ({"motion": np.zeros((3, 58))}, r"'motion' has shape \(3, 58\), want \(S,T,59\)"),
    ({"motion": np.zeros((2, 2, 3, 59))}, r"'motion' has shape \(2, 2, 3, 59\)"),
    ({"motion": np.zeros((1, 3, 59, 59))}, r"'motion' has shape \(1, 3, 59, 59\)"),
    ({"motion": np.zeros((1, 3, 60))}, r"'motion' has shape \(1, 3, 60\)"),
    ({"motion": np.zeros((1, 4, 59))}, r"has 4 frames, the ground truth clip has 3"),
    ({"motion": np.zeros(59)}, r"'motion' has shape \(59,\), want \(S,T,59\)"),
    ({"expcodes": np.zeros((1, 3, 50)), "posecodes": np.zeros((3, 9))},
     r"expcodes \(1, 3, 50\) / posecodes \(3, 9\),"),
    ({"expcodes": np.zeros((1, 3, 51)), "posecodes": np.zeros((1, 3, 9))}, r"want \(S,T,50\) / \(S,T,9\)"),
    ({"expcodes": np.zeros((1, 3, 50)), "posecodes": np.zeros((1, 3, 10))}, r"want \(S,T,50\) / \(S,T,9\)"),
    ({"expcodes": np.zeros((1, 3, 50)), "posecodes": np.zeros((2, 3, 9))}, r"want \(S,T,50\) / \(S,T,9\)"),
    ({"expcodes": np.zeros((1, 3, 50, 2)), "posecodes": np.zeros((1, 3, 9))}, r"want \(S,T,50\) / \(S,T,9\)"),
    ({"expcodes": np.zeros((1, 3, 50)), "posecodes": np.zeros((1, 3, 9, 2))}, r"want \(S,T,50\) / \(S,T,9\)"),
    ({"expcodes": np.array([["a"] * 50] * 3)}, r"'expcodes' holds <U1 values, not numbers"),
    ({"expcodes": np.zeros((2, 3, 50)), "posecodes": np.zeros((1, 3, 9))}, r"want \(S,T,50\) / \(S,T,9\)"),
    ({"expcodes": np.zeros((3, 50)), "posecodes": np.zeros((1, 3, 9))},
     r"expcodes \(3, 50\) / posecodes \(1, 3, 9\), want \(S,T,50\) / \(S,T,9\)"),
    ({"expcodes": np.zeros((3, 40)), "posecodes": np.zeros((3, 9))},
     r"expcodes \(3, 40\) / posecodes \(3, 9\),"),
    ({"expcodes": np.zeros((1, 3, 50)), "posecodes": np.zeros((1, 3, 8))}, r"want \(S,T,50\) / \(S,T,9\)"),
    ({"shapecode": np.zeros((1, 100))}, r"holds \['shapecode'\], not 'expcodes'\+'posecodes' or 'motion'"),
    ({"expcodes": np.zeros((1, 3, 50))}, r"holds \['expcodes'\], not 'expcodes'\+'posecodes' or 'motion'"),
])
def test_load_prediction_refuses_with_the_reason(tmp_path, d, msg):
    from tasks.evaluation.evaluate import load_prediction
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps(d))
    with pytest.raises(PipelineInputError, match=msg) as e:
        load_prediction(p, 3)
    assert e.value.path == str(p)


def test_load_prediction_accepts_single_samples_and_values_up_to_the_bound(tmp_path):
    from tasks.evaluation.evaluate import load_prediction
    p = tmp_path / "x.pkl"
    e, q = np.full((3, 50), -1000.0), np.arange(27, dtype=np.float64).reshape(3, 9)
    p.write_bytes(pickle.dumps({"expcodes": e, "posecodes": q}))               # (T,50)/(T,9): one sample
    m = load_prediction(p, 3)
    assert m.shape == (1, 3, 59) and m.dtype == np.float32
    np.testing.assert_array_equal(m[0, :, :50], e)                           # |value| = 1000: accepted
    np.testing.assert_array_equal(m[0, :, 50:], q)
    p.write_bytes(pickle.dumps({"motion": np.ones((3, 59)), "shapecode": np.zeros((1, 100))}))
    assert load_prediction(p, 3).shape == (1, 3, 59)


def test_pose_distance_and_pose_diversity_leave_out_the_expression(tmp_path, release, model, monkeypatch):
    """Predictions that differ from the ground truth (and from each other) only in expression: the
    global+neck pose metrics are 0, the 59-d ones are not; the result names the audio it used."""
    import tasks.evaluation.evaluate as E
    monkeypatch.setattr(E, "beats_available", lambda: False)
    root, gt = release

    def expr(m):
        a, b = m.copy(), m.copy()
        a[:, :50] += 0.5
        b[:, :50] -= 0.25
        return np.stack([a, b])
    r = evaluate(_write_preds(tmp_path / "e", gt, expr), root, "test", head_model=model)
    mt = r["metrics"]
    for k in ("meandist_pose", "mindist_pose", "diversity_pose"):
        assert mt[k] == pytest.approx(0.0, abs=1e-7), k
    assert mt["meandist"] == pytest.approx((0.5 + 0.25) / 2 * math.sqrt(50), rel=1e-5)
    assert mt["mindist"] == pytest.approx(0.25 * math.sqrt(50), rel=1e-5)
    assert mt["diversity"] == pytest.approx(0.75 * math.sqrt(50 * T), rel=1e-5)
    assert r["audio"] == "audio_seqs at 16000 Hz"
    assert mt["ba_pose"] is None and set(r["skipped"]) == {"ba_pose", "ba_lmk"}


def test_neck_pose_is_left_out_of_mesh_errors_but_moves_landmarks(tmp_path, release, model, monkeypatch):
    """As for the global pose: LVE/FVE/FDD meshes zero the neck, the landmark metrics keep it."""
    import tasks.evaluation.evaluate as E
    monkeypatch.setattr(E, "beats_available", lambda: False)
    root, gt = release

    def neck(m):
        a = m.copy()
        a[:, 53:56] += 0.1
        return np.stack([m, a])
    mt = evaluate(_write_preds(tmp_path / "n", gt, neck), root, "test", head_model=model)["metrics"]
    for k in ("lve_mean", "lve_min", "ve_mean", "ve_min", "fdd"):
        assert mt[k] == pytest.approx(0.0, abs=1e-6), k
    assert mt["meandist_pose"] == pytest.approx(0.1 * math.sqrt(3) / 2, rel=1e-4)
    assert mt["diversity_pose"] == pytest.approx(0.1 * math.sqrt(3 * T), rel=1e-4)   # all 3 neck angles
    assert mt["diversity_lmk"] > 1e-4 and mt["diversity_verts"] > 1e-4

    def jaw(m):
        a = m.copy()
        a[:, 56:59] += 0.1
        return np.stack([m, a])
    mt = evaluate(_write_preds(tmp_path / "j", gt, jaw), root, "test", head_model=model)["metrics"]
    assert mt["diversity_pose"] == pytest.approx(0.0, abs=1e-7)
    assert mt["meandist_pose"] == pytest.approx(0.0, abs=1e-7)
    assert mt["diversity"] == pytest.approx(0.1 * math.sqrt(3 * T), rel=1e-4)        # 59-d: sees the jaw


def test_results_do_not_depend_on_the_mesh_chunk_size(tmp_path, release, model, monkeypatch):
    import tasks.evaluation.evaluate as E
    monkeypatch.setattr(E, "beats_available", lambda: False)
    root, gt = release
    preds = _write_preds(tmp_path / "k", gt, lambda m: np.stack([m, m + 0.01]))       # S*T = 60 meshes
    want = evaluate(preds, root, "test", head_model=model)["metrics"]
    for chunk in (7, 59):                                       # chunks that do not divide 60 or 30
        got = evaluate(preds, root, "test", head_model=model, chunk=chunk)["metrics"]
        for k, v in want.items():
            ok = got[k] is None if v is None else got[k] == pytest.approx(v, rel=1e-5, abs=1e-9)
            assert ok, (chunk, k)
