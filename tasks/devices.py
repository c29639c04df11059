"""Which torch device a stage runs on."""
from __future__ import annotations

import torch

from tasks.config import device as device_config


def torch_device(name: str | None = None) -> torch.device:
    """`auto` (the `[device] torch_device` default): CUDA when available, else CPU."""
    name = name or device_config().torch_device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def gpu_resources(uses_gpu: bool = True) -> dict:
    """Luigi `resources` of a GPU-bound task: one `gpu` unit when it will run on CUDA here.

    A CPU-only worker claims nothing, so `[resources] gpu` never throttles CPU work.
    """
    return {"gpu": 1} if uses_gpu and torch_device().type == "cuda" else {}
