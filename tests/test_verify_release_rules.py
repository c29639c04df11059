"""verify-release on tiny releases packed here (three clips of 6 frames, 32x32 video) in each format:
a clean one verifies, and each kind of damage gives exactly the problem line that names it (tasks.dataset.
verify). No pipeline run: the dataset folder is written directly, so each test takes a fraction of a second.
The end-to-end releases of a built dataset are in test_release.py."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from dataset_helpers import write_portrait

from tasks.dataset.packing import clip_files, pack_release
from tasks.dataset.verify import verify_release

FRAMES, SR, FPS, N = 6, 16000, 30, 3200  # N: the samples 6 frames at 30 fps span at 16 kHz
IDS = {"train": ["id1_1_0_0", "id1_1_0_1"], "val": [], "test": ["id2_1_0_0"]}
NAME = "SingingHead"


def pkl_bytes(frames=FRAMES, bad=None) -> bytes:
    d = {"shapecode": np.zeros((1, 100), np.float32), "expcodes": np.zeros((frames, 50), np.float32),
         "posecodes": np.zeros((frames, 9), np.float32)}
    if bad is not None:
        d["expcodes"][0, 0] = bad
    return pickle.dumps(d, protocol=3)


def wav_bytes(n=N, sr=SR, subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(np.arange(n) / 5.0)).astype(np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def make_dataset(root: Path) -> Path:
    """An assembled dataset folder as AssembleDataset leaves it, for the clips of IDS."""
    for s, ids in IDS.items():
        (root / f"{s}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{s}.txt").write_text("".join(f"{i}\n" for i in ids))
    for k, cid in enumerate(i for v in IDS.values() for i in v):
        video, pkl, wav, bgm = (root / f for f in clip_files(cid))
        write_portrait(video, FRAMES, size=32, seed=k)
        pkl.parent.mkdir(parents=True, exist_ok=True)
        pkl.write_bytes(pkl_bytes())
        for w in (wav, bgm):
            w.parent.mkdir(parents=True, exist_ok=True)
            w.write_bytes(wav_bytes())
    manifest = {"dataset": {"clip_frames": FRAMES, "sample_rate": SR, "fps": FPS, "audio": "16-bit PCM WAV"},
                "counts": {"clips": 3}, "stand_ins": []}
    (root / "manifest.json").write_text(json.dumps(manifest))
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "kind", "frames", "split"])
        w.writeheader()
        for s, ids in IDS.items():
            for cid in ids:
                w.writerow({"id": cid, "kind": "clip", "frames": FRAMES, "split": s})
    (root / "shapes").mkdir()
    np.save(root / "shapes" / "id1.npy", np.zeros(100, np.float32))
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """{format: release folder} of one tiny dataset; tests copy a release before damaging it."""
    base = tmp_path_factory.mktemp("rel")
    root = make_dataset(base / "dataset")
    return root, {fmt: _pack(root, base / fmt, fmt) for fmt in ("tarballs", "zips", "webdataset")}


def _pack(root, out, fmt, shard_bytes=10**9):
    pack_release(root, out, NAME, shard_bytes=shard_bytes, include_sequences=False, fmt=fmt)
    return out


def test_each_clean_format_verifies_and_counts_its_clips(packed):
    for fmt, rel in packed[1].items():
        stats = {}
        assert verify_release(rel, stats) == [], fmt
        assert stats == {"clips": 3}, fmt


# ----------------------------------------------------------------------------- damage helpers
def _copy(packed, fmt, tmp_path) -> Path:
    return Path(shutil.copytree(packed[1][fmt], tmp_path / fmt))


def _resum(rel: Path) -> None:
    """Rewrite SHA256SUMS over the folder's files as packing does (the damage then shows only where the
    archives or their records are checked)."""
    names = sorted(p.name for p in rel.iterdir() if p.is_file() and p.name != "SHA256SUMS")
    (rel / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((rel / n).read_bytes()).hexdigest()}  {n}\n" for n in names))


def _edit_manifest(rel: Path, edit) -> None:
    m = json.loads((rel / "release_manifest.json").read_text())
    edit(m)
    (rel / "release_manifest.json").write_text(json.dumps(m))
    _resum(rel)


def _tar_contents(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))


def _rewrite_tar(rel: Path, archive: str, edit, record: bool = True) -> None:
    """Replace `archive` by the tar of edit({member: bytes}); with `record`, release_manifest.json records
    the new members (so that only the content rules can object)."""
    members = edit(_tar_contents(rel / archive))
    _write_tar(rel / archive, members)
    if record:
        def fix(m):
            for shard in m["shards"]:
                if shard["file"] == archive:
                    shard["files"] = [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                                      for n, d in members.items()]
        _edit_manifest(rel, fix)
    else:
        _resum(rel)


def _problems(rel) -> list[str]:
    return verify_release(rel)


TAR = "SingingHead-000.tar"


# ----------------------------------------------------------------------------- SHA256SUMS and the folder
def test_sha256sums_missing_or_not_a_regular_file(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    sums = (rel / "SHA256SUMS").read_bytes()
    (rel / "SHA256SUMS").unlink()
    fix = "(a release lists every file in it; re-download it or rebuild the release)"
    assert _problems(rel) == [f"SHA256SUMS: missing in {rel} {fix}"]
    (tmp_path / "elsewhere").write_bytes(sums)
    (rel / "SHA256SUMS").symlink_to(tmp_path / "elsewhere")
    assert _problems(rel) == [f"SHA256SUMS: a link or folder in {rel} {fix}"]
    (rel / "SHA256SUMS").unlink()
    (rel / "SHA256SUMS").symlink_to(tmp_path / "nowhere")  # a dangling link is still a link
    assert _problems(rel) == [f"SHA256SUMS: a link or folder in {rel} {fix}"]
    (rel / "SHA256SUMS").unlink()
    (rel / "SHA256SUMS").mkdir()
    assert _problems(rel) == [f"SHA256SUMS: a link or folder in {rel} {fix}"]


def test_sha256sums_lines_each_rule(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    good = (rel / "SHA256SUMS").read_text().splitlines()
    h = "0" * 64

    def sums(*lines):
        (rel / "SHA256SUMS").write_text("".join(ln + "\n" for ln in lines))
        return _problems(rel)

    # upper-case digits, the binary marker '*' and blank lines are sha256sum's format too
    n = len(good) + 1  # the line added after the good ones
    first_hash, first_name = good[0].split("  ")
    assert sums("", f"{first_hash.upper()} *{first_name}", *good[1:], "   ") == []
    assert sums(*good, "not a sums line") == [
        f"SHA256SUMS line {n}: malformed (want '<64 hex digits>  <file name>', got 'not a sums line')"]
    assert sums(*good, f"{h[:63]}  x") == [
        f"SHA256SUMS line {n}: malformed (want '<64 hex digits>  <file name>', got '{h[:63]}  x')"]
    for name in ("a/b", "a\\b", ".", "..", "SHA256SUMS"):
        assert sums(*good, f"{h}  {name}") == [
            f"SHA256SUMS line {n}: {name!r} is not a file of the release folder"], name
    long = "d/" + "e" * 100
    assert sums(*good, f"{h}  {long}") == [f"SHA256SUMS line {n}: {long[:80]!r} is not a file of the release folder"]
    assert sums(*good, good[1]) == [f"SHA256SUMS line {n}: {good[1].split('  ')[1]} listed twice"]
    # every bad line is reported, and nothing else is checked with sums that cannot be trusted
    assert sums("x" * 100, *good, f"{h}  ..") == [
        f"SHA256SUMS line 1: malformed (want '<64 hex digits>  <file name>', got '{'x' * 80}')",
        f"SHA256SUMS line {n + 1}: '..' is not a file of the release folder"]
    assert sums() == ["SHA256SUMS: empty (it must list every file of the release)"]
    assert sums("", " ") == ["SHA256SUMS: empty (it must list every file of the release)"]
    (rel / "SHA256SUMS").write_bytes(b"\xff\xfe\n")
    assert _problems(rel) == ["SHA256SUMS: unreadable (UnicodeDecodeError)"]


def test_folder_entries_stray_links_folders_missing_and_changed(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    (rel / "notes.txt").write_text("mine")
    (rel / "extra").mkdir()
    (rel / "link.md").symlink_to(rel / "README.md")
    assert _problems(rel) == [
        "extra/: a folder (a release folder holds files only; not in SHA256SUMS)",
        "link.md: a symbolic link (a release holds regular files only)",
        "notes.txt: not listed in SHA256SUMS (a stray file: remove it or re-download the release)"]
    for p in ("notes.txt", "link.md"):
        (rel / p).unlink()
    (rel / "extra").rmdir()
    (rel / "README.md").write_text("changed")
    assert _problems(rel) == ["README.md: checksum mismatch (corrupted or changed)"]
    good = (rel / "SHA256SUMS").read_text()
    for forged in ("0" * 64, "f" * 64):  # a listed hash below or above the real one
        (rel / "SHA256SUMS").write_text("".join(f"{forged}  README.md\n" if ln.endswith("  README.md") else ln + "\n"
                                                for ln in good.splitlines()))
        assert _problems(rel) == ["README.md: checksum mismatch (corrupted or changed)"]
    (rel / "SHA256SUMS").write_text(good)
    (rel / "README.md").unlink()
    assert _problems(rel) == ["README.md: listed in SHA256SUMS but missing"]
    # a listed name that is a link or a folder is reported once, as what it is, not also as missing
    (rel / "README.md").symlink_to(rel / "manifest.json")
    assert _problems(rel) == ["README.md: a symbolic link (a release holds regular files only)"]
    (rel / "README.md").unlink()
    (rel / "README.md").symlink_to(rel / "gone")
    assert _problems(rel) == ["README.md: a symbolic link (a release holds regular files only)"]
    (rel / "README.md").unlink()
    (rel / "README.md").mkdir()
    assert _problems(rel) == ["README.md/: a folder (a release folder holds files only; not in SHA256SUMS)"]


def test_release_fingerprint_is_the_sha256_of_the_sums_file(packed, tmp_path):
    from tasks.dataset.verify import release_fingerprint
    rel = packed[1]["zips"]
    assert release_fingerprint(rel) == hashlib.sha256((rel / "SHA256SUMS").read_bytes()).hexdigest()
    assert release_fingerprint(tmp_path) is None


def test_release_manifest_missing_or_unreadable(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    (rel / "release_manifest.json").write_text("[1, 2]")
    _resum(rel)
    assert _problems(rel) == ["release_manifest.json: unreadable (not a JSON object)"]
    (rel / "release_manifest.json").write_text("{")
    _resum(rel)
    assert _problems(rel) == ["release_manifest.json: unreadable (Expecting property name enclosed in double "
                              "quotes: line 1 column 2 (char 1))"]
    (rel / "release_manifest.json").unlink()
    _resum(rel)
    # without it the members are still read and their contents checked (with manifest.json's parameters)
    assert _problems(rel) == ["release_manifest.json: missing (it records every archive member's checksum)"]
    m = json.loads((rel / "manifest.json").read_text())
    m["dataset"]["clip_frames"] = 7
    (rel / "manifest.json").write_text(json.dumps(m))
    _resum(rel)
    assert len(_problems(rel)) == 1 + 3 * 4  # every clip file of the three clips: 7 frames expected


# ----------------------------------------------------------------------------- archive members
def test_tar_members_stray_changed_missing_and_outside_the_tree(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    _rewrite_tar(rel, TAR, lambda m: {**m, "SingingHead/notes.txt": b"x"}, record=False)
    assert _problems(rel) == [f"{TAR}:SingingHead/notes.txt: not recorded in release_manifest.json "
                              "(a stray member)"]
    rel = _copy(packed, "tarballs", tmp_path / "b")
    _rewrite_tar(rel, TAR, lambda m: {**m, "SingingHead/README.md": b"changed"}, record=False)
    assert _problems(rel) == [f"{TAR}:SingingHead/README.md: checksum mismatch (corrupted or changed)"]
    rel = _copy(packed, "tarballs", tmp_path / "c")
    _rewrite_tar(rel, TAR, lambda m: {k: v for k, v in m.items() if k != "SingingHead/README.md"},
                 record=False)
    assert _problems(rel) == [f"{TAR}:SingingHead/README.md: recorded in release_manifest.json but missing "
                              "from the archive"]
    rel = _copy(packed, "tarballs", tmp_path / "d")
    _rewrite_tar(rel, TAR, lambda m: {**m, "Other/notes.txt": b"x"})
    assert _problems(rel) == [f"{TAR}:Other/notes.txt: outside SingingHead/"]


def test_recorded_size_must_match_and_may_be_left_out(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)

    def size(value):
        def edit(m):
            m["shards"][0]["files"][0]["size"] = value
        return edit
    first = json.loads((rel / "release_manifest.json").read_text())["shards"][0]["files"][0]
    _edit_manifest(rel, size(first["size"] + 1))
    assert _problems(rel) == [f"{TAR}:{first['path']}: checksum mismatch (corrupted or changed)"]
    _edit_manifest(rel, size(None))
    assert _problems(rel) == []
    for forged in ("0" * 64, "f" * 64):  # a recorded hash below or above the real one

        def sha(m, forged=forged):
            m["shards"][0]["files"][0]["sha256"] = forged
        _edit_manifest(rel, sha)
        assert _problems(rel) == [f"{TAR}:{first['path']}: checksum mismatch (corrupted or changed)"]


def test_an_archive_recorded_but_absent_and_a_name_in_two_archives(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    _edit_manifest(rel, lambda m: m["shards"].append({"file": "SingingHead-009.tar", "files": []}))
    assert _problems(rel) == ["SingingHead-009.tar: recorded in release_manifest.json but missing"]
    rel = _copy(packed, "tarballs", tmp_path / "b")
    readme = _tar_contents(rel / TAR)["SingingHead/README.md"]
    _write_tar(rel / "SingingHead-001.tar", {"SingingHead/README.md": readme, "SingingHead/notes.txt": b"n"})
    recs = [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in (("SingingHead/README.md", readme), ("SingingHead/notes.txt", b"n"))]
    _edit_manifest(rel, lambda m: m["shards"].append({"file": "SingingHead-001.tar", "files": recs}))
    assert _problems(rel) == [f"README.md: in both {TAR}:SingingHead/README.md and "
                              "SingingHead-001.tar:SingingHead/README.md"]


def test_a_renamed_release_is_read_under_its_recorded_name(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    _rewrite_tar(rel, TAR, lambda m: {k.replace("SingingHead/", "Other/", 1): v for k, v in m.items()})
    assert len(_problems(rel)) > 10  # every member outside SingingHead/, no split list found
    _edit_manifest(rel, lambda m: m.update(name="Other"))
    assert _problems(rel) == []
    _edit_manifest(rel, lambda m: m.update(name=["Other"]))
    assert _problems(rel)[0] == "release_manifest.json: 'name' is \"['Other']\", not a folder name"
    _edit_manifest(rel, lambda m: m.update(name=["O" * 50]))
    assert _problems(rel)[0] == f"release_manifest.json: 'name' is {str(['O' * 50])[:40]!r}, not a folder name"


def test_declared_sizes_past_the_limits_are_not_read(packed, tmp_path, monkeypatch):
    import tasks.dataset.verify as V
    rel = packed[1]["tarballs"]
    files = {f["path"]: f["size"] for f in json.loads((rel / "release_manifest.json").read_text())
             ["shards"][0]["files"]}
    clip_like = {p for p in files if p.split("/")[1] in ("video_seqs", "flame_seqs", "audio_seqs", "bgm_seqs")
                 or p.split("/")[1] in ("train.txt", "val.txt", "test.txt")}
    # clip files and split lists are held in memory: their limit is the clip file limit
    limit = max(files[p] for p in clip_like) - 1
    monkeypatch.setattr(V, "MAX_CLIP_FILE_BYTES", limit)
    monkeypatch.setattr(V, "MAX_RELEASE_MEMBER_BYTES", 10**9)
    over = [p for p in files if p in clip_like and files[p] > limit]  # in archive order
    got = [p for p in _problems(rel) if "declares" in p]
    assert got == [f"{TAR}:{p}: declares {files[p]} bytes, more than a release file of its kind holds "
                   f"(at most {limit}); not read" for p in over]
    others = set(files) - clip_like
    limit = max(files[p] for p in others) - 1
    monkeypatch.setattr(V, "MAX_CLIP_FILE_BYTES", 10**9)
    monkeypatch.setattr(V, "MAX_RELEASE_MEMBER_BYTES", limit)
    got = [p for p in _problems(rel) if "declares" in p]
    assert got == [f"{TAR}:{p}: declares {files[p]} bytes, more than a release file of its kind holds "
                   f"(at most {limit}); not read" for p in files if p in others and files[p] > limit]
    # exactly at the limit is within it
    monkeypatch.setattr(V, "MAX_RELEASE_MEMBER_BYTES", limit + 1)
    assert not [p for p in _problems(rel) if "declares" in p]


def test_a_release_file_larger_than_the_member_limit_is_hashed_whole(packed, monkeypatch):
    """Bug found by mutation testing: the files of the release folder were hashed through the member reader,
    so a file past MAX_RELEASE_MEMBER_BYTES (a zips release's video_seqs.zip can pass 64 GiB) crashed
    verify-release with an uncaught _TooLarge. Member limits are for members; a listed file is regular."""
    import tasks.dataset.verify as V
    rel = packed[1]["zips"]
    recorded = json.loads((rel / "release_manifest.json").read_text())["shards"]
    largest_member = max(f["size"] for s in recorded for f in s["files"])
    largest_file = max(p.stat().st_size for p in rel.iterdir())
    assert largest_file > largest_member
    monkeypatch.setattr(V, "MAX_RELEASE_MEMBER_BYTES", largest_member)
    assert verify_release(rel) == []


@pytest.mark.parametrize("keep", [True, False])
def test_read_member_hashes_counts_and_stops_past_its_limit(monkeypatch, keep):
    import tasks.dataset.verify as V
    monkeypatch.setattr(V, "_CHUNK", 4)
    monkeypatch.setattr(V, "MAX_CLIP_FILE_BYTES" if keep else "MAX_RELEASE_MEMBER_BYTES", 10)
    data = bytes(range(10))
    sha, kept, n = V._read_member(io.BytesIO(data), 0, keep)
    assert (sha, kept, n) == (hashlib.sha256(data).hexdigest(), data if keep else None, 10)
    with pytest.raises(V._TooLarge, match=r"^holds more than 10 bytes \(at most 10 are read\)$"):
        V._read_member(io.BytesIO(data + b"x"), 0, keep)


def test_a_truncated_tar_is_one_problem_and_its_unread_members_are_missing(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    data = (rel / TAR).read_bytes()
    with tarfile.open(rel / TAR) as t:
        members = t.getmembers()
    broken = members[3]  # README.md, after the three split lists
    (rel / TAR).write_bytes(data[:broken.offset_data + 100])
    _resum(rel)
    got = _problems(rel)
    assert got[0] == f"{TAR}:{broken.name}: unreadable (unexpected end of data)"
    # reading stops there: no second line for the same tar, the members after it are missing
    assert not [p for p in got[1:] if p.startswith(f"{TAR}:") and "unreadable" in p]
    assert not [p for p in got if p.startswith(f"{TAR}: unreadable")]
    assert [p for p in got if "but missing from the archive" in p] == [
        f"{TAR}:{n}: recorded in release_manifest.json but missing from the archive"
        for n in sorted(m.name for m in members[4:])]
    (rel / TAR).write_bytes(b"not a tar" * 100)
    _resum(rel)
    assert _problems(rel)[0].startswith(f"{TAR}: unreadable tar (")


# ----------------------------------------------------------------------------- zips
def _zi(name: str, mode: int = 0o100644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def _rewrite_zip(rel: Path, archive: str, entries: list[tuple[zipfile.ZipInfo, bytes]],
                 encrypt_first: bool = False) -> None:
    with zipfile.ZipFile(rel / archive, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    if encrypt_first:  # zipfile cannot write encrypted members: set the flag in the first central record
        raw = bytearray((rel / archive).read_bytes())
        at = raw.index(b"PK\x01\x02") + 8
        raw[at] |= 0x1
        (rel / archive).write_bytes(bytes(raw))
    _resum(rel)


def _zip_entries(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i, zf.read(i)) for i in zf.infolist()]


def test_zip_member_rules(packed, tmp_path):
    rel = _copy(packed, "zips", tmp_path)
    entries = _zip_entries(rel / "video_seqs.zip")
    first = entries[0][0].filename
    fix = "(a release holds regular files with relative names only)"

    def with_extra(info, data=b"", encrypt=False):  # first: the members after it are still read
        _rewrite_zip(rel, "video_seqs.zip", [(info, data)] + entries, encrypt)
        return _problems(rel)

    assert with_extra(_zi("sub/", 0o40755)) == [f"video_seqs.zip:sub/: a folder entry {fix}"]
    assert with_extra(_zi("link.mp4", 0o120777), b"id1_1_0_0.mp4") == [f"video_seqs.zip:link.mp4: a symbolic link or special file {fix}"]
    # unix mode bits that do not say "regular file" (even a bare o+x) are not taken for one
    assert with_extra(_zi("odd.mp4", 0o001), b"") == [f"video_seqs.zip:odd.mp4: a symbolic link or special file {fix}"]
    assert with_extra(_zi("fifo.mp4", 0o10644), b"") == [f"video_seqs.zip:fifo.mp4: a symbolic link or special file {fix}"]
    assert with_extra(_zi("secret.mp4"), b"x", encrypt=True) == [f"video_seqs.zip:secret.mp4: an encrypted member {fix}"]
    assert with_extra(_zi("../up.mp4"), b"x") == [f"video_seqs.zip:../up.mp4: '..' in its name {fix}"]
    assert with_extra(_zi("/abs.mp4"), b"x") == [f"video_seqs.zip:/abs.mp4: an absolute name {fix}"]
    # a member without unix mode bits (external attributes 0, as DOS tools write) is a regular file
    _rewrite_zip(rel, "video_seqs.zip", entries)
    raw = bytearray((rel / "video_seqs.zip").read_bytes())
    at = raw.index(b"PK\x01\x02") + 38
    raw[at:at + 4] = bytes(4)
    (rel / "video_seqs.zip").write_bytes(bytes(raw))
    _resum(rel)
    with zipfile.ZipFile(rel / "video_seqs.zip") as zf:
        assert zf.infolist()[0].external_attr == 0
    assert _problems(rel) == []
    with pytest.warns(UserWarning, match="Duplicate name"):
        assert with_extra(_zi(first), entries[0][1]) == [
            f"video_seqs.zip:{first}: appears twice in the archive"]
    assert with_extra(_zi("deeper/x.mp4"), b"x") == [
        "video_seqs.zip:deeper/x.mp4: not at the zip's root",
        "video_seqs.zip:deeper/x.mp4: not recorded in release_manifest.json (a stray member)"]
    (rel / "video_seqs.zip").write_bytes(b"PK not really" * 10)
    _resum(rel)
    assert _problems(rel)[0].startswith("video_seqs.zip: unreadable zip (")


@pytest.mark.parametrize("name", ["other.zip", "zz.zip"])  # names sorting before and after the extras zip
def test_a_zip_that_is_no_part_of_the_release(packed, tmp_path, name):
    rel = _copy(packed, "zips", tmp_path)
    _rewrite_zip(rel, name, [(_zi("a.txt"), b"x")])
    assert _problems(rel) == [f"{name}: not a zip of this release",
                              f"{name}:a.txt: not recorded in release_manifest.json (a stray member)"]


# ----------------------------------------------------------------------------- WebDataset shards
def _wds_edit(rel, shard, edit):
    _rewrite_tar(rel, shard, edit)
    return _problems(rel)


def test_webdataset_json_rules(packed, tmp_path):
    rel = _copy(packed, "webdataset", tmp_path)
    key, where = "id1_1_0_0", "train-000000.tar:id1_1_0_0.json"

    def json_is(data: bytes):
        return _wds_edit(rel, "train-000000.tar", lambda m: {**m, f"{key}.json": data})

    assert json_is(json.dumps({"id": key, "frames": FRAMES}).encode()) == []
    assert json_is(json.dumps({"id": key}).encode()) == []  # frames may be left out
    assert json_is(json.dumps({"id": "id9_1_0_0"}).encode()) == [
        f"{where}: its 'id' is 'id9_1_0_0', the key is '{key}'"]
    assert json_is(json.dumps({"id": "id0_1_0_0"}).encode()) == [
        f"{where}: its 'id' is 'id0_1_0_0', the key is '{key}'"]
    assert json_is(b"[1]") == [f"{where}: its 'id' is None, the key is '{key}'"]
    assert json_is(json.dumps({"id": key, "frames": FRAMES + 1}).encode()) == [
        f"{where}: says {FRAMES + 1} frames, a clip has {FRAMES}"]
    assert json_is(b"{") == [f"{where}: unreadable JSON (Expecting property name enclosed in double quotes: "
                             "line 1 column 2 (char 1))"]
    assert json_is(b"\xff").__len__() == 1 and json_is(b"\xff")[0].startswith(f"{where}: unreadable JSON (")
    got = _wds_edit(rel, "train-000000.tar", lambda m: {k: v for k, v in m.items() if k != f"{key}.json"})
    assert got == [f"{key}.json: missing from the WebDataset shards (id {key} in train.txt)"]


def test_webdataset_members_in_the_wrong_split_or_of_no_kind(packed, tmp_path):
    rel = _copy(packed, "webdataset", tmp_path)
    test_members = _tar_contents(rel / "test-000000.tar")
    _rewrite_tar(rel, "test-000000.tar", lambda m: {})
    got = _wds_edit(rel, "train-000000.tar", lambda m: {**m, **test_members})
    assert got == ["id2_1_0_0: in a train shard but listed in test.txt"]
    rel = _copy(packed, "webdataset", tmp_path / "b")
    got = _wds_edit(rel, "train-000000.tar", lambda m: {**m, "id1_1_0_0.txt": b"x"})
    assert got == ["train-000000.tar:id1_1_0_0.txt: not a clip file of a WebDataset shard"]
    rel = _copy(packed, "webdataset", tmp_path / "c")
    got = _wds_edit(rel, "train-000000.tar", lambda m: {**m, "README": b"x"})
    assert got == ["train-000000.tar:README: outside SingingHead/"]
    # a clip's file is checked as the file it stands for
    rel = _copy(packed, "webdataset", tmp_path / "d")
    got = _wds_edit(rel, "train-000000.tar", lambda m: {**m, "id1_1_0_0.pkl": pkl_bytes(FRAMES + 1)})
    assert got == ["train-000000.tar:id1_1_0_0.pkl: pkl shapes {'shapecode': (1, 100), 'expcodes': (7, 50), "
                   "'posecodes': (7, 9)}, expected {'shapecode': (1, 100), 'expcodes': (6, 50), 'posecodes': (6, 9)}"]


def test_logical_paths_of_members():
    from tasks.dataset.verify import _logical
    assert _logical("video_seqs.zip", "a.mp4", NAME) == ("video_seqs/a.mp4", None, None)
    assert _logical("bgm_seqs.zip", "a_bgm.wav", NAME) == ("bgm_seqs/a_bgm.wav", None, None)
    assert _logical("singinghead_extras.zip", "shapes/x.npy", NAME) == ("shapes/x.npy", None, None)
    assert _logical("SingingHead-000.tar", "SingingHead/video_seqs/a.mp4", NAME) == ("video_seqs/a.mp4", None, None)
    assert _logical("X-000.tar", "SingingHeadX/a", NAME)[2] == "X-000.tar:SingingHeadX/a: outside SingingHead/"
    for folder, suffix in (("video_seqs", ".mp4"), ("flame_seqs", ".pkl"), ("audio_seqs", ".vocal.wav"),
                           ("bgm_seqs", ".bgm.wav")):
        want = [f for f in clip_files("k1") if f.startswith(folder)][0]
        assert _logical("val-000003.tar", f"k1{suffix}", NAME) == (want, suffix, None)
    assert _logical("test-000000.tar", "k1.json", NAME) == (None, ".json", None)
    for other in ("k1.abc", "k1.jsonx", "k1.txt", "k1.mp4.json"):
        assert _logical("test-000000.tar", other, NAME) == (
            None, None, f"test-000000.tar:{other}: not a clip file of a WebDataset shard")
    # only a WebDataset shard's name makes its members keyed files
    assert _logical("trains-000000.tar", "k1.mp4", NAME)[2] == "trains-000000.tar:k1.mp4: outside SingingHead/"
    assert _logical("train-000000.tar", "k1", NAME)[2] == "train-000000.tar:k1: outside SingingHead/"
    assert _logical("train-000000.tar", "a/k1.mp4", NAME)[2] == "train-000000.tar:a/k1.mp4: outside SingingHead/"


# ----------------------------------------------------------------------------- release_manifest.json records
def test_recorded_members_of_the_wrong_type_are_problems():
    from tasks.dataset.verify import _recorded_members
    problems: list[str] = []
    assert _recorded_members({"shards": {"a": 1}}, problems) == {}
    assert problems == ["release_manifest.json: 'shards' is a dict, not a list"]
    good = {"path": "p", "sha256": "h", "size": 3}
    problems = []
    shards = [{"file": "a.tar", "files": [good, {**good, "path": "q", "size": None}]},
              "x", {"file": 3, "files": []}, {"file": "b.tar", "files": "x"}, {"file": "c.tar"},
              {"file": "d" * 70 + ".tar", "files": [{**good, "size": True}, {**good, "size": 1.0},
                                                   {**good, "sha256": None}, {"path": 1, "sha256": "h"}, 7,
                                                   {"path": "p" * 70}]}]
    rec = _recorded_members({"shards": shards}, problems)
    assert rec == {"a.tar": {"p": good, "q": {**good, "path": "q", "size": None}}, "c.tar": {},
                   "d" * 70 + ".tar": {}}
    bad = "release_manifest.json: shards[{}] is not {{'file': name, 'files': [...]}}"
    rows = [f"release_manifest.json: shards[5] ({'d' * 60}) records {str(f)[:60]!r}, not {{'path', 'sha256', 'size'}}"
            for f in shards[5]["files"]]
    assert problems == [bad.format(1), bad.format(2), bad.format(3)] + rows
    assert _recorded_members(None, problems := []) == {} and problems == []
    assert _recorded_members({}, problems) == {} and problems == []


# ----------------------------------------------------------------------------- contents
def _seen(splits: dict[str, bytes], clips=(), wds=None):
    from tasks.dataset.verify import Seen
    seen = Seen()
    seen.small = dict(splits)
    for cid in clips:
        for rel in clip_files(cid):
            seen.where[rel] = f"x.tar:S/{rel}"
    for key, (suffixes, split) in (wds or {}).items():
        seen.wds_keys[key] = set(suffixes)
        seen.wds_split[key] = split
    return seen


def _contents(seen) -> list[str]:
    from tasks.dataset.verify import _check_contents
    problems: list[str] = []
    _check_contents(seen, FRAMES, problems, "REL")
    return problems


def test_split_lists_each_rule():
    A, B = "id1_1_0_0", "id1_1_0_1"
    full = {"train.txt": f"{A}\n".encode(), "val.txt": b"", "test.txt": f"{B}\n".encode()}
    seen = _seen(full, [A, B])
    assert _contents(seen) == [] and seen.clips == 2
    assert _contents(_seen({}, [A])) == ["REL: no train.txt/val.txt/test.txt found"]
    assert _contents(_seen({k: v for k, v in full.items() if k != "val.txt"}, [A, B])) == ["val.txt: missing"]
    # the other lists are still read after a missing or undecodable one
    seen = _seen({"train.txt": b"\xff", "val.txt": b"", "test.txt": f"{B}\n".encode()}, [B])
    assert _contents(seen) == ["train.txt: not UTF-8 text"] and seen.clips == 1
    seen = _seen({**full, "train.txt": f"{A} ../x {'y' * 70}! -a {B}\n".encode()}, [A, B])
    assert _contents(seen) == ["train.txt: '../x' is not a plain clip id", f"train.txt: {'y' * 60!r} is not a plain "
                               "clip id", "train.txt: '-a' is not a plain clip id",
                               f"{B}: listed in train.txt and test.txt"]
    assert seen.clips == 2
    seen = _seen({**full, "val.txt": f"{A}\n{A}\n".encode(), "test.txt": f"{B}\n{B}\n".encode()}, [A, B])
    assert _contents(seen) == [f"{A}: listed in train.txt and val.txt", f"{A}: listed in train.txt and val.txt",
                               f"{B}: listed twice in test.txt"]
    assert _contents(_seen({"train.txt": b"", "val.txt": b"\n", "test.txt": b" "})) == [
        "REL: no clips (the split lists are empty): a release without data never verifies; check the capture "
        "and the build's log"]


def test_every_listed_clip_has_its_files_and_every_clip_file_its_clip():
    A, B = "id1_1_0_0", "id1_1_0_1"
    splits = {"train.txt": f"{A}\n{B}\n".encode(), "val.txt": b"", "test.txt": b""}
    seen = _seen(splits, [A])
    assert _contents(seen) == [f"{rel}: missing (id {B} in train.txt)" for rel in clip_files(B)]
    seen = _seen(splits, [A, B])
    seen.where.update({"video_seqs/odd.txt": "x.tar:S/video_seqs/odd.txt", "video_seqs/a/b.mp4": "w1",
                       "bgm_seqs/id3_bgm.wav": "w2", "bgm_seqs/id3.wav": "w3", "shapes/x.npy": "w4",
                       "README.md": "w5"})
    assert _contents(seen) == ["w3: not a clip file name", "w2: clip id3 is in no split list",  # by path
                               "w1: not a clip file name", "x.tar:S/video_seqs/odd.txt: not a clip file name"]


def test_webdataset_keys_need_their_json_and_their_split():
    A, B = "id1_1_0_0", "id1_1_0_1"
    splits = {"train.txt": f"{A}\n".encode(), "val.txt": f"{B}\n".encode(), "test.txt": b""}
    ok = {A: ({".mp4", ".json"}, "train"), B: ({".json"}, "val")}
    assert _contents(_seen(splits, [A, B], ok)) == []
    assert _contents(_seen(splits, [A, B], {**ok, A: ({".mp4"}, "train")})) == [
        f"{A}.json: missing from the WebDataset shards (id {A} in train.txt)"]
    assert _contents(_seen(splits, [A, B], {**ok, B: ({".json"}, "test")})) == [
        f"{B}: in a test shard but listed in val.txt"]


def test_clip_of_names():
    from tasks.dataset.verify import _clip_of
    assert [_clip_of(f) for f in clip_files("id1_2_0_0")] == ["id1_2_0_0"] * 4
    assert _clip_of("bgm_seqs/id1_bgm.wav") == "id1" and _clip_of("audio_seqs/id1_bgm.wav") == "id1_bgm"
    for rel in ("bgm_seqs/id1.wav", "video_seqs/a/b.mp4", "video_seqs/a.wav", "shapes/a.npy", "video_seqs",
                "flame_seqs/.pkl", "x/video_seqs/a.mp4"):
        assert _clip_of(rel) is None, rel


def test_dataset_parameters_from_the_manifest():
    from tasks.dataset.verify import Params, _dataset_params

    def params(ds, raw=None):
        problems: list[str] = []
        p = _dataset_params(raw if raw is not None else json.dumps({"dataset": ds}).encode(), problems)
        return (p.frames, p.sr, p.fps), problems

    assert params({}) == ((240, None, 30.0), []) == ((Params().frames, Params().sr, Params().fps), [])
    assert params({"clip_frames": 8, "sample_rate": 44100, "fps": 25}) == ((8, 44100, 25.0), [])
    got = params({"fps": 24})[0][2]
    assert got == 24.0 and isinstance(got, float)
    assert params({"clip_frames": 10**7, "sample_rate": 10**7, "fps": 10**4}) == ((10**7, 10**7, 10000.0), [])
    assert params({"clip_frames": 1, "sample_rate": 1, "fps": 0.5}) == ((1, 1, 0.5), [])
    assert params({"clip_frames": None, "sample_rate": None, "fps": None}) == ((240, None, 30.0), [])
    for key, bad in (("clip_frames", 0), ("clip_frames", -3), ("clip_frames", 10**7 + 1), ("clip_frames", 6.0),
                     ("clip_frames", True), ("clip_frames", "6"), ("sample_rate", 0), ("sample_rate", -16000), ("sample_rate", 10**7 + 1),
                     ("sample_rate", 16000.0), ("sample_rate", False), ("fps", 0), ("fps", 10**4 + 0.5),
                     ("fps", True), ("fps", "30"), ("fps", -30.0)):
        assert params({key: bad}) == ((240, None, 30.0), [f"manifest: dataset.{key} is {str(bad)!r}, not a positive "
                                                          "number"]), (key, bad)
    assert params({"clip_frames": "x" * 50})[1] == [f"manifest: dataset.clip_frames is {'x' * 40!r}, not a positive "
                                                    "number"]
    for raw in (b"{", b"[1]", b"null", json.dumps({"dataset": [1]}).encode(), b""):
        assert params(None, raw) == ((240, None, 30.0), []), raw
    assert _dataset_params(None).frames == 240
    assert _dataset_params(json.dumps({"dataset": {"fps": 0}}).encode()).fps == 30.0  # no list: no problem kept


# ----------------------------------------------------------------------------- one clip file
def test_clip_file_rules_one_by_one():
    from tasks.dataset.verify import check_clip_file
    sr_fps = (SR, float(FPS))
    assert check_clip_file("flame_seqs/a.pkl", pkl_bytes(), FRAMES, sr_fps) is None
    d = pickle.loads(pkl_bytes())
    del d["posecodes"]
    assert check_clip_file("flame_seqs/a.pkl", pickle.dumps(d, protocol=3), FRAMES, sr_fps) == (
        "pkl shapes {'shapecode': (1, 100), 'expcodes': (6, 50), 'posecodes': None}, expected "
        "{'shapecode': (1, 100), 'expcodes': (6, 50), 'posecodes': (6, 9)}")
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(), FRAMES, sr_fps) is None
    # one sample of slack for rounding, not two
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(N + 1), FRAMES, sr_fps) is None
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(N - 1), FRAMES, sr_fps) is None
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(N + 2), FRAMES, sr_fps) == f"{N + 2} samples, 6 frames need {N}"
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(N - 2), FRAMES, sr_fps) == f"{N - 2} samples, 6 frames need {N}"
    # the rate: the dataset's where the manifest gives one, and the length is counted at the file's own rate
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(1600, 8000), FRAMES, sr_fps) == (
        "sample rate 8000, the dataset's is 16000")
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(9600, 48000), FRAMES, sr_fps) == (
        "sample rate 48000, the dataset's is 16000")
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(1600, 8000), FRAMES, (None, 30.0)) is None
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(N, 8000), FRAMES, (None, 30.0)) == (
        f"{N} samples, 6 frames need 1600")
    assert check_clip_file("audio_seqs/a.wav", wav_bytes(), FRAMES, (SR, 15.0)) == (
        f"{N} samples, 6 frames need {2 * N}")
    flac = io.BytesIO()
    sf.write(flac, np.zeros(N, np.float32), SR, format="FLAC", subtype="PCM_16")
    assert check_clip_file("audio_seqs/a.wav", flac.getvalue(), FRAMES, sr_fps) == (
        "FLAC/PCM_16, expected 16-bit PCM WAV")
    wavex = io.BytesIO()  # a WAV that is not the plain RIFF WAV a loader expects (a name sorting after "WAV")
    sf.write(wavex, np.zeros(N, np.float32), SR, format="WAVEX", subtype="PCM_16")
    assert check_clip_file("audio_seqs/a.wav", wavex.getvalue(), FRAMES, sr_fps) == (
        "WAVEX/PCM_16, expected 16-bit PCM WAV")
    assert check_clip_file("audio_seqs/a.wav", b"RIFF", FRAMES, sr_fps).startswith("unreadable (LibsndfileError: ")
    assert check_clip_file("flame_seqs/a.pkl", b"junk", FRAMES, sr_fps).startswith("unreadable (")
    # files of no clip kind are not read
    assert check_clip_file("video_seqs/a.txt", b"junk", FRAMES, sr_fps) is None


def test_a_video_with_other_frames_is_flagged(tmp_path):
    from tasks.dataset.verify import check_clip_file
    write_portrait(tmp_path / "a.mp4", FRAMES + 1, size=32)
    data = (tmp_path / "a.mp4").read_bytes()
    assert check_clip_file("video_seqs/a.mp4", data, FRAMES + 1, (SR, 30.0)) is None
    assert check_clip_file("video_seqs/a.mp4", data, FRAMES, (SR, 30.0)) == f"{FRAMES + 1} video frames, expected 6"
    assert check_clip_file("video_seqs/a.mp4", data[:100], FRAMES, (SR, 30.0)).startswith("unreadable (")


# ----------------------------------------------------------------------------- extracted trees
def test_an_extracted_release_is_checked_as_a_tree(packed, tmp_path):
    with tarfile.open(packed[1]["tarballs"] / TAR) as t:
        t.extractall(tmp_path / "x", filter="data")
    root = tmp_path / "x" / NAME
    stats = {}
    assert verify_release(tmp_path / "x", stats) == [] and stats == {"clips": 3}  # found in a subfolder
    assert verify_release(root) == []
    (root / "flame_seqs" / "id1_1_0_0.pkl").write_bytes(pkl_bytes(FRAMES + 1))
    (root / "audio_seqs" / "odd.txt").write_text("x")
    (root / "video_seqs" / "0link.mp4").symlink_to(root / "video_seqs" / "id1_1_0_1.mp4")  # sorts first
    (root / "sub").mkdir()
    assert verify_release(root) == [
        "flame_seqs/id1_1_0_0.pkl: pkl shapes {'shapecode': (1, 100), 'expcodes': (7, 50), 'posecodes': (7, 9)}, "
        "expected {'shapecode': (1, 100), 'expcodes': (6, 50), 'posecodes': (6, 9)}",
        "video_seqs/0link.mp4: a symbolic link (a dataset holds regular files only)",
        "audio_seqs/odd.txt: not a clip file name"]
    m = json.loads((root / "manifest.json").read_text())
    m["dataset"]["clip_frames"] = FRAMES + 1
    (root / "manifest.json").write_text(json.dumps(m))
    (root / "video_seqs" / "0link.mp4").unlink()
    (root / "audio_seqs" / "odd.txt").unlink()
    assert len(verify_release(root)) == 3 * 4 - 1  # every clip file but the pkl made for 7 frames
    (root / "manifest.json").unlink()
    assert len(verify_release(root)) == 3 * 4  # the published default: 240 frames


def test_what_is_neither_a_release_nor_a_dataset(tmp_path):
    assert verify_release(tmp_path / "nothing") == [f"{tmp_path / 'nothing'}: not a folder"]
    (tmp_path / "f").write_text("x")
    assert verify_release(tmp_path / "f") == [f"{tmp_path / 'f'}: not a folder"]
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "val.txt").write_text("")
    (tmp_path / "d" / "train.txt").mkdir()
    assert verify_release(tmp_path / "d") == [
        f"SHA256SUMS: missing in {tmp_path / 'd'}: neither a release (SHA256SUMS beside its archives) nor an "
        "extracted dataset (train.txt)"]
    # SHA256SUMS (even a dangling link) makes a release, whatever else is there
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "SHA256SUMS").write_text(f"{'0' * 64}  a.tar\n")
    assert verify_release(tmp_path / "g") == ["a.tar: listed in SHA256SUMS but missing",
                                               "release_manifest.json: missing (it records every archive member's "
                                               "checksum)", f"{tmp_path / 'g'}: no train.txt/val.txt/test.txt found"]
    (tmp_path / "g" / "SHA256SUMS").unlink()
    (tmp_path / "g" / "SHA256SUMS").symlink_to(tmp_path / "nowhere")
    assert verify_release(tmp_path / "g")[0].startswith("SHA256SUMS: a link or folder in ")
    stats = {}
    assert verify_release(tmp_path / "nothing", stats) and stats == {"clips": 0}
    # a linked folder is not searched for the dataset
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "link").symlink_to(tmp_path / "d" / "a")
    (tmp_path / "d" / "a" / "train.txt").write_text("")
    assert verify_release(tmp_path / "h")[0].startswith(f"SHA256SUMS: missing in {tmp_path / 'h'}: neither")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.zip").write_bytes(b"")
    assert verify_release(tmp_path / "e")[0].startswith("SHA256SUMS: missing in ")  # archives make a release


def test_an_unsafe_tar_member_is_skipped_and_the_rest_read(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    members = _tar_contents(rel / TAR)
    with tarfile.open(rel / TAR, "w", format=tarfile.PAX_FORMAT) as t:
        link = tarfile.TarInfo("SingingHead/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    _resum(rel)
    assert _problems(rel) == [f"{TAR}:SingingHead/link: a symbolic link to '/etc/passwd' (a release holds regular "
                              "files with relative names only)"]


def test_a_zip_member_that_fails_its_crc_is_one_problem_and_the_rest_is_read(packed, tmp_path):
    rel = _copy(packed, "zips", tmp_path)
    raw = bytearray((rel / "video_seqs.zip").read_bytes())
    with zipfile.ZipFile(rel / "video_seqs.zip") as zf:
        first = zf.infolist()[0]
    at = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra) + 100
    raw[at] ^= 0xFF  # inside the first member's stored data
    (rel / "video_seqs.zip").write_bytes(bytes(raw))
    _resum(rel)
    assert _problems(rel) == [f"video_seqs.zip:{first.filename}: unreadable (Bad CRC-32 for file "
                              f"'{first.filename}')",
                              f"video_seqs/{first.filename}: missing (id {first.filename[:-4]} in train.txt)"]


def test_a_file_in_a_clip_folder_with_no_clip_name_is_not_read_as_a_clip(packed, tmp_path):
    rel = _copy(packed, "tarballs", tmp_path)
    _rewrite_tar(rel, TAR, lambda m: {**m, "SingingHead/bgm_seqs/odd.wav": b"junk"})
    assert _problems(rel) == [f"{TAR}:SingingHead/bgm_seqs/odd.wav: not a clip file name"]


def test_small_files_past_their_limit_are_a_problem(tmp_path):
    from tasks.dataset.verify import _small
    (tmp_path / "train.txt").write_text("0123456789")
    problems: list[str] = []
    assert _small(tmp_path / "train.txt", problems, 10) == b"0123456789" and problems == []
    assert _small(tmp_path / "train.txt", problems, 9) is None
    assert problems == [f"{tmp_path / 'train.txt'}: train.txt is 10 bytes, more than such a file holds (at most 9)"]
    assert _small(tmp_path / "absent.txt", problems) is None and len(problems) == 1
