"""Tile grids in physical units: tile geometry from microns per pixel, and each tile's tissue fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_ncmi.slides.lowres import choose_level
from wsi_ncmi.slides.morphology import label

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
EDGES = ("inward", "overhang", "none")
"""How a lattice meets the slide's right and bottom edges. inward: one more row/column of whole tiles, moved in
to end exactly at the edge (it overlaps its neighbour); overhang: tiles may cross the edge (the part beyond it
reads as white and counts as no tissue), as CLAM and hs2p do; none: whole lattice tiles only (tissue in the last
partial row and column is not covered)."""


def _positions(start: int, stop: int, extent: int, size0: int, step0: int, edges: str) -> np.ndarray:
    """Tile starts along one axis covering [start, stop) of a slide `extent` px long, per the `edges` rule."""
    if edges not in EDGES:
        raise ValueError(f"edges must be one of {', '.join(EDGES)}, got {edges!r}")
    stop = min(stop, extent)
    if edges == "overhang":
        return np.arange(start, max(stop, start), step0, dtype=np.int64)
    whole = np.arange(start, max(min(stop, extent - size0 + 1), start), step0, dtype=np.int64)
    covered = whole[-1] + size0 if len(whole) else start
    if edges == "inward" and covered < stop:
        return np.append(whole, max(extent - size0, 0))
    return whole


def _lattice(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def grid_coords(width: int, height: int, size0: int, step0: int, edges: str = "inward") -> np.ndarray:
    """Level-0 top-left corners (int64, (N, 2) as x, y, row-major) of one lattice from the slide's corner,
    meeting the right and bottom edges as `edges` says (EDGES)."""
    return _lattice(
        _positions(0, width, width, size0, step0, edges), _positions(0, height, height, size0, step0, edges)
    )


def tissue_grid_coords(
    mask: np.ndarray, scale: float, width: int, height: int, size0: int, step0: int, edges: str = "inward"
) -> np.ndarray:
    """A lattice per tissue region (8-connected in the mask), anchored at the region's bounding box and covering it,
    as CLAM and hs2p lay tiles out; tiles of neighbouring regions may overlap. Row-major, duplicates removed."""
    parts = [np.zeros((0, 2), dtype=np.int64)]
    for top, bottom, left, right in label(mask, diagonal=True).boxes():
        x0, y0 = round(left * scale), round(top * scale)
        x1, y1 = round(right * scale), round(bottom * scale)
        xs = _positions(x0, x1, width, size0, step0, edges)
        ys = _positions(y0, y1, height, size0, step0, edges)
        parts.append(_lattice(xs, ys))
    coords = np.unique(np.concatenate(parts), axis=0)
    return coords[np.lexsort((coords[:, 0], coords[:, 1]))]


@dataclass(frozen=True)
class TissueArea:
    """A per-pixel image's summed-area table (a tissue mask, or any float or complex image): the mean over any box,
    exact for pixels `scale` level-0 px wide (the table is sampled bilinearly at the box's fractional corners).
    Built once per slide and image."""

    table: np.ndarray
    scale: float

    @classmethod
    def of(cls, image: np.ndarray, scale: float) -> TissueArea:
        if image.dtype == bool:
            dtype = np.dtype(np.int64 if image.size >= 2**31 else np.int32)
        else:
            dtype = np.result_type(image.dtype, np.float64)
        table = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=dtype)
        np.cumsum(np.cumsum(image, axis=0, dtype=dtype), axis=1, out=table[1:, 1:])
        return cls(table, scale)

    def _area_to(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        h, w = self.table.shape[0] - 1, self.table.shape[1] - 1
        x = np.clip(x, 0, w)
        y = np.clip(y, 0, h)
        x0 = np.minimum(np.floor(x).astype(np.int64), w - 1)
        y0 = np.minimum(np.floor(y).astype(np.int64), h - 1)
        fx, fy = x - x0, y - y0
        table = self.table
        return (
            table[y0, x0] * (1 - fx) * (1 - fy)
            + table[y0, x0 + 1] * fx * (1 - fy)
            + table[y0 + 1, x0] * (1 - fx) * fy
            + table[y0 + 1, x0 + 1] * fx * fy
        )

    def means(self, coords: np.ndarray, size0: int, starts: np.ndarray | None = None) -> np.ndarray:
        """Mean of the image over each tile (level-0 top-left `coords`, `size0` px square; float64 or complex128);
        with `starts` (level-0 x, y per tile), over the part of each tile from there to its bottom-right corner."""
        if len(coords) == 0:
            return np.zeros(0, dtype=np.result_type(self.table.dtype, np.float64))
        corner = coords if starts is None else starts
        x0 = corner[:, 0] / self.scale
        y0 = corner[:, 1] / self.scale
        x1 = (coords[:, 0] + size0) / self.scale
        y1 = (coords[:, 1] + size0) / self.scale
        inside = self._area_to(x1, y1) - self._area_to(x0, y1) - self._area_to(x1, y0) + self._area_to(x0, y0)
        area = (size0 / self.scale) ** 2 if starts is None else np.maximum((x1 - x0) * (y1 - y0), 1e-12)
        return inside / area

    def fractions(self, coords: np.ndarray, size0: int, starts: np.ndarray | None = None) -> np.ndarray:
        """Tissue fraction (float32, 0-1) of each tile, or of the part of it from `starts` (see `means`)."""
        return np.clip(self.means(coords, size0, starts), 0.0, 1.0).astype(np.float32)


def tissue_fractions(
    mask: np.ndarray, scale: float, coords: np.ndarray, size0: int, starts: np.ndarray | None = None
) -> np.ndarray:
    """Fraction of each tile's area inside the mask (see TissueArea.fractions)."""
    return TissueArea.of(mask, scale).fractions(coords, size0, starts)


def area_means(image: np.ndarray, scale: float, coords: np.ndarray, size0: int) -> np.ndarray:
    """Mean of a per-pixel image (boolean, float, or complex for two images in one pass) over each tile's area."""
    return TissueArea.of(image, scale).means(coords, size0)


def added_starts(coords: np.ndarray, width: int, height: int, size0: int, step0: int) -> np.ndarray:
    """Where the area each tile of a slide grid adds begins: its own corner, or, for a tile moved in to end at the
    right or bottom edge ('inward'), the end of the lattice tile before it."""
    starts = np.array(coords, dtype=np.int64).reshape(-1, 2)
    for axis, extent in ((0, width), (1, height)):
        last = max(extent - size0, 0) // step0 * step0
        moved = (starts[:, axis] == extent - size0) & (starts[:, axis] != last)
        starts[moved, axis] = last + size0
    return starts
