"""`SingingHeadDataset`: the released SingingHead clips as a torch Dataset, from any release form.

    from torch.utils.data import DataLoader
    from tasks.dataset.loader import SingingHeadDataset

    ds = SingingHeadDataset("SingingHead", split="train", sample_rate=16000)
    item = ds[0]                       # or ds.by_id("id0_10_0_0")
    item["motion"]                     # (T,59) float32: exp 50 | global 3 | neck 3 | jaw 3
    item["shape"], item["vocal"]       # (100,) FLAME shape; (N,) float32 singing at 16 kHz
    item["bgm"]                        # (N,) float32 background music at 16 kHz
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
    motion = next(iter(loader))["motion"]   # (8,240,59)

    # video: 240 x 1024 x 1024 x 3 = 755 MB per clip at full size; ask for less
    ds = SingingHeadDataset("SingingHead", split="val", with_video=True, video_size=256, frames=(0, 60))
    ds[0]["video"]                     # (60,256,256,3) uint8, resized while decoding

Dependencies: numpy, scipy, soundfile and torch (`requirements-loader.txt`); PyAV only for
`with_video=True`. Nothing else of the pipeline is imported.

`root` may hold, in any mix (each file is looked for in this order):
  (a) the extracted tree: `root/SingingHead/{train,val,test}.txt, video_seqs/<id>.mp4,
      flame_seqs/<id>.pkl, audio_seqs/<id>.wav, bgm_seqs/<id>_bgm.wav` (or `root` is that folder);
  (b) `.tar` shards whose members extract to that tree, read in place at their offsets;
  (c) the official per-modality zips `video_seqs.zip`, `flame_seqs.zip`, `audio_seqs.zip`,
      `bgm_seqs.zip` (files at the zip's root) next to the txt files.
So a folder with the official zips and this pipeline's tarballs reads as one release.
Pickles load through an allow-list (no code runs); `shapes/<subject>.npy` is not needed: the
shape is the pickle's shapecode. Archives are opened lazily per process (DataLoader workers).
"""
from __future__ import annotations

import io
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from tasks.common.bounded import MAX_CLIP_FILE_BYTES, read_bounded
from tasks.common.errors import PipelineInputError
from tasks.common.timebase import frame_sample
from tasks.dataset.flame_pickle import load_flame_pickle, motion59
from tasks.dataset.members import tar_member_problem

SPLITS = ("train", "val", "test")
MODALITIES = ("video_seqs", "flame_seqs", "audio_seqs", "bgm_seqs")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FIX = "re-download or re-extract the release; `singinghead verify-release` names damaged files"


def clip_files(clip_id: str) -> dict[str, str]:
    """Paths inside the release tree of one clip's files, by modality."""
    return {"video_seqs": f"video_seqs/{clip_id}.mp4", "flame_seqs": f"flame_seqs/{clip_id}.pkl",
            "audio_seqs": f"audio_seqs/{clip_id}.wav", "bgm_seqs": f"bgm_seqs/{clip_id}_bgm.wav"}


