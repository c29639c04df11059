"""The two shipped face models the crop stage (and later stages) use: MTCNN boxes, Dlib 68 landmarks.

Both are real models with weights shipped inside installed packages — no download, no stand-in:
- MTCNN from facenet-pytorch (weights in `facenet_pytorch/data/{p,r,o}net.pt`);
- Dlib's 68-point shape predictor from the `face_recognition_models` package
  (`models/shape_predictor_68_face_landmarks.dat`, iBUG 300-W landmark order).

Each detector is built once per process (per device) and cached: building MTCNN costs ~100 ms
and the Dlib predictor ~1 s (a 100 MB file), far more than one call.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import threading
from pathlib import Path

import dlib
import numpy as np
import torch

from tasks.common.errors import ModelFileError
from tasks.common.provenance import model_record

log = logging.getLogger("singinghead")

DLIB_68_FILE = "shape_predictor_68_face_landmarks.dat"

# iBUG 300-W index ranges used by callers.
JAW = slice(0, 17)
CHIN = 8
NOSE_TIP = 30
RIGHT_EYE = slice(36, 42)   # subject's right eye, image left
LEFT_EYE = slice(42, 48)
MOUTH = slice(48, 68)

_lock = threading.Lock()


# ----------------------------------------------------------------------------- MTCNN
def _device_key(device) -> str:
    """The torch device name MTCNN runs on; callers pass their stage's device (None: the CPU)."""
    return "cpu" if device is None else str(device)


@functools.lru_cache(maxsize=8)
def _mtcnn(device_key: str, min_face_size: int = 20, factor: float = 0.709):
    try:  # imported here to turn a broken --no-deps install into a clear error naming the fix
        from facenet_pytorch import MTCNN
    except ImportError as e:  # facenet-pytorch is installed with --no-deps by the Makefile
        raise ModelFileError("facenet_pytorch", f"cannot import MTCNN ({e})",
                             "pip install --no-deps facenet-pytorch") from e
    # keep_all: we pick the best face ourselves; post_process off: we only want boxes.
    return MTCNN(keep_all=True, post_process=False, min_face_size=int(min_face_size), factor=float(factor),
                 device=torch.device(device_key))


def mtcnn_weight_files() -> list[Path]:
    """The P/R/O-net weight files shipped with facenet-pytorch (for model records)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return [data / f"{n}net.pt" for n in ("p", "r", "o") if (data / f"{n}net.pt").is_file()]


def detect_faces(rgb: np.ndarray, device=None, min_face_size: int = 20,
                 factor: float = 0.709) -> tuple[np.ndarray, np.ndarray]:
    """MTCNN face boxes on one RGB image.

    min_face_size: smallest face searched for, in pixels (MTCNN's image pyramid starts there:
    a larger value means fewer pyramid levels, i.e. a faster call). factor: the pyramid's scale
    step (MTCNN's default 0.709; 0.5 halves the levels where face sizes are roughly known).
    rgb: (H, W, 3) uint8. Returns boxes (N, 4) float32 [x0, y0, x1, y1] in the image's pixels
    and probs (N,) float32, sorted by probability (best first); both empty (N = 0) when no face.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"detect_faces wants (H, W, 3) RGB, got {rgb.shape}")
    det = _mtcnn(_device_key(device), int(min_face_size), float(factor))
    with _lock, torch.inference_mode():
        boxes, probs = det.detect(np.ascontiguousarray(rgb, dtype=np.uint8))
    if boxes is None or probs is None:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    # With numpy 2 facenet-pytorch may hand back object arrays (ragged batch code path).
    boxes = np.asarray([np.asarray(b, dtype=np.float32) for b in boxes], dtype=np.float32).reshape(-1, 4)
    probs = np.asarray([np.float32(p) if p is not None else np.nan for p in np.ravel(probs)], np.float32)
    keep = np.isfinite(probs) & np.all(np.isfinite(boxes), axis=1)
    boxes, probs = boxes[keep], probs[keep]
    order = np.argsort(-probs, kind="stable")
    return boxes[order], probs[order]


# ----------------------------------------------------------------------------- Dlib 68
def dlib_68_path() -> Path:
    """Path of the 68-point predictor inside `face_recognition_models` (without importing it:
    its __init__ imports pkg_resources, deprecated and absent from new setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    fix = "pip install face_recognition_models"
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("face_recognition_models", "package not installed (Dlib 68-point model)", fix)
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_68_FILE
    if not path.is_file():
        raise ModelFileError(path, "Dlib 68-point landmark model file is missing", fix)
    return path


@functools.lru_cache(maxsize=1)
def _predictor():
    path = dlib_68_path()
    try:
        return dlib.shape_predictor(str(path))
    except RuntimeError as e:
        raise ModelFileError(path, f"Dlib cannot load the 68-point model ({e})",
                             "pip install --force-reinstall face_recognition_models") from e


def _as_dlib_image(img: np.ndarray) -> np.ndarray:
    """Dlib takes uint8 gray (H, W) or RGB (H, W, 3), C-contiguous."""
    if img.dtype != np.uint8:
        raise ValueError(f"landmark image must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"landmark image must be (H, W) or (H, W, 3), got {img.shape}")
    return np.ascontiguousarray(img)


def predict_landmarks(image: np.ndarray, box) -> np.ndarray:
    """Dlib 68 landmarks of the face in `box`.

    image: (H, W) or (H, W, 3) uint8 (gray or RGB); box: (4,) [x0, y0, x1, y1] in image pixels.
    Returns (68, 2) float32 (x, y) in image pixels, iBUG order.
    """
    pred = _predictor()
    img = _as_dlib_image(image)
    x0, y0, x1, y1 = (int(round(float(v))) for v in np.asarray(box, dtype=np.float64).reshape(4))
    shape = pred(img, dlib.rectangle(x0, y0, x1, y1))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def predict_landmarks_batch(images, boxes) -> np.ndarray:
    """Landmarks of many (image, box) pairs: images a sequence of (H, W[, 3]) uint8, boxes (B, 4).
    Returns (B, 68, 2) float32."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
    out = np.zeros((len(boxes), 68, 2), np.float32)
    for i, (img, b) in enumerate(zip(images, boxes)):
        out[i] = predict_landmarks(img, b)
    return out


def model_records() -> list[dict]:
    """Provenance records of both face models (real, shipped weights)."""
    return copy.deepcopy(_model_records())


@functools.lru_cache(maxsize=1)
def _model_records() -> list[dict]:
    # Hashing the 100 MB Dlib file takes ~0.3 s: once per process is enough.
    return [model_record("facenet-pytorch MTCNN", True, mtcnn_weight_files()),
            model_record("dlib shape_predictor_68_face_landmarks", True, [dlib_68_path()])]
