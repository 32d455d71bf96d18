"""Binary-mask morphology in plain numpy: window counts from running sums, connected components over row runs.

The tiling path needs only these few operations, and importing scipy.ndimage costs more CPU than tiling a slide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _odd_size(size: int) -> int:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    return size


def _window_sums(values: np.ndarray, size: int) -> np.ndarray:
    """Sums of `size` consecutive rows (valid windows only, down axis 0), from doubled partial sums: O(log size)
    array additions."""
    length = values.shape[0] - size + 1
    total = np.zeros((length, *values.shape[1:]), dtype=values.dtype)
    partial, span, offset = values, 1, 0
    while span <= size:
        if size & span:
            total += partial[offset : offset + length]
            offset += span
        partial = partial[:-span] + partial[span:]
        span *= 2
    return total


def _window_reduce(values: np.ndarray, size: int, combine: np.ufunc) -> np.ndarray:
    """`combine` (logical or/and) over `size` consecutive rows (valid windows only, down axis 0), by doubling."""
    span = 1
    while span * 2 <= size:
        values = combine(values[:-span], values[span:])
        span *= 2
    rest = size - span
    return combine(values[: values.shape[0] - rest], values[rest:])


def window_count(mask: np.ndarray, size: int, outside: str | bool = False) -> np.ndarray:
    """Number of true pixels in the size x size window centred on each pixel (odd size).

    `outside` says what lies beyond the image: False or True (constant), or 'reflect' (the image mirrored
    about its edge, edge pixel repeated, as scipy.ndimage's 'reflect' mode).
    """
    radius = _odd_size(size) // 2
    if outside == "reflect":
        padded = np.pad(mask, radius, mode="symmetric")
    else:
        padded = np.pad(mask, radius, mode="constant", constant_values=bool(outside))
    dtype = np.uint16 if size * size < 2**16 else np.int64
    return np.ascontiguousarray(_window_sums(_window_sums(padded.astype(dtype), size).T, size).T)


def _padded(mask: np.ndarray, radius: int, fill: bool) -> np.ndarray:
    """The mask with `radius` pixels of `fill` around it; np.pad's set-up costs more than the copy on masks of a
    few hundred pixels a side, which dilate and erode are called on several times per slide."""
    out = np.full((mask.shape[0] + 2 * radius, mask.shape[1] + 2 * radius), fill, dtype=bool)
    out[radius : radius + mask.shape[0], radius : radius + mask.shape[1]] = mask
    return out


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Maximum over a size x size square (odd size); nothing outside the image."""
    padded = _padded(mask, _odd_size(size) // 2, False)
    return np.ascontiguousarray(_window_reduce(_window_reduce(padded, size, np.logical_or).T, size, np.logical_or).T)


def erode(mask: np.ndarray, size: int) -> np.ndarray:
    """Minimum over a size x size square (odd size), over the part of the window inside the image."""
    padded = _padded(mask, _odd_size(size) // 2, True)
    return np.ascontiguousarray(_window_reduce(_window_reduce(padded, size, np.logical_and).T, size, np.logical_and).T)


def inner_edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the image's border counts as outside): a 1-px contour."""
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


@dataclass(frozen=True)
class Components:
    """Connected components of a binary mask, numbered 1..count in raster order of their first pixel (as
    scipy.ndimage.label numbers them), described by the mask's row runs."""

    shape: tuple[int, int]
    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    run_label: np.ndarray
    count: int

    @property
    def sizes(self) -> np.ndarray:
        """Pixels per component; index 0 (background) is 0."""
        return np.bincount(self.run_label, weights=self.ends - self.starts, minlength=self.count + 1).astype(np.int64)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Bounding box of each component as (row_start, row_stop, col_start, col_stop), in label order."""
        n = self.count + 1
        top = np.full(n, np.iinfo(np.int64).max)
        left = np.full(n, np.iinfo(np.int64).max)
        bottom = np.zeros(n, dtype=np.int64)
        right = np.zeros(n, dtype=np.int64)
        np.minimum.at(top, self.run_label, self.rows)
        np.maximum.at(bottom, self.run_label, self.rows + 1)
        np.minimum.at(left, self.run_label, self.starts)
        np.maximum.at(right, self.run_label, self.ends)
        return [(int(top[i]), int(bottom[i]), int(left[i]), int(right[i])) for i in range(1, n)]

    def pixels(self, chosen: np.ndarray) -> np.ndarray:
        """Flat indices of the pixels of the components whose entry in `chosen` (indexed by label) is true."""
        runs = chosen[self.run_label]
        first = self.rows[runs] * self.shape[1] + self.starts[runs]
        lengths = self.ends[runs] - self.starts[runs]
        run_offsets = np.cumsum(lengths) - lengths
        return np.repeat(first - run_offsets, lengths) + np.arange(lengths.sum())


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, first column and end column (exclusive) of every horizontal run of true pixels, in raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=bool)
    padded[:, 1:-1] = mask
    changes = np.flatnonzero(padded[:, 1:] != padded[:, :-1])
    rows, cols = np.divmod(changes, w + 1)
    return rows[0::2], cols[0::2], cols[1::2]


def _touching_runs(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, diagonal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (upper run, lower run) of runs in consecutive rows that touch (8-connected when `diagonal`)."""
    reach = 1 if diagonal else 0
    stride = width + 2
    start_key = rows * stride + starts
    end_key = rows * stride + ends
    above = (rows - 1) * stride
    first = np.searchsorted(end_key, above + starts - reach, side="right")
    stop = np.searchsorted(start_key, above + ends + reach, side="left")
    count = np.maximum(stop - first, 0)
    lower = np.repeat(np.arange(len(rows)), count)
    offsets = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    upper = np.repeat(first, count) + offsets
    return upper, lower


def label(mask: np.ndarray, diagonal: bool = False) -> Components:
    """Connected components of a 2-D boolean mask: 4-connected, or 8-connected when `diagonal`."""
    mask = np.asarray(mask, dtype=bool)
    rows, starts, ends = _runs(mask)
    upper, lower = _touching_runs(rows, starts, ends, mask.shape[1], diagonal)
    parent = np.arange(len(rows))
    while True:
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        root_a, root_b = parent[upper], parent[lower]
        differ = root_a != root_b
        if not differ.any():
            break
        low = np.minimum(root_a[differ], root_b[differ])
        np.minimum.at(parent, root_a[differ], low)
        np.minimum.at(parent, root_b[differ], low)
    roots, run_label = np.unique(parent, return_inverse=True)
    return Components(mask.shape, rows, starts, ends, run_label.reshape(-1) + 1, len(roots))


def remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """The mask without its 4-connected components of fewer than `min_pixels` pixels."""
    return _set_small(mask, np.asarray(mask, dtype=bool), min_pixels, False)


def fill_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    """The mask with every 4-connected component of its complement smaller than `max_pixels` filled in."""
    return _set_small(mask, ~np.asarray(mask, dtype=bool), max_pixels, True)


def _set_small(mask: np.ndarray, region: np.ndarray, min_pixels: float, value: bool) -> np.ndarray:
    components = label(region)
    small = components.sizes < min_pixels
    small[0] = False
    out = np.array(mask, dtype=bool, order="C")
    if small.any():
        out.reshape(-1)[components.pixels(small)] = value
    return out
