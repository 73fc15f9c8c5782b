"""Where a job's tensors live: one rule for every verb.

`--device` (or a library call's `device=`) names a PyTorch device; absent, the first CUDA GPU when PyTorch
sees one, else the CPU. A named CUDA device that PyTorch cannot use is an error, not a silent fall-back.
"""

from __future__ import annotations

import torch

from .errors import DermsynthError


class DeviceError(DermsynthError, ValueError):
    """The requested device does not exist on this machine (or is not a PyTorch device name)."""


def choose_device(device: str | torch.device | None = None) -> torch.device:
    """The `torch.device` to run on.

    `device`: None or "" (auto: `cuda` when `torch.cuda.is_available()`, else `cpu`), or any name
    `torch.device` accepts (`cpu`, `cuda`, `cuda:1`, `mps`). Raises `DeviceError` naming the device when the
    name is not a device or CUDA is requested on a machine without a usable GPU (the fix: `--device cpu`)."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"--device {device!r} is not a PyTorch device ({exc}); use cpu, cuda or cuda:<index>") \
            from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device} asks for a GPU, but PyTorch sees none on this machine "
                              "(use --device cpu, or install PyTorch's CUDA build on a GPU node)")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s) "
                              f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    return chosen
