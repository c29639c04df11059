"""Small stand-ins for what the per-subject stages leave under processed/, for dataset tests.

`make_subject_outputs` writes tiny H.264 portraits with a keyframe every 240 frames, sine wavs and
random motion, so the assembly (and the release and rerun built on it) is tested against the file
contract alone. Test modules import it with `from dataset_helpers import ...` (tests/ is on sys.path).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
from scipy.io import wavfile

from tasks.common.atomic import save_npz_atomic, write_json_atomic
from tasks.layout import Layout

SIZE = 64
FPS = 30
SR = 16000

# subject -> song -> list of segment lengths in frames (segment 1 of S001/001 is < 3 s: dropped)
DEFAULT_PLAN = {
    "S001": {"001_country_take-me-home": [500, 60], "002_rock_we-will": [250]},
    "S002": {"003_folk_scarborough": [240, 300]},
}


def write_portrait(path, n, keyint=240, size=SIZE, seed=0):
    """An H.264 mp4 with B-frames and a keyframe every `keyint` frames from the first; each frame distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {
            "g": str(keyint),
            "keyint_min": str(keyint),
            "sc_threshold": "0",
            "preset": "veryfast",
            "crf": "30",
            "threads": "1",
        }
        for i in range(n):
            img = base.copy()
            img[i % size, :, :] = 255
            img[:, (3 * i) % size, 1] = 0
            img[: (i // size) % size + 1, :4, 2] = 17 * (i % 15)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_sine(path, n_samples, freq):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(n_samples) / SR
    wavfile.write(str(path), SR, (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def make_subject_outputs(raw, processed, plan=None, keyint=240):
    """Raw metadata plus every processed/ file the assembly reads, for each subject of `plan`."""
    plan = plan or DEFAULT_PLAN
    layout = Layout(Path(raw), Path(processed), Path(processed) / "release")
    rng = np.random.default_rng(1)
    for si, (subject, songs) in enumerate(sorted(plan.items())):
        write_json_atomic(
            raw / subject / "subject.json",
            {
                "subject_id": subject,
                "gender": "female" if si % 2 == 0 else "male",
                "professional": si % 2 == 0,
            },
        )
        sequences, total = [], 0
        subject_shape = rng.normal(size=100).astype(np.float32)
        for song, lengths in sorted(songs.items()):
            genre = song.split("_")[1]
            write_json_atomic(
                raw / subject / "songs" / song / "song.json",
                {"title": song, "genre": genre, "language": "en", "audio_offset_s": 0.0},
            )
            segs, start = [], 100
            for k, n in enumerate(lengths):
                total += 1
                segs.append(
                    {
                        "index": k,
                        "start_frame": start,
                        "end_frame": start + n,
                        "video": f"segment_{k:03d}.mp4",
                    }
                )
                start += n + 50
            write_json_atomic(
                layout.segments_json(subject, song),
                {
                    "segments": segs,
                    "model": {"name": "MTCNN", "kind": "real", "files": []},
                    "params": {"margin": 0.6},
                },
            )
            # a model file and a parameter recorded with this machine's absolute paths, as real stages
            # do: the shipped manifest must keep names and hashes only
            write_json_atomic(
                layout.bgm_record(subject, song),
                {
                    "model": {
                        "name": "weight-free vocal remover",
                        "kind": "stand-in",
                        "files": [
                            {"path": str(Path(processed) / "_models" / "remover.bin"), "sha256": "ab" * 32}
                        ],
                    },
                    "params": {"bgm_source": str(Path(raw) / subject / "songs" / song / "original.wav")},
                },
            )
            for seg in segs:
                k, n = seg["index"], seg["end_frame"] - seg["start_frame"]
                if n < 90:
                    continue  # the subject stage lists only usable segments
                video = layout.portrait_dir(subject, song) / seg["video"]
                write_portrait(video, n, keyint=keyint, seed=si * 10 + k)
                write_sine(layout.segment_vocal_wav(subject, song, k), round(n * SR / FPS), 220 + 40 * k)
                write_sine(layout.segment_bgm_wav(subject, song, k), round(n * SR / FPS), 110)
                motion = {
                    "expression": rng.normal(size=(n, 50)).astype(np.float32),
                    "global_orient": rng.normal(size=(n, 3)).astype(np.float32),
                    "neck_pose": rng.normal(size=(n, 3)).astype(np.float32),
                    "jaw_pose": rng.normal(size=(n, 3)).astype(np.float32),
                    "cam": rng.normal(size=(n, 3)).astype(np.float32),
                    "shape": subject_shape,
                    "fps": np.float32(FPS),
                }
                save_npz_atomic(layout.motion_npz(subject, song, k), motion)
                write_json_atomic(
                    layout.motion_qc(subject, song, k),
                    {
                        "reprojection_error_px": {"mean": float(rng.uniform(1, 3))},
                        "jitter": float(rng.uniform(0, 1)),
                        "outlier_fraction": float(rng.uniform(0, 0.1)),
                        "model": {"name": "procedural head", "kind": "stand-in", "files": []},
                    },
                )
                lm = rng.uniform(20, 40, size=(n, 68, 2)).astype(np.float32)
                save_npz_atomic(
                    layout.frames_npz(subject, song, k), {"landmarks": lm, "landmark_ok": np.ones(n, bool)}
                )
                write_json_atomic(
                    layout.frames_record(subject, song, k),
                    {
                        # models under the keys the estimation stage uses, one of them in a list
                        "estimator": {"name": "landmark-fit estimator", "kind": "stand-in", "files": []},
                        "landmark_models": [{"name": "MTCNN", "kind": "real", "files": []}],
                        "params": {"batch_size": 32},
                    },
                )
                sequences.append(
                    {
                        "song": song,
                        "segment": k,
                        "start_frame": seg["start_frame"],
                        "end_frame": seg["end_frame"],
                        "frames": n,
                        "video": str(video),
                        "motion": str(layout.motion_npz(subject, song, k)),
                        "motion_qc": str(layout.motion_qc(subject, song, k)),
                    }
                )
        layout.shape_dir(subject).mkdir(parents=True, exist_ok=True)
        np.save(layout.scan_shape_npy(subject), subject_shape)
        write_json_atomic(
            layout.scan_fit_report(subject),
            {
                "source": "monocular mean",
                "model": {"name": "procedural head", "kind": "stand-in", "files": []},
            },
        )
        write_json_atomic(
            layout.subject_done(subject),
            {
                "subject": subject,
                "sequences": sequences,
                "segments_total": total,
                "segments_too_short": total - len(sequences),
                "min_sequence_seconds": 3.0,
            },
        )


def tree_digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def build_dataset_and_release(raw, processed, fmt="tarballs", shard_bytes=2_000_000_000, plan=None):
    """Fixture subjects under raw/processed, assembled and packed as `fmt` the way the stages do
    (AssembleDataset, then PackRelease with `[release] format`), all paths from `[paths]`."""
    from pipeline.build import config_overrides
    from tasks.assemble import AssembleDataset
    from tasks.release import PackRelease

    make_subject_outputs(Path(raw), Path(processed), plan)
    with config_overrides(
        paths={"raw_dir": raw, "processed_dir": processed, "release_dir": Path(processed) / "release"},
        release={"format": fmt, "shard_bytes": shard_bytes},
    ):
        AssembleDataset().assemble()
        PackRelease().run()
        layout = Layout.from_config()
    return layout.dataset_root(), layout.release_root()
