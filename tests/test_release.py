"""Release tarballs: deterministic bytes, shard sizes, SHA256SUMS, and verify-release catching damage."""

from __future__ import annotations

import shutil
import tarfile

import pytest
from dataset_helpers import make_subject_outputs

from pipeline.cli import main
from tasks.assemble import AssembleDataset
from tasks.dataset.packing import clip_files, pack_release
from tasks.dataset.verify import verify_release
from tasks.layout import Layout


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
