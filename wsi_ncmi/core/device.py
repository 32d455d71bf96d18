"""Choosing the torch device: CUDA when present and asked for, CPU otherwise, with a clear error for a bad choice."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda'/'cuda:N' must be available; anything torch accepts otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r}: not a device (use auto, cpu, cuda or cuda:N)") from exc
