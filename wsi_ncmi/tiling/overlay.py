"""Thumbnails for checking a tiling by eye: tissue contour, tiles and removed areas in distinct colours, a legend."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.tiling.morphology import inner_edge

CONTOUR = (0, 170, 0)
TILES = (20, 40, 160)
REMOVED = ((230, 0, 200), (255, 140, 0), (0, 190, 220), (200, 30, 30), (120, 70, 20))
"""Colours of removal masks, in the order they are given (magenta, orange, cyan, red, brown)."""
REMOVED_OPACITY = 0.55


def _sources(length: int, scale: float, mask_scale: float, limit: int) -> np.ndarray:
    """Index of the mask pixel under the centre of each of `length` image pixels (`limit`: beyond the mask)."""
    return np.minimum(((np.arange(length) + 0.5) * scale / mask_scale).astype(np.int64), limit)


def _resample(mask: np.ndarray, mask_scale: float, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A mask whose pixels are `mask_scale` level-0 px wide, sampled at the centres of an image of `shape` whose
    pixels are `scale` level-0 px wide (false beyond the mask)."""
    padded = np.pad(np.asarray(mask, dtype=bool), ((0, 1), (0, 1)))
    rows = _sources(shape[0], scale, mask_scale, mask.shape[0])
    cols = _sources(shape[1], scale, mask_scale, mask.shape[1])
    return padded.take(rows, axis=0).take(cols, axis=1)


def _cells(pixels: np.ndarray) -> np.ndarray:
    """A contiguous RGB image as a flat array of 3-byte cells: whole pixels gathered and scattered by flat index in
    one step, several times faster than boolean indexing of an RGB image by a 2-D mask."""
    return pixels.reshape(-1).view(np.dtype("V3"))


def _shade(pixels: np.ndarray, removed: np.ndarray, mask_scale: float, scale: float, colour: tuple[int, int, int]):
    """Blend `colour` into the pixels under `removed` (a mask at `mask_scale`) and outline them, in place. Only
    the image window over the mask's bounding box is resampled: removals are usually a small part of a slide, and
    beyond the box nothing is removed, so edges found inside the window are the whole image's."""
    rows, cols = np.flatnonzero(removed.any(axis=1)), np.flatnonzero(removed.any(axis=0))
    if rows.size == 0:
        return
    src_rows = _sources(pixels.shape[0], scale, mask_scale, removed.shape[0])
    src_cols = _sources(pixels.shape[1], scale, mask_scale, removed.shape[1])
    r0, r1 = np.searchsorted(src_rows, rows[0]), np.searchsorted(src_rows, rows[-1], side="right")
    c0, c1 = np.searchsorted(src_cols, cols[0]), np.searchsorted(src_cols, cols[-1], side="right")
    area = removed.take(src_rows[r0:r1], axis=0).take(src_cols[c0:c1], axis=1)
    window = np.ascontiguousarray(pixels[r0:r1, c0:c1])
    cells = _cells(window)
    inside = np.flatnonzero(area)
    values = window.reshape(-1, 3).take(inside, axis=0)
    table = _shading(colour)
    shaded = np.stack([table[:, channel].take(values[:, channel]) for channel in range(3)], axis=1)
    cells[inside] = _cells(shaded)
    cells[np.flatnonzero(inner_edge(area))] = _cells(np.asarray(colour, dtype=np.uint8))
    pixels[r0:r1, c0:c1] = window


