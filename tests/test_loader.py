"""SingingHeadDataset reads the extracted tree, tar shards in place and the official zips alike."""
from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from tasks.dataset.flame_pickle import flame_pickle_bytes
from tasks.dataset import loader
from tasks.dataset.loader import (SingingHeadDataset, _frame_range, clip_files, decode_audio, decode_video,
                                   video_shape)
from tasks.common.errors import PipelineInputError

T, SR, FPS = 12, 24000, 30     # 12 frames: whole sample counts at 24 and 16 kHz
IDS = {"train": ["id0_1_0_0", "id0_1_0_1"], "val": [], "test": ["id1_2_0_0"]}


def _mp4(seed: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width = s.height = 64
        s.pix_fmt = "yuv444p"                           # no chroma subsampling: colours stay close
        s.options = {"crf": "0", "preset": "ultrafast", "threads": "1"}
        for t in range(T):
            img = np.full((64, 64, 3), 40 * t % 256, np.uint8)
            img[:, :, 1] = rng.integers(0, 255)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p")
            f.pts, f.time_base = t, Fraction(1, FPS)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def _wav(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SR, subtype="PCM_16", format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def files():
    """{path inside SingingHead/: bytes} of a tiny release, with the truth it was written from."""
    out, truth = {}, {}
    for split, ids in IDS.items():
        out[f"{split}.txt"] = "".join(i + "\n" for i in ids).encode()
    rng = np.random.default_rng(0)
    n = T * SR // FPS
    for k, cid in enumerate(sum(IDS.values(), [])):
        s, e, p = (rng.normal(size=(1, 100)), rng.normal(size=(T, 50)), rng.normal(size=(T, 9)))
        t = np.arange(n) / SR
        vocal = (0.5 * np.sin(2 * np.pi * 440 * (k + 1) * t)).astype(np.float32)
        bgm = np.stack([0.25 * np.sin(2 * np.pi * 110 * t)] * 2, 1).astype(np.float32)   # stereo
        f = clip_files(cid)
        out[f["flame_seqs"]] = flame_pickle_bytes(s, e, p)
        out[f["audio_seqs"]] = _wav(vocal)
        out[f["bgm_seqs"]] = _wav(bgm)
        out[f["video_seqs"]] = _mp4(k)
        truth[cid] = dict(s=s, e=e, p=p, vocal=vocal)
    return out, truth


def _tree(root: Path, files, only=None):
    for rel, data in files.items():
        if only is None or rel.split("/")[0] in only:
            (root / "SingingHead" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "SingingHead" / rel).write_bytes(data)


def _tars(root: Path, files, only=None, per_shard=5):
    rels = sorted(r for r in files if only is None or r.split("/")[0] in only)
    for k in range(0, len(rels), per_shard):
        with tarfile.open(root / f"singinghead-{k // per_shard:03d}.tar", "w") as tf:
            for rel in rels[k:k + per_shard]:
                info = tarfile.TarInfo(f"SingingHead/{rel}")
                info.size = len(files[rel])
                tf.addfile(info, io.BytesIO(files[rel]))


def _zips(root: Path, files, only=("video_seqs", "flame_seqs", "audio_seqs", "bgm_seqs")):
    for mod in only:
        with zipfile.ZipFile(root / f"{mod}.zip", "w") as z:
            for rel, data in sorted(files.items()):
                if rel.startswith(mod + "/"):
                    z.writestr(rel.split("/", 1)[1], data)
    for split in IDS:
        (root / f"{split}.txt").write_bytes(files[f"{split}.txt"])


@pytest.fixture(scope="module")
def forms(tmp_path_factory, files):
    data, _ = files
    roots = {k: tmp_path_factory.mktemp(k) for k in ("tree", "tars", "zips", "mixed")}
    _tree(roots["tree"], data)
    _tars(roots["tars"], data)
    _zips(roots["zips"], data)
    # mixed: official zips for motion and audio, our tar shards for video and bgm
    _zips(roots["mixed"], data, only=("flame_seqs", "audio_seqs"))
    _tars(roots["mixed"], data, only=("video_seqs", "bgm_seqs"))
    return roots


def _items(root, split="train", **kw):
    ds = SingingHeadDataset(root, split=split, **kw)
    return [ds[i] for i in range(len(ds))]


def test_items_hold_the_truth_in_official_order(forms, files):
    _, truth = files
    items = _items(forms["tree"], sample_rate=16000)
    assert [it["id"] for it in items] == IDS["train"]
    for it in items:
        tr = truth[it["id"]]
        assert it["motion"].shape == (T, 59) and it["motion"].dtype == np.float32
        np.testing.assert_allclose(it["motion"][:, :50], tr["e"], rtol=1e-6)
        np.testing.assert_allclose(it["motion"][:, 50:53], tr["p"][:, 0:3], rtol=1e-6)   # global
        np.testing.assert_allclose(it["motion"][:, 53:56], tr["p"][:, 3:6], rtol=1e-6)   # neck
        np.testing.assert_allclose(it["motion"][:, 56:59], tr["p"][:, 6:9], rtol=1e-6)   # jaw
        np.testing.assert_allclose(it["shape"], tr["s"][0], rtol=1e-6)
        n16 = T * 16000 // FPS
        assert it["vocal"].shape == (n16,) and it["bgm"].shape == (n16,)
        # resampled 24k -> 16k: the sine is still the sine (away from the edges)
        t = np.arange(n16) / 16000
        want = 0.5 * np.sin(2 * np.pi * 440 * (IDS["train"].index(it["id"]) + 1) * t)
        np.testing.assert_allclose(it["vocal"][200:-200], want[200:-200], atol=2e-3)
        assert "video" not in it
    native = _items(forms["tree"], sample_rate=None)[0]
    assert native["vocal"].shape == (T * SR // FPS,)


@pytest.mark.parametrize("form", ["tars", "zips", "mixed"])
def test_every_form_gives_identical_items(forms, form):
    ref = _items(forms["tree"], with_video=True)
    got = _items(forms[form], with_video=True)
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
        assert a.keys() == b.keys() and a["id"] == b["id"]
        for k in ("motion", "shape", "vocal", "bgm", "video"):
            np.testing.assert_array_equal(a[k], b[k])
    assert got[0]["video"].shape == (T, 64, 64, 3) and got[0]["video"].dtype == np.uint8
    assert abs(int(got[0]["video"][3, 10, 10, 0]) - 120) <= 3      # frame 3 was painted 40*3


def test_test_split_and_by_id_and_dataloader(forms):
    ds = SingingHeadDataset(forms["zips"], split="test")
    assert len(ds) == 1 and ds.by_id("id1_2_0_0")["id"] == "id1_2_0_0"
    with pytest.raises(KeyError, match="not in the test split"):
        ds.by_id("id0_1_0_0")
    with pytest.warns(UserWarning, match="val split of .* lists no clips"):
        assert len(SingingHeadDataset(forms["tree"], split="val")) == 0
    batch = next(iter(torch.utils.data.DataLoader(SingingHeadDataset(forms["tars"]), batch_size=2)))
    assert batch["motion"].shape == (2, T, 59) and batch["id"] == IDS["train"]


@pytest.mark.parametrize("form", ["tree", "tars"])
def test_video_size_and_frame_range_cut_every_modality_alike(forms, files, form):
    _, truth = files
    full = SingingHeadDataset(forms[form], with_video=True)[0]
    ds = SingingHeadDataset(forms[form], with_video=True, video_size=32, frames=(3, 9))
    it = ds[0]
    tr = truth[it["id"]]
    assert it["video"].shape == (6, 32, 32, 3) and it["video"].dtype == np.uint8
    np.testing.assert_allclose(it["motion"][:, :50], tr["e"][3:9], rtol=1e-6)
    # flat frames: the resized frame has the full frame's colour; frame 0 of the range is frame 3
    np.testing.assert_allclose(it["video"].mean(axis=(1, 2)), full["video"][3:9].mean(axis=(1, 2)), atol=2)
    assert abs(int(it["video"][0, 10, 10, 0]) - 120) <= 3
    # audio of the same span: samples [round(3*sr/30), round(9*sr/30)) of the whole clip's track
    np.testing.assert_array_equal(it["vocal"], full["vocal"][1600:4800])
    np.testing.assert_array_equal(it["bgm"], full["bgm"][1600:4800])
    native = SingingHeadDataset(forms[form], sample_rate=None, frames=(3, None))[0]
    assert native["vocal"].shape == ((T - 3) * SR // FPS,) and native["motion"].shape == (T - 3, 59)
    # (height, width), and no video decoded without with_video
    wide = SingingHeadDataset(forms[form], with_video=True, video_size=(16, 48), frames=(0, 2))[0]
    assert wide["video"].shape == (2, 16, 48, 3)
    assert "video" not in SingingHeadDataset(forms[form], video_size=32)[0]
    with pytest.raises(IndexError, match="outside clip"):
        SingingHeadDataset(forms[form], frames=(5, T + 1))[0]
    with pytest.raises(ValueError, match="0 <= start < stop"):
        SingingHeadDataset(forms[form], frames=(4, 4))


def test_tar_members_are_read_in_place(forms, monkeypatch):
    # no extraction: reading an item never goes through tarfile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda *a, **k: pytest.fail("extracted"))
    ds = SingingHeadDataset(forms["tars"])
    assert ds[1]["motion"].shape == (T, 59)


def test_clear_errors(forms, files, tmp_path):
    data, _ = files
    with pytest.raises(ValueError, match="split must be one of"):
        SingingHeadDataset(forms["tree"], split="dev")
    # a missing modality file names the clip's path
    broken = tmp_path / "broken"
    _tree(broken, {k: v for k, v in data.items() if not k.startswith("bgm_seqs/id0_1_0_1")})
    ds = SingingHeadDataset(broken)
    with pytest.raises(PipelineInputError, match=r"bgm_seqs/id0_1_0_1_bgm.wav.*missing"):
        ds[1]
    # a pickle that would run code is refused, naming the zip member
    evil = tmp_path / "evil"
    evil.mkdir()
    _zips(evil, data)

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("true",))
    with zipfile.ZipFile(evil / "flame_seqs.zip", "w") as z:
        for cid in IDS["train"]:
            z.writestr(f"{cid}.pkl", pickle.dumps({"shapecode": Evil()}))
    with pytest.raises(PipelineInputError, match=r"flame_seqs.zip:id0_1_0_0.pkl.*refusing to load"):
        SingingHeadDataset(evil)[0]
    # a split file naming a path, not a clip id
    bad = tmp_path / "bad"
    _tree(bad, {**data, "train.txt": b"../../etc/passwd\n"})
    with pytest.raises(PipelineInputError, match="not plain clip ids"):
        SingingHeadDataset(bad)


def test_zip_folder_entries_and_a_top_folder_are_tolerated_and_a_name_twice_refused(forms, files, tmp_path):
    # some zip tools write `flame_seqs/` as a folder entry first and the files under it
    data, _ = files
    root = tmp_path / "topfolder"
    root.mkdir()
    _zips(root, data, only=("video_seqs", "audio_seqs", "bgm_seqs"))
    with zipfile.ZipFile(root / "flame_seqs.zip", "w") as z:
        z.writestr(zipfile.ZipInfo("flame_seqs/"), b"")
        for rel, blob in sorted(data.items()):
            if rel.startswith("flame_seqs/"):
                z.writestr(rel, blob)
    ref = _items(forms["tree"])
    got = _items(root)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a["motion"], b["motion"])
    # the same file name in two folders of one zip: which one is meant cannot be told
    with zipfile.ZipFile(root / "flame_seqs.zip", "a") as z:
        z.writestr(f"other/{IDS['train'][0]}.pkl", data[clip_files(IDS["train"][0])["flame_seqs"]])
    with pytest.raises(PipelineInputError, match=rf"flame_seqs.zip.*holds '{IDS['train'][0]}.pkl' twice"):
        SingingHeadDataset(root)[0]


def test_split_lists_next_to_the_zips_with_a_partly_extracted_tree(forms, files, tmp_path):
    # SingingHead/ holds only the extracted videos; the txt files and the other modalities sit in
    # the zips' folder: the split lists are read from there
    data, _ = files
    root = tmp_path / "partial"
    _tree(root, data, only=("video_seqs",))
    _zips(root, data, only=("flame_seqs", "audio_seqs", "bgm_seqs"))
    assert not (root / "SingingHead" / "train.txt").exists() and (root / "train.txt").is_file()
    ds = SingingHeadDataset(root, split="test", with_video=True)
    assert ds.ids == IDS["test"]
    ref = SingingHeadDataset(forms["tree"], split="test", with_video=True)[0]
    for k in ("motion", "vocal", "bgm", "video"):
        np.testing.assert_array_equal(ds[0][k], ref[k])


def test_audio_rate_defaults_to_the_datasets_and_may_be_named(forms, files):
    _, truth = files
    cid = IDS["train"][1]
    ds = SingingHeadDataset(forms["tree"], sample_rate=16000)
    assert ds.audio(cid).shape == (T * 16000 // FPS,)                    # the dataset's rate
    native = ds.audio(cid, sample_rate=None)                              # the file's own rate
    np.testing.assert_allclose(native, truth[cid]["vocal"], atol=1 / 2**15)
    assert ds.audio(cid, "bgm_seqs", sample_rate=8000).shape == (T * 8000 // FPS,)
    up = ds.audio(cid, sample_rate=48000)                                 # upsampled from the file's 24 kHz
    assert up.shape == (T * 48000 // FPS,)
    np.testing.assert_allclose(up[400:-400:2], truth[cid]["vocal"][200:-200], atol=2e-3)
    np.testing.assert_array_equal(ds.audio(cid), ds[1]["vocal"])


def test_a_frame_range_on_half_samples_cuts_audio_as_the_clips_were_cut(forms):
    """11025 Hz at 30 fps: frame 3 starts at sample 1102.5, frame 5 at 1837.5; halves go up (1103, 1838),
    as the pipeline cut the clips, not to even as float round() would (1102, 1838)."""
    full = SingingHeadDataset(forms["tree"], sample_rate=11025)[0]["vocal"]
    cut = SingingHeadDataset(forms["tree"], sample_rate=11025, frames=(3, 5))[0]["vocal"]
    np.testing.assert_array_equal(cut, full[1103:1838])


def test_video_shorter_than_its_motion_names_both_counts_in_clip_frames(files, tmp_path):
    data, _ = files
    cid = IDS["train"][0]
    short = _mp4(0)
    # 12 motion frames, a video of 12 frames cut to 8 by re-muxing its first 8 packets
    buf = io.BytesIO()
    with av.open(io.BytesIO(short)) as src, av.open(buf, "w", format="mp4") as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for k, pkt in enumerate(src.demux(video=0)):
            if pkt.dts is None or k >= 8:
                continue
            pkt.stream = s
            dst.mux(pkt)
    root = tmp_path / "short"
    _tree(root, {**data, clip_files(cid)["video_seqs"]: buf.getvalue()})
    ds = SingingHeadDataset(root, with_video=True, frames=(3, None))
    with pytest.raises(PipelineInputError, match=r"has 8 frames from 3 on, its flame_seqs pickle 12"):
        ds.by_id(cid)


def test_decode_video_past_the_last_frame_says_from_which_frame(files):
    data, _ = files
    mp4 = data[clip_files(IDS["train"][0])["video_seqs"]]
    assert len(decode_video(mp4, "a.mp4", start=T - 1)) == 1
    with pytest.raises(PipelineInputError, match=rf"a.mp4.*holds no video frames from frame {T}\b"):
        decode_video(mp4, "a.mp4", start=T)


def test_a_refused_tar_member_is_named_by_its_first_200_characters(files, tmp_path):
    data, _ = files
    root = tmp_path / "longname"
    root.mkdir()
    name = "SingingHead/" + "x" * 250 + "/../train.txt"
    with tarfile.open(root / "singinghead-000.tar", "w") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data["train.txt"])
        tf.addfile(info, io.BytesIO(data["train.txt"]))
    with pytest.raises(PipelineInputError) as ei:
        SingingHeadDataset(root)
    msg = str(ei.value)
    assert f"member {name[:200]!r}: '..' in its name" in msg and "singinghead-000.tar" in msg


def test_video_size_and_frame_range_bounds():
    assert video_shape(None) is None
    assert video_shape(2) == (2, 2) and video_shape((2, 3)) == (2, 3) and video_shape(np.int64(5)) == (5, 5)
    for bad in (1, (1, 4), (4, 1), 0):
        with pytest.raises(ValueError, match="at least 2 px"):
            video_shape(bad)
    assert _frame_range(None) is None
    assert _frame_range((0, 1)) == (0, 1) and _frame_range((3, None)) == (3, None)
    for bad in ((-1, 3), (4, 4), (5, 4)):
        with pytest.raises(ValueError, match="0 <= start < stop"):
            _frame_range(bad)


def test_frame_range_reaching_the_clip_end(forms):
    assert SingingHeadDataset(forms["tree"], frames=(T - 1, None))[0]["motion"].shape == (1, 59)
    assert SingingHeadDataset(forms["tree"], frames=(0, T))[0]["motion"].shape == (T, 59)
    for start in (T, T + 2):                     # a range starting at or past the clip's end is empty
        with pytest.raises(IndexError, match="outside clip"):
            SingingHeadDataset(forms["tree"], frames=(start, None))[0]


@pytest.mark.parametrize("form", ["tree", "tars", "zips"])
def test_a_clip_file_of_exactly_the_size_cap_reads_one_byte_more_is_refused(forms, files, form, monkeypatch):
    data, _ = files
    cid = IDS["train"][0]
    size = len(data[clip_files(cid)["flame_seqs"]])    # every clip's pkl has this size (same shapes)
    ds = SingingHeadDataset(forms[form])
    monkeypatch.setattr(loader, "MAX_CLIP_FILE_BYTES", size)
    np.testing.assert_array_equal(ds.flame(cid)["expcodes"], files[1][cid]["e"].astype(np.float32))
    monkeypatch.setattr(loader, "MAX_CLIP_FILE_BYTES", size - 1)
    with pytest.raises(PipelineInputError, match=rf"{size}.*more than .*at most {size - 1}"):
        ds.flame(cid)


def test_damaged_archives_and_files_are_named(forms, files, tmp_path):
    data, _ = files
    cid = IDS["train"][0]
    # a shard that is not a tar, and a gzip-compressed one (members cannot be read in place)
    for name, blob in (("garbage", b"not a tar at all" * 64), ("gzip", None)):
        root = tmp_path / name
        root.mkdir()
        if blob is None:
            with tarfile.open(root / "singinghead-000.tar", "w:gz") as tf:
                info = tarfile.TarInfo("SingingHead/train.txt")
                info.size = len(data["train.txt"])
                tf.addfile(info, io.BytesIO(data["train.txt"]))
        else:
            (root / "singinghead-000.tar").write_bytes(blob)
        with pytest.raises(PipelineInputError, match=r"singinghead-000.tar.*not a readable uncompressed tar"):
            SingingHeadDataset(root)
    # a shard cut short after the dataset indexed it
    root = tmp_path / "cut"
    root.mkdir()
    _tars(root, data, per_shard=100)
    ds = SingingHeadDataset(root)
    shard = root / "singinghead-000.tar"
    rel = max(ds.store.tar_index, key=lambda r: ds.store.tar_index[r][1])      # the last member's data
    with open(shard, "r+b") as f:
        f.truncate(ds.store.tar_index[rel][1] + 3)
    with pytest.raises(PipelineInputError, match=rf"singinghead-000.tar.*truncated inside SingingHead/{rel}"):
        ds.store.read(rel)
    # a split list naming a clip twice, a wav and an mp4 that do not decode
    twice = tmp_path / "twice"
    _tree(twice, {**data, "train.txt": f"{cid}\n{cid}\n".encode()})
    with pytest.raises(PipelineInputError, match="train.txt.*lists a clip id twice"):
        SingingHeadDataset(twice)
    with pytest.raises(PipelineInputError, match="v.wav.*cannot read audio"):
        decode_audio(b"RIFF" + bytes(60), "v.wav", 16000)
    with pytest.raises(PipelineInputError, match="c.mp4.*cannot decode video"):
        decode_video(data[clip_files(cid)["video_seqs"]][:300], "c.mp4")


def test_a_dot_slash_member_is_refused_as_verify_release_refuses_it(files, tmp_path):
    # `tar cf x.tar .` writes ./SingingHead/...: a '.' component, refused (the loader never strips it)
    data, _ = files
    root = tmp_path / "dot"
    root.mkdir()
    with tarfile.open(root / "singinghead-000.tar", "w") as tf:
        info = tarfile.TarInfo("./SingingHead/train.txt")
        info.size = len(data["train.txt"])
        tf.addfile(info, io.BytesIO(data["train.txt"]))
    with pytest.raises(PipelineInputError, match=r"member './SingingHead/train.txt': an empty or '.' component"):
        SingingHeadDataset(root)


def test_a_forked_worker_opens_its_own_shard_handles(forms):
    # DataLoader workers are forked: sharing the parent's open shard would share its file offset
    import multiprocessing as mp
    ds = SingingHeadDataset(forms["tars"])
    ds.store.read(clip_files(IDS["train"][0])["flame_seqs"])
    handles = dict(ds.store._open)
    assert handles
    offsets = {k: f.tell() for k, f in handles.items()}

    def read_everything():
        for rel in ds.store.tar_index:
            ds.store.read(rel)

    child = mp.get_context("fork").Process(target=read_everything)
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert {k: f.tell() for k, f in handles.items()} == offsets


def test_defaults_and_messages_users_see(forms, files, tmp_path):
    data, _ = files
    # sample_rate defaults to 16 kHz; decode_video from frame 0
    default = SingingHeadDataset(forms["tree"])[0]["vocal"]
    assert default.shape == (T * 16000 // FPS,)
    np.testing.assert_array_equal(default, SingingHeadDataset(forms["tree"], sample_rate=16000)[0]["vocal"])
    assert len(decode_video(data[clip_files(IDS["train"][0])["video_seqs"]], "a.mp4")) == T
    # the empty-split warning points at the caller's line
    with pytest.warns(UserWarning, match="lists no clips") as rec:
        SingingHeadDataset(forms["tree"], split="val")
    assert rec[0].filename == __file__
    # a split list with bad names shows the first three
    bad = tmp_path / "bad4"
    _tree(bad, {**data, "train.txt": b"../a\n../b\n../c\n../d\n"})
    with pytest.raises(PipelineInputError, match=r"not plain clip ids: \['../a', '../b', '../c'\]"):
        SingingHeadDataset(bad)
    # a file missing from every form says where it was looked for; a missing split list too
    ds = SingingHeadDataset(forms["tars"])
    n_shards = len(list(forms["tars"].glob("*.tar")))
    assert n_shards > 1
    with pytest.raises(PipelineInputError, match=rf"flame_seqs/nope.pkl: is missing from the release \(looked in "
                                                 rf"the extracted tree, {n_shards} tar shard\(s\)"):
        ds.store.read("flame_seqs/nope.pkl")
    with pytest.raises(PipelineInputError, match=r"nope.txt: is missing from the release"):
        ds.store.read("nope.txt")
    # a video shorter than its motion, without a frame range: counted from frame 0
    cid = IDS["train"][0]
    buf = io.BytesIO()
    with av.open(io.BytesIO(data[clip_files(cid)["video_seqs"]])) as src, av.open(buf, "w", format="mp4") as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for k, pkt in enumerate(src.demux(video=0)):
            if pkt.dts is not None and k < 8:
                pkt.stream = s
                dst.mux(pkt)
    short = tmp_path / "short0"
    _tree(short, {**data, clip_files(cid)["video_seqs"]: buf.getvalue()})
    with pytest.raises(PipelineInputError, match=r"has 8 frames from 0 on, its flame_seqs pickle 12"):
        SingingHeadDataset(short, with_video=True).by_id(cid)
