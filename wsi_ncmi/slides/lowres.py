"""Read a whole slide at low resolution (for tissue masks and thumbnails) without ever holding level 0 in memory."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from wsi_ncmi.slides.backend import Slide

MAX_READ_PIXELS = 1 << 24
"""Pixels read per strip; bounds memory (about 64 MB of RGBA) whatever the slide's size or reduction factors."""


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


def _reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-average by a whole factor (PIL's reduce); the image is cropped to a multiple of the factor first."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    image = image[:h, :w]
    if factor > 1:
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))
    return np.ascontiguousarray(image)


def read_reduced(
    slide: Slide, level: int, factors: list[int], max_read_pixels: int = MAX_READ_PIXELS
) -> list[np.ndarray]:
    """The whole of `level`, box-reduced by each of `factors`, from one read of the level (whole, or in strips of
    at most `max_read_pixels` so that memory stays bounded even for a single-level slide).

    Strips need not be a multiple of any factor: the rows of a strip beyond its last whole block of `f` rows are
    carried (fewer than `f` rows) and completed by the next strip's first rows, so the result is that of reducing
    the whole level at once, and no strip is ever copied whole.
    """
    width, height = slide.level_dimensions[level]
    sizes = [(max(1, width // f), max(1, height // f)) for f in factors]
    whole = slide.read_level(level) if width * height <= max_read_pixels else None
    if whole is not None:
        return [_reduce(whole, f) for f in factors]
    downsample = slide.level_downsamples[level]
    rows_per_strip = max(1, max_read_pixels // max(width, 1))
    read_w = max(w * f for f, (w, _) in zip(factors, sizes, strict=True))
    read_h = max(h * f for f, (_, h) in zip(factors, sizes, strict=True))
    outs = [np.empty((h, w, 3), dtype=np.uint8) for w, h in sizes]
    carried: list[np.ndarray | None] = [None] * len(factors)
    done = [0] * len(factors)
    for y in range(0, read_h, rows_per_strip):
        strip = slide.read_region((0, round(y * downsample)), level, (read_w, min(rows_per_strip, read_h - y)))
        for k, (out, f) in enumerate(zip(outs, factors, strict=True)):
            part = strip[: max(0, min(strip.shape[0], out.shape[0] * f - y)), : out.shape[1] * f]
            held = carried[k]
            if held is not None:
                head = np.concatenate([held, part[: f - len(held)]])
                part = part[f - len(held) :]
                if len(head) < f:
                    carried[k] = head
                    continue
                out[done[k]] = _reduce(head, f)[0]
                done[k] += 1
            blocks = part.shape[0] // f
            if blocks:
                out[done[k] : done[k] + blocks] = _reduce(part[: blocks * f], f)
                done[k] += blocks
            carried[k] = part[blocks * f :].copy() if part.shape[0] > blocks * f else None
        del strip
    return outs


def mask_level(slide: Slide, mpp0: float, target_mpp: float) -> tuple[int, int]:
    """The level and whole reduction factor that give about `target_mpp` (never coarser): the nearest finer level."""
    level_mpps = [mpp0 * ds for ds in slide.level_downsamples]
    level = choose_level(level_mpps, target_mpp, tolerance=0.0)
    return level, max(1, math.floor(target_mpp / level_mpps[level] + 1e-6))


def read_lowres(slide: Slide, mpp0: float, target_mpp: float, max_read_pixels: int = MAX_READ_PIXELS) -> LowRes:
    """The whole slide at about `target_mpp` (never coarser): the nearest finer pyramid level, reduced by an
    integer factor, read in strips so that memory stays bounded even for a single-level slide."""
    level, factor = mask_level(slide, mpp0, target_mpp)
    image = read_reduced(slide, level, [factor], max_read_pixels)[0]
    return LowRes(image, level, factor, slide.level_downsamples[level])


def thumbnail_factor(level_size: tuple[int, int], min_side: int) -> int:
    """The largest whole reduction of a level that keeps its longest side at least `min_side` (1 when none)."""
    return max(1, max(level_size) // max(1, min_side))


def read_mask_and_thumbnail(
    slide: Slide, mpp0: float, mask_mpp: float, thumbnail_px: int, max_read_pixels: int = MAX_READ_PIXELS
) -> tuple[LowRes, LowRes]:
    """The image the tissue mask is computed on (as `read_lowres`) and a thumbnail whose longest side is at least
    `thumbnail_px` (or the slide's own, if smaller): from the mask's level when that is large enough, so the level
    is read once; otherwise from the coarsest level that is."""
    level, factor = mask_level(slide, mpp0, mask_mpp)
    min_side = min(thumbnail_px, max(slide.dimensions))
    sizes, downsamples = slide.level_dimensions, slide.level_downsamples
    thumb_level = level
    if max(sizes[level]) < min_side:
        large = [i for i, size in enumerate(sizes) if max(size) >= min_side]
        thumb_level = max(large, key=lambda i: downsamples[i]) if large else 0
    thumb_factor = thumbnail_factor(sizes[thumb_level], min_side)
    if thumb_level == level:
        mask_image, thumb_image = read_reduced(slide, level, [factor, thumb_factor], max_read_pixels)
    else:
        mask_image = read_reduced(slide, level, [factor], max_read_pixels)[0]
        thumb_image = read_reduced(slide, thumb_level, [thumb_factor], max_read_pixels)[0]
    return (
        LowRes(mask_image, level, factor, downsamples[level]),
        LowRes(thumb_image, thumb_level, thumb_factor, downsamples[thumb_level]),
    )
