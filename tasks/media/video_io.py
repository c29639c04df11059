"""Reading capture videos and writing portrait videos, with PyAV.

Reading: the colour track of an Azure Kinect recording is found by its track title `COLOR`
(track order depends on the recording modes; `cv2.VideoCapture` silently reads whichever video
track comes first, so it is not used). Any other video file ffmpeg reads is accepted: its first
video stream is the colour track. Frames are streamed, never held.

Frame indices come from timestamps, not from counting: `index = round((pts - pts0) * fps *
time_base)`. A recorder that dropped frames leaves a gap in the indices; the generator yields the
true index and leaves gaps to the caller (the crop stage repeats the previous portrait frame over
short gaps and records them, so frame t of a portrait video stays at time t/fps of the capture;
long gaps end a segment). A frame whose index repeats an earlier one is dropped.

Writing: portrait videos are H.264 (libx264, bundled in PyAV wheels), yuv420p, BT.601 limited
range (tagged), constant frame rate, an IDR keyframe exactly every `[crop] keyframe_interval`
frames (no scene-cut keyframes) so the dataset stage can cut 8 s clips by stream copy.
x264 output is deterministic for a fixed thread count (x264 only becomes non-deterministic
with `--non-deterministic`); a thread count of 0 is resolved to a fixed number, not to the
machine's core count, so reruns on other machines give the same bytes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from tasks.common.atomic import atomic_path
from tasks.common.bounded import MAX_MEDIA_BYTES, check_regular_file
from tasks.common.errors import PipelineInputError

log = logging.getLogger("singinghead")

COLOR_TITLE = "COLOR"
# x264 threads used when [crop] threads = 0: fixed so that output bytes do not depend on the
# machine (x264's own default follows the core count).
DEFAULT_X264_THREADS = 4


# ----------------------------------------------------------------------------- reading
@dataclass
class VideoInfo:
    """What the pipeline needs to know about a capture video's colour track."""

    path: str
    stream_index: int
    title: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    start_pts: int | None
    duration_s: float | None     # of the colour stream (container duration if the stream has none)
    frame_count: int             # estimated from the duration; the decode loop counts the truth
    kinect: bool                 # the file has titled tracks (a k4arecorder file)
    titles: list = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["fps"] = float(self.fps)
        d["fps_fraction"] = f"{self.fps.numerator}/{self.fps.denominator}"
        d["time_base"] = f"{self.time_base.numerator}/{self.time_base.denominator}"
        return d


def _title(stream) -> str:
    md = stream.metadata or {}
    return md.get("title") or md.get("TITLE") or ""


def open_video(path: str | Path):
    """Open a video container, turning ffmpeg errors into a PipelineInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(path, "video file not found",
                                 "put the recording (color.mkv or any video ffmpeg reads) in the song folder")
    check_regular_file(path, MAX_MEDIA_BYTES, "the video")
    try:
        return av.open(str(path), "r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise PipelineInputError(path, f"not a readable video ({e})",
                                 "re-export or re-copy the recording; check it plays in ffplay") from e


def find_color_stream(container, path: str | Path):
    """The colour video stream: the track titled COLOR; without titled tracks, the first video stream.

    A file with titled tracks (a Kinect recording) but no COLOR track is an error: its first video
    track would be depth or IR.
    """
    videos = list(container.streams.video)
    if not videos:
        raise PipelineInputError(path, "the file has no video stream",
                                 "record with the colour camera enabled")
    titled = [s for s in videos if _title(s)]
    for s in videos:
        if _title(s).upper() == COLOR_TITLE:
            return s
    if titled:
        names = ", ".join(sorted(_title(s) for s in titled))
        raise PipelineInputError(path, f"no video track titled COLOR (tracks: {names})",
                                 "record with the colour camera enabled (k4arecorder --color-mode 2160p)")
    return videos[0]


def stream_fps(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise PipelineInputError(stream.container.name, "cannot tell the colour track's frame rate",
                                 "remux the video with a constant frame rate (ffmpeg -r 30)")
    rate = Fraction(rate)
    # Matroska stores 1 ms timestamps; ffmpeg may report 30000/1001-ish averages for an exact
    # 30 fps recording. Snap to a nearby integer rate when within 0.1 %.
    if abs(rate - round(rate)) < 0.001 * rate:
        rate = Fraction(round(rate))
    return rate


def probe_video(path: str | Path) -> VideoInfo:
    """Container-level facts about the colour track (no decoding)."""
    with open_video(path) as c:
        s = find_color_stream(c, path)
        fps = stream_fps(s)
        tb = Fraction(s.time_base) if s.time_base else Fraction(1, 1_000_000)
        if s.duration is not None:
            dur = float(s.duration * tb)
        elif c.duration is not None:
            # Matroska's duration counts from time 0; Kinect colour pts start later.
            start = float(s.start_time * tb) if s.start_time is not None else 0.0
            dur = max(c.duration / av.time_base - start, 0.0)
        else:
            dur = None
        ctx = s.codec_context
        return VideoInfo(
            path=str(path), stream_index=s.index, title=_title(s), codec=ctx.name,
            pix_fmt=ctx.format.name if ctx.format is not None else "", width=ctx.width, height=ctx.height,
            fps=fps, time_base=tb, start_pts=s.start_time, duration_s=dur,
            frame_count=int(round(dur * fps)) if dur else int(s.frames or 0),
            kinect=any(_title(v) for v in c.streams.video),
            titles=[_title(v) for v in c.streams.video])


IDENTITY_DISPLAY_MATRIX = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)   # 16.16 / 2.30 fixed point


def display_transform(stream, frame) -> str | None:
    """What a player would do to the picture before showing it, or None when nothing: a `rotate`
    tag on the stream, or a non-identity display matrix (rotation and/or flip) in the decoded
    frame's side data (ffmpeg copies the container's matrix there)."""
    md = stream.metadata or {}
    rotate = md.get("rotate") or md.get("ROTATE")
    if rotate not in (None, "", "0"):
        return f"a 'rotate' tag of {rotate} degrees"
    for sd in frame.side_data if frame is not None else ():
        if "DISPLAYMATRIX" in str(sd.type):
            m = tuple(int(v) for v in np.frombuffer(bytes(sd), "<i4")[:9])
            if m != IDENTITY_DISPLAY_MATRIX:
                mirrored = m[0] * m[4] - m[1] * m[3] < 0     # negative determinant: a flip
                flip = " and a mirror flip" if mirrored else ""
                return f"a display matrix rotating by {frame.rotation} degrees{flip}"
    return None


@dataclass
class PacketTimes:
    """The colour track's packet timestamps in demux order (read without decoding)."""

    pts: np.ndarray              # (N,) int64, stream time base; packets without a timestamp left out
    no_pts: int                  # packets without any timestamp
    time_base: Fraction
    fps: Fraction
    error: str | None = None     # the demuxer stopped early with this message (a damaged file)