def _spans(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the span, position) for every position in each inclusive span starts[i]..stops[i]."""
    lengths = np.maximum(stops - starts + 1, 0)
    which = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return which, starts[which] + offsets


def _draw_tiles(
    pixels: np.ndarray, coords: np.ndarray, size0: int, scale: float, colour: tuple[int, int, int] = TILES
) -> None:
    """Outline each tile (level-0 top-left corners, `size0` px square) on `pixels` in `colour`, in place."""
    if len(coords) == 0:
        return
    h, w = pixels.shape[:2]
    left = np.clip(np.floor(coords[:, 0] / scale).astype(np.int64), 0, w - 1)
    top = np.clip(np.floor(coords[:, 1] / scale).astype(np.int64), 0, h - 1)
    right = np.clip(np.ceil((coords[:, 0] + size0) / scale).astype(np.int64) - 1, 0, w - 1)
    bottom = np.clip(np.ceil((coords[:, 1] + size0) / scale).astype(np.int64) - 1, 0, h - 1)
    which, cols = _spans(left, right)
    pixels[top[which], cols] = colour
    pixels[bottom[which], cols] = colour
    which, rows = _spans(top, bottom)
    pixels[rows, left[which]] = colour
    pixels[rows, right[which]] = colour


@lru_cache(maxsize=256)
def _legend_entry(colour: tuple[int, int, int], text: str, size: int) -> np.ndarray:
    """One legend entry on white, `2 * size` px high: a colour swatch, its label, and the gap before the next entry.
    Cached: the same few labels recur on every slide, and drawing text is most of a legend's cost."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        font = ImageFont.load_default()
    gap = size + size // 3
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = gap + int(measure.textlength(text, font=font)) + size
    entry = Image.new("RGB", (width, size * 2), "white")
    draw = ImageDraw.Draw(entry)
    draw.rectangle((0, size // 2, size - 1, size // 2 + size - 1), fill=colour)
    draw.text((gap, size // 2), text, fill=(0, 0, 0), font=font)
    out = np.asarray(entry)
    out.flags.writeable = False
    return out


def _legend(width: int, entries: list[tuple[tuple[int, int, int], str]]) -> np.ndarray:
    """A white band, `width` px wide, with a colour swatch and a label for each entry, wrapped onto as many lines
    as needed. The text is 1/40 of the width (at least 12 px), so it stays readable when the thumbnail is shown
    640 px wide (16 px) or 420 px wide (10 px)."""
    size = max(12, width // 40)
    lines: list[list[np.ndarray]] = [[]]
    x = size // 2
    for colour, text in entries:
        entry = _legend_entry(tuple(colour), text, size)
        if lines[-1] and x + entry.shape[1] > width:
            lines.append([])
            x = size // 2
        lines[-1].append(entry)
        x += entry.shape[1]
    band = np.full((size * 2 * len(lines), width, 3), 255, dtype=np.uint8)
    for row, line in enumerate(lines):
        x = size // 2
        for entry in line:
            span = min(entry.shape[1], width - x)
            if span > 0:
                band[row * size * 2 : (row + 1) * size * 2, x : x + span] = entry[:, :span]
            x += entry.shape[1]
    return band


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
    dropped: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """RGB thumbnail: `image` (pixels `scale` level-0 px wide) with removed areas shaded (`removals`: name ->
    boolean mask at the tissue mask's resolution), the tissue contour, the tiles, tiles dropped for other reasons
    outlined in their own colours (`dropped`: name -> level-0 corners), and a legend band below."""
    pixels = np.array(image, dtype=np.uint8)
    flat = pixels.reshape(-1, 3)
    shape = pixels.shape[:2]
    entries: list[tuple[tuple[int, int, int], str]] = [(CONTOUR, "tissue"), (TILES, f"tiles ({len(coords)})")]
    for index, (name, removed) in enumerate((removals or {}).items()):
        colour = REMOVED[index % len(REMOVED)]
        _shade(pixels, np.asarray(removed, dtype=bool), mask_scale, scale, colour)
        entries.append((colour, f"{name} (removed)"))
    flat[np.flatnonzero(inner_edge(_resample(mask, mask_scale, shape, scale)))] = CONTOUR
    _draw_tiles(pixels, np.asarray(coords).reshape(-1, 2), size0, scale)
    for index, (name, corners) in enumerate((dropped or {}).items(), start=len(removals or {})):
        colour = REMOVED[index % len(REMOVED)]
        corners = np.asarray(corners).reshape(-1, 2)
        _draw_tiles(pixels, corners, size0, scale, colour)
        entries.append((colour, f"{name} tiles (removed: {len(corners)})"))
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
