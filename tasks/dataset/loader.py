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
import zipfile
from math import gcd
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from tasks.common.bounded import MAX_CLIP_FILE_BYTES, read_bounded
from tasks.common.errors import PipelineInputError
from tasks.dataset.flame_pickle import load_flame_pickle, motion59
from tasks.dataset.verify import tar_member_problem

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
                    name = m.name[2:] if m.name.startswith("./") else m.name
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

    def where(self, rel: str) -> str | None:
        """Human-readable location of `rel`, or None when the release lacks it."""
        if (self.tree / rel).is_file():
            return str(self.tree / rel)
        if rel in self.tar_index:
            return f"{self.tar_index[rel][0]}:SingingHead/{rel}"
        mod, _, name = rel.partition("/")
        if mod in self.zips and name in self._zip_names(mod):
            return f"{self.zips[mod]}:{name}"
        if "/" not in rel and (self.root / rel).is_file():
            return str(self.root / rel)
        return None

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
            except (zipfile.BadZipFile, OSError) as exc:     # CRC errors are BadZipFile
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


def decode_video(data: bytes, where: str) -> np.ndarray:
    """MP4 bytes -> frames (T,H,W,3) uint8 RGB in presentation order (PyAV)."""

    try:
        with av.open(io.BytesIO(data)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as exc:
        raise PipelineInputError(where, f"cannot decode video ({exc})", _FIX) from exc
    if not frames:
        raise PipelineInputError(where, "holds no video frames", _FIX)
    return np.stack(frames)


class SingingHeadDataset(torch.utils.data.Dataset):
    """Clips of one split of a SingingHead release (any form; see the module docstring).

    Item: {'id': str, 'motion': (T,59) float32 exp50|global3|neck3|jaw3, 'shape': (100,) float32,
    'vocal': (N,) float32, 'bgm': (N,) float32 at `sample_rate` (None keeps the file's rate),
    'video': (T,H,W,3) uint8 only with with_video=True}.
    """

    def __init__(self, root: str | Path, split: str = "train", sample_rate: int | None = 16000,
                 with_video: bool = False):
        self.store = ReleaseStore(root)
        self.split = split
        self.ids = read_split(self.store, split)
        self.sample_rate = sample_rate
        self.with_video = with_video
        self._pos = {cid: i for i, cid in enumerate(self.ids)}

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

    def __getitem__(self, i: int) -> dict:
        cid = self.ids[i]
        d = self.flame(cid)
        item = {"id": cid, "motion": motion59(d), "shape": d["shapecode"].reshape(100).copy(),
                "vocal": self.audio(cid, "audio_seqs"), "bgm": self.audio(cid, "bgm_seqs")}
        if self.with_video:
            data, where = self.store.read(clip_files(cid)["video_seqs"])
            item["video"] = decode_video(data, where)
            if len(item["video"]) != len(item["motion"]):
                raise PipelineInputError(where, f"has {len(item['video'])} frames, its flame_seqs pickle "
                                         f"{len(item['motion'])}", _FIX)
        return item
