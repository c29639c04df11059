"""tasks.common.names: names from outside are single plain folder names; writes and deletes stay
inside their root."""
from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.common.names import (MAX_NAME_LENGTH, active_write_roots, check_name, check_write_path, remove_inside,
                                resolve_inside, write_roots)
from tasks.common.errors import PipelineInputError


@pytest.mark.parametrize("name", ["alice", "id1", "Song 2", "take_03-final", "a.b", "Zoë",
                                  "x" * MAX_NAME_LENGTH])
def test_plain_names_pass_unchanged(name):
    assert check_name(name, "song") == name


def test_the_length_limit_is_128_characters():
    """The documented limit, as a number (a test through MAX_NAME_LENGTH would follow any change of it)."""
    assert check_name("x" * 128) == "x" * 128
    with pytest.raises(PipelineInputError, match="is 129 characters long \\(at most 128\\)"):
        check_name("x" * 129)


@pytest.mark.parametrize("name, why", [
    ("", "empty"), (".", "'.'"), ("..", "'..'"), ("../bob", "separator"), ("a/b", "separator"),
    ("a\\b", "separator"), ("/etc", "separator"), (".hidden", "dot"), ("a\x00b", "U+0000"),
    ("a\nb", "U+000A"), ("evil\u202egnp", "U+202E"), (" alice", "white space"), ("alice ", "white space"),
    ("C:x", "drive"), ("x" * (MAX_NAME_LENGTH + 1), "at most"), (None, "NoneType"), (3, "int"),
])
def test_bad_names_say_what_is_wrong_and_the_fix(name, why):
    with pytest.raises(PipelineInputError) as err:
        check_name(name, "song")
    msg = str(err.value)
    assert why in msg and "not a valid song name" in msg and "fix:" in msg and "folder" in err.value.fix


def test_name_must_exist_under_root(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert check_name("alice", under=tmp_path) == "alice"
    for name in ("bob", "notes.txt"):
        with pytest.raises(PipelineInputError, match="no subject folder"):
            check_name(name, under=tmp_path)


def test_resolve_inside_follows_links_and_refuses_escapes(tmp_path):
    root, outside = tmp_path / "processed", tmp_path / "elsewhere"
    (root / "alice").mkdir(parents=True)
    outside.mkdir()
    assert resolve_inside(root, root / "alice" / "new.npz") == (root / "alice" / "new.npz").resolve()
    assert resolve_inside(root, "alice/x") == (root / "alice" / "x").resolve()    # relative: under root
    assert resolve_inside(root, root) == root.resolve()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "inner").symlink_to(root / "alice", target_is_directory=True)
    assert resolve_inside(root, root / "inner" / "f") == (root / "alice" / "f").resolve()
    for bad in (root / "link" / "f", root / ".." / "elsewhere", outside / "f", "../elsewhere/f",
                tmp_path / "processed_sibling"):
        with pytest.raises(PipelineInputError, match="outside"):
            resolve_inside(root, bad)


def test_remove_inside_deletes_files_folders_and_links_never_their_targets(tmp_path):
    root, outside = tmp_path / "processed", tmp_path / "elsewhere"
    (root / "alice" / "song1").mkdir(parents=True)
    (root / "alice" / "song1" / "a.npz").write_bytes(b"x")
    (root / "f.json").write_text("{}")
    outside.mkdir()
    (outside / "precious.wav").write_bytes(b"keep")
    (root / "alice" / "song1" / "out").symlink_to(outside, target_is_directory=True)   # link inside a tree
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "filelink").symlink_to(outside / "precious.wav")
    (root / "dangling").symlink_to(tmp_path / "nothing")

    assert remove_inside(root, root / "f.json") and not (root / "f.json").exists()
    assert remove_inside(root, "dirlink") and not os.path.lexists(root / "dirlink")
    assert remove_inside(root, root / "filelink") and not os.path.lexists(root / "filelink")
    assert remove_inside(root, root / "dangling") and not os.path.lexists(root / "dangling")
    assert remove_inside(root, root / "alice") and not (root / "alice").exists()
    assert (outside / "precious.wav").read_bytes() == b"keep"                  # never followed
    assert remove_inside(root, root / "alice") is False                         # nothing left