class ReleaseStore:
    """Read-only access to release files by their path inside `SingingHead/` ('flame_seqs/x.pkl').

    Looks in the extracted tree, then the tar shards, then the official zips under `root`.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise PipelineInputError(self.root, "is not a folder", "give the folder holding the release")
        self.tree = self.root / "SingingHead" if (self.root / "SingingHead").is_dir() else self.root
        self.tar_index: dict[str, tuple[Path, int, int]] = {}
        for shard in sorted(self.root.glob("*.tar")):
            self._index_tar(shard)
        self.zips = {m: self.root / f"{m}.zip" for m in MODALITIES if (self.root / f"{m}.zip").is_file()}
        self._zip_index: dict[str, dict[str, zipfile.ZipInfo]] = {}
        self._open: dict = {}
        self._pid = None

    def _index_tar(self, shard: Path) -> None:
        try:
            with tarfile.open(shard, mode="r:") as tf:     # plain tar only: members are read in place
                seen: set[str] = set()
                for m in tf:
                    why = tar_member_problem(m, seen)     # what verify-release refuses, refused here
                    if why:
                        raise PipelineInputError(shard, f"member {m.name[:200]!r}: {why}", _FIX)
                    name = m.name      # never "./...": tar_member_problem refuses a '.' component
                    if name.startswith("SingingHead/"):
                        name = name[len("SingingHead/"):]
                    self.tar_index.setdefault(name, (shard, m.offset_data, m.size))
        except (tarfile.TarError, OSError) as exc:
            raise PipelineInputError(shard, f"is not a readable uncompressed tar ({exc})", _FIX) from exc

    def _handle(self, key, opener):
        if self._pid != os.getpid():            # forked DataLoader worker: its own handles
            self._open, self._pid = {}, os.getpid()
        if key not in self._open:
            self._open[key] = opener()
        return self._open[key]

    def _zip(self, modality: str) -> zipfile.ZipFile:
        path = self.zips[modality]
        try:
            return self._handle(("zip", modality), lambda: zipfile.ZipFile(path))
        except (zipfile.BadZipFile, OSError) as exc:
            raise PipelineInputError(path, f"is not a readable zip ({exc})", _FIX) from exc

    def _zip_names(self, modality: str) -> dict[str, zipfile.ZipInfo]:
        if modality not in self._zip_index:
            # files sit at the zip's root; tolerate a top folder some zip tools add
            index: dict[str, zipfile.ZipInfo] = {}
            for i in self._zip(modality).infolist():
                if i.is_dir():
                    continue
                name = Path(i.filename).name
                if name in index:
                    raise PipelineInputError(self.zips[modality], f"holds {name!r} twice", _FIX)
                index[name] = i
            self._zip_index[modality] = index
        return self._zip_index[modality]

    def read(self, rel: str) -> tuple[bytes, str]:
        """(bytes, location) of a release file; a clear error when no form of the release has it."""
        p = self.tree / rel
        if p.is_file():
            return read_bounded(p, MAX_CLIP_FILE_BYTES, "a release file", _FIX), str(p)
        if rel in self.tar_index:
            shard, off, size = self.tar_index[rel]
            if size > MAX_CLIP_FILE_BYTES:
                raise PipelineInputError(shard, f"SingingHead/{rel} is {size} bytes, more than a release "
                                         f"file holds (at most {MAX_CLIP_FILE_BYTES})", _FIX)
            f = self._handle(("tar", shard), lambda: open(shard, "rb"))
            f.seek(off)
            data = f.read(size)
            if len(data) != size:
                raise PipelineInputError(shard, f"is truncated inside SingingHead/{rel}", _FIX)
            return data, f"{shard}:SingingHead/{rel}"
        mod, _, name = rel.partition("/")
        if mod in self.zips and name in self._zip_names(mod):
            info = self._zip_names(mod)[name]
            if info.file_size > MAX_CLIP_FILE_BYTES:         # declared size, before inflating anything
                raise PipelineInputError(self.zips[mod], f"{name} inflates to {info.file_size} bytes, more "
                                         f"than a release file holds (at most {MAX_CLIP_FILE_BYTES})", _FIX)
            try:
                with self._zip(mod).open(info) as f:          # zipfile stops at the declared size
                    return f.read(MAX_CLIP_FILE_BYTES + 1), f"{self.zips[mod]}:{name}"
            # CRC errors are BadZipFile; a damaged deflate stream is zlib.error
            except (zipfile.BadZipFile, OSError, zlib.error) as exc:
                raise PipelineInputError(self.zips[mod], f"cannot read {name} ({exc})", _FIX) from exc
        if "/" not in rel and (self.root / rel).is_file():    # txt files next to the zips
            p = self.root / rel
            return read_bounded(p, MAX_CLIP_FILE_BYTES, "a release file", _FIX), str(p)
        raise PipelineInputError(self.tree / rel, "is missing from the release (looked in the extracted "
                                 f"tree, {len(set(v[0] for v in self.tar_index.values()))} tar shard(s) "
                                 f"and the zips {sorted(p.name for p in self.zips.values())})", _FIX)

    def __getstate__(self):                 # picklable for DataLoader workers (spawn)
        state = dict(self.__dict__)
        state["_open"], state["_pid"] = {}, None
        return state


def read_split(store: ReleaseStore, split: str) -> list[str]:
    """Clip ids of `split` ('train' | 'val' | 'test'), each checked to be a plain name."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data, where = store.read(f"{split}.txt")
    ids = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise PipelineInputError(where, f"holds names that are not plain clip ids: {bad[:3]}", _FIX)
    if len(set(ids)) != len(ids):
        raise PipelineInputError(where, "lists a clip id twice", _FIX)
    return ids


