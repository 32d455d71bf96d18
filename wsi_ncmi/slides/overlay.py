"""Thumbnails with the tissue contour and the tile grid drawn on them, for checking a tiling by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from wsi_ncmi.atomic import atomic_path

CONTOUR = (0, 170, 0)
GRID = (20, 40, 160)


def draw_overlay(
    image: np.ndarray, mask: np.ndarray, coords: np.ndarray, size0: int, scale: float, max_side: int = 2048
) -> Image.Image:
    """RGB thumbnail of `image` (whose pixels are `scale` level-0 px wide) with the mask's contour and the tiles."""
    factor = max(1, int(np.ceil(max(image.shape[:2]) / max_side)))
    thumb = Image.fromarray(image).reduce(factor) if factor > 1 else Image.fromarray(image)
    small_mask = mask[::factor, ::factor][: thumb.height, : thumb.width]
    edge = small_mask & ~ndimage.binary_erosion(small_mask, iterations=1, border_value=0)
    pixels = np.array(thumb)
    pixels[: edge.shape[0], : edge.shape[1]][edge] = CONTOUR
    thumb = Image.fromarray(pixels)
    draw = ImageDraw.Draw(thumb)
    px = scale * factor
    side = size0 / px
    for x, y in coords:
        left, top = x / px, y / px
        draw.rectangle((left, top, left + side, top + side), outline=GRID)
    return thumb


def save_png(image: Image.Image, path: Path) -> None:
    """Save a PNG atomically (fast compression: thumbnails are written once per slide per run)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
