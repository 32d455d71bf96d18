"""Thumbnails for checking a tiling by eye: tissue contour, tiles and removed areas in distinct colours, a legend."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from wsi_ncmi.atomic import atomic_path
from wsi_ncmi.slides.morphology import inner_edge

CONTOUR = (0, 170, 0)
TILES = (20, 40, 160)
REMOVED = ((230, 0, 200), (255, 140, 0), (0, 190, 220), (200, 30, 30), (120, 70, 20))
"""Colours of removal masks, in the order they are given (magenta, orange, cyan, red, brown)."""
REMOVED_OPACITY = 0.55


def _resample(mask: np.ndarray, mask_scale: float, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A mask whose pixels are `mask_scale` level-0 px wide, sampled at the centres of an image of `shape` whose
    pixels are `scale` level-0 px wide (false beyond the mask)."""
    padded = np.pad(np.asarray(mask, dtype=bool), ((0, 1), (0, 1)))
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * scale / mask_scale).astype(np.int64), mask.shape[0])
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * scale / mask_scale).astype(np.int64), mask.shape[1])
    return padded.take(rows, axis=0).take(cols, axis=1)


def _spans(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the span, position) for every position in each inclusive span starts[i]..stops[i]."""
    lengths = np.maximum(stops - starts + 1, 0)
    which = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return which, starts[which] + offsets


def _draw_tiles(pixels: np.ndarray, coords: np.ndarray, size0: int, scale: float) -> None:
    """Outline each tile (level-0 top-left corners, `size0` px square) on `pixels` in place."""
    if len(coords) == 0:
        return
    h, w = pixels.shape[:2]
    left = np.clip(np.floor(coords[:, 0] / scale).astype(np.int64), 0, w - 1)
    top = np.clip(np.floor(coords[:, 1] / scale).astype(np.int64), 0, h - 1)
    right = np.clip(np.ceil((coords[:, 0] + size0) / scale).astype(np.int64) - 1, 0, w - 1)
    bottom = np.clip(np.ceil((coords[:, 1] + size0) / scale).astype(np.int64) - 1, 0, h - 1)
    which, cols = _spans(left, right)
    pixels[top[which], cols] = TILES
    pixels[bottom[which], cols] = TILES
    which, rows = _spans(top, bottom)
    pixels[rows, left[which]] = TILES
    pixels[rows, right[which]] = TILES


def _legend(width: int, entries: list[tuple[tuple[int, int, int], str]]) -> np.ndarray:
    """A white band, `width` px wide, with a colour swatch and a label for each entry."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(12, width // 80)
    try:
        font = ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        font = ImageFont.load_default()
    band = Image.new("RGB", (width, size * 2), "white")
    draw = ImageDraw.Draw(band)
    x = size // 2
    for colour, text in entries:
        draw.rectangle((x, size // 2, x + size - 1, size // 2 + size - 1), fill=colour)
        x += size + size // 3
        draw.text((x, size // 2), text, fill=(0, 0, 0), font=font)
        x += int(draw.textlength(text, font=font)) + size
    return np.asarray(band)


def _shading(colour: tuple[int, int, int]) -> np.ndarray:
    """(256, 3) uint8 table: each channel value blended with `colour` at REMOVED_OPACITY, so shading a region is a
    lookup instead of float arithmetic on every pixel of it."""
    levels = np.arange(256)[:, None]
    return (levels * (1 - REMOVED_OPACITY) + REMOVED_OPACITY * np.asarray(colour, dtype=np.float32)).astype(np.uint8)


def draw_thumbnail(
    image: np.ndarray,
    scale: float,
    mask: np.ndarray,
    mask_scale: float,
    coords: np.ndarray,
    size0: int,
    removals: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """RGB thumbnail: `image` (pixels `scale` level-0 px wide) with removed areas shaded (`removals`: name ->
    boolean mask at the tissue mask's resolution), the tissue contour, the tiles, and a legend band below."""
    pixels = np.array(image, dtype=np.uint8)
    flat = pixels.reshape(-1, 3)
    shape = pixels.shape[:2]
    entries: list[tuple[tuple[int, int, int], str]] = [(CONTOUR, "tissue"), (TILES, f"tiles ({len(coords)})")]
    for index, (name, removed) in enumerate((removals or {}).items()):
        colour = REMOVED[index % len(REMOVED)]
        area = _resample(removed, mask_scale, shape, scale)
        inside = np.flatnonzero(area)  # flat indices: boolean indexing of an RGB image by a 2-D mask is slow
        flat[inside] = _shading(colour)[flat[inside], np.arange(3)]
        flat[np.flatnonzero(inner_edge(area))] = colour
        entries.append((colour, f"{name} (removed)"))
    flat[np.flatnonzero(inner_edge(_resample(mask, mask_scale, shape, scale)))] = CONTOUR
    _draw_tiles(pixels, np.asarray(coords).reshape(-1, 2), size0, scale)
    return np.concatenate([pixels, _legend(shape[1], entries)], axis=0)


def save_image(pixels: np.ndarray, path: Path) -> None:
    """Save an RGB array atomically: JPEG for a .jpg path (quality 90, no chroma subsampling, so 1-px lines keep
    their colour; several times cheaper than PNG), otherwise PNG with fast compression."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels))
    with atomic_path(path) as tmp:
        if Path(path).suffix.lower() in (".jpg", ".jpeg"):
            image.save(tmp, format="JPEG", quality=90, subsampling=0)
        else:
            image.save(tmp, format="PNG", compress_level=1)
