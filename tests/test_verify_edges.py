"""verify-release on a release folder damaged in ways the other tests leave out: a SHA256SUMS past the
size such a file has, a FIFO among the files, a release_manifest.json past the size any such file has. Each gives the one
problem line that names it (tasks.dataset.verify). The tiny tarballs release comes from
test_verify_release_rules' helpers."""

from __future__ import annotations

import os
import shutil

import pytest
from test_verify_release_rules import _pack, _resum, make_dataset

import tasks.dataset.verify as V
from tasks.dataset.verify import verify_release


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    base = tmp_path_factory.mktemp("rel")
    return _pack(make_dataset(base / "dataset"), base / "tarballs", "tarballs")


@pytest.fixture
def rel(tarballs, tmp_path):
    return shutil.copytree(tarballs, tmp_path / "tarballs")


def test_a_sha256sums_past_the_size_limit_is_named_and_not_read(rel, monkeypatch):
    size = (rel / "SHA256SUMS").stat().st_size
    monkeypatch.setattr(V, "MAX_RELEASE_JSON_BYTES", size - 1)
    assert verify_release(rel) == [f"SHA256SUMS: SHA256SUMS is {size} bytes, more than such a file holds "
                                   f"(at most {size - 1})"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_the_release_folder_is_named_and_never_opened(rel):
    os.mkfifo(rel / "pipe")          # opening it for reading would wait for a writer forever
    assert verify_release(rel) == ["pipe: not a regular file"]


def test_a_release_manifest_past_the_json_size_limit_is_named_and_not_read(rel, monkeypatch):
    size = (rel / "release_manifest.json").stat().st_size
    assert (rel / "SHA256SUMS").stat().st_size < size   # the sums file stays within the lowered limit
    monkeypatch.setattr(V, "MAX_RELEASE_JSON_BYTES", size - 1)
    _resum(rel)
    assert verify_release(rel) == [
        f"release_manifest.json: release_manifest.json is {size} bytes, more than such a file holds "
        f"(at most {size - 1})"]
