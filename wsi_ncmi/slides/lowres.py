"""Read a whole slide at low resolution (for tissue masks and thumbnails) without ever holding level 0 in memory."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from wsi_ncmi.slides.backend import Slide

MAX_READ_PIXELS = 1 << 24
"""Pixels read per strip; bounds memory (about 64 MB of RGBA) whatever the slide's size."""


@dataclass(frozen=True)
class LowRes:
    """A low-resolution RGB image of the whole slide and the level-0 pixels one of its pixels covers."""

    image: np.ndarray
    level: int
    factor: int
    downsample: float

    @property
    def scale(self) -> float:
        """Level-0 pixels per low-res pixel."""
        return self.downsample * self.factor


def choose_level(level_mpps: list[float], target_mpp: float, tolerance: float = 0.05) -> int:
    """The coarsest level whose resolution is at least as fine as `target_mpp` (within `tolerance`); else level 0."""
    best = 0
    for level, mpp in enumerate(level_mpps):
        if mpp <= target_mpp * (1 + tolerance) and mpp >= level_mpps[best]:
            best = level
    return best


def read_lowres(slide: Slide, mpp0: float, target_mpp: float, max_read_pixels: int = MAX_READ_PIXELS) -> LowRes:
    """The whole slide at about `target_mpp` (never coarser): the nearest finer pyramid level, reduced by an
    integer factor, read in strips so that memory stays bounded even for a single-level slide."""
    level_mpps = [mpp0 * ds for ds in slide.level_downsamples]
    level = choose_level(level_mpps, target_mpp, tolerance=0.0)
    factor = max(1, math.floor(target_mpp / level_mpps[level] + 1e-6))
    width, height = slide.level_dimensions[level]
    downsample = slide.level_downsamples[level]
    out_w, out_h = max(1, width // factor), max(1, height // factor)
    whole = slide.read_level(level) if width * height <= max_read_pixels else None
    if whole is not None:
        image = whole[: out_h * factor, : out_w * factor]
        if factor > 1:
            image = np.asarray(Image.fromarray(image).reduce(factor))
        return LowRes(np.ascontiguousarray(image), level, factor, downsample)
    rows_per_strip = max(factor, (max_read_pixels // max(width, 1)) // factor * factor)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    for y in range(0, out_h * factor, rows_per_strip):
        h = min(rows_per_strip, out_h * factor - y)
        strip = slide.read_region((0, round(y * downsample)), level, (out_w * factor, h))
        if factor > 1:
            strip = np.asarray(Image.fromarray(strip).reduce(factor))
        out[y // factor : y // factor + strip.shape[0]] = strip
    return LowRes(out, level, factor, downsample)
