"""Frame-exact cutting of video, audio and motion into dataset clips.

Video clips are cut by *stream copy*: the portrait encoder places a keyframe every
`[crop] keyframe_interval` (240) frames from the segment's first frame, so a clip of 240 frames
starting on a multiple of 240 is a self-contained run of packets (closed GOP). No second
generation of quality loss. Every cut is verified by decoding it and comparing each frame with the
source frame it claims to be (a per-frame digest); a cut that cannot be done by stream copy (no
keyframe at the clip's first frame, open GOP) falls back to a re-encode and says so in its record.

Frame t of a video is its t-th frame in presentation order; audio frame t spans samples
[round(t*sr/fps), round((t+1)*sr/fps)).
"""

from __future__ import annotations

import hashlib
import io
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from av.video.frame import PictureType

from tasks.common.atomic import atomic_path, write_bytes_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.settings import CropSettings
from tasks.common.timebase import frame_sample
from tasks.dataset.flame_pickle import flame_pickle_bytes, load_pickle_dict

MOTION_KEYS = ("expression", "global_orient", "neck_pose", "jaw_pose")


# ----------------------------------------------------------------------------- video
@dataclass(frozen=True)
class ClipEncoding:
    """libx264 settings of a clip that cannot be cut by stream copy (the fallback re-encode)."""

    crf: int
    preset: str
    keyint: int

    @classmethod
    def of_portraits(cls, crop: CropSettings) -> "ClipEncoding":
        """The portrait encoder's own `[crop]` settings, so a re-encoded clip looks like its neighbours."""
        return cls(crf=crop.crf, preset=crop.preset, keyint=crop.keyframe_interval)


@dataclass
class VideoIndex:
    """Packets of a video stream in decode order with their presentation index.

    `order[i]` is the presentation index (0-based display frame) of packet i (decode order);
    `keyframes` the sorted presentation indices of keyframe packets.
    """

    frames: int
    fps: Fraction
    width: int
    height: int
    order: list[int] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)


def stream_rate(vs: av.video.stream.VideoStream) -> Fraction:
    """A video stream's frame rate: the container's average rate; where it states none (e.g. a one-frame
    NUT or MPEG-TS), FFmpeg's guess from the stream's timing; 30, the dataset default, where neither is
    known."""
    return Fraction(vs.average_rate or vs.guessed_rate or Fraction(30))


def index_video(path: str | Path) -> VideoIndex:
    """Demux (no decoding) the first video stream: frame count, fps, keyframe positions."""
    path = Path(path)
    try:
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            pts, key = [], []
            for pkt in c.demux(vs):
                if pkt.size == 0 or pkt.pts is None:
                    continue  # flush packets carry no frame
                pts.append(int(pkt.pts))
                key.append(bool(pkt.is_keyframe))
            fps = stream_rate(vs)
            w, h = vs.codec_context.width, vs.codec_context.height
    except (av.error.FFmpegError, IndexError) as e:
        raise PipelineInputError(
            path,
            f"cannot read video ({e})",
            "rebuild the portrait segment (delete it and rerun the crop stage)",
        ) from e
    rank = {p: i for i, p in enumerate(sorted(pts))}
    order = [rank[p] for p in pts]
    return VideoIndex(
        frames=len(pts),
        fps=Fraction(fps),
        width=w,
        height=h,
        order=order,
        keyframes=sorted(o for o, k in zip(order, key) if k),
    )


def frame_digest(frame: av.VideoFrame) -> str:
    """Digest of a decoded frame's pixels (its planes, without line padding)."""
    return hashlib.blake2b(frame.to_ndarray().tobytes(), digest_size=16).hexdigest()


