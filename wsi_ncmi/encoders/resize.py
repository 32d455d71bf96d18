"""Pillow's bilinear and bicubic resize of uint8 images, reproduced on torch tensors on any device.

Tiles decoded on the GPU go through the same geometric preprocessing as tiles decoded on the CPU, where Pillow
resizes them. Pillow resizes in two passes (columns, then rows), each a sum of fixed-point weights (22 fraction
bits) rounded back to uint8; doing exactly that, with the weights as float64 (every sum is an integer below 2**53,
so exact), gives Pillow's pixels bit for bit.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

BITS = 22
"""Fraction bits of Pillow's fixed-point weights for 8-bit images (32 - 8 - 2)."""
SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


def _filter(kind: str, x: float) -> float:
    x = abs(x)
    if kind == "bilinear":
        return 1.0 - x if x < 1.0 else 0.0
    a = -0.5
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


@functools.lru_cache(maxsize=32)
def weights(in_size: int, out_size: int, kind: str) -> np.ndarray:
    """(out_size, in_size) float64 integer weights, scaled by 2**BITS, of one Pillow resize pass."""
    if kind not in SUPPORT:
        raise ValueError(f"interpolation must be bilinear or bicubic, got {kind!r}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT[kind] * filterscale
    step = 1.0 / filterscale
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = [_filter(kind, (x - center + 0.5) * step) for x in range(lo, hi)]
        total = sum(taps)
        for x, tap in zip(range(lo, hi), taps, strict=True):
            w = tap / total if total != 0.0 else tap
            out[i, x] = math.trunc(w * (1 << BITS) + (-0.5 if w < 0 else 0.5))
    return out


def _round(x: torch.Tensor) -> torch.Tensor:
    """Pillow's rounding of a pass: add half, shift right (floor), clip to 0..255."""
    import torch

    return torch.floor((x + (1 << (BITS - 1))) / (1 << BITS)).clamp_(0, 255)


def resize(images: torch.Tensor, size: int, kind: str) -> torch.Tensor:
    """uint8 (n, c, h, w) -> uint8 (n, c, size, size), as PIL.Image.resize((size, size), kind) gives each image."""
    import torch

    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    x = images.to(torch.float64)
    if w != size:
        across = torch.from_numpy(weights(w, size, kind)).to(images.device)
        x = _round(x @ across.T)
    if h != size:
        down = torch.from_numpy(weights(h, size, kind)).to(images.device)
        x = _round(down @ x)
    return x.to(torch.uint8)
