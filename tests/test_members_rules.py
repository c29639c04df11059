"""tasks.dataset.members rule by rule: which archive member names and kinds a release may hold. verify-release
and the loader both call it (their own tests go through whole archives: test_verify_release_rules.py,
test_loader_rules.py); here the rule itself, stated as properties: an accepted name stays inside the folder it
is extracted into, whatever its components, and each refusal says its own reason."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.dataset.members import tar_member_problem, unsafe_name

_component = st.sampled_from(["a", "b.npy", "..", ".", "", "c d", "x\\y", "é", "...", "..a", "C:", "\x01"])
_names = st.lists(_component, min_size=1, max_size=5).map("/".join) | st.text(max_size=12)


def _resolves_inside(root: Path, name: str) -> bool:
    """What an extraction of `name` into `root` would write: a path strictly inside `root` (os.path
    semantics, which is what tarfile and zipfile use on this platform)."""
    target = os.path.normpath(os.path.join(root, name))
    return os.path.commonpath([root, target]) == str(root) and target != str(root)


@settings(max_examples=300, deadline=None)
@given(name=_names)
def test_an_accepted_name_is_a_plain_relative_path_inside_its_folder(name):
    """Containment: a name the rule accepts is extracted strictly inside the folder, and normalising it
    changes nothing (no '.', '..' or empty component it could hide behind), and Windows could not read it
    as absolute either (no backslash, no drive letter)."""
    root = Path("/release/root")
    if unsafe_name(name) is None:
        assert _resolves_inside(root, name)
        assert os.path.normpath(name) == name
        assert "\\" not in name and not re.match("[A-Za-z]:", name) and all(ord(c) >= 32 for c in name)


@pytest.mark.parametrize("name, why", [
    ("", "an empty name"),
    ("a/\x00b", "a control character in its name"),
    ("a\nb", "a control character in its name"),
    ("\x1fa", "a control character in its name"),
    ("a\\..\\b", "a backslash in its name"),
    ("/etc/passwd", "an absolute name"),
    ("C:evil", "an absolute name"),
    ("z:/evil", "an absolute name"),
    ("..", "'..' in its name"),
    ("a/../../b", "'..' in its name"),
    ("a/..", "'..' in its name"),
    ("a//b", "an empty or '.' component in its name"),
    ("a/", "an empty or '.' component in its name"),
    ("./a", "an empty or '.' component in its name"),
    ("a/./b", "an empty or '.' component in its name"),
])
def test_each_unsafe_name_is_refused_for_its_own_reason(name, why):
    assert unsafe_name(name) == why


@pytest.mark.parametrize("name", ["a", "train.txt", "flame_seqs/1_1_0_0.pkl", "a b/..c/...", "é/\x7f", "1:2",
                                  "a/b:c", " "])
def test_plain_relative_names_pass(name):
    """Dots inside a component, a colon after the first two characters, DEL (127) and spaces are fine."""
    assert unsafe_name(name) is None


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


@pytest.mark.parametrize("kind, link, why", [
    (tarfile.SYMTYPE, "/etc/passwd", "a symbolic link to '/etc/passwd'"),
    (tarfile.LNKTYPE, "other.npy", "a hard link to 'other.npy'"),
    (tarfile.DIRTYPE, "", "a folder entry"),
    (tarfile.CHRTYPE, "", "a device, fifo or other special file"),
    (tarfile.BLKTYPE, "", "a device, fifo or other special file"),
    (tarfile.FIFOTYPE, "", "a device, fifo or other special file"),
])
def test_only_regular_files_are_members(kind, link, why):
    """Each other kind is refused with its reason and the release rule, and does not join `seen`."""
    seen: set[str] = set()
    got = tar_member_problem(_member("a/b.npy", kind, link), seen)
    assert got == f"{why} (a release holds regular files with relative names only)"
    assert seen == set()


def test_a_sparse_file_written_by_gnu_tar_is_refused(tmp_path):
    """GNU tar's --sparse archives (the hole-skipping format tarfile reads as a regular file with a map)."""
    tar = shutil.which("tar")
    if tar is None or b"GNU tar" not in subprocess.run([tar, "--version"], capture_output=True).stdout:
        pytest.skip("GNU tar is not on this machine")
    with open(tmp_path / "holes.bin", "wb") as f:
        f.seek(1 << 20)
        f.write(b"end")
    subprocess.run([tar, "--sparse", "--format=gnu", "-cf", "s.tar", "holes.bin"], cwd=tmp_path, check=True)
    with tarfile.open(tmp_path / "s.tar") as t:
        (m,) = t.getmembers()
    assert m.isreg() and m.issparse()
    assert tar_member_problem(m, set()) == (
        "a sparse file (a release holds regular files with relative names only)")


def test_a_name_is_accepted_once_and_a_refused_name_is_not_remembered():
    seen: set[str] = set()
    assert tar_member_problem(_member("../x"), seen) == (
        "'..' in its name (a release holds regular files with relative names only)")
    assert seen == set()
    assert tar_member_problem(_member("x"), seen) is None
    assert seen == {"x"}
    assert tar_member_problem(_member("y", tarfile.AREGTYPE), seen) is None    # old-style regular file
    assert tar_member_problem(_member("x"), seen) == "appears twice in the archive"
    assert seen == {"x", "y"}


def test_members_read_back_from_a_real_tar():
    """The TarInfo objects tarfile itself reads (not only hand-made ones) pass through the same rule."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in ("ok.txt", "ok.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            t.addfile(info, io.BytesIO(b"hi"))
        t.addfile(_member("link", tarfile.SYMTYPE, "ok.txt"))
    buf.seek(0)
    seen: set[str] = set()
    with tarfile.open(fileobj=buf) as t:
        got = [tar_member_problem(m, seen) for m in t.getmembers()]
    assert got == [None, "appears twice in the archive",
                   "a symbolic link to 'ok.txt' (a release holds regular files with relative names only)"]
