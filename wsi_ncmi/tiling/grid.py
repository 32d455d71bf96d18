"""Tile grids in physical units: tile geometry from microns per pixel, and each tile's tissue fraction."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from wsi_ncmi.slides.lowres import choose_level
from wsi_ncmi.tiling.morphology import label

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


def _distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-d array, as np.unique gives them; np.unique's first call imports numpy.ma
    (10-20 ms of CPU, a visible share of a short tiling run), which this path never needs."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _sum_dtype(plane: np.ndarray) -> np.dtype:
    """Exact accumulator for a plane's sums: int64 for booleans and integers, float64 or complex128 otherwise."""
    if plane.dtype == bool or np.issubdtype(plane.dtype, np.integer):
        return np.dtype(np.int64)
    return np.result_type(plane.dtype, np.float64)


LOOP_SEGMENTS = 512
"""Up to this many segments, a row segment's sums are one vectorised sum over its rows each (numpy's reduceat
along the first axis is about twice slower on mask-sized images); beyond it, one reduceat."""


def _prefix_at(values: np.ndarray, index: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
    """Sums of `values` over [0, i) along `axis` for each i of `index` (sorted, unique, within 0..n): one
    segment reduction between the wanted positions instead of a cumulative sum over every position."""
    n = values.shape[axis]
    bounds = _distinct(np.concatenate([[0, n], index]))
    if axis == 0 and len(bounds) <= LOOP_SEGMENTS:
        segments = np.stack([values[a:b].sum(axis=0, dtype=dtype) for a, b in itertools.pairwise(bounds)])
    else:
        segments = np.add.reduceat(values, bounds[:-1], axis=axis, dtype=dtype)
    shape = list(segments.shape)
    shape[axis] += 1
    prefix = np.zeros(shape, dtype=segments.dtype)
    np.cumsum(segments, axis=axis, out=prefix[1:] if axis == 0 else prefix[:, 1:])
    return np.take(prefix, np.searchsorted(bounds, index), axis=axis)


@dataclass(frozen=True)
class _Edges:
    """Box edges along one axis (pixel units, clipped to [0, n]): the position in the table of the pixel cell each
    edge falls in (the next cell is the next position), the fraction into that cell, and whether the edge rounds
    to the next cell."""

    index: np.ndarray
    fraction: np.ndarray
    rounds_up: np.ndarray

    @classmethod
    def of(cls, edges: np.ndarray, cells: np.ndarray, table_at: np.ndarray) -> _Edges:
        fraction = edges - cells
        rounds_up = (np.rint(edges) > cells).astype(np.int64)
        return cls(np.searchsorted(table_at, cells), fraction, rounds_up)


def _cells(edges: np.ndarray, n: int) -> np.ndarray:
    """Pixel cell of positions clipped to [0, n]: the floor, at most n - 1 (an edge at n is the end of cell n - 1)."""
    return np.minimum(np.floor(edges).astype(np.int64), max(n - 1, 0))


@dataclass(frozen=True)
class TileSums:
    """Sums of per-pixel planes over tiles (level-0 top-left `coords`, `size0` px square, planes' pixels `scale`
    level-0 px wide), from a summed-area table kept only at the rows and columns the tiles' corners need: one
    segment reduction per plane instead of a full table. `exact` weighs pixels by their overlap with the tile
    (the table sampled bilinearly at fractional corners); `rounded` sums whole pixels inside the box rounded to the
    pixel grid. With `starts` (level-0 x, y per tile) the box runs from there to the tile's bottom-right corner."""

    tables: list[np.ndarray]
    x0: _Edges
    y0: _Edges
    x1: _Edges
    y1: _Edges

    @classmethod
    def of(
        cls,
        planes: list[np.ndarray],
        scale: float,
        coords: np.ndarray,
        size0: int,
        starts: np.ndarray | None = None,
    ) -> TileSums:
        h, w = planes[0].shape
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        corner = coords if starts is None else np.asarray(starts, dtype=np.float64).reshape(-1, 2)
        xs = np.clip(corner[:, 0] / scale, 0, w), np.clip((coords[:, 0] + size0) / scale, 0, w)
        ys = np.clip(corner[:, 1] / scale, 0, h), np.clip((coords[:, 1] + size0) / scale, 0, h)
        x_cells, y_cells = [_cells(v, w) for v in xs], [_cells(v, h) for v in ys]
        cols = _distinct(np.concatenate([c + k for c in x_cells for k in (0, 1)]))
        rows = _distinct(np.concatenate([c + k for c in y_cells for k in (0, 1)]))
        tables = []
        for plane in planes:
            dtype = _sum_dtype(plane)
            tables.append(_prefix_at(_prefix_at(plane, rows, 0, dtype), cols, 1, dtype))
        x0, x1 = (_Edges.of(v, c, cols) for v, c in zip(xs, x_cells, strict=True))
        y0, y1 = (_Edges.of(v, c, rows) for v, c in zip(ys, y_cells, strict=True))
        return cls(tables, x0, y0, x1, y1)

    @staticmethod
    def _bilinear(table: np.ndarray, x: _Edges, y: _Edges) -> np.ndarray:
        i, j, fx, fy = y.index, x.index, x.fraction, y.fraction
        upper = table[i, j] * (1 - fx) + table[i, j + 1] * fx
        lower = table[i + 1, j] * (1 - fx) + table[i + 1, j + 1] * fx
        return upper * (1 - fy) + lower * fy

    def exact(self, plane: int = 0) -> np.ndarray:
        """Overlap-weighted sum of plane `plane` over each box (float64, or complex128 for a complex plane)."""
        table = self.tables[plane]
        area = self._bilinear
        return (
            area(table, self.x1, self.y1)
            - area(table, self.x0, self.y1)
            - area(table, self.x1, self.y0)
            + area(table, self.x0, self.y0)
        )

    def rounded(self, plane: int = 0) -> np.ndarray:
        """Sum of plane `plane` over each box rounded to whole pixels (exact for integer planes)."""
        table = self.tables[plane]
        i0, i1 = self.y0.index + self.y0.rounds_up, self.y1.index + self.y1.rounds_up
        j0, j1 = self.x0.index + self.x0.rounds_up, self.x1.index + self.x1.rounds_up
        return table[i1, j1] - table[i0, j1] - table[i1, j0] + table[i0, j0]


def tissue_fractions(
    mask: np.ndarray, scale: float, coords: np.ndarray, size0: int, starts: np.ndarray | None = None
) -> np.ndarray:
    """Fraction (float32, 0-1) of each tile's area inside the mask, pixels weighted by their overlap with the tile;
    with `starts`, of the part of each tile from there to its bottom-right corner. Area beyond the mask counts
    as no tissue."""
    coords = np.asarray(coords).reshape(-1, 2)
    sums = TileSums.of([mask], scale, coords, size0, starts)
    if starts is None:
        area = np.full(len(coords), (size0 / scale) ** 2)
    else:
        corner = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
        area = np.maximum((coords[:, 0] + size0 - corner[:, 0]) * (coords[:, 1] + size0 - corner[:, 1]), 0) / scale**2
        area = np.maximum(area, 1e-12)
    return np.clip(sums.exact() / area, 0.0, 1.0).astype(np.float32)


def added_starts(coords: np.ndarray, width: int, height: int, size0: int, step0: int) -> np.ndarray:
    """Where the area each tile of a slide grid adds begins: its own corner, or, for a tile moved in to end at the
    right or bottom edge ('inward'), the end of the lattice tile before it."""
    starts = np.array(coords, dtype=np.int64).reshape(-1, 2)
    for axis, extent in ((0, width), (1, height)):
        last = max(extent - size0, 0) // step0 * step0
        moved = (starts[:, axis] == extent - size0) & (starts[:, axis] != last)
        starts[moved, axis] = last + size0
    return starts
