"""The release loader when the files under it fail: a zip gone or unreadable after the dataset was
opened, a damaged compressed member, a read error of the disk; and which video stream it decodes and
what it says without PyAV. Every failure is a PipelineInputError naming the file (never a bare
zlib/OS error). Tiny files written here."""

from __future__ import annotations

import errno
import io
import sys
import zipfile

import av
import numpy as np
import pytest

from tasks.common.errors import PipelineInputError
from tasks.dataset import loader
from tasks.dataset.loader import ReleaseStore, decode_video


def _zip(root, members, compression=zipfile.ZIP_STORED):
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "flame_seqs.zip", "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return root / "flame_seqs.zip"


def _noise(n, seed=0):
    # values 0..49: deflate shrinks them, so damage lands inside a compressed stream
    return np.random.default_rng(seed).integers(0, 50, n).astype(np.uint8).tobytes()


def test_a_zip_gone_after_the_dataset_was_opened_is_named(tmp_path):
    # e.g. the release disk unmounted between building the dataset and the first read
    path = _zip(tmp_path / "rel", {"a.pkl": b"x" * 100})
    store = ReleaseStore(tmp_path / "rel")
    path.unlink()
    with pytest.raises(PipelineInputError) as e:
        store.read("flame_seqs/a.pkl")
    assert e.value.path == str(path) and "is not a readable zip" in e.value.problem


def test_a_damaged_compressed_member_is_named_with_its_zip(tmp_path):
    data = _noise(200_000)
    path = _zip(tmp_path / "rel", {"a.pkl": data}, zipfile.ZIP_DEFLATED)
    blob = bytearray(path.read_bytes())
    blob[1000:1400] = bytes(b ^ 0x5A for b in blob[1000:1400])   # inside a.pkl's deflate stream
    path.write_bytes(bytes(blob))
    with pytest.raises(PipelineInputError) as e:
        ReleaseStore(tmp_path / "rel").read("flame_seqs/a.pkl")
    assert e.value.path == str(path) and "cannot read a.pkl" in e.value.problem


class _FailingDisk(io.FileIO):
    """A file whose reads touching bytes [bad[0], bad[1]) fail as a failing disk's do (EIO)."""

    bad = (0, 0)

    def read(self, n=-1):
        pos = self.tell()
        if pos < self.bad[1] and (n < 0 or pos + n > self.bad[0]):
            raise OSError(errno.EIO, "Input/output error")
        return super().read(n)


def test_a_read_error_inside_a_zip_member_is_named_with_its_zip(tmp_path, monkeypatch):
    path = _zip(tmp_path / "rel", {"a.pkl": _noise(50_000)})
    store = ReleaseStore(tmp_path / "rel")
    # a.pkl's data is bytes 35..50035 (30-byte local header, 5-byte name); the central directory after
    # it reads fine, the member's bytes past its first 1000 do not
    _FailingDisk.bad = (35 + 1000, 35 + 50_000)
    real = zipfile.ZipFile
    monkeypatch.setattr(loader.zipfile, "ZipFile", lambda p: real(_FailingDisk(str(p), "r")))
    with pytest.raises(PipelineInputError) as e:
        store.read("flame_seqs/a.pkl")
    assert e.value.path == str(path) and "cannot read a.pkl" in e.value.problem
    assert "Input/output error" in e.value.problem


# ----------------------------------------------------------------------------- decode_video
def _two_stream_mp4(n=4):
    """An mp4 whose first video stream is 32x32 and second 48x48."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        streams = []
        for size in (32, 48):
            s = c.add_stream("libx264", rate=30)
            s.width = s.height = size
            s.pix_fmt = "yuv420p"
            s.options = {"preset": "ultrafast", "threads": "1"}
            streams.append(s)
        for i in range(n):
            for s in streams:
                img = np.full((s.height, s.width, 3), 20 * i, np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
        for s in streams:
            for p in s.encode():
                c.mux(p)
    return buf.getvalue()


def test_decode_video_reads_the_first_video_stream():
    frames = decode_video(_two_stream_mp4(), "two.mp4")
    assert frames.shape == (4, 32, 32, 3)


def test_decode_video_without_pyav_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)      # `import av` now raises ImportError
    with pytest.raises(ImportError, match=r"with_video=True needs PyAV: pip install av"):
        decode_video(b"", "x.mp4")
