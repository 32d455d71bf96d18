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
BLOCKS = 8
"""A tile's focus comes from its BLOCKS x BLOCKS parts (16 um each for a 128 um tile)."""
QUANTILE = 0.5
"""A tile scores as the part at this quantile of its parts' focus: it reads as blurry once more than this share
of it is, so a tile mostly out of focus never passes on the strength of its sharp corner."""


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


def rms_laplacian(grey: np.ndarray, tissue: np.ndarray, blocks: int = BLOCKS) -> np.ndarray:
    """Focus of each image in a stack (k, n, n) of float32 grey images: the RMS 4-neighbour Laplacian over the
    tissue of each of its `blocks` x `blocks` parts (image border left out), and, over the parts at least
    half tissue, and the QUANTILE of those, so a tile mostly out of focus scores as such even where a sharp edge
    crosses it. An image with no such part scores over all its tissue; 0 when it has none."""
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
    cut = (slice(None), slice(0, blocks * part), slice(0, blocks * part))
    shape = (k, blocks, part, blocks, part)
    part_energy = energy[cut].reshape(shape).sum(axis=(2, 4)).reshape(k, -1)
    part_count = inner[cut].reshape(shape).sum(axis=(2, 4)).reshape(k, -1)
    whole = np.sqrt(energy.sum(axis=(1, 2)) / np.maximum(inner.sum(axis=(1, 2)), 1))
    full = part_count * 2 >= part * part
    rms = np.sqrt(np.divide(part_energy, part_count, out=np.zeros(part_energy.shape), where=full))
    some = full.any(axis=1)
    ranked = np.where(full | ~some[:, None], rms, np.nan)
    return np.where(some, np.nanquantile(ranked, QUANTILE, axis=1), whole).astype(np.float32)


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
    over its tissue: the tiler's mask (`mask_scale` level-0 pixels per mask pixel), QC's removals already out."""
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
    for run in _strips(coords, size0, STRIP_PIXELS * pixel0):
        x0, y0 = (int(v) for v in coords[run[0]])
        offsets = np.round((coords[run, 0] - x0) / downsample).astype(np.int64)
        strip = slide.read_region((x0, y0), level, (int(offsets[-1]) + read_side, read_side))
        strip = strip.sum(axis=2, dtype=np.uint16)
        blocks = np.stack([strip[:, o : o + read_side] for o in offsets.tolist()]).astype(np.float32) / 3.0
        grey = blocks.reshape(len(run), side, factor, side, factor).mean(axis=(2, 4))
        rows = ((y0 + centres) / mask_scale).astype(np.int64)
        cols = ((coords[run, 0][:, None] + centres) / mask_scale).astype(np.int64)
        tissue = padded[np.minimum(rows, mask.shape[0])[None, :, None], np.minimum(cols, mask.shape[1])[:, None, :]]
        scores[run] = rms_laplacian(grey, tissue)
    return scores
