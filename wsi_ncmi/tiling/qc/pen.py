"""Pen ink: pixels of a listed marker hue with enough saturation, and black ink (near-black regions away from the
slide's edge) when black is listed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.tiling.qc.base import MaskCheck
from wsi_ncmi.tiling.qc.inks import PEN_HUES, RED_MIN_SATURATION
from wsi_ncmi.tiling.qc.masks import QCImage, closed, opened, within_box
from wsi_ncmi.tiling.qc.registry import CHECKS

if TYPE_CHECKING:
    from wsi_ncmi.tiling.qc.params import QCParams


def _hue(r: np.ndarray, g: np.ndarray, b: np.ndarray, hi: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """HSV hue in degrees (float32) of pixels with delta = max - min > 0."""
    r, g, b, delta = (v.astype(np.float32) for v in (r, g, b, delta))
    hue = np.where(hi == r, (g - b) / delta % 6.0, np.where(hi == g, (b - r) / delta + 2.0, (r - g) / delta + 4.0))
    return hue * np.float32(60.0)


def ink_mask(
    rgb: np.ndarray, params: QCParams, channels: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a listed ink hue with enough saturation and not near-black, and the HSV value (max channel, uint8)
    of every pixel; hue is computed only where the saturation could qualify, a minority of pixels on H&E.
    `channels` is the image's channel_range when already computed."""
    from wsi_ncmi.tiling.tissue import channel_range

    hi, lo = channel_range(rgb) if channels is None else channels
    delta = hi - lo  # uint8: hi >= lo, so no wrap-around
    floor = min(params.pen_min_saturation, RED_MIN_SATURATION)
    candidates = np.flatnonzero((delta >= np.float32(floor) * hi) & (hi > params.dark_max_value) & (delta > 0))
    ink = np.zeros(hi.size, dtype=bool)
    if candidates.size == 0:
        return ink.reshape(hi.shape), hi
    pixels = rgb.reshape(-1, 3).take(candidates, axis=0).astype(np.int16)
    pick_hi, pick_delta = hi.ravel().take(candidates), delta.ravel().take(candidates)
    hue = _hue(pixels[:, 0], pixels[:, 1], pixels[:, 2], pick_hi, pick_delta)
    sat = pick_delta / pick_hi.astype(np.float32)
    for color in params.pen_colors:
        if color not in PEN_HUES:
            continue
        low, high = PEN_HUES[color]
        band = (hue >= low) & (hue <= high) if low <= high else (hue >= low) | (hue <= high)
        need = max(params.pen_min_saturation, RED_MIN_SATURATION) if color == "red" else params.pen_min_saturation
        ink[candidates[band & (sat >= need)]] = True
    return ink.reshape(hi.shape), hi


@CHECKS.register("pen")
class PenCheck(MaskCheck):
    """Ink: a pixel of a listed hue band with enough saturation (gaps narrower than `min_width_um` closed, parts
    narrower than it dropped); near-black regions that do not touch the image's edge are black ink when black is
    listed."""

    thresholds = ("pen_colors", "pen_min_saturation")

    @classmethod
    def find(cls, image: QCImage, tissue: np.ndarray | None) -> np.ndarray:
        params = image.params
        pen, _ = ink_mask(image.rgb, params, image.channels)
        radius = round(params.min_width_um / image.mpp / 2)
        pen = within_box(pen, 2 * radius + 1, lambda m: opened(closed(m, radius), radius))
        if "black" in params.pen_colors:
            pen |= image.near_black & ~image.near_black_at_edge
        return pen