def packet_times(path: str | Path) -> PacketTimes:
    """Every colour packet's pts (dts where pts is absent), demux only: no decoding, so a long 4K
    recording costs the read of its bytes, not its JPEG decode."""
    with open_video(path) as c:
        s = find_color_stream(c, path)
        fps, tb = stream_fps(s), Fraction(s.time_base)
        out, missing, error = [], 0, None
        try:
            for pkt in c.demux(s):
                if pkt.size == 0:      # the demuxer's flush packet
                    continue
                t = pkt.pts if pkt.pts is not None else pkt.dts
                if t is None:
                    missing += 1
                else:
                    out.append(t)
        except av.error.FFmpegError as e:
            error = str(e)
        return PacketTimes(np.asarray(out, np.int64), missing, tb, fps, error)


def frame_timing(times: PacketTimes, max_step_s: float) -> dict:
    """Regularity of a colour track's timestamps, as the crop stage will see them.

    `jumps`: consecutive packets (demux order, so B-frame reordering of a few frames is not one)
    whose timestamps differ by more than `max_step_s` either way: each {frame (packet number from
    0), time_s, previous_time_s} in seconds after the first packet. Without jumps, frame indices
    round((pts - min pts) * fps * time_base) give `missing_frames` (gaps the crop fills by
    repeating the previous frame, or ends a segment at), `duplicate_frames` (an index seen before:
    dropped), their sum `repaired_frames`, the `gaps` [{after_frame, missing, time_s}], and
    `frame_count` / `duration_s` from the last index. All plain numbers (JSON-ready).
    """
    pts = times.pts
    out = {"packets": int(len(pts)), "packets_without_timestamp": int(times.no_pts), "jumps": []}
    if len(pts) == 0:
        return out
    tb = float(times.time_base)
    t = (pts - pts[0]).astype(np.float64) * tb
    steps = np.diff(t)
    for i in np.flatnonzero(np.abs(steps) > max_step_s)[:5]:
        out["jumps"].append({"frame": int(i + 1), "time_s": float(t[i + 1]), "previous_time_s": float(t[i])})
    if out["jumps"]:
        return out
    idx = np.rint((pts - pts.min()).astype(np.float64) * tb * float(times.fps)).astype(np.int64)
    uniq = np.unique(idx)
    d = np.diff(uniq)
    gaps = [{"after_frame": int(uniq[i]), "missing": int(d[i] - 1), "time_s": float(uniq[i] / times.fps)}
            for i in np.flatnonzero(d > 1)]
    missing = int(uniq[-1] + 1 - len(uniq))
    duplicates = int(len(idx) - len(uniq))
    out.update(frame_count=int(uniq[-1] + 1), duration_s=float((uniq[-1] + 1) / times.fps),
               missing_frames=missing, duplicate_frames=duplicates, repaired_frames=missing + duplicates,
               gaps=gaps[:20], n_gaps=len(gaps))
    return out


