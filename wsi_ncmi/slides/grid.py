"""Tile grids in physical units: tile geometry from microns per pixel, and each tile's tissue fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_ncmi.slides.lowres import choose_level

READ_LEVEL_TOLERANCE = 0.05


@dataclass(frozen=True)
class TileGeometry:
    """How a tile of `tile_size` px at `target_mpp` maps onto a slide's pyramid."""

    tile_size: int
    target_mpp: float
    mpp0: float
    size_level0: int
    step_level0: int
    read_level: int
    read_size: int

    @classmethod
    def build(
        cls, tile_size: int, target_mpp: float, overlap: int, mpp0: float, level_downsamples: list[float]
    ) -> TileGeometry:
        """Level-0 size = tile_size * target_mpp / mpp0; read level = coarsest level at least as fine as the target."""
        if tile_size < 1:
            raise ValueError(f"tile size must be positive, got {tile_size}")
        if not 0 <= overlap < tile_size:
            raise ValueError(f"overlap must be in [0, tile size), got {overlap} for tile size {tile_size}")
        scale = target_mpp / mpp0
        size0 = max(1, round(tile_size * scale))
        step0 = max(1, round((tile_size - overlap) * scale))
        level = choose_level([mpp0 * ds for ds in level_downsamples], target_mpp, READ_LEVEL_TOLERANCE)
        read_size = max(1, round(size0 / level_downsamples[level]))
        return cls(tile_size, target_mpp, mpp0, size0, step0, level, read_size)


GRIDS = ("slide", "tissue")


def _lattice(x0: int, y0: int, x_stop: int, y_stop: int, step0: int) -> np.ndarray:
    xs = np.arange(x0, max(x_stop, x0), step0, dtype=np.int64)
    ys = np.arange(y0, max(y_stop, y0), step0, dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def grid_coords(width: int, height: int, size0: int, step0: int, edge_tiles: bool = False) -> np.ndarray:
    """Level-0 top-left corners (int64, (N, 2) as x, y, row-major) of one lattice from the slide's corner: every
    whole tile inside the slide, plus (edge_tiles) the tiles that overhang its right and bottom edges."""
    if edge_tiles:
        return _lattice(0, 0, width, height, step0)
    return _lattice(0, 0, width - size0 + 1, height - size0 + 1, step0)


def tissue_grid_coords(
    mask: np.ndarray, scale: float, width: int, height: int, size0: int, step0: int, edge_tiles: bool = False
) -> np.ndarray:
    """A lattice per tissue region (8-connected in the mask), anchored at the region's bounding box and covering it,
    as CLAM and hs2p lay tiles out; tiles of neighbouring regions may overlap. Row-major, duplicates removed."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    x_limit = width if edge_tiles else width - size0 + 1
    y_limit = height if edge_tiles else height - size0 + 1
    parts = [np.zeros((0, 2), dtype=np.int64)]
    for rows, cols in filter(None, ndimage.find_objects(labels)):
        x0, y0 = round(cols.start * scale), round(rows.start * scale)
        x1, y1 = round(cols.stop * scale), round(rows.stop * scale)
        parts.append(_lattice(x0, y0, min(x1, x_limit), min(y1, y_limit), step0))
    coords = np.unique(np.concatenate(parts), axis=0)
    return coords[np.lexsort((coords[:, 0], coords[:, 1]))]


def tissue_fractions(mask: np.ndarray, scale: float, coords: np.ndarray, size0: int) -> np.ndarray:
    """Fraction of each tile's area inside the mask (float32), exact for a mask whose pixels are `scale` level-0
    px wide."""
    return np.clip(area_means(mask, scale, coords, size0), 0.0, 1.0).astype(np.float32)


def area_means(mask: np.ndarray, scale: float, coords: np.ndarray, size0: int) -> np.ndarray:
    """Mean of a per-pixel image (`mask`: boolean, float or complex, for two images in one pass) over each tile's
    area (float64 or complex128): a summed-area table sampled bilinearly at the tiles' fractional corners, exact
    for pixels `scale` level-0 px wide."""
    dtype = np.result_type(mask.dtype, np.float64)
    if len(coords) == 0:
        return np.zeros(0, dtype=dtype)
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=dtype)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=dtype), axis=1)

    def area_to(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0, mask.shape[1])
        y = np.clip(y, 0, mask.shape[0])
        x0 = np.minimum(np.floor(x).astype(np.int64), mask.shape[1] - 1)
        y0 = np.minimum(np.floor(y).astype(np.int64), mask.shape[0] - 1)
        fx, fy = x - x0, y - y0
        return (
            table[y0, x0] * (1 - fx) * (1 - fy)
            + table[y0, x0 + 1] * fx * (1 - fy)
            + table[y0 + 1, x0] * (1 - fx) * fy
            + table[y0 + 1, x0 + 1] * fx * fy
        )

    x0 = coords[:, 0] / scale
    y0 = coords[:, 1] / scale
    x1 = (coords[:, 0] + size0) / scale
    y1 = (coords[:, 1] + size0) / scale
    inside = area_to(x1, y1) - area_to(x0, y1) - area_to(x1, y0) + area_to(x0, y0)
    return inside / ((size0 / scale) ** 2)
