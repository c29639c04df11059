"""Releases (tarballs, official zips, WebDataset): deterministic bytes wherever built, shard sizes, the data
card, SHA256SUMS, the loader reading them, and verify-release catching every kind of damage."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import tarfile
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from dataset_helpers import build_dataset_and_release, make_subject_outputs, tree_digest
from scipy.io import wavfile

from pipeline.cli import main
from tasks.assemble import AssembleDataset
from tasks.common.atomic import file_sha256
from tasks.common.errors import PipelineInputError
from tasks.dataset.card import LOADER_EXAMPLE
from tasks.dataset.flame_pickle import load_flame_pickle
from tasks.dataset.loader import SingingHeadDataset
from tasks.dataset.packing import clip_files, pack_release
from tasks.dataset.verify import verify_release
from tasks.layout import Layout
from tasks.media import clips as C


@pytest.fixture
def dataset(luigi_paths):
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed)
    AssembleDataset().assemble()
    return Layout.from_config().dataset_root()


def test_two_packs_are_byte_identical_and_verify(dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ma = pack_release(dataset, a, "SingingHead", shard_bytes=200_000)
    pack_release(dataset, b, "SingingHead", shard_bytes=200_000)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert (
        sum(n.endswith(".tar") and "sequences" not in n for n in names) >= 2
    )  # small shard size: several shards
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    with tarfile.open(a / "SingingHead-000.tar") as t:
        members = t.getmembers()
    assert members[0].name.startswith("SingingHead/")
    assert all(
        m.mtime == members[0].mtime and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
        for m in members
    )
    assert not any(m.pax_headers for m in members)
    # a clip's four files never straddle two shards
    for shard in ma["shards"]:
        if shard["part"] != "clips":
            continue
        paths = {f["path"].split("/", 1)[1] for f in shard["files"]}
        for p in paths:
            if p.startswith("video_seqs/"):
                assert set(clip_files(p.split("/")[1][:-4])) <= paths
    assert verify_release(a) == []
    assert verify_release(dataset) == []  # the assembled folder verifies too


def test_verify_detects_corruption_and_missing_clip(dataset, tmp_path):
    rel = tmp_path / "rel"
    pack_release(dataset, rel, "SingingHead", shard_bytes=10**9)
    bad = tmp_path / "bad"
    shutil.copytree(rel, bad)
    tar = bad / "SingingHead-000.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside some member
    tar.write_bytes(bytes(data))
    problems = verify_release(bad)
    assert any("SingingHead-000.tar: checksum mismatch" in p for p in problems)
    assert any("checksum mismatch" in p and "/" in p for p in problems)  # the damaged member is named too

    # an extracted folder with one clip file missing and one truncated wav
    ext = tmp_path / "ext"
    with tarfile.open(rel / "SingingHead-000.tar") as t:
        t.extractall(ext, filter="data")
    root = ext / "SingingHead"
    cid = (
        (root / "train.txt").read_text().split()[0]
        if (root / "train.txt").read_text().split()
        else (root / "test.txt").read_text().split()[0]
    )
    (root / "bgm_seqs" / f"{cid}_bgm.wav").unlink()
    ids = sum(((root / f"{s}.txt").read_text().split() for s in ("train", "val", "test")), [])
    other = next(i for i in ids if i != cid)
    wav = root / "audio_seqs" / f"{other}.wav"
    wav.write_bytes(wav.read_bytes()[:-3200])
    problems = verify_release(ext)
    assert f"bgm_seqs/{cid}_bgm.wav: missing (id {cid} in " in " ".join(problems)
    assert any(p.startswith(f"audio_seqs/{other}.wav:") and "samples" in p for p in problems)
    assert len(problems) == 2


def test_verify_cli_exit_codes(dataset, tmp_path, capsys):
    rel = tmp_path / "rel"
    pack_release(dataset, rel, "SingingHead", shard_bytes=10**9, include_sequences=False)
    assert not any("sequences" in p.name for p in rel.iterdir())
    assert main(["verify-release", str(rel)]) == 0
    (rel / "manifest.json").write_text("{}")
    assert main(["verify-release", str(rel)]) == 1
    assert "manifest.json: checksum mismatch" in capsys.readouterr().out


# ----------------------------------------------------------------------------- formats
def _repack(dataset, out, fmt, shard_bytes=10**9, include_sequences=True):
    return pack_release(dataset, out, "SingingHead", shard_bytes=shard_bytes, include_sequences=include_sequences,
                        fmt=fmt)


def _ids(dataset):
    return {s: (dataset / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}


def test_tarballs_extract_to_the_published_tree_and_the_loader_reads_them(dataset, tmp_path):
    rel = tmp_path / "rel"
    _repack(dataset, rel, "tarballs", shard_bytes=200_000)
    ext = tmp_path / "ext"
    for tar in sorted(rel.glob("*.tar")):
        with tarfile.open(tar) as t:
            t.extractall(ext, filter="data")
    root = ext / "SingingHead"
    ids = _ids(dataset)
    for s in ("train", "val", "test"):
        assert (root / f"{s}.txt").read_bytes() == (dataset / f"{s}.txt").read_bytes()
    for cid in sum(ids.values(), []):
        for f in clip_files(cid):
            assert (root / f).read_bytes() == (dataset / f).read_bytes()
    for extra in ("metadata.csv", "manifest.json", "shapes/S001.npy", "sequences/id1_1_0/motion.npz"):
        assert (root / extra).read_bytes() == (dataset / extra).read_bytes()
    card = (root / "README.md").read_text()
    for section in ("Motivation", "Composition", "Collection", "Preprocessing", "Uses", "Distribution",
                    "Maintenance"):
        assert f"## {section}" in card
    assert LOADER_EXAMPLE in card and "STAND-IN" in card
    assert card == (rel / "README.md").read_text()
    # the loader reads the shards in place: same motion as the pickles of the assembled tree
    split = next(s for s in ("train", "test", "val") if ids[s])
    ds = SingingHeadDataset(rel, split=split, sample_rate=16000)
    assert ds.ids == ids[split]
    item = ds[0]
    d = load_flame_pickle((dataset / clip_files(ds.ids[0])[1]).read_bytes())
    np.testing.assert_array_equal(item["motion"][:, :50], d["expcodes"])
    assert item["vocal"].shape == (128000,)


def test_loading_docs_hold_the_card_example():
    text = (Path(__file__).resolve().parents[1] / "docs" / "loading.md").read_text()
    assert LOADER_EXAMPLE in text
    assert len(LOADER_EXAMPLE.strip().splitlines()) == 10


def test_zips_are_the_official_files_deterministic_and_load(dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _repack(dataset, a, "zips")
    _repack(dataset, b, "zips")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(["train.txt", "val.txt", "test.txt", "video_seqs.zip", "flame_seqs.zip", "audio_seqs.zip",
                            "bgm_seqs.zip", "singinghead_extras.zip", "README.md", "manifest.json",
                            "release_manifest.json", "SHA256SUMS"])
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    ids = sorted(sum(_ids(dataset).values(), []))
    for k, mod in enumerate(("video_seqs", "flame_seqs", "audio_seqs", "bgm_seqs")):
        with zipfile.ZipFile(a / f"{mod}.zip") as z:
            infos = z.infolist()
            assert [i.filename for i in infos] == [clip_files(c)[k].split("/")[1] for c in ids]  # at the root
            assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (2020, 1, 1, 0, 0, 0)
                       for i in infos)
            assert z.read(infos[0]) == (dataset / clip_files(ids[0])[k]).read_bytes()
    with zipfile.ZipFile(a / "singinghead_extras.zip") as z:
        extras = set(z.namelist())
    assert {"README.md", "metadata.csv", "manifest.json", "shapes/S001.npy",
            "sequences/id1_1_0/video.mp4"} <= extras
    assert verify_release(a) == []
    split = next(s for s in ("test", "train", "val") if _ids(dataset)[s])
    ds = SingingHeadDataset(a, split=split, sample_rate=None)
    cid = ds.ids[0]
    item = ds.by_id(cid)
    d = load_flame_pickle((dataset / clip_files(cid)[1]).read_bytes())
    np.testing.assert_array_equal(item["motion"][:, 50:], d["posecodes"])
    _, vocal = wavfile.read(dataset / clip_files(cid)[2])
    np.testing.assert_array_equal(item["vocal"], vocal / 32768.0)


def test_webdataset_shards_share_keys_per_split(dataset, tmp_path):
    rel = tmp_path / "wds"
    _repack(dataset, rel, "webdataset", shard_bytes=100_000)
    ids = _ids(dataset)
    for s in ("train", "val", "test"):
        shards = sorted(rel.glob(f"{s}-*.tar"))
        assert [p.name for p in shards] == [f"{s}-{k:06d}.tar" for k in range(len(shards))]
        assert (rel / f"{s}.txt").read_bytes() == (dataset / f"{s}.txt").read_bytes()
        keys = []
        for shard in shards:
            assert shard.stat().st_size <= 100_000 or len(tarfile.open(shard).getnames()) == 5
            with tarfile.open(shard) as t:
                names = t.getnames()
                for i in range(0, len(names), 5):  # a clip's five files are adjacent and share the key
                    key = names[i].split(".")[0]
                    assert names[i:i + 5] == [f"{key}{x}" for x in (".bgm.wav", ".json", ".mp4", ".pkl", ".vocal.wav")]
                    meta = json.loads(t.extractfile(f"{key}.json").read())
                    assert meta["id"] == key and meta["split"] == s and meta["frames"] == 240
                    assert t.extractfile(f"{key}.pkl").read() == (dataset / clip_files(key)[1]).read_bytes()
                    keys.append(key)
        assert keys == sorted(ids[s])
    assert len(ids["train"]) >= 2  # enough clips that 100 kB shards must split the train split
    assert sum(1 for _ in rel.glob("train-*.tar")) >= 2  # sized by shard_bytes
    extras = sorted(rel.glob("SingingHead-extras-*.tar"))
    assert [p.name for p in extras] == [f"SingingHead-extras-{k:03d}.tar" for k in range(len(extras))]
    members = {}
    for tar in extras:
        with tarfile.open(tar) as t:
            members.update({m.name: t.extractfile(m).read() for m in t.getmembers()})
    for f in ("manifest.json", "metadata.csv"):
        assert members[f"SingingHead/{f}"] == (dataset / f).read_bytes(), f
    assert members["SingingHead/README.md"] == (rel / "README.md").read_bytes()  # the data card
    assert verify_release(rel) == []


def test_wavs_are_16_bit_pcm_that_wave_reads(dataset):
    cid = sorted(sum(_ids(dataset).values(), []))[0]
    for f in (dataset / clip_files(cid)[2], dataset / clip_files(cid)[3], dataset / "sequences/id1_1_0/vocal.wav"):
        with wave.open(str(f)) as w:
            assert (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (2, 1, 16000)
            n = w.getnframes()
        assert n == round((240 if "sequences" not in str(f) else 500) * 16000 / 30)
        assert sf.info(str(f)).subtype == "PCM_16"
        sr, x = wavfile.read(f)
        assert sr == 16000 and x.dtype == np.int16 and len(x) == n


def test_float_audio_becomes_pcm16_exactly():
    x = np.array([0, 1, -1, 32767, -32768], np.int16)
    f = x.astype(np.float32) / 32768.0                      # what soundfile reads from 16-bit PCM
    pcm, clipped = C.to_pcm16(f)
    np.testing.assert_array_equal(pcm, x)
    assert clipped == 0
    pcm, clipped = C.to_pcm16(np.array([1.5, -1.2, 0.5], np.float32))
    assert clipped == 2 and pcm.tolist() == [32767, -32768, 16384]
    with wave.open(io.BytesIO(C.pcm16_wav_bytes(x, 16000))) as w:
        assert np.frombuffer(w.readframes(5), "<i2").tolist() == x.tolist()


# ----------------------------------------------------------------------------- verify: no blind spots
@pytest.fixture
def releases(dataset, tmp_path):
    out = {}
    for fmt in ("tarballs", "zips", "webdataset"):
        out[fmt] = tmp_path / fmt
        _repack(dataset, out[fmt], fmt, include_sequences=False)
        assert verify_release(out[fmt]) == [], fmt
    return out


def _copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _evil_tar(path, kind):
    with tarfile.open(path, "w") as t:
        if kind == "symlink":
            ti = tarfile.TarInfo("SingingHead/video_seqs/link.mp4")
            ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(ti)
        else:
            ti = tarfile.TarInfo(kind)
            ti.size = 4
            t.addfile(ti, io.BytesIO(b"evil"))


def test_verify_sums_missing_empty_malformed(releases, tmp_path):
    for fmt, rel in releases.items():
        bad = _copy(rel, tmp_path / f"{fmt}-nosums")
        (bad / "SHA256SUMS").unlink()
        problems = verify_release(bad)
        assert len(problems) == 1 and problems[0].startswith("SHA256SUMS: missing"), problems
        (bad / "SHA256SUMS").write_text("")
        assert verify_release(bad) == ["SHA256SUMS: empty (it must list every file of the release)"]
        good = (rel / "SHA256SUMS").read_text().splitlines()
        (bad / "SHA256SUMS").write_text("\n".join(good[:1] + ["not a checksum line"] + good[1:]) + "\n")
        problems = verify_release(bad)
        assert len(problems) == 1 and problems[0].startswith("SHA256SUMS line 2: malformed"), problems
        assert main(["verify-release", str(bad)]) == 1
    assert main(["verify-release", str(tmp_path / "nowhere")]) == 2


def test_verify_stray_and_unsafe_members(releases, tmp_path):
    for fmt, rel in releases.items():
        for kind in ("/etc/evil", "../../evil", "symlink"):
            bad = _copy(rel, tmp_path / f"{fmt}-{kind.replace('/', '_').replace('.', 'd')}")
            _evil_tar(bad / "zz-stray.tar", kind)
            problems = verify_release(bad)
            assert "zz-stray.tar: not listed in SHA256SUMS (a stray file: remove it or re-download the release)" \
                in problems, problems
            assert any(p.startswith("zz-stray.tar:") and ("absolute" in p or "'..'" in p or "symbolic link" in p)
                       for p in problems), problems
            # listed in SHA256SUMS too (a forged sums file): the member check still fails it
            with open(bad / "SHA256SUMS", "a") as f:
                f.write(f"{file_sha256(bad / 'zz-stray.tar')}  zz-stray.tar\n")
            problems = verify_release(bad)
            assert problems and all(p.startswith("zz-stray.tar") or "SHA256SUMS" in p for p in problems), problems
        bad = _copy(rel, tmp_path / f"{fmt}-extra")
        (bad / "notes.txt").write_text("hello")
        assert verify_release(bad) == ["notes.txt: not listed in SHA256SUMS (a stray file: remove it or "
                                       "re-download the release)"]
        (bad / "notes.txt").unlink()
        (bad / "sub").mkdir()
        assert len(verify_release(bad)) == 1
    # a zip member that is a symlink
    bad = _copy(releases["zips"], tmp_path / "zip-link")
    with zipfile.ZipFile(bad / "video_seqs.zip", "a") as z:
        info = zipfile.ZipInfo("link.mp4", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    problems = verify_release(bad)
    assert "video_seqs.zip: checksum mismatch (corrupted or changed)" in problems
    assert any(p.startswith("video_seqs.zip:link.mp4: a symbolic link") for p in problems), problems


def test_verify_tampered_mp4_with_forged_member_hash(releases, tmp_path):
    rel = releases["tarballs"]
    bad = _copy(rel, tmp_path / "forged")
    tar = bad / "SingingHead-000.tar"
    with tarfile.open(rel / "SingingHead-000.tar") as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    target = next(m.name for m, _ in members if m.name.endswith(".mp4"))
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        for m, data in members:
            if m.name == target:
                data = data[:-1] + bytes([data[-1] ^ 1])
            t.addfile(m, io.BytesIO(data))
    rm = json.loads((bad / "release_manifest.json").read_text())
    for shard in rm["shards"]:
        for f in shard["files"]:
            if f["path"] == target:
                f["sha256"] = hashlib.sha256(dict((m.name, d) for m, d in members)[target][:-1] + bytes(
                    [dict((m.name, d) for m, d in members)[target][-1] ^ 1])).hexdigest()
    (bad / "release_manifest.json").write_text(json.dumps(rm))
    problems = verify_release(bad)
    assert "SingingHead-000.tar: checksum mismatch (corrupted or changed)" in problems
    assert "release_manifest.json: checksum mismatch (corrupted or changed)" in problems


def test_verify_contents_in_every_format(releases, tmp_path):
    # a split list naming a clip twice and a clip of no split, in the zips form (txt at the top)
    bad = _copy(releases["zips"], tmp_path / "zips-dup")
    ids = sum(((bad / f"{s}.txt").read_text().split() for s in ("train", "val", "test")), [])
    (bad / "val.txt").write_text(ids[0] + "\n")
    (bad / "test.txt").write_text("".join(f"{i}\n" for i in ids if i != ids[0]) + "id9_9_0_0\n")
    problems = verify_release(bad)
    assert any(p.startswith(f"{ids[0]}: listed in") for p in problems), problems
    assert any(p == "video_seqs/id9_9_0_0.mp4: missing (id id9_9_0_0 in test.txt)" for p in problems), problems
    assert "val.txt: checksum mismatch (corrupted or changed)" in problems


# ----------------------------------------------------------------------------- same bytes anywhere
def test_same_capture_gives_the_same_bytes_under_two_roots(tmp_path):
    trees = {}
    for side in ("a", "b"):
        root = tmp_path / side / "deep" if side == "b" else tmp_path / side
        raw, processed = root / "raw", root / "processed"
        raw.mkdir(parents=True)
        processed.mkdir()
        dataset, release = build_dataset_and_release(raw, processed, "tarballs", shard_bytes=300_000)
        trees[side] = (tree_digest(dataset), tree_digest(release), dataset, release, root)
    (da, ra, dataset, release, root_a), (db, rb, _, _, _) = trees["a"], trees["b"]
    assert da == db and ra == rb and len(ra) > 4
    manifest = json.loads((dataset / "manifest.json").read_text())
    remover = next(m for m in manifest["models"] if m["name"] == "weight-free vocal remover")
    assert remover["files"] == [{"name": "remover.bin", "sha256": "ab" * 32}]
    assert manifest["parameters"]["stages"]["bgm"][0]["bgm_source"] == "original.wav"
    for p in list(dataset.rglob("*")) + list(release.rglob("*")):
        if p.is_file() and p.suffix in (".json", ".csv", ".txt", ".md", ".tar", ""):
            assert str(root_a).encode() not in p.read_bytes(), p


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_command_on_a_verified_release(dataset, tmp_path, capsys):
    rel = tmp_path / "rel"
    _repack(dataset, rel, "zips", include_sequences=False)
    ids = _ids(dataset)
    split = next(s for s in ("test", "train", "val") if ids[s])
    preds = tmp_path / "preds"
    preds.mkdir()
    for cid in ids[split]:  # the ground truth twice, the second sample with the jaw opened
        d = load_flame_pickle((dataset / clip_files(cid)[1]).read_bytes())
        pose = np.stack([d["posecodes"], d["posecodes"] + np.array([0] * 6 + [0.2, 0, 0], np.float32)])
        (preds / f"{cid}.pkl").write_bytes(pickle.dumps({"expcodes": np.stack([d["expcodes"]] * 2),
                                                         "posecodes": pose}))
    out = tmp_path / "res" / "result.json"
    argv = ["evaluate", str(preds), "--release", str(rel), "--split", split, "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{split} split, {len(ids[split])} clips x 2 samples" in printed and "lve_mean" in printed
    r = json.loads(out.read_text())
    assert r["clips"] == len(ids[split]) and r["samples"] == 2
    assert r["metrics"]["lve_min"] == pytest.approx(0.0, abs=1e-6) and r["metrics"]["lve_mean"] > 1e-4
    assert r["head_model_record"]["kind"] == "stand-in"
    assert all("/" not in f["name"] for f in r["head_model_record"]["files"])
    # a release that does not verify is refused before any scoring
    (rel / "stray.bin").write_bytes(b"x")
    out.unlink()
    assert main(argv) == 2
    assert "does not verify" in capsys.readouterr().err and not out.exists()


def test_pack_refuses_a_release_dir_of_the_users(dataset, tmp_path):
    users = tmp_path / "my_papers"                  # [paths] release_dir pointed at a folder of the user's
    users.mkdir()
    (users / "thesis.pdf").write_bytes(b"years of work")
    with pytest.raises(PipelineInputError, match="did not write.*thesis.pdf"):
        pack_release(dataset, users, "SingingHead", shard_bytes=2_000_000_000)
    assert [p.name for p in users.iterdir()] == ["thesis.pdf"]
    empty = tmp_path / "empty"
    empty.mkdir()
    pack_release(dataset, empty, "SingingHead", shard_bytes=2_000_000_000)   # an empty folder is fine
    pack_release(dataset, empty, "SingingHead", shard_bytes=2_000_000_000)   # and so is our own release
    (empty / "notes.txt").write_text("added by the user after packing")
    with pytest.raises(PipelineInputError, match="notes.txt"):
        pack_release(dataset, empty, "SingingHead", shard_bytes=2_000_000_000)
    assert (empty / "notes.txt").is_file()