def frame_index(pts: int, pts0: int, fps: Fraction, time_base: Fraction) -> int:
    """Frame number of a timestamp: round((pts - pts0) * fps * time_base)."""
    return int(round((pts - pts0) * fps * time_base))


def iter_frames(path: str | Path, stream_title: str | None = None) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """Stream the colour track: yields (index, frame) in decode order, index from pts.

    Gaps in the index mean dropped frames (see the module docstring); frames whose index does not
    advance are skipped. A decode error mid-file raises PipelineInputError naming the file and
    the frame reached. Only the colour stream's packets are demuxed and decoded.
    """
    with open_video(path) as c:
        s = find_color_stream(c, path)
        fps = stream_fps(s)
        tb = Fraction(s.time_base)
        pts0 = None
        last = -1
        n = 0
        try:
            for packet in c.demux(s):
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:  # no timestamps at all: fall back to counting
                        idx = n
                    else:
                        if pts0 is None:
                            pts0 = s.start_time if s.start_time is not None and s.start_time <= pts else pts
                        idx = frame_index(pts, pts0, fps, tb)
                    n += 1
                    if idx <= last:
                        log.warning("%s: frame with pts %s repeats index %d; skipped", path, pts, idx)
                        continue
                    last = idx
                    yield idx, frame
        except av.error.FFmpegError as e:
            raise PipelineInputError(path, f"video is corrupt or truncated after frame {last} ({e})",
                                     "re-copy the recording from the capture machine") from e


# ----------------------------------------------------------------------------- plane access
def frame_planes(frame) -> list[np.ndarray]:
    """Zero-copy (h, w) uint8 views of a planar YUV frame's planes (valid while `frame` lives)."""
    out = []
    for p in frame.planes:
        buf = np.frombuffer(p, np.uint8)
        w = p.width
        h = p.height
        out.append(buf.reshape(h, p.line_size)[:, :w])
    return out


def is_full_range(frame) -> bool:
    """JPEG-style full-range YUV (MJPEG decodes to yuvj4xxp)."""
    return frame.format.name.startswith("yuvj") or getattr(frame, "color_range", 0) == 2


# ----------------------------------------------------------------------------- writing
def x264_threads(threads: int) -> int:
    return int(threads) if threads and threads > 0 else DEFAULT_X264_THREADS


class PortraitWriter:
    """Write square yuv420p frames as an H.264 .mp4, atomically (temp file renamed on close).

    `write_i420(buf)` takes one (size * 3 // 2, size) uint8 I420 buffer (Y, then U, then V),
    BT.601 limited range. Use as a context manager; on an exception nothing appears at `path`.
    """

    def __init__(self, path: str | Path, size: int, fps: Fraction | int, crf: int = 18,
                 preset: str = "veryfast", keyframe_interval: int = 240, threads: int = 0):
        self.path = Path(path)
        self.size = int(size)
        self.fps = Fraction(fps)
        self.opts = {"crf": str(int(crf)), "preset": str(preset),
                     "x264-params": (f"keyint={int(keyframe_interval)}:min-keyint={int(keyframe_interval)}"
                                     f":scenecut=0:open-gop=0")}
        self.threads = x264_threads(threads)
        self.frames = 0
        self._atomic = None
        self._container = None
        self._stream = None

    def __enter__(self):
        if self.size % 2:
            raise ValueError(f"portrait size must be even, got {self.size}")
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        # Temp name keeps the suffix, but pass the format anyway: never infer it from a name.
        self._container = av.open(str(tmp), "w", format="mp4")
        st = self._container.add_stream("libx264", rate=self.fps, options=self.opts)
        st.width = st.height = self.size
        st.pix_fmt = "yuv420p"

        cc = st.codec_context
        cc.thread_count = self.threads
        cc.thread_type = "FRAME"
        cc.color_range = 1          # tv / limited
        cc.colorspace = 6           # smpte170m (BT.601), the JPEG matrix
        cc.color_primaries = 6
        cc.color_trc = 6
        self._stream = st
        return self

    def write_i420(self, buf: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = self.frames

        frame.color_range = 1
        frame.colorspace = 6
        for pkt in self._stream.encode(frame):
            self._container.mux(pkt)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                for pkt in self._stream.encode(None):
                    self._container.mux(pkt)
            self._container.close()
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        return self._atomic.__exit__(exc_type, exc, tb)


def count_frames(source) -> int:
    """Number of decodable video frames (demux-only count for H.264 files we wrote) of a path or a
    binary file object."""
    with av.open(source if hasattr(source, "read") else str(source)) as c:
        s = c.streams.video[0]
        return sum(1 for p in c.demux(s) if p.size)
