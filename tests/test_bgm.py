"""SeparateBGM: a tiny random-weight HTDemucs in demucs's release format, the weight-free remover,
the accompaniment shortcut, and clear errors for broken model folders."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import soundfile as sf

from demo import audio as demo_audio
from tasks.bgm import SeparateBGM
from tasks.common.errors import ModelFileError
from tasks.layout import Layout
from tasks.separation.vocals import (FALLBACK_NAME, RepetParams, crossfade_weights, load_demucs, weight_free_bgm,
                                     window_plan)
from pipeline.build import config_overrides

SR = 44100
SUBJECT, SONG = "S001", "001_folk_demo"


def sdr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - est).astype(np.float64) ** 2))


def demo_mix(seconds, sr=SR, seed=3, genre="folk"):
    """(original (N,2), accompaniment part (N,2)) as the demo capture mixes them."""
    plan = demo_audio.song_plan(genre, seed)
    v = demo_audio.synth_vocal(seconds, sr, seed, genre, plan=plan)
    a = demo_audio.synth_accompaniment(seconds, sr, seed, genre, plan=plan)
    mix, _, acc = demo_audio.mix_original(v, a, vocal_gain_db=1.0)
    return mix, acc


@pytest.fixture
def bgm_cfg():
    """Set [bgm] keys for one test and restore them after."""
    with contextlib.ExitStack() as stack:
        yield lambda **kw: stack.enter_context(config_overrides(bgm=kw))


def write_song(raw, original=None, accompaniment=None, sr=SR):
    d = raw / SUBJECT / "songs" / SONG
    d.mkdir(parents=True)
    (d / "song.json").write_text(json.dumps({"title": "t", "genre": "folk", "language": "en", "audio_offset_s": 0.0}))
    if original is not None:
        sf.write(str(d / "original.wav"), original, sr, subtype="PCM_16")
    if accompaniment is not None:
        sf.write(str(d / "accompaniment.wav"), accompaniment, sr, subtype="FLOAT")
    return d


def write_tiny_demucs_repo(root, name="htdemucs", sig="0badc0de", seed=0):
    """Random-weight HTDemucs saved exactly like the released .th files, plus the bag yaml."""
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import save_with_checksum
    torch.manual_seed(seed)
    model = HTDemucs(["drums", "bass", "other", "vocals"], channels=8, depth=4, t_layers=1, t_heads=1, segment=4)
    args, kwargs = model._init_args_kwargs
    pkg = {"klass": HTDemucs, "args": args, "kwargs": kwargs,
           "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    root.mkdir(parents=True, exist_ok=True)
    save_with_checksum(pkg, root / f"{sig}.th")
    (root / f"{name}.yaml").write_text(f"models: ['{sig}']\n")
    return root


def test_crossfade_weights_partition_unity():
    for n, win, ov in [(1000, 300, 50), (1001, 1000, 100), (50, 100, 10), (12345, 4000, 1000)]:
        plan = window_plan(n, win, ov)
        assert plan[0][0] == 0 and plan[-1][1] == n
        assert all(e - s == min(win, n) for s, e in plan)
        total = np.zeros(n)
        for (s, e), w in zip(plan, crossfade_weights(plan, n)):
            assert (w >= 0).all()
            total[s:e] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_tiny_demucs_through_separate_bgm(luigi_paths, bgm_cfg, tmp_path):
    raw, processed = luigi_paths
    lay = Layout.from_config()
    mix, _ = demo_mix(4.0)
    write_song(raw, original=mix)
    repo = write_tiny_demucs_repo(tmp_path / "models")
    bgm_cfg(demucs_repo=repo, demucs_model="htdemucs", chunk_seconds=2.5)   # 2 chunks: crossfade path
    task = SeparateBGM(subject=SUBJECT, song=SONG)
    task.run()
    out, sr = sf.read(str(lay.bgm_wav(SUBJECT, SONG)), dtype="float32", always_2d=True)
    assert sr == SR and out.shape == mix.shape and sf.info(str(lay.bgm_wav(SUBJECT, SONG))).subtype == "FLOAT"
    assert np.isfinite(out).all() and np.abs(out).max() > 0
    rec = json.loads(lay.bgm_record(SUBJECT, SONG).read_text())
    assert rec["method"] == "demucs" and rec["model"]["kind"] == "real"
    names = sorted(f["path"].rsplit("/", 1)[-1] for f in rec["model"]["files"])
    assert names[1] == "htdemucs.yaml" and names[0].startswith("0badc0de-") and names[0].endswith(".th")
    assert all(len(f["sha256"]) == 64 for f in rec["model"]["files"])
    assert rec["params"]["demucs"]["shifts"] == 0 and rec["params"]["demucs"]["stems_summed"] == ["drums", "bass", "other"]
    first = lay.bgm_wav(SUBJECT, SONG).read_bytes()
    task.run()
    assert lay.bgm_wav(SUBJECT, SONG).read_bytes() == first          # rerun: same bytes


def test_weight_free_remover_beats_the_mix(luigi_paths, bgm_cfg, caplog):
    raw, processed = luigi_paths
    lay = Layout.from_config()
    mix, acc = demo_mix(10.0, sr=22050)
    write_song(raw, original=mix, sr=22050)
    bgm_cfg(demucs_repo="")
    SeparateBGM(subject=SUBJECT, song=SONG).run()
    first = (lay.bgm_wav(SUBJECT, SONG).read_bytes(), lay.bgm_record(SUBJECT, SONG).read_bytes())
    SeparateBGM(subject=SUBJECT, song=SONG).run()
    assert (lay.bgm_wav(SUBJECT, SONG).read_bytes(), lay.bgm_record(SUBJECT, SONG).read_bytes()) == first
    out, sr = sf.read(str(lay.bgm_wav(SUBJECT, SONG)), dtype="float32", always_2d=True)
    assert sr == 22050 and out.shape == mix.shape
    # original.wav is PCM_16, so compare against what was written
    written, _ = sf.read(str(raw / SUBJECT / "songs" / SONG / "original.wav"), dtype="float32", always_2d=True)
    assert sdr(acc, out) > sdr(acc, written) + 3.0
    rec = json.loads(lay.bgm_record(SUBJECT, SONG).read_text())
    assert rec["method"] == "weight-free" and rec["model"]["kind"] == "stand-in"
    assert rec["model"]["name"] == FALLBACK_NAME and "not Demucs" in rec["description"]
    assert any("not Demucs" in r.getMessage() for r in caplog.records)


def test_weight_free_short_windows_still_separate():
    """Many short crossfaded windows (linear cost) separate about as well as one long window."""
    mix, acc = demo_mix(10.0, sr=22050, seed=5, genre="rock")
    a = weight_free_bgm(mix, 22050, RepetParams(window_s=6.0, overlap_s=2.0, width_s=1.0))
    b = weight_free_bgm(mix, 22050, RepetParams(window_s=60.0, width_s=1.0))
    assert a.shape == b.shape == mix.shape
    assert sdr(acc, a) > sdr(acc, mix) + 3.0 and sdr(acc, b) > sdr(acc, mix) + 3.0
    assert sdr(acc, a) > sdr(acc, b) - 2.0


def test_accompaniment_shortcut(luigi_paths, bgm_cfg, tmp_path):
    raw, processed = luigi_paths
    lay = Layout.from_config()
    mix, acc = demo_mix(3.0)
    acc = acc * 1.7   # peaks above full scale stay (no rescaling, float32)
    write_song(raw, original=mix, accompaniment=acc)
    bgm_cfg(demucs_repo=tmp_path / "does-not-exist")    # must not even be looked at
    SeparateBGM(subject=SUBJECT, song=SONG).run()
    out, sr = sf.read(str(lay.bgm_wav(SUBJECT, SONG)), dtype="float32", always_2d=True)
    assert sr == SR
    np.testing.assert_array_equal(out, acc.astype(np.float32))
    rec = json.loads(lay.bgm_record(SUBJECT, SONG).read_text())
    assert rec["method"] == "accompaniment" and rec["model"] is None
    assert rec["source"]["path"].endswith("accompaniment.wav")


def test_missing_model_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelFileError) as e:
        load_demucs(missing, "htdemucs_ft")
    assert str(missing) in str(e.value) and "does not exist" in str(e.value) and "demucs_repo" in str(e.value)


def test_folder_without_yaml_is_a_clear_error(tmp_path):
    repo = write_tiny_demucs_repo(tmp_path / "m", name="htdemucs")
    (repo / "htdemucs.yaml").unlink()
    with pytest.raises(ModelFileError) as e:
        load_demucs(repo, "htdemucs")
    assert "htdemucs.yaml" in str(e.value) and "0badc0de" in str(e.value)
    # a yaml naming a model that is not there
    (repo / "htdemucs_ft.yaml").write_text("models: ['0badc0de', 'f7e0c4bc']\n")
    with pytest.raises(ModelFileError, match="f7e0c4bc"):
        load_demucs(repo, "htdemucs_ft")


def test_corrupted_th_is_a_checksum_error(tmp_path):
    repo = write_tiny_demucs_repo(tmp_path / "m")
    th = next(repo.glob("*.th"))
    data = bytearray(th.read_bytes())
    data[len(data) // 2] ^= 0xFF
    th.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as e:
        load_demucs(repo, "htdemucs")
    assert "checksum" in str(e.value).lower() and "download it again" in str(e.value)


def test_guarded_loader_builds_what_demucs_builds(tmp_path):
    """Our allow-listed load gives the model demucs.pretrained.get_model gives for the same (trusted)
    files: a bag with the yaml's weights and segment, a Fraction segment in the kwargs, and a single
    model addressed by its signature."""
    import torch
    from fractions import Fraction
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs
    from demucs.pretrained import get_model
    from demucs.states import save_with_checksum

    repo = tmp_path / "m"
    repo.mkdir()
    for seed, sig in ((1, "aaaa1111"), (2, "bbbb2222")):
        torch.manual_seed(seed)
        m = HTDemucs(["drums", "bass", "other", "vocals"], channels=8, depth=4, t_layers=1, t_heads=1,
                     segment=Fraction(39, 10))
        args, kwargs = m._init_args_kwargs
        save_with_checksum({"klass": HTDemucs, "args": args, "kwargs": kwargs,
                            "state": {k: v.detach().half() for k, v in m.state_dict().items()},
                            "training_args": {"seed": seed}}, repo / f"{sig}.th")
    (repo / "ft.yaml").write_text("models: ['aaaa1111', 'bbbb2222']\nweights: [[1., 0., 1., 0.], [0., 1., 0., 1.]]\n"
                                  "segment: 3\n")
    ours, ref = load_demucs(repo, "ft"), get_model("ft", repo=repo)
    assert isinstance(ours, BagOfModels) and not ours.training
    assert ours.weights == ref.weights == [[1., 0., 1., 0.], [0., 1., 0., 1.]]
    assert [m.segment for m in ours.models] == [m.segment for m in ref.models] == [3, 3]
    for a, b in zip(ours.models, ref.models):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    single = load_demucs(repo, "bbbb2222")
    assert isinstance(single, HTDemucs) and single.segment == Fraction(39, 10)
    assert torch.equal(single.state_dict()["freq_emb.embedding.weight"],
                       ref.models[1].state_dict()["freq_emb.embedding.weight"])
