"""The truth capture: a demo capture whose every number is known in 3D.

Each subject is the head model (procedural by default; the CLI passes FLAME when `[flame]` is set) at
a known identity shape, textured with a shipped photograph (scikit-image's astronaut by default,
or matplotlib's Grace Hopper; both public domain; the second subject mirrored and re-tinted)
warped so that the photo's Dlib landmarks land on the model's own landmarks, the skin continuing
past the face without a painted outline, with a dark mouth cavity between the inner lips
(demo.truth_render), in front of a cool blue-green backdrop (`backdrop`). It is
rendered exactly (ray casting, barycentric texture lookup, scaled orthographic camera; see
demo.truth_render for the camera model) under known per-frame expression, jaw, neck, global
orientation and camera, moving like a singer: the jaw and a few expression components follow the
vocal's loudness, the head sways, turns up to about +-30 degrees of yaw, nods, makes one fast
sideways excursion (the crop stage must re-segment) and leaves the frame for a moment. Video,
audio and the Kinect-like container come from demo.capture / demo.audio; the scan is
the same head's surface at that shape, metric (mm, declared in scan/scan.json), in an arbitrary
pose, with noise, holes and a texture (demo.scan).

Truth, outside raw/ under `--truth`: per song `truth.npz` (per source frame: shape, expression,
jaw_pose, neck_pose, global_orient, camera [f, u0, v0], landmarks (68,2) frame px, face_visible,
loudness), `truth.json` (conventions, audio timing), the clean vocal and accompaniment; per subject
`subject_truth.npz` (shape) and the scan's `scan_truth.npz`.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from demo.capture import (FACE_HEIGHT_4K, ORIGINAL_SR, PHOTOS, VOCAL_SR, HeadPath, _song_is_current,
                          head_path, plan_capture, song_audio, studio_background, subject_photo,
                          write_song_folder)
from demo.scan import photo_landmarks, procedural_head_model, write_demo_scan
from demo.truth_render import TexturedHead, project, render_head, textured_head
from flame_fit.procedural import GENERATOR_VERSION
from flame_fit.scan_fit import neutral_mesh
from tasks.common.atomic import atomic_dir, remove_stale_temps, save_npz_atomic, write_json_atomic
from tasks.common.errors import PipelineInputError
from tasks.common.progress import Progress
from tasks.media.audio_io import write_wav

log = logging.getLogger("singinghead.demo")

TRUTH_VERSION = 4           # 2: skin continues past the face (no painted outline), cool backdrop;
                            # 3: procedural head v2 landmarks, the excursion snaps out as it snaps back;
                            # 4: the stamp records the procedural generator's version (v3: nose capped)
SCAN_UNITS = "mm"
YAW_MAX_DEG = 30.0
DEMO_YAW_MAX_DEG = 18.0    # in the demo timeline (event_times), see plan_motion
NECK_SHARE = 0.3         # the part of the head rotation the neck carries


# ----------------------------------------------------------------------------- subject
def subject_shape(seed: int, n_shape: int = 100) -> np.ndarray:
    """A plausible identity (100,) float32: the first components within about 1.2 sigma, the rest
    damped (a shape far from a face moves Dlib's landmarks off the model's)."""
    rng = np.random.default_rng([seed, 4242])
    shape = np.clip(rng.normal(0.0, 0.6, n_shape), -1.2, 1.2)
    shape[10:] *= 0.4
    return shape.astype(np.float32)


@dataclass
class Subject:
    shape: np.ndarray            # (100,)
    head: TexturedHead           # texture in RGB
    neutral_landmarks: np.ndarray  # (68,3)
    face_height: float           # model units, brows to chin at neutral


def subject_geometry(model, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(shape (100,), neutral vertices (V,3), neutral landmarks (68,3), face height in model units)."""
    shape = subject_shape(seed, int(model.n_shape))
    verts, lmk = neutral_mesh(model, shape, next(model.buffers()).device)
    return shape, verts, lmk, float(lmk[19:25, 1].mean() - lmk[8, 1])


def make_subject(model, seed: int, variant: int, texture_size: int = 1024, photo_name: str = "astronaut"
                 ) -> Subject:
    shape, verts, lmk, fh = subject_geometry(model, seed)
    photo = subject_photo(variant, photo_name)
    head = textured_head(verts, model.faces.cpu().numpy().astype(np.int64), lmk, photo,
                         photo_landmarks(photo), texture_size)
    return Subject(shape=shape, head=head, neutral_landmarks=lmk, face_height=fh)