def frame_digests(path: str | Path) -> list[str]:
    """Per-frame digests in presentation order, decoding the whole video once."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        return [frame_digest(f) for f in c.decode(vs)]


def stream_copy_cut(
    src: str | Path, dst: str | Path, start: int, count: int, index: VideoIndex | None = None
) -> bool:
    """Copy frames [start, start+count) of `src` into `dst` without re-encoding.

    Returns False (writing nothing) when the span is not a self-contained packet run: its first
    frame must be a keyframe and the packets showing those frames must be contiguous in decode
    order (a closed GOP). Timestamps are shifted so the clip starts where the source starts.
    """
    index = index or index_video(src)
    if start not in index.keyframes or start + count > index.frames:
        return False
    chosen = [i for i, o in enumerate(index.order) if start <= o < start + count]
    if (
        len(chosen) != count
        or chosen != list(range(chosen[0], chosen[0] + count))
        or index.order[chosen[0]] != start
    ):
        return False
    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        packets = [p for p in inp.demux(vs) if p.size and p.pts is not None]
        run = packets[chosen[0] : chosen[0] + count]
        shift = min(int(p.pts) for p in run)
        with atomic_path(dst) as tmp:
            # format given explicitly: the temp name keeps the suffix, but be safe (luigi#3128).
            with av.open(str(tmp), "w", format="mp4") as out:
                os_ = out.add_stream_from_template(vs)
                for p in run:
                    p.pts = int(p.pts) - shift
                    p.dts = int(p.dts) - shift if p.dts is not None else None
                    p.stream = os_
                    out.mux(p)
    return True


def reencode_cut(
    src: str | Path,
    dst: str | Path,
    start: int,
    count: int,
    encoding: ClipEncoding,
) -> None:
    """Decode frames [start, start+count) and encode them with libx264 (the fallback path)."""
    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        fps = stream_rate(vs)  # the rate index_video reports, so a re-encoded clip keeps it
        with atomic_path(dst) as tmp:
            with av.open(str(tmp), "w", format="mp4") as out:
                os_ = out.add_stream("libx264", rate=fps)
                os_.width, os_.height = vs.codec_context.width, vs.codec_context.height
                os_.pix_fmt = "yuv420p"
                os_.options = {
                    "crf": str(encoding.crf),
                    "preset": encoding.preset,
                    "g": str(encoding.keyint),
                    "keyint_min": str(encoding.keyint),
                    "sc_threshold": "0",
                    "threads": "1",
                }
                n = 0
                for i, frame in enumerate(inp.decode(vs)):
                    if i < start:
                        continue
                    if i >= start + count:
                        break
                    frame = frame.reformat(format="yuv420p")
                    frame.pts, frame.time_base = n, Fraction(1) / Fraction(fps)
                    # a decoded frame keeps the source's picture type, and libx264 turns every I
                    # into a keyframe: clear it so keyframes fall every `keyint` from the clip's start
                    frame.pict_type = PictureType.NONE
                    for pkt in os_.encode(frame):
                        out.mux(pkt)
                    n += 1
                for pkt in os_.encode():
                    out.mux(pkt)
            if n != count:  # raised inside atomic_path: the short clip is dropped, an older dst kept
                raise PipelineInputError(
                    src,
                    f"has {start + n} frames, a clip needs frames {start}..{start + count - 1}",
                    "rebuild the portrait segment",
                )


def cut_video_clips(
    src: str | Path,
    spans: list[tuple[int, int]],
    dsts: list[str | Path],
    encoding: ClipEncoding | None = None,
    index: VideoIndex | None = None,
) -> list[dict]:
    """Cut every (start, count) span of `src` into its `dst` and verify each cut frame by frame.

    `encoding` is used for spans that cannot be stream-copied; default: `[crop]`'s defaults.

    Returns one record per clip: {'method': 'stream-copy' | 're-encode', 'frames', 'first_frame',
    'exact'} where `exact` says the clip's frames are bit-identical to the source's (always for a
    stream copy; a re-encode is checked for frame count and first-frame position only).
    `index` is `index_video(src)` when the caller already has it.
    """
    encoding = encoding or ClipEncoding.of_portraits(CropSettings())
    index = index or index_video(src)
    src_digests = frame_digests(src)
    if len(src_digests) != index.frames:
        raise PipelineInputError(
            src,
            f"demuxes {index.frames} packets but decodes {len(src_digests)} frames",
            "rebuild the portrait segment",
        )
    records = []
    for (start, count), dst in zip(spans, dsts):
        copied = stream_copy_cut(src, dst, start, count, index)
        if copied:
            got = frame_digests(dst)
            if got != src_digests[start : start + count]:
                copied = False  # e.g. an open GOP that demuxed cleanly but does not decode alone
        if not copied:
            reencode_cut(src, dst, start, count, encoding)
            n = index_video(dst).frames
            if n != count:
                raise PipelineInputError(
                    dst, f"re-encoded clip has {n} frames, expected {count}", "report this as a bug"
                )
        records.append(
            {
                "method": "stream-copy" if copied else "re-encode",
                "frames": count,
                "first_frame": start,
                "exact": bool(copied),
            }
        )
    return records


# ----------------------------------------------------------------------------- audio
def sample_span(start: int, stop: int, sr: int, fps: float) -> tuple[int, int]:
    """Audio samples [a, b) of video frames [start, stop): segment_audio's frame edges (exact, halves up),
    so a clip's audio starts on the very sample its frame does in the sequence's audio at every rate."""
    return frame_sample(start, sr, fps), frame_sample(stop, sr, fps)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples (N,) or (N,C), sr); 16-bit PCM stays int16 so cuts do not requantise."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        dtype = "int16" if info.subtype == "PCM_16" else "float32"
        data, sr = sf.read(str(path), dtype=dtype)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise PipelineInputError(
            path, f"cannot read audio ({e})", "rebuild the segment audio (SegmentAudio)"
        ) from e
    return data, int(sr)


def to_pcm16(data: np.ndarray) -> tuple[np.ndarray, int]:
    """(int16 samples, number clipped): int16 passes unchanged; float [-1, 1) scales by 32768.

    32768 is the factor soundfile (and scipy/torchaudio) divide by when they read 16-bit PCM as
    float, so a float track that came from 16-bit PCM round-trips exactly. Values at or above
    full scale (BGM peaks the float segment audio keeps) are clipped and counted.
    """
    if data.dtype == np.int16:
        return data, 0
    x = np.rint(np.asarray(data, np.float64) * 32768.0)
    clipped = int(np.count_nonzero((x > 32767) | (x < -32768)))
    return np.clip(x, -32768, 32767).astype(np.int16), clipped


def pcm16_wav_bytes(data: np.ndarray, sr: int) -> bytes:
    """A canonical 44-byte-header RIFF/WAVE (format 1, 16-bit) of (N,) or (N,C) int16 samples.

    Written with Python's `wave`: the plainest WAV there is, read by `wave`, soundfile, scipy,
    torchaudio and librosa alike, and byte-identical for the same samples (no PEAK/LIST chunks).
    """
    x = np.asarray(data)
    if x.dtype != np.int16:
        raise TypeError(f"pcm16_wav_bytes takes int16 samples, got {x.dtype}")
    x = x[:, None] if x.ndim == 1 else x
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(int(x.shape[1]))
        w.setsampwidth(2)
        w.setframerate(int(sr))
        w.writeframes(np.ascontiguousarray(x, dtype="<i2").tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, data: np.ndarray, sr: int) -> int:
    """Atomically write a dataset wav: 16-bit PCM at `sr` (see `to_pcm16`); returns samples clipped."""
    pcm, clipped = to_pcm16(data)
    write_bytes_atomic(path, pcm16_wav_bytes(pcm, sr))
    return clipped


def expected_samples(frames: int, sr: int, fps: float) -> int:
    return sample_span(0, frames, sr, fps)[1]


def check_audio_length(path: str | Path, n: int, frames: int, sr: int, fps: float) -> None:
    """The segment audio must cover its video frames (one frame of slack for rounding upstream)."""
    want = expected_samples(frames, sr, fps)
    if abs(n - want) > max(1, int(round(sr / fps))):
        raise PipelineInputError(
            path,
            f"has {n} samples, {frames} frames at {fps} fps need {want} at {sr} Hz",
            "rebuild the segment audio (SegmentAudio) for this segment",
        )


def cut_audio(data: np.ndarray, sr: int, fps: float, start: int, stop: int) -> np.ndarray:
    """Samples of frames [start, stop), zero-padded at the end if the source is short by rounding."""
    a, b = sample_span(start, stop, sr, fps)
    out = data[a:b]
    if len(out) < b - a:
        pad = np.zeros((b - a - len(out),) + data.shape[1:], dtype=data.dtype)
        out = np.concatenate([out, pad])
    return out


# ----------------------------------------------------------------------------- motion
def load_motion(path: str | Path) -> dict[str, np.ndarray]:
    """motion.npz as float32 arrays; checks the contract's keys and that they agree on T."""
    path = Path(path)
    try:
        with np.load(path) as z:
            m = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise PipelineInputError(
            path, f"cannot read motion ({e})", "rerun RefineMotion for this segment"
        ) from e
    missing = [k for k in MOTION_KEYS + ("shape",) if k not in m]
    if missing:
        raise PipelineInputError(path, f"motion lacks {missing}", "rerun RefineMotion for this segment")
    t = len(m["expression"])
    bad = {k: m[k].shape for k in MOTION_KEYS if m[k].shape != ((t, 50) if k == "expression" else (t, 3))}
    if bad or m["shape"].reshape(-1).shape != (100,):
        raise PipelineInputError(
            path,
            f"motion arrays have unexpected shapes {bad or m['shape'].shape}",
            "rerun RefineMotion for this segment",
        )
    return m


