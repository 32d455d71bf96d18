"""Focus scores where focus shows: each candidate tile read at about `focus_mpp` (1-2 um/px) from the nearest finer
pyramid level, a row of neighbouring tiles per read, and scored by the RMS Laplacian of its tissue's grey level
(the mean of R, G and B: red ink or blood leaves little contrast in any one channel).
Memory is a batch of tiles of at most BATCH_PIXELS pixels at that resolution (or one strip's, at most
STRIP_PIXELS wide) and the decoded TIFF tiles of the row being read, whatever the slide's size."""

from __future__ import annotations

import os

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
BATCH_PIXELS = 1 << 18
"""Tiles are scored together, several strips' worth at a time, up to this many pixels at the focus resolution (64
tiles of 64 px, or one strip's tiles if more): far fewer steps than one per strip, memory still bounded."""


class _LevelReader:
    """Regions of one pyramid level for strips read top to bottom: composed from the TIFF's own JPEG tiles (square,
    of any size: Aperio's are 240 px), each decoded once and kept only while strips still need its row (several
    times faster than a region read of the slide library, same pixels); through the slide library when the file
    has no such tiles or a region does not start on a whole pixel of the level. A context manager: the file stays
    open while it is used."""

    def __init__(self, slide: Slide, level: int) -> None:
        from wsi_ncmi.slides.direct import reader_for

        self.slide, self.level = slide, level
        self.downsample = slide.level_downsamples[level]
        self.direct = reader_for(slide, level, None)
        self.tiles: dict[tuple[int, int], np.ndarray] = {}
        self.fd: int | None = None

    def __enter__(self) -> _LevelReader:
        if self.direct is not None:
            self.fd = os.open(self.direct.path, os.O_RDONLY)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _tile(self, col: int, row: int) -> np.ndarray:
        if (col, row) not in self.tiles:
            reader = self.direct
            tw, th = reader.tile_width, reader.tile_height
            index = row * reader.across + col
            if (col + 1) * tw <= reader.width and (row + 1) * th <= reader.height and reader.counts[index]:
                # Inside the image: the decoded tile is the region as it is (no white canvas to fill).
                data = os.pread(self.fd, int(reader.counts[index]), int(reader.offsets[index]))
                pixels = reader.decode(data, index, jpegtables=reader.tables)[0].reshape(th, tw, -1)[..., :3]
            else:
                x, y = col * tw * self.downsample, row * th * self.downsample
                pixels = reader(round(x), round(y)) if x == round(x) and y == round(y) else None
                if pixels is None:
                    pixels = self.slide.read_region((round(x), round(y)), self.level, (tw, th))
            self.tiles[(col, row)] = pixels
        return self.tiles[(col, row)]

    def read(self, x0: int, y0: int, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
        """Slide.read_region's RGB uint8 pixels at this level, top-left at level-0 (x0, y0), channels first
        ((3, height, width), into `out` when given): the work per pixel after the read then runs on contiguous
        planes of each colour."""
        out = np.empty((3, height, width), dtype=np.uint8) if out is None else out
        left, top = x0 / self.downsample, y0 / self.downsample
        if self.direct is None or left != int(left) or top != int(top):
            out[...] = self.slide.read_region((x0, y0), self.level, (width, height)).transpose(2, 0, 1)
            return out
        left, top = int(left), int(top)
        tw, th = self.direct.tile_width, self.direct.tile_height
        first_row = top // th
        self.tiles = {key: tile for key, tile in self.tiles.items() if key[1] >= first_row}
        for row in range(first_row, (top + height - 1) // th + 1):
            for col in range(left // tw, (left + width - 1) // tw + 1):
                tile = self._tile(col, row)
                ys = slice(max(row * th, top), min((row + 1) * th, top + height))
                xs = slice(max(col * tw, left), min((col + 1) * tw, left + width))
                out[:, ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = tile[
                    ys.start - row * th : ys.stop - row * th, xs.start - col * tw : xs.stop - col * tw
                ].transpose(2, 0, 1)
        return out


def focus_resolution(slide: Slide, mpp0: float, focus_mpp: float) -> tuple[int, int, float]:
    """The level, the whole reduction of it and the resulting um per pixel that give about `focus_mpp` (never
    coarser): the nearest finer pyramid level, box-reduced."""
    level, factor = mask_level(slide, mpp0, focus_mpp)
    return level, factor, mpp0 * slide.level_downsamples[level] * factor


def _strips(coords: np.ndarray, size0: int, width0: float) -> list[np.ndarray]:
    """Indices of `coords` in runs read together: same row, each tile touching or overlapping the previous one,
    a run at most `width0` level-0 pixels wide (or one tile)."""
    order = np.lexsort((coords[:, 0], coords[:, 1])).tolist()
    xs, ys = coords[:, 0].tolist(), coords[:, 1].tolist()
    runs: list[list[int]] = []
    for i in order:
        last = runs[-1] if runs else None
        if (
            last is not None
            and ys[last[-1]] == ys[i]
            and xs[i] - xs[last[-1]] <= size0
            and xs[i] + size0 - xs[last[0]] <= width0
        ):
            last.append(i)
        else:
            runs.append([i])
    return [np.asarray(run) for run in runs]


def _parts(n: int, blocks: int) -> tuple[int, int]:
    """The parts a side of n pixels is cut into and their size: `blocks` of n // blocks, or one part of n when
    those would be under 4 pixels."""
    part = n // blocks
    return (1, n) if part < 4 else (blocks, part)


def _sums(grey: np.ndarray, tissue: np.ndarray, n: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """For k images of n x n pixels side by side in `grey` and `tissue` (n, k * n; `tissue` is changed): the sums
    of the squared 4-neighbour Laplacian over tissue and the tissue pixels, each image's border left out, over
    each of its square parts, (2, k, blocks^2), and over the whole image, (2, k)."""
    blocks, part = _parts(n, blocks)
    k = grey.shape[1] // n
    tissue[[0, -1]] = False
    tissue[:, ::n] = tissue[:, n - 1 :: n] = False
    lap = np.zeros(grey.shape, dtype=grey.dtype)  # each image's interior only uses its own pixels
    middle = lap[1:-1, 1:-1]
    np.multiply(grey[1:-1, 1:-1], grey.dtype.type(4), out=middle)
    middle -= grey[:-2, 1:-1]
    middle -= grey[2:, 1:-1]
    middle -= grey[1:-1, :-2]
    middle -= grey[1:-1, 2:]
    lap *= tissue
    both = np.empty((2, n, k * n), dtype=np.float32)
    both[0] = lap
    both[0] *= both[0]
    both[1] = tissue
    span = blocks * part
    # Over each part's rows, then its columns: einsum's own loops, no thread pool for such small work.
    rows = np.einsum("hbpc->hbc", both[:, :span].reshape(2, blocks, part, k * n)).reshape(2, blocks, k, n)
    parts = np.einsum("hbkqp->hkbq", rows[..., :span].reshape(2, blocks, k, blocks, part)).reshape(2, k, -1)
    whole = rows.sum(axis=(1, 3), dtype=np.float64) + both[:, span:].reshape(2, n - span, k, n).sum(axis=(1, 3))
    return parts, whole


def _median_of_parts(parts: np.ndarray, whole: np.ndarray, n: int, blocks: int) -> np.ndarray:
    """rms_laplacian's scores from `_sums`'s sums over parts and whole images."""
    blocks, part = _parts(n, blocks)
    (part_energy, part_count), (energy, count) = parts, whole
    full = part_count * 2 >= part * part
    rms = np.sqrt(np.divide(part_energy, part_count, out=np.zeros(part_energy.shape), where=full))
    ranked = np.sort(np.where(full, rms, np.inf), axis=1)
    used = full.sum(axis=1)
    rows = np.arange(len(used))
    median = (ranked[rows, np.maximum(used - 1, 0) // 2] + ranked[rows, used // 2]) / 2
    return np.where(used * 2 >= blocks * blocks, median, np.sqrt(energy / np.maximum(count, 1))).astype(np.float32)


def _side_by_side(stack: np.ndarray) -> np.ndarray:
    """A stack of images (k, n, m) as one image (n, k * m), each beside the one before."""
    return stack.transpose(1, 0, 2).reshape(stack.shape[1], -1)


def rms_laplacian(grey: np.ndarray, tissue: np.ndarray, blocks: int = BLOCKS) -> np.ndarray:
    """Focus of each image in a stack (k, n, n) of grey images: the RMS 4-neighbour Laplacian over the
    tissue of each of its `blocks` x `blocks` parts (image border left out), and, over the parts at least
    half tissue, the median of those, so a tile mostly out of focus scores as such even where a sharp edge
    crosses it. An image with such parts over less than half of it (an edge tile, whose few parts can all miss
    sparse nuclei) scores over all its tissue instead; 0 when it has none.

    `grey` is float, or integer: the Laplacian is then exact, computed in grey's own type, which must hold four
    times grey's largest value. The result is in grey's units, float32."""
    n = grey.shape[1]
    parts, whole = _sums(_side_by_side(grey), _side_by_side(tissue).copy(), n, blocks)
    return _median_of_parts(parts, whole, n, blocks)


def _glassless(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """Pixels whose brightest and darkest channels differ by at least GLASS_RANGE: not glass."""
    top = np.maximum(red, green)
    np.maximum(top, blue, out=top)
    top -= np.minimum(np.minimum(red, green), blue)
    return top >= GLASS_RANGE


def _reduce(tiles: np.ndarray, factor: int, dtype: type) -> np.ndarray:
    """Sums over `factor` x `factor` boxes of a stack (k, n * factor, n * factor): (k, n, n) in `dtype`, exact.
    Added as strided slices: numpy sums over a reshaped axis of 2 to 4 elements an order of magnitude slower."""
    rows = tiles[:, ::factor].astype(dtype)
    for i in range(1, factor):
        rows += tiles[:, i::factor]
    out = rows[:, :, ::factor].copy()
    for i in range(1, factor):
        out += rows[:, :, i::factor]
    return out


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
    already out) that are not glass.

    Strips are read into a batch of up to BATCH_PIXELS pixels of tiles side by side (straight from the read when
    they lie so, as on a lattice without overlap), and each batch is scored at once. The grey level is kept as
    the integer sum of R, G and B over each reduction box and the score divided by 3 x factor^2 at the end: the
    score of the mean, in exact arithmetic up to the sums over parts, which do not depend on the batch."""
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
    dtype = np.int16 if 4 * 765 * factor * factor < 2**15 else np.int32  # the Laplacian of box sums of R + G + B
    unit = np.float32(1.0 / (3 * factor * factor))
    strips = _strips(coords, size0, STRIP_PIXELS * pixel0)
    capacity = max(BATCH_PIXELS // (side * side), *(len(run) for run in strips))  # tiles
    # The batch: planes of R, G and B (whole factor) or grey sums (reduced), and the tissue, tiles side by side.
    planes = np.empty((3, side, capacity * side), dtype=np.uint8) if factor == 1 else None
    greys = np.empty((side, capacity * side), dtype=dtype) if factor > 1 else None
    tissues = np.empty((side, capacity * side), dtype=bool)
    batch: list[np.ndarray] = []
    used = 0

    def score_batch() -> None:
        width = used * side
        tissue = tissues[:, :width]
        if planes is not None:
            red, green, blue = planes[:, :, :width]
            grey = np.add(red, green, dtype=dtype)
            grey += blue
            tissue &= _glassless(red, green, blue)
        else:
            grey = greys[:, :width]
        parts, whole = _sums(grey, tissue, side, BLOCKS)
        scores[np.concatenate(batch)] = _median_of_parts(parts, whole, side, BLOCKS) * unit
        batch.clear()

    with _LevelReader(slide, level) as reader:
        xs = coords[:, 0].tolist()
        for run in strips:
            if used + len(run) > capacity:
                score_batch()
                used = 0
            x0, y0 = (int(v) for v in coords[run[0]])
            offsets = [round((xs[i] - x0) / downsample) for i in run.tolist()]
            at = slice(used * side, (used + len(run)) * side)
            rows = np.minimum(((y0 + centres) / mask_scale).astype(np.int64), mask.shape[0])
            cols = np.minimum(((coords[run, 0][:, None] + centres) / mask_scale).astype(np.int64), mask.shape[1])
            tissues[:, at] = padded[rows][:, cols.ravel()]
            if factor == 1 and offsets == list(range(0, len(run) * side, side)):
                reader.read(x0, y0, len(run) * side, side, out=planes[:, :, at])  # tiles side by side as read
            else:
                strip = reader.read(x0, y0, offsets[-1] + read_side, read_side)
                tiles = np.stack([strip[:, :, o : o + read_side] for o in offsets], axis=2)  # (3, rows, k, columns)
                if factor == 1:
                    planes[:, :, at] = tiles.reshape(3, side, -1)
                else:
                    red, green, blue = tiles.transpose(0, 2, 1, 3)
                    summed = np.add(red, green, dtype=dtype)
                    summed += blue
                    grey = _reduce(summed, factor, dtype)
                    stained = _reduce(_glassless(red, green, blue), factor, dtype) * 2 >= factor * factor
                    greys[:, at] = _side_by_side(grey)
                    tissues[:, at] &= _side_by_side(stained)
            batch.append(run)
            used += len(run)
    score_batch()
    return scores
