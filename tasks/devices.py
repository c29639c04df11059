"""Which torch device a stage runs on (`[device]`), and the Luigi resources that follows from it."""
from __future__ import annotations

import torch

from tasks import config
from tasks.common.errors import PipelineInputError
from tasks.common.settings import DeviceSettings

DeviceLike = DeviceSettings | str | torch.device


def torch_device(device: DeviceLike | None = None) -> torch.device:
    """The torch device of `[device] torch_device` (a DeviceSettings), or of a name / torch.device.

    `auto` (the default) means CUDA when available, else CPU. `None` (or "") reads `[device]` now (for
    Luigi tasks; plain code is handed a device).
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "":
        device = config.read(DeviceSettings)
    name = device.torch_device if isinstance(device, DeviceSettings) else device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise PipelineInputError(f"device {name!r}", "is not a torch device name",
                                 "use auto, cpu, cuda or cuda:N (singinghead evaluate --device, or [device] "
                                 "torch_device in luigi.cfg)") from e
    if dev.type == "cuda":
        # Refused here, when the task is scheduled, rather than as a CUDA error deep in the first stage.
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            seen = "torch sees no GPU on this machine" if count == 0 else \
                f"torch sees {count} GPU(s) on this machine (cuda:0 to cuda:{count - 1})"
            raise PipelineInputError(f"device {name!r}", seen,
                                     "use auto (CUDA when there is a GPU, else CPU) or cpu in [device] "
                                     "torch_device of luigi.cfg (singinghead evaluate --device); nvidia-smi "
                                     "shows whether the driver sees the GPU")
    return dev


def gpu_resources(uses_gpu: bool = True, device: DeviceLike | None = None) -> dict:
    """Luigi `resources` of a GPU-bound task: one `gpu` unit when it will run on CUDA here.

    `device` as for `torch_device` (None: `[device]`). A CPU-only worker claims nothing, so
    `[resources] gpu` never throttles CPU work.
    """
    return {"gpu": 1} if uses_gpu and torch_device(device).type == "cuda" else {}
