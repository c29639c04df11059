"""Landmark tracking on portrait frames: real MTCNN + Dlib on the astronaut photograph."""
from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import skimage.data

from tasks.faces import face_models
from tasks.faces import landmarks as L
from tasks.common.errors import PipelineInputError

SIZE = 384


@pytest.fixture(scope="module")
def portrait():
    """The astronaut's face framed like a crop-stage portrait (face about half the frame)."""
    return cv2.resize(skimage.data.astronaut()[8:228, 113:333], (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def shifted(img, dx, dy):
    M = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, M, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)


class CountingDetect:
    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        return face_models.detect_faces(rgb, device="cpu")


def test_tracks_moving_face_with_one_detection(portrait):
    shifts = [(2.0 * i, 1.0 * i) for i in range(8)]
    frames = [shifted(portrait, dx, dy) for dx, dy in shifts]
    det = CountingDetect()
    res = L.track_frames(frames, L.LandmarkTracker(det, face_models.predict_landmarks))
    assert res.landmarks.shape == (8, 68, 2) and res.landmarks.dtype == np.float32
    assert res.ok.all() and det.calls == 1 and res.detections == 1
    assert np.all(res.confidence > 0) and np.all(res.confidence <= 1)
    # landmarks follow the image: mean displacement matches the shift
    moved = (res.landmarks[-1] - res.landmarks[0]).mean(0)
    np.testing.assert_allclose(moved, shifts[-1], atol=2.5)
    # the face box handed to Dlib surrounds the landmarks
    lb = L.landmark_box(res.landmarks[3])
    assert res.boxes[3][0] < lb[2] and res.boxes[3][2] > lb[0] and res.boxes[3][1] < lb[3]


def test_lost_face_is_flagged_and_redetected(portrait):
    blank = np.full_like(portrait, 128)
    far = shifted(portrait, -90, 60)  # the face teleports: tracking from the old box must fail
    frames = [blank, portrait, shifted(portrait, 2, 1), blank, far, shifted(far, 1, 1)]
    det = CountingDetect()
    res = L.track_frames(frames, L.LandmarkTracker(det, face_models.predict_landmarks))
    assert res.ok.tolist() == [False, True, True, False, True, True]
    assert res.confidence[0] == 0 and res.confidence[3] == 0
    # held / backfilled landmarks keep downstream crops finite
    assert np.isfinite(res.landmarks).all()
    np.testing.assert_array_equal(res.landmarks[0], res.landmarks[1])
    np.testing.assert_array_equal(res.landmarks[3], res.landmarks[2])
    # MTCNN on frames 0 and 1 (nothing to track yet), 3 (tracking fails, no face) and 4 (after a failure)
    assert det.calls == 4
    np.testing.assert_allclose((res.landmarks[4] - res.landmarks[1]).mean(0), [-90, 60], atol=4)
    assert res.stats.get("no-face") == 2


def test_tracking_failure_triggers_redetection(portrait):
    """Dlib given a box on a face that has moved far away returns points off the face: the check
    rejects them (jump / fit) and MTCNN finds the face again."""
    far = shifted(portrait, 100, -70)
    det = CountingDetect()
    res = L.track_frames([portrait, far], L.LandmarkTracker(det, face_models.predict_landmarks))
    assert res.ok.all() and det.calls == 2
    assert sum(res.stats.values()) == 1 and set(res.stats) <= {"jump", "fit", "scale", "off-frame"}


def test_procrustes_residual_separates_faces_from_noise(portrait):
    b, _ = face_models.detect_faces(portrait, device="cpu")
    lmk = face_models.predict_landmarks(portrait, b[0]).astype(np.float64)
    ref = L.normalise_rigid(lmk)
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    assert L.procrustes_residual(lmk @ rot.T * 1.7 + 40, ref) < 1e-6
    scrambled = lmk.copy()
    scrambled[L.RIGID] = np.random.default_rng(0).permutation(lmk[L.RIGID])
    assert L.procrustes_residual(scrambled, ref) > 0.5


def write_mp4(path, frames, fps=30):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_iter_rgb_frames_streams_and_rejects_broken_files(tmp_path, portrait):
    p = tmp_path / "segment_000.mp4"
    write_mp4(p, [portrait, shifted(portrait, 3, 0), shifted(portrait, 6, 0)])
    frames = list(L.iter_rgb_frames(p))
    assert len(frames) == 3 and frames[0].shape == (SIZE, SIZE, 3) and frames[0].dtype == np.uint8
    assert np.abs(frames[0].astype(int) - portrait).mean() < 6  # H.264 round trip
    broken = tmp_path / "segment_001.mp4"
    broken.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(PipelineInputError, match="segment_001.mp4"):
        list(L.iter_rgb_frames(broken))
    with pytest.raises(PipelineInputError, match="not found"):
        list(L.iter_rgb_frames(tmp_path / "missing.mp4"))


def test_detection_on_downscaled_frame_maps_boxes_back(portrait):
    """MTCNN runs on a frame shrunk to `detect_width`; its box comes back in full-size pixels."""
    big = cv2.resize(portrait, (2 * SIZE, 2 * SIZE), interpolation=cv2.INTER_LINEAR)
    seen = []

    def detect(rgb):
        seen.append(rgb.shape)
        return face_models.detect_faces(rgb, device="cpu")

    tracker = L.LandmarkTracker(detect, face_models.predict_landmarks, L.TrackParams(detect_width=SIZE))
    lmk, ok, _, box = tracker.step(big)
    ref, _ = face_models.detect_faces(portrait, device="cpu")
    assert ok and seen == [(SIZE, SIZE, 3)]
    np.testing.assert_allclose(box, 2 * ref[0], atol=6)
    assert np.all((lmk >= box[:2] - 20) & (lmk <= box[2:] + 20))
