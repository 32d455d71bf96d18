"""Pillow's bilinear and bicubic resize of uint8 images, reproduced on torch tensors on any device.

Tiles decoded on the GPU go through the same geometric preprocessing as tiles decoded on the CPU, where Pillow
resizes them. Pillow resizes in two passes (columns, then rows), each a sum of integer weights (fixed point, 22
fraction bits) rounded back to uint8. Here each pass is three float32 matrix products, one per byte of the
weights: every product of a pixel and a weight byte, and every sum of them over a filter's taps, is an integer
below 2**24, so exact in float32 (and in TF32, whose inputs keep 11 significant bits), whatever order the device
sums in; their shifted total is Pillow's sum, so the pixels equal Pillow's bit for bit.
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
MAX_TAPS = 256
"""Most filter taps per output pixel for which the byte-wise sums stay exact (256 * 255 * 255 < 2**24)."""


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
    """(out_size, in_size) int64 weights, scaled by 2**BITS, of one Pillow resize pass (Pillow's arithmetic)."""
    if kind not in SUPPORT:
        raise ValueError(f"interpolation must be bilinear or bicubic, got {kind!r}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT[kind] * filterscale
    step = 1.0 / filterscale
    out = np.zeros((out_size, in_size), dtype=np.int64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        if hi - lo > MAX_TAPS:
            raise ValueError(f"resizing {in_size} px to {out_size} px needs more than {MAX_TAPS} taps per pixel")
        taps = [_filter(kind, (x - center + 0.5) * step) for x in range(lo, hi)]
        total = sum(taps)
        for x, tap in zip(range(lo, hi), taps, strict=True):
            w = tap / total if total != 0.0 else tap
            out[i, x] = math.trunc(w * (1 << BITS) + (-0.5 if w < 0 else 0.5))
    return out


@functools.lru_cache(maxsize=32)
def _bytes(in_size: int, out_size: int, kind: str) -> tuple[np.ndarray, ...]:
    """The weights as (high, middle, low) float32 bytes: weight = high * 2**16 + middle * 2**8 + low, high signed."""
    w = weights(in_size, out_size, kind)
    return tuple(part.astype(np.float32) for part in (w >> 16, (w >> 8) & 255, w & 255))


def _pass(x: torch.Tensor, in_size: int, size: int, kind: str, rows: bool) -> torch.Tensor:
    """One Pillow pass over the last axis (rows=False) or the one before it (rows=True) of float32 pixel values."""
    import torch

    total = torch.zeros((), dtype=torch.int64, device=x.device)
    for shift, part in zip((16, 8, 0), _bytes(in_size, size, kind), strict=True):
        w = torch.from_numpy(part).to(x.device)
        total = total + ((w @ x) if rows else (x @ w.T)).to(torch.int64) * (1 << shift)
    return torch.div(total + (1 << (BITS - 1)), 1 << BITS, rounding_mode="floor").clamp_(0, 255).to(torch.float32)


def resize(images: torch.Tensor, size: int, kind: str) -> torch.Tensor:
    """uint8 (n, c, h, w) -> uint8 (n, c, size, size), as PIL.Image.resize((size, size), kind) gives each image."""
    import torch

    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    x = images.to(torch.float32)
    if w != size:
        x = _pass(x, w, size, kind, rows=False)
    if h != size:
        x = _pass(x, h, size, kind, rows=True)
    return x.to(torch.uint8)
