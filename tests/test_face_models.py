"""The shipped face models: MTCNN finds the astronaut's face, Dlib puts 68 points on it in iBUG order."""
import numpy as np
import pytest
import skimage.data

from tasks.faces import face_models as fm
from tasks.common.errors import PipelineInputError


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def detection(astronaut):
    return fm.detect_faces(astronaut, device="cpu")


def test_mtcnn_finds_one_face(detection):
    boxes, probs = detection
    assert boxes.dtype == np.float32 and probs.dtype == np.float32
    assert boxes.shape[1] == 4
    confident = probs > 0.9
    assert confident.sum() == 1
    x0, y0, x1, y1 = boxes[0]
    # The astronaut's face is in the upper middle of the 512x512 photo.
    assert 120 < x0 < x1 < 330 and 20 < y0 < y1 < 230
    assert np.all(np.diff(probs) <= 0)


def test_mtcnn_no_face_gives_empty_arrays():
    flat = np.full((160, 160, 3), 127, np.uint8)
    boxes, probs = fm.detect_faces(flat, device="cpu")
    assert boxes.shape == (0, 4) and probs.shape == (0,)
    assert boxes.dtype == np.float32


def test_dlib_landmarks_ibug_order(astronaut, detection):
    box = detection[0][0]
    lm = fm.predict_landmarks(astronaut, box)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    # Inside the box (loosely: the jaw line may touch its border).
    assert np.all(lm[:, 0] > x0 - 0.1 * w) and np.all(lm[:, 0] < x1 + 0.1 * w)
    assert np.all(lm[:, 1] > y0 - 0.1 * h) and np.all(lm[:, 1] < y1 + 0.1 * h)
    # iBUG order: the chin (8) is the lowest jaw point, the nose tip (30) lies between the outer
    # eye corners (36 image-left, 45 image-right) and below the eyes, the mouth below the nose.
    assert lm[fm.CHIN, 1] == lm[fm.JAW, 1].max()
    assert lm[36, 0] < lm[fm.NOSE_TIP, 0] < lm[45, 0]
    assert lm[fm.NOSE_TIP, 1] > lm[36:48, 1].max()
    assert lm[fm.MOUTH, 1].mean() > lm[fm.NOSE_TIP, 1]
    # Gray input gives nearly the same points, and the batch helper matches the single call.
    gray = (astronaut.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    lm_gray = fm.predict_landmarks(gray, box)
    assert np.abs(lm_gray - lm).mean() < 3.0
    batch = fm.predict_landmarks_batch([astronaut, gray], np.stack([box, box]))
    assert batch.shape == (2, 68, 2)
    np.testing.assert_array_equal(batch[0], lm)


def test_missing_dlib_model_names_the_fix(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec

    class Spec:
        submodule_search_locations = [str(tmp_path)]

    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: Spec() if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(PipelineInputError) as e:
        fm.dlib_68_path()
    assert "shape_predictor_68_face_landmarks.dat" in str(e.value)
    assert "pip install face_recognition_models" in str(e.value)


def test_model_records_are_real():
    recs = fm.model_records()
    assert [r["kind"] for r in recs] == ["real", "real"]
    assert all(r["files"] for r in recs)
