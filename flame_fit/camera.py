"""The orthographic camera of DECA/EMOCA: cam = [s, tx, ty], NDC with y pointing down."""
from __future__ import annotations

import torch


def orth_project(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Points (B,N,3) and cam (B,3) = [s, tx, ty] -> NDC (B,N,2).

    xy = s * (X[..., :2] + [tx, ty]), then y negated (DECA's batch_orth_proj followed by the
    flip of EMOCA/DECA), so +x is image right and +y image down; [-1,1] spans the image.
    """
    s = cam[:, None, 0:1]
    t = cam[:, None, 1:3]
    xy = s * (points[..., :2] + t)
    return torch.cat([xy[..., :1], -xy[..., 1:2]], dim=-1)


def ndc_to_pixels(xy, size):
    """NDC -> pixels of a square image of `size` pixels: (xy + 1) * size / 2."""
    return (xy + 1.0) * (size / 2.0)


def pixels_to_ndc(px, size):
    """Pixels of a square image of `size` pixels -> NDC: px * 2 / size - 1."""
    return px * (2.0 / size) - 1.0
