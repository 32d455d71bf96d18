"""What the mask checks share: the low-resolution image with its channel statistics computed once, and the
morphology (openings, closings, growing, parts touching the border) done on a mask's bounding box."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.tiling.morphology import dilate, erode, label

if TYPE_CHECKING:
    from wsi_ncmi.tiling.qc.params import QCParams


class QCImage:
    """The RGB image QC's masks are found on (pixels `mpp` um wide) and what several checks derive from it, each
    computed once, when first asked for: the channel range (max, min per pixel) and the near-black regions."""

    def __init__(
        self, rgb: np.ndarray, mpp: float, params: QCParams, channels: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        self.rgb, self.mpp, self.params = rgb, mpp, params
        if channels is not None:
            self.__dict__["channels"] = channels

    @cached_property
    def channels(self) -> tuple[np.ndarray, np.ndarray]:
        """The brightest and darkest channel of every pixel (tissue.channel_range)."""
        from wsi_ncmi.tiling.tissue import channel_range

        return channel_range(self.rgb)

    @property
    def value(self) -> np.ndarray:
        """HSV value of every pixel (its brightest channel, uint8)."""
        return self.channels[0]

    @cached_property
    def near_black(self) -> np.ndarray:
        """Pixels at or below `dark_max_value`, parts narrower than `min_width_um` dropped."""
        return without_thin(self.value <= self.params.dark_max_value, self.mpp, self.params)

    @cached_property
    def near_black_at_edge(self) -> np.ndarray:
        """The near-black regions that touch the image's edge (scanner borders, out-of-tissue black)."""
        return touching_edge(self.near_black)


def within_box(mask: np.ndarray, margin: int, op: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """op(mask) computed on the mask's bounding box grown by `margin` px and placed back; the same as op on the
    whole image for box dilations, erosions, openings and closings of radius r when margin > 2r (beyond the
    margin every pixel stays false), and several times cheaper when the mask is a small part of the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask
    box = (
        slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
        slice(max(cols[0] - margin, 0), cols[-1] + margin + 1),
    )
    out = np.zeros_like(mask)
    out[box] = op(mask[box])
    return out


def opened(mask: np.ndarray, radius: int) -> np.ndarray:
    return dilate(erode(mask, 2 * radius + 1), 2 * radius + 1)


def closed(mask: np.ndarray, radius: int) -> np.ndarray:
    return erode(dilate(mask, 2 * radius + 1), 2 * radius + 1)


def without_thin(mask: np.ndarray, mpp: float, params: QCParams) -> np.ndarray:
    """The mask without its parts narrower than `min_width_um` (an opening, on the mask's bounding box)."""
    radius = round(params.min_width_um / mpp / 2)
    return within_box(mask, 2 * radius + 1, lambda m: opened(m, radius))


def grown(mask: np.ndarray, mpp: float, params: QCParams) -> np.ndarray:
    """The mask grown by `margin_um` (blended edges), on its bounding box."""
    size = 2 * round(params.margin_um / mpp) + 1
    return within_box(mask, size, lambda m: dilate(m, size))


def touching_edge(mask: np.ndarray) -> np.ndarray:
    """The 8-connected parts of `mask` that touch the image's border; labelled within the bounding box of `mask`,
    which for borders and strokes is a small part of the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    parts = label(mask[box], diagonal=True)
    height, width = parts.shape
    on_side = (
        ((parts.rows == 0) & (rows[0] == 0))
        | ((parts.rows == height - 1) & (rows[-1] == mask.shape[0] - 1))
        | ((parts.starts == 0) & (cols[0] == 0))
        | ((parts.ends == width) & (cols[-1] == mask.shape[1] - 1))
    )
    keep = np.zeros(parts.count + 1, dtype=bool)
    keep[parts.run_label[on_side]] = True
    inside = np.zeros((height, width), dtype=bool)
    inside.reshape(-1)[parts.pixels(keep)] = True
    out = np.zeros_like(mask)
    out[box] = inside
    return out