def decode_audio(data: bytes, where: str, sample_rate: int | None) -> np.ndarray:
    """WAV bytes -> mono float32 (N,) at `sample_rate` (None: the file's own rate).

    Channels are averaged; resampling is polyphase (scipy resample_poly, Kaiser window).
    """
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise PipelineInputError(where, f"cannot read audio ({exc})", _FIX) from exc
    x = x.mean(axis=1)
    if sample_rate and sr != sample_rate:
        g = gcd(int(sample_rate), int(sr))
        x = resample_poly(x, int(sample_rate) // g, int(sr) // g).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def video_shape(size) -> tuple[int, int] | None:
    """`video_size` -> (height, width): an int is a square side, a pair is (height, width)."""
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 2 or int(w) < 2:
        raise ValueError(f"video_size must be at least 2 px, got {size!r}")
    return int(h), int(w)


def decode_video(data: bytes, where: str, size=None, start: int = 0, stop: int | None = None) -> np.ndarray:
    """MP4 bytes -> frames [start, stop) as (T,H,W,3) uint8 RGB in presentation order (PyAV).

    size: None (the file's size), an int side or (height, width): each frame is scaled while it is
    converted to RGB (swscale, area averaging), so a full-size frame is never held as RGB. Decoding
    stops after `stop`. Frames are counted in presentation order from 0.
    """
    # PyAV is needed for video only: a dataset user reading motion and audio does not install it.
    try:
        import av
    except ImportError as exc:
        raise ImportError("with_video=True needs PyAV: pip install av") from exc
    hw = video_shape(size)
    kw = {} if hw is None else {"height": hw[0], "width": hw[1], "interpolation": "AREA"}
    frames = []
    try:
        with av.open(io.BytesIO(data)) as c:
            for t, f in enumerate(c.decode(video=0)):
                if stop is not None and t >= stop:
                    break
                if t >= start:
                    frames.append(f.to_ndarray(format="rgb24", **kw))
    except (av.error.FFmpegError, IndexError) as exc:
        raise PipelineInputError(where, f"cannot decode video ({exc})", _FIX) from exc
    if not frames:
        raise PipelineInputError(where, "holds no video frames" + (f" from frame {start}" if start else ""),
                                 _FIX)
    return np.stack(frames)


class SingingHeadDataset(torch.utils.data.Dataset):
    """Clips of one split of a SingingHead release (any form; see the module docstring).

    Item: {'id': str, 'motion': (T,59) float32 exp50|global3|neck3|jaw3, 'shape': (100,) float32,
    'vocal': (N,) float32, 'bgm': (N,) float32 at `sample_rate` (None keeps the file's rate),
    'video': (T,H,W,3) uint8 only with with_video=True}.

    video_size: None (the release's 1024x1024), an int side or (height, width), applied while
    decoding. frames: (start, stop) frame range of every clip (stop exclusive, None: to the end);
    motion, video and both audio tracks are cut to the same span, audio samples
    [round(start*sr/fps), round(stop*sr/fps)) at `fps` (the release's 30; halves up, as the clips were cut). An empty split warns
    (UserWarning) and gives a dataset of length 0.
    """

    def __init__(self, root: str | Path, split: str = "train", sample_rate: int | None = 16000,
                 with_video: bool = False, video_size=None, frames: tuple[int, int | None] | None = None,
                 fps: float = 30.0):
        self.store = ReleaseStore(root)
        self.split = split
        self.ids = read_split(self.store, split)
        self.sample_rate = sample_rate
        self.with_video = with_video
        self.video_size = video_shape(video_size)
        self.frames = _frame_range(frames)
        self.fps = float(fps)
        self._pos = {cid: i for i, cid in enumerate(self.ids)}
        if not self.ids:
            warnings.warn(f"the {split} split of {self.store.root} lists no clips ({split}.txt is empty): "
                          "this dataset has length 0", UserWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, clip_id: str) -> int:
        if clip_id not in self._pos:
            raise KeyError(f"clip id {clip_id!r} is not in the {self.split} split of {self.store.root} "
                           f"({len(self.ids)} clips, e.g. {self.ids[:3]})")
        return self._pos[clip_id]

    def by_id(self, clip_id: str) -> dict:
        return self[self.index_of(clip_id)]

    def flame(self, clip_id: str) -> dict:
        """The clip's flame_seqs dict (shapecode (1,100), expcodes (T,50), posecodes (T,9))."""
        data, where = self.store.read(clip_files(clip_id)["flame_seqs"])
        return load_flame_pickle(data, name=where)

    def audio(self, clip_id: str, which: str = "audio_seqs", sample_rate: int | None = -1) -> np.ndarray:
        data, where = self.store.read(clip_files(clip_id)[which])
        return decode_audio(data, where, self.sample_rate if sample_rate == -1 else sample_rate)

    def _audio_span(self, clip_id: str, which: str, start: int, stop: int) -> np.ndarray:
        """The clip's audio track, samples [round(start*sr/fps), round(stop*sr/fps)) with frames set."""
        data, where = self.store.read(clip_files(clip_id)[which])
        x = decode_audio(data, where, self.sample_rate)
        if self.frames is None:
            return x
        sr = self.sample_rate or sf.info(io.BytesIO(data)).samplerate
        return x[frame_sample(start, sr, self.fps):frame_sample(stop, sr, self.fps)]

    def __getitem__(self, i: int) -> dict:
        cid = self.ids[i]
        d = self.flame(cid)
        motion = motion59(d)
        start, stop = 0, len(motion)
        if self.frames is not None:
            start, stop = self.frames[0], len(motion) if self.frames[1] is None else self.frames[1]
            if stop > len(motion) or start >= stop:
                raise IndexError(f"frames {self.frames} is outside clip {cid} ({len(motion)} frames)")
            motion = motion[start:stop].copy()
        files = clip_files(cid)
        item = {"id": cid, "motion": motion, "shape": d["shapecode"].reshape(100).copy(),
                "vocal": self._audio_span(cid, "audio_seqs", start, stop),
                "bgm": self._audio_span(cid, "bgm_seqs", start, stop)}
        if self.with_video:
            data, where = self.store.read(files["video_seqs"])
            item["video"] = decode_video(data, where, self.video_size, start, stop)
            if len(item["video"]) != len(item["motion"]):
                raise PipelineInputError(where, f"has {len(item['video']) + start} frames from {start} on, "
                                         f"its flame_seqs pickle {len(motion) + start}", _FIX)
        return item


def _frame_range(frames) -> tuple[int, int | None] | None:
    """(start, stop) checked: 0 <= start < stop (stop None: to the clip's end)."""
    if frames is None:
        return None
    start, stop = frames
    start = int(start)
    if start < 0 or (stop is not None and int(stop) <= start):
        raise ValueError(f"frames must be (start, stop) with 0 <= start < stop, got {frames!r}")
    return start, None if stop is None else int(stop)