def backdrop(width: int, height: int, seed: int) -> np.ndarray:
    """The studio backdrop (H,W,3) uint8 BGR in a cool blue-green (red 60-100, green 100-150, blue
    120-170): a head's outline against it is a change of hue at any shading (skin is red over
    blue), as with a real studio's chroma or grey-blue backdrop, never skin against skin-coloured
    paint."""
    rng = np.random.default_rng([seed, 616])
    base_bgr = [rng.uniform(120, 170), rng.uniform(100, 150), rng.uniform(60, 100)]
    return studio_background(width, height, seed, base_bgr=base_bgr)


# ----------------------------------------------------------------------------- motion
def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# When the events happen in a song long enough for them (demo default 21 s): an 8 s clip fits before
# the excursion (which forces the re-segmentation) and another one between the excursion and the
# span off frame, with about 0.5 s to spare each side for where the crop stage cuts; what follows
# the return into the frame is a short segment (the dataset drops segments under 3 s).
CLIP_S = 8.0
# (excursion, off frame) start, seconds; the excursion (demo.capture.head_path) lasts 1.5 s
EVENTS_S = (CLIP_S + 0.8, CLIP_S + 0.8 + 1.5 + CLIP_S + 1.0)
SONG_S = 21.0                    # the demo's default song length (EVENTS_S[1] + 1.5 s off frame + 0.2)


def event_times(seconds: float) -> tuple[float, float] | None:
    """(excursion, off-frame) start seconds for a song of `seconds`, or None (at 40 % and 70 %, as
    in short test captures) when the song cannot hold an 8 s clip before and after the excursion."""
    return EVENTS_S if seconds >= EVENTS_S[1] + 1.5 else None


def plan_motion(n_frames: int, fps: float, width: int, height: int, face_px: float, loudness: np.ndarray,
                seed: int, n_expr: int = 50) -> dict:
    """A singer's motion (T frames): head rotation, neck share, jaw and expression from the loudness,
    the head path (frame position, face size) with its excursion, and a span off frame (event_times).

    Returns {global_orient, neck_pose, jaw_pose (T,3), expression (T,50), center (T,2) frame px of
    the landmarks' mean, face_px (T,), excursion, offframe: (start, end) frames}.
    """
    path = head_path(n_frames, fps, width, height, face_px, seed, event_times(n_frames / fps))
    rng = np.random.default_rng([seed, 777])
    t = np.arange(n_frames) / fps
    ph = rng.uniform(0, 2 * np.pi, 8)
    events = event_times(n_frames / fps)
    if events is None:
        f_yaw, ph_yaw, yaw_max = 0.11, ph[0], YAW_MAX_DEG
    else:
        # the slow turn crosses 0 where the crop stage's segments start (the song's start, the end of
        # the excursion), so a segment sees +-yaw_max about where it began, not the whole swing; beyond
        # about 20 degrees Dlib's landmarks on this head wander enough for the crop stage to cut (a
        # measured 4K demo run cut at 21-30 degrees), which would leave songs without a clip
        f_yaw, ph_yaw, yaw_max = 1.0 / (events[0] + 1.5), 0.0, DEMO_YAW_MAX_DEG
    yaw = np.radians(yaw_max) * np.clip(0.85 * np.sin(2 * np.pi * f_yaw * t + ph_yaw)
                                            + 0.15 * np.sin(2 * np.pi * 0.53 * t + ph[1]), -1, 1)
    # nods: slow and on the beat
    pitch = np.radians(6.0) * np.sin(2 * np.pi * 0.17 * t + ph[2]) + np.radians(3.0) * np.sin(
        2 * np.pi * 1.1 * t + ph[3])
    roll = np.radians(4.0) * np.sin(2 * np.pi * 0.13 * t + ph[4])
    head = Rotation.from_euler("xyz", np.stack([pitch, yaw, roll], 1))
    # the neck carries part of the turn (FLAME: head = global o neck)
    neck = Rotation.from_rotvec(NECK_SHARE * head.as_rotvec())
    glob = head * neck.inv()

    loud = np.asarray(loudness, np.float64)
    # a 60 ms smoothing of the envelope: jaws do not jump between frames
    k = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    loud_s = np.convolve(np.pad(loud, 3, mode="edge"), k / k.sum(), mode="valid")
    jaw = np.zeros((n_frames, 3))
    jaw[:, 0] = 0.03 + 0.27 * loud_s
    expr = np.zeros((n_frames, n_expr))
    drift = np.stack([np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3)) for _ in range(8)], 1)
    expr[:, :8] = 0.3 * drift * (1.0 / (1.0 + np.arange(8) / 3.0))
    expr[:, 0] += 0.8 * loud_s          # follows the voice
    expr[:, 2] -= 0.4 * loud_s
    expr[:, 4] += 0.5 * loud_s

    # off frame: during the demo's face-less span the head moves out sideways and back
    center = path.center.copy()
    h0, h1 = path.faceless
    ramp = max(int(round(0.35 * fps)), 1)
    k = np.arange(n_frames)
    bump = _smoothstep((k - h0) / ramp) - _smoothstep((k - (h1 - ramp)) / ramp)
    side = 1.0 if center[h0, 0] > width / 2 else -1.0
    reach = (width - center[h0, 0] if side > 0 else center[h0, 0]) + 2.5 * face_px
    center[:, 0] += side * reach * np.clip(bump, 0, 1)
    return {"global_orient": glob.as_rotvec(), "neck_pose": neck.as_rotvec(), "jaw_pose": jaw,
            "expression": expr, "center": center, "face_px": path.scale, "excursion": path.excursion,
            "offframe": (h0, h1), "path": path}