def test_remove_inside_refuses_outside_paths_and_the_root(tmp_path):
    root, outside = tmp_path / "processed", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (outside / "precious.wav").write_bytes(b"keep")
    (root / "link").symlink_to(outside, target_is_directory=True)
    for bad in (outside / "precious.wav", root / "link" / "precious.wav", root / ".." / "elsewhere",
                "../elsewhere/precious.wav"):
        with pytest.raises(PipelineInputError, match="outside"):
            remove_inside(root, bad)
    (root / "sub").mkdir()
    (root / "sub" / "kept.npz").write_bytes(b"k")
    for bad in (root, root / ".", "", root / "link" / "..", root / "sub" / "..", ".."):
        with pytest.raises(PipelineInputError):
            remove_inside(root, bad)
    assert root.is_dir() and (outside / "precious.wav").read_bytes() == b"keep"
    assert (root / "sub" / "kept.npz").read_bytes() == b"k"  # '..' of a folder inside is the root: kept


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.sampled_from(["a", "b", "..", ".", "c d"]), min_size=1, max_size=6))
def test_resolve_inside_accepts_exactly_the_paths_that_stay_inside(tmp_path_factory, parts):
    """Without links the rule is lexical: posixpath.normpath (an independent reference) decides."""
    root = tmp_path_factory.getbasetemp() / "containment_root"
    rel = "/".join(parts)
    inside = posixpath.normpath(posixpath.join("r", rel)).split("/")[0] == "r"  # 'r' stands for the root
    if inside:
        got = resolve_inside(root, rel)
        assert got == Path(posixpath.normpath(posixpath.join(str(root.resolve()), rel)))
    else:
        with pytest.raises(PipelineInputError, match="outside"):
            resolve_inside(root, rel)


def test_remove_inside_takes_relative_roots_and_each_path_form(tmp_path, monkeypatch):
    """The shipped luigi.cfg gives relative roots (processed_dir = processed): a path relative to the
    root, the same path with the root in front (relative to the working directory) and an absolute
    one all name the same folder, never raw/raw/S001 or ./S001."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "S001").mkdir()                      # a decoy where a wrong join would land
    for given in ("S001", "raw/S001", str(tmp_path / "raw" / "S001")):
        (tmp_path / "raw" / "S001" / "x").mkdir(parents=True)
        assert remove_inside("raw", given) is True, given
        assert not (tmp_path / "raw" / "S001").exists() and (tmp_path / "S001").is_dir(), given
    (tmp_path / "raw" / "S001").mkdir()
    assert remove_inside(tmp_path / "raw", "S001") is True and not (tmp_path / "raw" / "S001").exists()
    assert remove_inside("raw", "S001") is False     # nothing there any more: nothing removed


def test_check_write_path_keeps_writes_inside_their_roots_and_off_links(tmp_path):
    root, elsewhere = tmp_path / "processed", tmp_path / "elsewhere"
    (root / "S001" / "song").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "S001" / "song" / "portrait").symlink_to(elsewhere, target_is_directory=True)
    inside = root / "S001" / "song" / "bgm.wav"
    assert check_write_path(inside, [root]) == inside
    assert check_write_path(root / "S001" / ".." / "S002" / "a.json", [root]) == root / "S002" / "a.json"
    # a second root is looked at too, and a root that is itself a link is fine
    (tmp_path / "disk").mkdir()
    (tmp_path / "release").symlink_to(tmp_path / "disk", target_is_directory=True)
    assert check_write_path(tmp_path / "release" / "SHA256SUMS", [root, tmp_path / "release"]) == \
        tmp_path / "release" / "SHA256SUMS"
    # ... also when the path is given through the folder the root links to
    assert check_write_path(tmp_path / "disk" / "SHA256SUMS", [root, tmp_path / "release"]) == \
        tmp_path / "disk" / "SHA256SUMS"
    with pytest.raises(PipelineInputError, match="symbolic link inside the output folder") as e:
        check_write_path(root / "S001" / "song" / "portrait" / "segments.json", [root])
    assert e.value.path == str(root / "S001" / "song" / "portrait")
    with pytest.raises(PipelineInputError, match="symbolic link"):     # the file itself a link
        (root / "S001" / "link.json").symlink_to(elsewhere / "x.json")
        check_write_path(root / "S001" / "link.json", [root])
    with pytest.raises(PipelineInputError, match=f"outside the output folders {root}, {tmp_path / 'disk'}"):
        check_write_path(elsewhere / "a.json", [root, tmp_path / "disk"])
    with pytest.raises(PipelineInputError, match="outside the output folders"):
        check_write_path(root / ".." / "escape.json", [root])
    # the active roots of a stage apply when none are given; with none active nothing is checked
    assert active_write_roots() == []
    assert check_write_path(elsewhere / "a.json") == elsewhere / "a.json"
    with write_roots(root, None):
        assert active_write_roots() == [root]
        with pytest.raises(PipelineInputError, match="outside the output folders"):
            check_write_path(elsewhere / "a.json")
        assert check_write_path(inside) == inside
    assert active_write_roots() == []
