"""Write one kept sequence: sequences/<seq_id>/ uncut, and its 8 s clips in the published layout."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from tasks.common.atomic import atomic_path, save_npz_atomic, write_bytes_atomic
from tasks.common.errors import PipelineInputError
from tasks.dataset.plan import SequencePlan
from tasks.media import clips as C

log = logging.getLogger("singinghead")


def write_sequence(
    plan: SequencePlan,
    root: Path,
    shape: np.ndarray,
    fps: float,
    sample_rate: int,
    clip_frames: int,
    encoding: C.ClipEncoding,
    channels: int = 1,
) -> list[dict]:
    """Write sequences/<seq_id>/ and the sequence's clips; returns one record per clip.

    Checks that video, motion and both audio files cover exactly the sequence's frames. `encoding`
    re-encodes a clip that cannot be cut by stream copy. Audio is written as 16-bit PCM WAV at
    `sample_rate` with `channels` channels (the `[audio]` settings SegmentAudio already applied).
    """
    index = C.index_video(plan.video)
    if index.frames != plan.frames:
        raise PipelineInputError(
            plan.video,
            f"has {index.frames} frames, the segment spans {plan.frames}",
            "rebuild the portrait segment (CropPortraits) for this song",
        )
    if abs(float(index.fps) - fps) > 0.01:
        raise PipelineInputError(
            plan.video,
            f"runs at {float(index.fps):.3f} fps, the dataset at {fps:g}",
            "set [dataset] fps to the capture's rate, or re-crop the portraits",
        )
    motion = C.load_motion(plan.motion)
    if len(motion["expression"]) != plan.frames:
        raise PipelineInputError(
            plan.motion,
            f"has {len(motion['expression'])} frames, the video {plan.frames}",
            "rerun RefineMotion for this segment",
        )
    # expression and pose were fitted with the motion's own shape: keep them together, but say so
    # when it is not the subject's shape (the refinement stage is meant to use shapes/<subject>.npy)
    motion_shape = np.asarray(motion["shape"], np.float32).reshape(100)
    if not np.allclose(motion_shape, shape, atol=1e-4):
        log.warning(
            "%s: its shape differs from %s's shape (max |diff| %.3g); the clip pkl uses the motion's",
            plan.motion,
            plan.subject,
            float(np.abs(motion_shape - shape).max()),
        )
    shape = motion_shape
    wavs = {}
    for name, path in (("vocal", plan.vocal), ("bgm", plan.bgm)):
        data, sr = C.read_wav(path)
        if sr != sample_rate:
            raise PipelineInputError(
                path,
                f"is at {sr} Hz, the dataset rate is {sample_rate} Hz",
                "rebuild the segment audio (SegmentAudio) with the current [audio] sample_rate",
            )
        C.check_audio_length(path, len(data), plan.frames, sr, fps)
        got = 1 if data.ndim == 1 else data.shape[1]
        if got != channels:
            raise PipelineInputError(
                path,
                f"has {got} channel(s), the dataset has {channels}",
                "rebuild the segment audio (SegmentAudio) with the current [audio] channels",
            )
        # quantised once for the whole sequence, so every clip is an exact slice of it
        wavs[name], clipped = C.to_pcm16(data)
        if clipped:
            log.warning("%s: %d samples at or above full scale clipped to 16-bit PCM", path, clipped)

    seq_dir = root / "sequences" / plan.seq_id  # every writer below makes its file's folder (atomic_path)
    copy_file_atomic(plan.video, seq_dir / "video.mp4")
    for name, data in wavs.items():
        C.write_wav(seq_dir / f"{name}.wav", C.cut_audio(data, sample_rate, fps, 0, plan.frames), sample_rate)
    save_npz_atomic(
        seq_dir / "motion.npz",
        {
            **{k: np.asarray(motion[k], np.float32) for k in C.MOTION_KEYS},
            "cam": np.asarray(motion.get("cam", np.zeros((plan.frames, 3))), np.float32),
            "shape": np.asarray(shape, np.float32).reshape(100),
            "fps": np.asarray(fps, np.float32),
        },
    )

    spans = [(k * clip_frames, clip_frames) for k in range(len(plan.clip_ids))]
    if not spans:
        return []
    videos = [root / "video_seqs" / f"{cid}.mp4" for cid in plan.clip_ids]
    cut = C.cut_video_clips(plan.video, spans, videos, encoding=encoding, index=index)
    records = []
    for cid, (start, count), rec in zip(plan.clip_ids, spans, cut):
        write_bytes_atomic(
            root / "flame_seqs" / f"{cid}.pkl", C.pickle_bytes(C.flame_clip(motion, shape, start, count))
        )
        for name, dst in (
            ("vocal", root / "audio_seqs" / f"{cid}.wav"),
            ("bgm", root / "bgm_seqs" / f"{cid}_bgm.wav"),
        ):
            C.write_wav(dst, C.cut_audio(wavs[name], sample_rate, fps, start, start + count), sample_rate)
        if rec["method"] != "stream-copy":
            # a stream copy needs a keyframe at the clip's first frame and no B-frame of its last ones
            # referring past its end (a closed group of pictures): not only the start decides
            log.warning("clip %s cannot be stream-copied from %s (it must start on a keyframe and its frames "
                        "must decode without later ones): re-encoded", cid, plan.video)
        records.append({"id": cid, "seq_start_frame": start, **rec})
    return records


def copy_file_atomic(src: Path, dst: Path) -> None:
    """Byte copy (the whole portrait is the sequence's video: a stream copy by definition)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