def flame_clip(
    motion: dict[str, np.ndarray], shape: np.ndarray, start: int, count: int
) -> dict[str, np.ndarray]:
    """The published flame_seqs dict for frames [start, start+count).

    shapecode (1,100), expcodes (count,50), posecodes (count,9) = global 3 | neck 3 | jaw 3, float32.
    """
    sl = slice(start, start + count)
    pose = np.concatenate(
        [motion["global_orient"][sl], motion["neck_pose"][sl], motion["jaw_pose"][sl]], axis=1
    )
    return {
        "shapecode": np.ascontiguousarray(np.asarray(shape, np.float32).reshape(1, 100)),
        "expcodes": np.ascontiguousarray(motion["expression"][sl], dtype=np.float32),
        "posecodes": np.ascontiguousarray(pose, dtype=np.float32),
    }


def pickle_bytes(obj: dict) -> bytes:
    """flame_clip dict -> .pkl bytes that load under numpy 1.20 .. 2.x (see tasks.dataset.flame_pickle)."""
    return flame_pickle_bytes(obj["shapecode"], obj["expcodes"], obj["posecodes"])


def safe_load_pickle(data: bytes):
    """A dict of numpy arrays through the allow-list unpickler of tasks.dataset.flame_pickle."""
    return load_pickle_dict(data)
