"""tasks.dataset.packing rule by rule, without a pipeline run: the bytes each archive member takes (against
tarfile's own offsets), the deterministic member attributes of tars and zips, what a clip's WebDataset json
holds, what goes into the extras, the release manifest's fields, and which folders packing may replace
(check_release_folder_is_ours). The shard rule is in test_packing_shards.py, whole releases in
test_release.py and test_verify_release_rules.py."""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import os
import tarfile
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_verify_release_rules import IDS, NAME, make_dataset

from tasks.common.errors import PipelineInputError
from tasks.dataset import packing as P

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_/é", min_size=1, max_size=300).filter(
    lambda s: not s.startswith("/") and "//" not in s)


def _tar(members: list[P.Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding=P.TAR_ENCODING) as t:
        for m in members:
            with m.open() as f:
                t.addfile(P.tarinfo(m.name, m.size), f)
    return buf.getvalue()


@settings(max_examples=40, deadline=None)
@given(spec=st.lists(st.tuples(_names, st.integers(0, 5000)), min_size=1, max_size=4))
def test_member_sizes_are_the_bytes_tarfile_writes(spec):
    """tar_member_size is where the next member starts, tar_file_size the length of the whole file."""
    members = [P.Member(f"{k}/{name}", data=b"x" * size) for k, (name, size) in enumerate(spec)]
    data = _tar(members)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        infos = t.getmembers()
    starts = [i.offset for i in infos]
    sizes = [P.tar_member_size(m.size, m.name) for m in members]
    assert starts == [sum(sizes[:k]) for k in range(len(members))]
    assert len(data) == P.tar_file_size(sum(sizes))


def test_tar_file_size_is_the_end_blocks_rounded_to_records():
    # two 512-byte end blocks, then whole 10,240-byte records (tarfile.RECORDSIZE, 20 blocks)
    assert P.tar_file_size(0) == 10240
    assert P.tar_file_size(512 * 18) == 10240
    assert P.tar_file_size(512 * 19) == 20480
    assert P.tar_file_size(512 * 38) == 20480
    assert P.tar_file_size(512 * 39) == 30720
    assert P.tar_member_size(0, "a") == 512 and P.tar_member_size(1, "a") == 1024
    assert P.tar_member_size(512, "a") == 1024 and P.tar_member_size(513, "a") == 1536


def test_tar_members_are_regular_rw_r__r__files_of_2020_owned_by_nobody(tmp_path):
    path = tmp_path / "a.tar"
    recs = P.write_tar(path, [P.Member("x/é.bin", data=b"abc"), P.Member("y" * 120, data=b"")])
    assert recs == [{"path": "x/é.bin", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
                    {"path": "y" * 120, "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}]
    with tarfile.open(path) as t:
        infos = t.getmembers()
        assert t.extractfile(infos[0]).read() == b"abc"
    for i in infos:
        assert (i.mode, i.mtime, i.uid, i.gid, i.uname, i.gname, i.type) == (
            0o644, calendar.timegm((2020, 1, 1, 0, 0, 0)), 0, 0, "", "", tarfile.REGTYPE)
        assert "mtime" not in i.pax_headers and "atime" not in i.pax_headers
    assert [i.name for i in infos] == ["x/é.bin", "y" * 120]
    # the names are UTF-8 whatever the locale, and the bytes the same on every run
    assert "x/é.bin".encode() in path.read_bytes()
    P.write_tar(tmp_path / "b.tar", [P.Member("x/é.bin", data=b"abc"), P.Member("y" * 120, data=b"")])
    assert (tmp_path / "b.tar").read_bytes() == path.read_bytes()


def test_zip_members_are_stored_unix_regular_files_of_2020(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3000))
    recs = P.write_zip(tmp_path / "a.zip", [P.Member("f.bin", src), P.Member("g.txt", data=b"hello")])
    assert recs == [{"path": "f.bin", "size": 3000, "sha256": hashlib.sha256(src.read_bytes()).hexdigest()},
                    {"path": "g.txt", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}]
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.read("f.bin") == src.read_bytes() and zf.read("g.txt") == b"hello"
        for i in zf.infolist():
            assert i.compress_type == zipfile.ZIP_STORED and i.compress_size == i.file_size
            assert i.date_time == (2020, 1, 1, 0, 0, 0)
            assert i.create_system == 3  # unix: the mode bits below are read as such
            assert i.external_attr >> 16 == 0o100644
            assert i.extra == b""  # no zip64 record for small members
    raw = (tmp_path / "a.zip").read_bytes()
    # a stored zip without extra fields has exactly this size: local headers, data, central records, end
    names = [b"f.bin", b"g.txt"]
    assert len(raw) == sum(30 + len(n) for n in names) + 3005 + sum(46 + len(n) for n in names) + 22
    assert raw[28:30] == b"\0\0"  # the first local header's extra length: no zip64 field forced
    P.write_zip(tmp_path / "b.zip", [P.Member("f.bin", src), P.Member("g.txt", data=b"hello")])
    assert (tmp_path / "b.zip").read_bytes() == (tmp_path / "a.zip").read_bytes()


def test_a_zip_of_more_members_than_the_classic_format_counts_is_written_as_zip64(tmp_path, monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)  # 65,535 otherwise: too many to write in a test
    P.write_zip(tmp_path / "a.zip", [P.Member(f"m{k}", data=b"x") for k in range(3)])
    monkeypatch.undo()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == ["m0", "m1", "m2"] and zf.testzip() is None


def test_shards_filled_to_the_last_byte_are_kept_whole():
    """A shard whose tar comes out at exactly shard_bytes is not split, first shard or later."""
    def unit(name, data_bytes):  # one member: a 512-byte header and whole data blocks
        return [P.Member(name, data=b"u" * data_bytes)]
    a, b = unit("a", 4096), unit("b", 4096)  # 2 x (512 + 4096) + 1024 end blocks = 10,240: one record
    assert P.tar_file_size(sum(P.tar_member_size(m.size, m.name) for m in a + b)) == 10240
    assert P.plan_shards([a, b], 10240) == [a + b]
    big = unit("big", 20000)
    assert P.plan_shards([big, a, b], 10240) == [big, a + b]
    assert P.plan_shards([big, a, b], 10239) == [big, a, b]


def test_members_cannot_change_once_made():
    m = P.Member("a", data=b"x")
    with pytest.raises(AttributeError):
        m.name = "b"  # a planned shard's sizes hold only while its members stay what they were


def test_member_size_and_bytes_from_a_file_or_from_memory(tmp_path):
    (tmp_path / "f").write_bytes(b"12345")
    a, b = P.Member("a", tmp_path / "f"), P.Member("b", data=b"xy")
    assert (a.size, b.size) == (5, 2)
    with a.open() as f, b.open() as g:
        assert (f.read(), g.read()) == (b"12345", b"xy")
    assert P.Member("c", tmp_path / "missing", data=b"").size == 0  # bytes made here win over a path


def test_clip_json_types_the_numbers_and_adds_the_rates():
    row = {"id": "id1_2_0_3", "kind": "clip", "video_method": "copy", "subject": "S001", "subject_number": "1",
           "song_number": "2", "segment": "0", "source_segment": "4", "clip": "3", "frames": "240",
           "seq_start_frame": "720", "start_frame": "-5", "end_frame": "", "genre": "rock", "split": "train"}
    got = json.loads(P.clip_json(row, 30.0, 16000))
    assert got == {"id": "id1_2_0_3", "subject": "S001", "subject_number": 1, "song_number": 2, "segment": 0,
                   "source_segment": 4, "clip": 3, "frames": 240, "seq_start_frame": 720, "start_frame": -5,
                   "end_frame": "", "genre": "rock", "split": "train", "fps": 30.0, "sample_rate": 16000}
    assert json.loads(P.clip_json({"id": "a", "genre": "7"}, 25, 8000)) == {
        "id": "a", "genre": "7", "fps": 25, "sample_rate": 8000}  # only the numeric columns become numbers


def test_read_ids_and_clip_files(tmp_path):
    (tmp_path / "train.txt").write_text("a b\nc\n")
    (tmp_path / "test.txt").write_text("")
    assert P.read_ids(tmp_path) == {"train": ["a", "b", "c"], "test": []}
    assert P.clip_files("k") == ["video_seqs/k.mp4", "flame_seqs/k.pkl", "audio_seqs/k.wav", "bgm_seqs/k_bgm.wav"]


def test_extras_are_the_card_the_listed_files_shapes_and_one_unit_per_sequence(tmp_path):
    root = tmp_path
    (root / "metadata.csv").write_text("id\n")
    (root / "shapes").mkdir()
    for s in ("b", "a"):
        np.save(root / "shapes" / f"{s}.npy", np.zeros(2))
    (root / "shapes" / "notes.txt").write_text("x")
    for seq, files in (("s2", ["v.mp4"]), ("s1", ["b.wav", "a.npz"])):
        (root / "sequences" / seq).mkdir(parents=True)
        for f in files:
            (root / "sequences" / seq / f).write_bytes(b"1")
    (root / "sequences" / "s1" / "sub").mkdir()
    (root / "sequences" / "loose.txt").write_text("x")
    meta, seqs = P.extras_units(root, b"card", True)
    assert [(m.name, m.path, m.data) for m in meta] == [
        ("README.md", None, b"card"), ("metadata.csv", root / "metadata.csv", None),
        ("shapes/a.npy", root / "shapes" / "a.npy", None), ("shapes/b.npy", root / "shapes" / "b.npy", None)]
    assert [[m.name for m in u] for u in seqs] == [["sequences/s1/a.npz", "sequences/s1/b.wav"],
                                                   ["sequences/s2/v.mp4"]]
    assert P.extras_units(root, b"card", False)[1] == []
    (root / "manifest.json").write_text("{}")
    assert [m.name for m in P.extras_units(root, b"c", True)[0]][:3] == ["README.md", "metadata.csv",
                                                                         "manifest.json"]


def test_pack_release_refuses_an_unknown_format_and_an_unassembled_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"^\[release\] format must be one of \('tarballs', 'zips', "
                                         r"'webdataset'\), got 'tar'$"):
        P.pack_release(tmp_path, tmp_path / "out", NAME, 10**9, fmt="tar")
    with pytest.raises(FileNotFoundError, match="manifest.json: the dataset is not assembled"):
        P.pack_release(tmp_path, tmp_path / "out", NAME, 10**9)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("ds") / "dataset")
    (root / "sequences" / "id1_1_0").mkdir(parents=True)
    (root / "sequences" / "id1_1_0" / "motion.npz").write_bytes(b"m" * 5000)
    return root


class _Task:
    def __init__(self):
        self.messages = []

    def set_status_message(self, m):
        self.messages.append(m)


@pytest.mark.parametrize("fmt", P.FORMATS)
def test_the_release_manifest_and_sums_record_every_file(dataset, tmp_path, fmt):
    out, task = tmp_path / "out", _Task()
    rel = P.pack_release(dataset, out, "Rel", 10**9, include_sequences=True, task=task, fmt=fmt)
    assert json.loads((out / "release_manifest.json").read_text()) == rel
    assert rel["name"] == "Rel" and rel["format"] == fmt and rel["shard_bytes"] == 10**9
    assert rel["compression"] == "none" and rel["ids"] == IDS
    assert rel["dataset"] == {"fps": 30, "clip_frames": 6, "sample_rate": 16000, "audio": "16-bit PCM WAV"}
    top = ["README.md", "manifest.json"] + ([] if fmt == "tarballs" else ["test.txt", "train.txt", "val.txt"])
    assert rel["top_level"] == [{"path": f, "size": (out / f).stat().st_size,
                                 "sha256": hashlib.sha256((out / f).read_bytes()).hexdigest()} for f in sorted(top)]
    assert (out / "manifest.json").read_bytes() == (dataset / "manifest.json").read_bytes()
    for a in rel["shards"]:
        assert a["sha256"] == hashlib.sha256((out / a["file"]).read_bytes()).hexdigest()
        assert a["bytes"] == (out / a["file"]).stat().st_size
    names = sorted(p.name for p in out.iterdir() if p.name != "SHA256SUMS")
    assert names == sorted(top + ["release_manifest.json"] + [a["file"] for a in rel["shards"]])
    assert (out / "SHA256SUMS").read_text() == "".join(
        f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    assert task.messages == [f"packed {a['file']}" for a in rel["shards"][:len(task.messages)]]
    assert len(task.messages) == len(rel["shards"]) - (fmt == "zips")  # the extras zip is not announced
    parts = [a["part"] for a in rel["shards"]]
    want = {"tarballs": ["clips", "sequences"], "zips": list(P.CLIP_FOLDERS) + ["extras"],
            "webdataset": ["train", "test", "extras"]}[fmt]
    assert parts == want
    # the sequences are packed where asked, and only then
    every = {f["path"] for a in rel["shards"] for f in a["files"]}
    assert any("sequences/id1_1_0/motion.npz" in p for p in every)
    out2 = tmp_path / "out2"
    rel2 = P.pack_release(dataset, out2, "Rel", 10**9, include_sequences=False, fmt=fmt)
    assert not any("sequences/" in f["path"] for a in rel2["shards"] for f in a["files"])


def test_tarballs_shard_names_and_the_tree_inside(dataset, tmp_path):
    rel = P.pack_release(dataset, tmp_path / "o", "Rel", 1, fmt="tarballs")  # every unit its own shard
    files = [a["file"] for a in rel["shards"]]
    assert files == [f"Rel-{k:03d}.tar" for k in range(4)] + ["Rel-sequences-000.tar"]
    with tarfile.open(tmp_path / "o" / "Rel-000.tar") as t:
        assert t.getnames() == ["Rel/train.txt", "Rel/val.txt", "Rel/test.txt", "Rel/README.md",
                                "Rel/metadata.csv", "Rel/manifest.json", "Rel/shapes/id1.npy"]
    with tarfile.open(tmp_path / "o" / "Rel-001.tar") as t:
        assert t.getnames() == [f"Rel/{f}" for f in P.clip_files("id1_1_0_0")]
    wds = P.pack_release(dataset, tmp_path / "w", "Rel", 1, fmt="webdataset")
    assert [a["file"] for a in wds["shards"]] == ["train-000000.tar", "train-000001.tar", "test-000000.tar",
                                                  "Rel-extras-000.tar", "Rel-extras-001.tar"]
    with tarfile.open(tmp_path / "w" / "train-000001.tar") as t:
        assert t.getnames() == sorted(f"id1_1_0_1{s}" for s in (".mp4", ".pkl", ".vocal.wav", ".bgm.wav", ".json"))
        meta = json.loads(t.extractfile("id1_1_0_1.json").read())
    assert meta == {"id": "id1_1_0_1", "frames": 6, "split": "train", "fps": 30, "sample_rate": 16000}
    zips = P.pack_release(dataset, tmp_path / "z", "Rel", 1, fmt="zips")
    with zipfile.ZipFile(tmp_path / "z" / "bgm_seqs.zip") as zf:
        assert zf.namelist() == ["id1_1_0_0_bgm.wav", "id1_1_0_1_bgm.wav", "id2_1_0_0_bgm.wav"]
    with zipfile.ZipFile(tmp_path / "z" / "singinghead_extras.zip") as zf:
        assert zf.namelist() == ["README.md", "manifest.json", "metadata.csv", "sequences/id1_1_0/motion.npz",
                                 "shapes/id1.npy"]
    assert zips["shards"][-1]["file"] == "singinghead_extras.zip"


# ----------------------------------------------------------------------------- whose folder is it
def _sums(*names: str) -> str:
    return "".join(f"{'0' * 64}  {n}\n" for n in names)


def test_a_folder_listed_by_its_sums_or_its_release_manifest_is_ours(tmp_path):
    out = tmp_path / "rel"
    P.check_release_folder_is_ours(out)  # absent
    out.mkdir()
    P.check_release_folder_is_ours(out)  # empty
    for f in ("a.tar", "my  notes.md", "release_manifest.json"):
        (out / f).write_text("x")
    (out / "SHA256SUMS").write_text(_sums("a.tar", "my  notes.md", "release_manifest.json"))
    P.check_release_folder_is_ours(out)  # a name with two spaces is one name
    # SHA256SUMS lists part of it and release_manifest.json the rest (its archives and top-level files)
    (out / "SHA256SUMS").write_text(_sums("release_manifest.json"))
    (out / "release_manifest.json").write_text(json.dumps(
        {"shards": [{"file": "a.tar"}], "top_level": [{"path": "my  notes.md"}]}))
    P.check_release_folder_is_ours(out)
    (out / "SHA256SUMS").unlink()  # a rerun deletes it first
    P.check_release_folder_is_ours(out)


@pytest.mark.parametrize("manifest", [
    "{", "[1]", json.dumps({"shards": [{"name": "a.tar"}]}), json.dumps({"shards": ["a.tar"]}),
    json.dumps({"shards": [], "top_level": "x"}), "[" * 100_000 + "]" * 100_000, b"\xff{"])
def test_a_release_manifest_that_cannot_be_read_proves_nothing(tmp_path, manifest):
    """Not JSON, not an object, entries without their keys, a nesting deep enough to exhaust the parser's
    recursion (it crashed packing with a RecursionError): the folder is refused, it is not proved ours."""
    out = tmp_path / "rel"
    out.mkdir()
    (out / "a.tar").write_text("x")
    (out / "release_manifest.json").write_bytes(manifest if isinstance(manifest, bytes) else manifest.encode())
    with pytest.raises(PipelineInputError, match=r"release_dir holds files the pipeline did not write "
                                                 r"\(a.tar, release_manifest.json\)"):
        P.check_release_folder_is_ours(out)


def test_what_is_not_ours_is_named_five_at_most(tmp_path):
    out = tmp_path / "rel"
    out.mkdir()

    def refused(n):
        for k in range(n):
            (out / f"f{k}").write_text("x")
        with pytest.raises(PipelineInputError) as e:
            P.check_release_folder_is_ours(out)
        for k in range(n):
            (out / f"f{k}").unlink()
        return e.value.problem

    base = "release_dir holds files the pipeline did not write"
    assert refused(1) == f"{base} (f0)"
    assert refused(5) == f"{base} (f0, f1, f2, f3, f4)"
    assert refused(6) == f"{base} (f0, f1, f2, f3, f4 and 1 more)"
    assert refused(8) == f"{base} (f0, f1, f2, f3, f4 and 3 more)"
    # nothing foreign but no manifest either: not a release the pipeline wrote
    (out / "SHA256SUMS").write_text(_sums("a.tar"))
    (out / "a.tar").write_text("x")
    with pytest.raises(PipelineInputError, match=r"did not write \(no release_manifest.json\)"):
        P.check_release_folder_is_ours(out)


def test_a_link_or_a_file_is_no_release_folder_and_links_inside_prove_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    for p in ("f", "link"):
        with pytest.raises(PipelineInputError, match="release_dir is not a plain folder"):
            P.check_release_folder_is_ours(tmp_path / p)
    out = tmp_path / "rel"
    out.mkdir()
    (out / "a.tar").write_text("x")
    (tmp_path / "sums").write_text(_sums("a.tar", "release_manifest.json"))
    (out / "SHA256SUMS").symlink_to(tmp_path / "sums")  # a link to sums elsewhere does not make it ours
    with pytest.raises(PipelineInputError, match=r"\(a.tar\)"):
        P.check_release_folder_is_ours(out)


def test_own_files_are_read_up_to_64_mib(tmp_path):
    out = tmp_path / "rel"
    out.mkdir()
    (out / "a.tar").write_text("x")
    head = _sums("a.tar", "release_manifest.json").encode()
    with open(out / "SHA256SUMS", "wb") as f:  # sparse: the rest is zero bytes
        f.write(head)
        f.truncate(64 << 20)
    P.check_release_folder_is_ours(out)
    with open(out / "SHA256SUMS", "r+b") as f:
        f.truncate((64 << 20) + 1)
    with pytest.raises(PipelineInputError, match=r"\(a.tar\)"):
        P.check_release_folder_is_ours(out)
