"""Tissue masks on a low-resolution image, CLAM-style, with every size given in physical units (um, um^2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from wsi_ncmi.tiling.morphology import dilate, erode, fill_holes, remove_small, window_count


@dataclass(frozen=True)
class TissueParams:
    """Tissue detection settings; the defaults suit H&E at any scan resolution.

    mask_mpp: resolution the mask is computed at (um/px; 8-16 is typical).
    threshold: 'otsu' or a fixed saturation (0-255); min_saturation is a floor under Otsu so a blank
    slide is not split in two by its own noise.
    median_um / closing_um: smoothing and gap-closing widths; min_region_um2 / max_hole_um2: tissue regions
    smaller than the first are dropped, holes smaller than the second are filled.
    """

    mask_mpp: float = 8.0
    threshold: str | int = "otsu"
    min_saturation: int = 15
    median_um: float = 56.0
    closing_um: float = 32.0
    min_region_um2: float = 20000.0
    max_hole_um2: float = 10000.0

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def channel_range(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel maximum and minimum over R, G and B (uint8): what saturation, ink hue and darkness are computed
    from, so tissue detection and quality control compute them once."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


def saturation(rgb: np.ndarray, channels: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """HSV saturation of an RGB uint8 image, scaled to 0-255 (uint8); `channels` is its channel_range if known."""
    hi, lo = channel_range(rgb) if channels is None else channels
    sat = np.zeros(hi.shape, dtype=np.float32)
    np.divide((hi - lo).astype(np.float32) * 255.0, hi, out=sat, where=hi > 0)
    return sat.astype(np.uint8)


def _odd(n: float) -> int:
    n = max(1, round(n))
    return n if n % 2 else n + 1


def otsu(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values (between-class variance maximised over the 256-bin histogram)."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * np.arange(256))
    w0, w1 = weight[:-1], total - weight[:-1]
    m0 = np.divide(mean[:-1], w0, out=np.zeros(255), where=w0 > 0)
    m1 = np.divide(mean[-1] - mean[:-1], w1, out=np.zeros(255), where=w1 > 0)
    between = w0 * w1 * (m0 - m1) ** 2
    return int(np.argmax(between)) + 1


def otsu_with_floor(sat: np.ndarray, floor: int) -> int:
    """Otsu's threshold, never below `floor`; `floor` itself when the class below Otsu's threshold is as saturated
    as tissue (mean >= 2 x floor): then the image has no background and Otsu would split the tissue in two."""
    threshold = otsu(sat)
    below = sat[sat < threshold]
    if below.size and float(below.mean()) >= 2 * floor:
        return floor
    return max(threshold, floor)


def median_at_least(values: np.ndarray, threshold: int, size: int) -> np.ndarray:
    """Where the size x size median of `values` is >= threshold, without computing the median: that holds exactly
    when at least half the window (rounded up) is >= threshold, a box count that costs O(1) per pixel."""
    above = values >= threshold
    if size <= 1:
        return above
    return window_count(above, size, outside="reflect") >= (size * size + 1) // 2


def tissue_mask(
    rgb: np.ndarray,
    mpp: float,
    params: TissueParams,
    exclude: np.ndarray | None = None,
    channels: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Boolean tissue mask of an RGB image whose pixels are `mpp` um wide.

    Saturation, median-smoothed, thresholded (Otsu with a floor, or fixed); closing; small holes filled and small
    regions dropped by their physical area. Pixels in `exclude` (quality-control removals) count as white, so ink
    and black borders neither count as tissue nor pull the threshold towards themselves; `channels` is the image's
    channel_range when already computed.
    """
    sat = saturation(rgb, channels)
    if exclude is not None:
        sat[exclude] = 0
    if params.threshold == "otsu":
        threshold = otsu_with_floor(sat, params.min_saturation)
    else:
        threshold = int(params.threshold)
    mask = median_at_least(sat, threshold, _odd(params.median_um / mpp))
    radius = round(params.closing_um / mpp / 2)
    if radius > 0:
        size = 2 * radius + 1
        closed = erode(dilate(np.pad(mask, radius), size), size)
        mask = closed[radius:-radius, radius:-radius]
    pixel_area = mpp * mpp
    return remove_small(fill_holes(mask, params.max_hole_um2 / pixel_area), params.min_region_um2 / pixel_area)
