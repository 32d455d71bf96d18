"""Focus scores where focus shows: each candidate tile read at about `focus_mpp` (1-2 um/px) from the nearest finer
pyramid level, a row of neighbouring tiles per read, and scored by the RMS Laplacian of its tissue's grey level
(the mean of R, G and B: red ink or blood leaves little contrast in any one channel).
Memory is one strip at most STRIP_PIXELS pixels wide at that resolution, whatever the slide's size."""

from __future__ import annotations

import numpy as np

from wsi_ncmi.slides.backend import Slide
from wsi_ncmi.slides.lowres import mask_level

STRIP_PIXELS = 1024
"""Widest region read at once, in pixels at the focus resolution (16 tiles of 128 um at 2 um/px): one read for a
row of neighbouring tiles, and memory bounded whatever the slide's size."""
GLASS_RANGE = 15
"""A pixel whose brightest and darkest channels differ by less than this is glass (a hole, the slide's background
inside the mask's coarser outline), not tissue, for focus: flat glass would dilute a tile's score."""
BLOCKS = 8
"""A tile's focus comes from its BLOCKS x BLOCKS parts (16 um each for a 128 um tile)."""


class _LevelReader:
    """Regions of one pyramid level for strips read top to bottom: composed from the TIFF's own JPEG tiles (square,
    of any size: Aperio's are 240 px), each decoded once and kept only while strips still need its row (several
    times faster than a region read of the slide library, same pixels); through the slide library when the file
    has no such tiles or a region does not start on a whole pixel of the level."""

    def __init__(self, slide: Slide, level: int) -> None:
        from wsi_ncmi.slides.direct import reader_for

        self.slide, self.level = slide, level
        self.downsample = slide.level_downsamples[level]
        self.direct = reader_for(slide, level, None)
        self.tiles: dict[tuple[int, int], np.ndarray] = {}

    def _tile(self, col: int, row: int) -> np.ndarray:
        if (col, row) not in self.tiles:
            reader = self.direct
            x, y = col * reader.tile_width * self.downsample, row * reader.tile_height * self.downsample
            pixels = reader(round(x), round(y)) if x == round(x) and y == round(y) else None
            if pixels is None:
                size = (reader.tile_width, reader.tile_height)
                pixels = self.slide.read_region((round(x), round(y)), self.level, size)
            self.tiles[(col, row)] = pixels
        return self.tiles[(col, row)]

    def read(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) at this level, top-left at level-0 (x0, y0), as Slide.read_region."""
        left, top = x0 / self.downsample, y0 / self.downsample
        if self.direct is None or left != int(left) or top != int(top):
            return self.slide.read_region((x0, y0), self.level, (width, height))
        left, top = int(left), int(top)
        tw, th = self.direct.tile_width, self.direct.tile_height
        first_row = top // th
        self.tiles = {key: tile for key, tile in self.tiles.items() if key[1] >= first_row}
        out = np.empty((height, width, 3), dtype=np.uint8)
        for row in range(first_row, (top + height - 1) // th + 1):
            for col in range(left // tw, (left + width - 1) // tw + 1):
                tile = self._tile(col, row)
                ys = slice(max(row * th, top), min((row + 1) * th, top + height))
                xs = slice(max(col * tw, left), min((col + 1) * tw, left + width))
                out[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = tile[
                    ys.start - row * th : ys.stop - row * th, xs.start - col * tw : xs.stop - col * tw
                ]
        return out


def focus_resolution(slide: Slide, mpp0: float, focus_mpp: float) -> tuple[int, int, float]:
    """The level, the whole reduction of it and the resulting um per pixel that give about `focus_mpp` (never
    coarser): the nearest finer pyramid level, box-reduced."""
    level, factor = mask_level(slide, mpp0, focus_mpp)
    return level, factor, mpp0 * slide.level_downsamples[level] * factor


def _strips(coords: np.ndarray, size0: int, width0: float) -> list[np.ndarray]:
    """Indices of `coords` in runs read together: same row, each tile touching or overlapping the previous one,
    a run at most `width0` level-0 pixels wide (or one tile)."""
    order = np.lexsort((coords[:, 0], coords[:, 1]))
    runs: list[list[int]] = []
    for i in order.tolist():
        last = runs[-1] if runs else None
        if (
            last is not None
            and coords[last[-1], 1] == coords[i, 1]
            and coords[i, 0] - coords[last[-1], 0] <= size0
            and coords[i, 0] + size0 - coords[last[0], 0] <= width0
        ):
            last.append(i)
        else:
            runs.append([i])
    return [np.asarray(run) for run in runs]


def _block_matrix(blocks: int, part: int, n: int) -> np.ndarray:
    """(blocks, n) float32 with ones where column j lies in block i (the last n - blocks * part columns in none):
    sums over square blocks of a stack of images as two matrix products, far cheaper than summing reshaped axes."""
    out = np.zeros((blocks, n), dtype=np.float32)
    for i in range(blocks):
        out[i, i * part : (i + 1) * part] = 1.0
    return out


def rms_laplacian(grey: np.ndarray, tissue: np.ndarray, blocks: int = BLOCKS) -> np.ndarray:
    """Focus of each image in a stack (k, n, n) of float32 grey images: the RMS 4-neighbour Laplacian over the
    tissue of each of its `blocks` x `blocks` parts (image border left out), and, over the parts at least
    half tissue, the median of those, so a tile mostly out of focus scores as such even where a sharp edge
    crosses it. An image with such parts over less than half of it (an edge tile, whose few parts can all miss
    sparse nuclei) scores over all its tissue instead; 0 when it has none."""
    k, n = grey.shape[:2]
    lap = np.zeros_like(grey)
    lap[:, 1:-1, 1:-1] = (
        4.0 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    )
    inner = np.zeros_like(tissue)
    inner[:, 1:-1, 1:-1] = tissue[:, 1:-1, 1:-1]
    energy = lap * lap * inner
    part = n // blocks
    if part < 4:
        blocks, part = 1, n
    pick = _block_matrix(blocks, part, n)
    part_energy = (pick @ energy @ pick.T).reshape(k, -1)
    part_count = (pick @ inner.astype(np.float32) @ pick.T).reshape(k, -1)
    whole = np.sqrt(energy.sum(axis=(1, 2)) / np.maximum(inner.sum(axis=(1, 2)), 1))
    full = part_count * 2 >= part * part
    rms = np.sqrt(np.divide(part_energy, part_count, out=np.zeros(part_energy.shape), where=full))
    ranked = np.sort(np.where(full, rms, np.inf), axis=1)
    count = full.sum(axis=1)
    rows = np.arange(k)
    middle = (ranked[rows, np.maximum(count - 1, 0) // 2] + ranked[rows, count // 2]) / 2
    return np.where(count * 2 >= blocks * blocks, middle, whole).astype(np.float32)


def focus_scores(
    slide: Slide,
    coords: np.ndarray,
    size0: int,
    mpp0: float,
    focus_mpp: float,
    mask: np.ndarray,
    mask_scale: float,
) -> np.ndarray:
    """Focus score of each tile (float32, (N,); `rms_laplacian` of the mean of R, G and B at about `focus_mpp`)
    over its tissue: pixels inside the tiler's mask (`mask_scale` level-0 pixels per mask pixel, QC's removals
    already out) that are not glass."""
    scores = np.zeros(len(coords), dtype=np.float32)
    if len(coords) == 0:
        return scores
    level, factor, _ = focus_resolution(slide, mpp0, focus_mpp)
    downsample = slide.level_downsamples[level]
    pixel0 = downsample * factor
    side = max(3, int(size0 / pixel0))
    read_side = side * factor
    centres = (np.arange(side) + 0.5) * pixel0
    padded = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=bool)
    padded[:-1, :-1] = mask  # beyond the mask (tiles over the slide's edge) is no tissue
    reduce = _block_matrix(side, factor, read_side)
    reader = _LevelReader(slide, level)
    for run in _strips(coords, size0, STRIP_PIXELS * pixel0):
        x0, y0 = (int(v) for v in coords[run[0]])
        offsets = np.round((coords[run, 0] - x0) / downsample).astype(np.int64)
        strip = reader.read(x0, y0, int(offsets[-1]) + read_side, read_side)
        red, green, blue = strip[..., 0], strip[..., 1], strip[..., 2]
        summed = red.astype(np.float32)
        summed += green
        summed += blue
        coloured = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
        coloured = (coloured >= GLASS_RANGE).astype(np.float32)
        grey = np.stack([summed[:, o : o + read_side] for o in offsets.tolist()])
        stained = np.stack([coloured[:, o : o + read_side] for o in offsets.tolist()])
        if factor > 1:
            grey, stained = reduce @ grey @ reduce.T, reduce @ stained @ reduce.T
        grey *= np.float32(1.0 / (3 * factor * factor))
        rows = ((y0 + centres) / mask_scale).astype(np.int64)
        cols = ((coords[run, 0][:, None] + centres) / mask_scale).astype(np.int64)
        tissue = padded[np.minimum(rows, mask.shape[0])[None, :, None], np.minimum(cols, mask.shape[1])[:, None, :]]
        tissue &= stained * 2 >= factor * factor
        scores[run] = rms_laplacian(grey, tissue)
    return scores
