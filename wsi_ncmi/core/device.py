"""Choosing the torch device, one way for every command: CUDA when present and asked for, CPU otherwise, with a
clear error for a bad choice. torch is imported only when a device is resolved (not on the `tile` start-up path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_ncmi.core.errors import WsiNcmiError

if TYPE_CHECKING:
    import torch

DEFAULT_DEVICE = "auto"
"""The device a command or setting means when none is given: CUDA when this machine has it, else the CPU."""


class DeviceError(WsiNcmiError, ValueError):
    """A device this machine does not have, or a name that is not a device; a ValueError for callers catching that."""


def cuda_available() -> bool:
    """Whether torch sees a CUDA device on this machine."""
    import torch

    return torch.cuda.is_available()


def uses_cuda(device: str) -> bool:
    """Whether `device` as given ('auto', 'cpu', 'cuda', 'cuda:N') runs on CUDA; an explicit cuda name is taken at
    its word (resolve_device refuses it where CUDA is absent) without asking torch."""
    if device.startswith("cuda"):
        return True
    return device == "auto" and cuda_available()


def resolve_device(device: str = DEFAULT_DEVICE) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda'/'cuda:N' must be available; anything torch accepts otherwise."""
    import torch

    if device == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if device.startswith("cuda") and not cuda_available():
        raise DeviceError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"--device {device!r}: not a device (use auto, cpu, cuda or cuda:N)") from exc


def check_device(device: str) -> None:
    """Refuse (DeviceError) a device this machine does not have before a command changes anything."""
    resolve_device(device)
