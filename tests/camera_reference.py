"""Independent reference for EMOCA's cameras, written from DECA/EMOCA's conventions and skimage, not from
the code under test: points X (N,3) projected orthographically, `s * (X[:, :2] + t)`, y flipped, then
pixels `(p + 1) * size / 2`; a crop pixel goes back to the frame through skimage's inverse of the
similarity that maps the box corners to (0,0), (0,223), (223,0) (EMOCA's test-time crop)."""

from __future__ import annotations

import numpy as np
from skimage.transform import estimate_transform


def orthographic_pixels(X: np.ndarray, cam, size: float) -> np.ndarray:
    """(N,3) points, cam [s, tx, ty] -> (N,2) pixels of a size x size image."""
    s, tx, ty = (float(v) for v in cam)
    p = s * (np.asarray(X, np.float64)[:, :2] + [tx, ty])
    return (p * [1.0, -1.0] + 1.0) * size / 2.0


def crop_pixels_in_frame(X: np.ndarray, crop_cam, box) -> np.ndarray:
    """Where the crop camera puts X, in the pixels of the frame the 224 crop came from; box [cx, cy, size]."""
    cx, cy, size = (float(v) for v in box)
    h = size / 2
    src = np.array([[cx - h, cy - h], [cx - h, cy + h], [cx + h, cy - h]])
    tform = estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]], np.float64))
    return tform.inverse(orthographic_pixels(X, crop_cam, 224))