def pose_model(model, shape: np.ndarray, motion: dict, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Posed vertices (T,V,3) float32 and landmarks (T,68,3) float64 of the motion."""
    dev = next(model.buffers()).device
    T = len(motion["jaw_pose"])
    verts, lmks = [], []
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
    with torch.no_grad():
        for a in range(0, T, batch):
            b = min(T, a + batch)
            out = model(f32(np.repeat(shape[None], b - a, 0)), f32(motion["expression"][a:b]),
                        f32(motion["global_orient"][a:b]), f32(motion["neck_pose"][a:b]),
                        f32(motion["jaw_pose"][a:b]))
            verts.append(out.vertices.cpu().numpy())
            lmks.append(out.landmarks.cpu().double().numpy())
    return np.concatenate(verts), np.concatenate(lmks)


def frame_cameras(landmarks3d: np.ndarray, center: np.ndarray, face_px: np.ndarray, face_height: float
                  ) -> np.ndarray:
    """Cameras (T,3) [f, u0, v0] putting the landmarks' mean at `center` with the neutral face
    height (model units) spanning `face_px` pixels."""
    f = np.asarray(face_px, np.float64) / face_height
    mean = landmarks3d.mean(axis=1)
    return np.stack([f, center[:, 0] - f * mean[:, 0], center[:, 1] + f * mean[:, 1]], axis=1)


class TruthRenderer:
    """Frame t (H,W,3) uint8 BGR for demo.capture.write_kinect_mkv (thread-safe).

    Only the head's box changes between frames: each thread keeps one working frame and restores
    the box it drew last from the cached background, so a frame costs its head region (compiled
    rasterizer, demo.truth_render.render_head) instead of a full 4K copy.
    """

    def __init__(self, background: np.ndarray, vertices: np.ndarray, faces: np.ndarray, head: TexturedHead,
                 cams: np.ndarray, path: HeadPath):
        self.bg, self.vertices, self.cams = background, vertices, cams
        self.faces = np.ascontiguousarray(faces, np.int64)
        self.head = TexturedHead(corner_uv=np.ascontiguousarray(head.corner_uv, np.float64),
                                 texture=np.ascontiguousarray(head.texture[..., ::-1]),
                                 tex_landmarks=head.tex_landmarks)
        self.path = path                 # for the depth track
        self.focal = float(np.median(cams[:, 0]))   # recorded in the calibration attachment
        self._local = threading.local()

    def render(self, t: int) -> np.ndarray:
        """Frame t; valid until this thread's next call."""
        local = self._local
        if not hasattr(local, "frame"):
            local.frame, local.dirty = self.bg.copy(), None
        frame = local.frame
        if local.dirty is not None:
            y0, y1, x0, x1 = local.dirty
            frame[y0:y1, x0:x1] = self.bg[y0:y1, x0:x1]
        local.dirty = render_head(frame, self.vertices[t], self.faces, self.head, self.cams[t])
        return frame


# ----------------------------------------------------------------------------- one song
def song_geometry(model, shape: np.ndarray, face_height: float, loudness: np.ndarray, seed: int,
                  n_frames: int, fps: int, width: int, height: int) -> tuple:
    """A song's motion (plan_motion), posed vertices (T,V,3), cameras (T,3), projected landmarks
    (T,68,2) frame px and face_visible (T,) (all landmarks inside the frame); no pixels rendered."""
    face_px = FACE_HEIGHT_4K * height / 2160.0
    motion = plan_motion(n_frames, fps, width, height, face_px, loudness, seed, int(model.n_expr))
    verts, lmk3d = pose_model(model, shape, motion)
    cams = frame_cameras(lmk3d, motion["center"], motion["face_px"], face_height)
    landmarks = np.stack([project(lmk3d[t], cams[t]) for t in range(n_frames)])
    inside = ((landmarks[..., 0] >= 0) & (landmarks[..., 0] < width) & (landmarks[..., 1] >= 0)
              & (landmarks[..., 1] < height)).all(axis=1)
    return motion, verts, cams, landmarks, inside


def make_truth_song(song_dir: Path, truth_dir: Path, song: dict, model, subject: Subject,
                    background: np.ndarray, width: int, height: int, seconds: float, fps: int, workers: int,
                    params: dict, progress: Progress | None = None) -> dict:
    """Write one song folder (song.json, color.mkv, vocal.wav, original.wav) and its truth."""
    seed, genre, offset = song["seed"], song["genre"], song["audio_offset_s"]
    n_frames = int(round(seconds * fps))
    plan, vocal, mic_noise, original, vocal_part, acc_part, loud = song_audio(song, n_frames, fps)

    motion, verts, cams, landmarks, inside = song_geometry(model, subject.shape, subject.face_height, loud,
                                                           seed, n_frames, fps, width, height)
    path = motion["path"]
    depth_path = HeadPath(center=motion["center"], scale=path.scale, yaw=path.yaw, pitch=path.pitch,
                          roll=path.roll, face_visible=inside, excursion=path.excursion, faceless=path.faceless)
    renderer = TruthRenderer(background, verts, np.asarray(model.faces.cpu().numpy(), np.int64), subject.head,
                             cams, depth_path)

    video = write_song_folder(song_dir, song, vocal + mic_noise, original, renderer, n_frames, fps, width,
                              height, workers, progress)

    truth = {
        "kind": "truth capture", "truth_version": TRUTH_VERSION, "audio_offset_s": offset, "fps": fps,
        "frames": n_frames, "width": width, "height": height,
        "excursion_frames": list(map(int, motion["excursion"])), "offframe_frames": list(map(int, motion["offframe"])),
        "genre": genre, "bpm": plan.bpm, "vocal_sr": VOCAL_SR, "original_sr": ORIGINAL_SR,
        "head_model": getattr(model, "name", "?"), "video": video, "params": params, "song": song,
        "alignment": "video frame t is vocal/original time t/fps + audio_offset_s; accompaniment.wav and "
                     "vocal_clean.wav share original.wav's timeline; original = vocal_clean + accompaniment",
        "conventions": {
            "camera": "scaled orthographic [f, u0, v0]: u = u0 + f X, v = v0 - f Y for posed model points "
                      "(model units, y up, camera looking down -z); demo.truth_render.portrait_camera maps it "
                      "to a portrait crop's [s, tx, ty]",
            "rotations": "axis-angle radians, FLAME joints: head rotation = global_orient o neck_pose",
            "landmarks": "the model's 68 landmarks (dynamic contour) projected, frame pixels",
            "face_visible": "all 68 projected landmarks inside the frame"},
    }
    with atomic_dir(truth_dir) as tmp:
        save_npz_atomic(tmp / "truth.npz", {
            "shape": subject.shape.astype(np.float32),
            "expression": motion["expression"].astype(np.float32),
            "jaw_pose": motion["jaw_pose"].astype(np.float32),
            "neck_pose": motion["neck_pose"].astype(np.float32),
            "global_orient": motion["global_orient"].astype(np.float32),
            "camera": cams.astype(np.float32), "landmarks": landmarks.astype(np.float32),
            "face_visible": inside, "loudness": loud.astype(np.float32)})
        write_wav(tmp / "accompaniment.wav", acc_part, ORIGINAL_SR, "FLOAT")
        write_wav(tmp / "vocal_clean.wav", vocal_part[:, 0], ORIGINAL_SR, "FLOAT")
        write_json_atomic(tmp / "truth.json", truth)
    return {"song_id": song["song_id"], "genre": genre, "frames": n_frames, "audio_offset_s": offset,
            "excursion_frames": truth["excursion_frames"], "offframe_frames": truth["offframe_frames"],
            "mean_jpeg_bytes": video["mean_jpeg_bytes"]}


# ----------------------------------------------------------------------------- the capture
def make_truth_capture(out: Path, truth: Path, width: int = 3840, height: int = 2160, seconds: float = SONG_S,
                       n_subjects: int = 2, n_songs: int = 2, seed: int = 0, fps: int = 30,
                       workers: int | None = None, force: bool = False, with_scan: bool = True,
                       scan_landmarks: bool = False, model=None, texture_size: int = 1024,
                       photo: str = "astronaut", task=None) -> dict:
    """Write a truth capture under `out` (raw/ layout) and its truth under `truth` (module doc).

    `model`: the head model (default: the procedural head model, demo.scan.procedural_head_model;
    the CLI passes the `[flame]` model when one is configured); `photo`: the face photograph
    (demo.capture.PHOTOS: "astronaut" or "hopper"). Deterministic
    for a seed; songs already written with the same parameters are kept unless `force`.
    """
    out, truth = Path(out), Path(truth)
    if width % 2 or height % 2 or width < 160 or height < 90:
        raise PipelineInputError(f"{width}x{height}", "demo frame size must be even and at least 160x90",
                                 "pick e.g. 1280x720 or 3840x2160")
    if photo not in PHOTOS:
        raise PipelineInputError(photo, "unknown demo photo", f"pick one of {', '.join(PHOTOS)}")
    if seconds < 4.0:
        raise PipelineInputError(f"{seconds}s", "demo songs need at least 4 s for the excursion and the "
                                 "off-frame span", "give 6 s or more (singinghead demo-capture --seconds 6)")
    if model is None:
        model = procedural_head_model()
    workers = workers or min(2, os.cpu_count() or 1)
    subjects = plan_capture(n_subjects, n_songs, seed)
    n_frames = int(round(seconds * fps))
    progress = Progress(task, n_frames * n_subjects * n_songs, "truth frames", lines=task is None)
    summary = {"out": str(out), "truth": str(truth), "width": width, "height": height, "fps": fps,
               "seconds": seconds, "seed": seed, "kind": "truth capture", "subjects": []}
    try:
        for subj in subjects:
            sid, variant = subj["subject_id"], subj["variant"]
            sdir = out / sid
            notes = ("synthetic truth-capture subject: the " + str(getattr(model, "name", "head model"))
                     + " at a known shape, textured with " + PHOTOS[photo][2]
                     + (", mirrored and re-tinted" if variant % 2 else ""))
            write_json_atomic(sdir / "subject.json", {"subject_id": sid, "gender": subj["gender"],
                                                      "professional": subj["professional"], "notes": notes})
            for folder in (sdir, sdir / "songs", truth / sid):
                remove_stale_temps(folder)
            sub_seed = seed * 1000 + variant
            subject = make_subject(model, sub_seed, variant, texture_size, photo)
            save_npz_atomic(truth / sid / "subject_truth.npz", {"shape": subject.shape})
            if with_scan:
                with atomic_dir(sdir / "scan") as scan_tmp:
                    write_demo_scan(scan_tmp, truth / sid, sub_seed, subject_photo(variant, photo),
                                    write_landmarks=scan_landmarks, model=model, shape=subject.shape,
                                    units=SCAN_UNITS)
            background = backdrop(width, height, seed * 1000 + variant)
            songs = []
            for song in subj["songs"]:
                params = {"truth_version": TRUTH_VERSION, "width": width, "height": height, "seconds": seconds,
                          "fps": fps, "seed": seed, "subject": sid, "song": song,
                          "head_model": str(getattr(model, "name", "?")), "texture_size": texture_size,
                          "photo": photo,
                          # the generated head changes with its generator: an old truth must not pass
                          "procedural_version": None if getattr(model, "is_real", False) else GENERATOR_VERSION}
                song_dir = sdir / "songs" / song["song_id"]
                truth_dir = truth / sid / song["song_id"]
                if not force and _song_is_current(song_dir, truth_dir, params):
                    progress.skip(n_frames)
                    songs.append({"song_id": song["song_id"], "skipped": True})
                    continue
                t0 = time.monotonic()
                songs.append(make_truth_song(song_dir, truth_dir, song, model, subject, background, width,
                                             height, seconds, fps, workers, params, progress))
                log.info("truth song %s/%s: %d frames in %.1f s", sid, song["song_id"], n_frames,
                         time.monotonic() - t0)
            summary["subjects"].append({"subject_id": sid, "scan": with_scan, "songs": songs})
    finally:
        progress.close()
    return summary


def read_song_truth(truth_dir: Path) -> tuple[dict, dict]:
    """(arrays of truth.npz, truth.json) of one song."""
    truth_dir = Path(truth_dir)
    with np.load(truth_dir / "truth.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((truth_dir / "truth.json").read_text())
