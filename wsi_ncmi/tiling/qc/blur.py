"""Out-of-focus tiles: each tile the tissue and the removals kept is read at about `focus_mpp` um/px (tiling/focus.py)
and scored; a tile far below the slide's own median score, or below an absolute floor, is dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.tiling.qc.base import SlideTiles, TileCheck
from wsi_ncmi.tiling.qc.registry import CHECKS
from wsi_ncmi.tiling.qc.selection import TileSelection

if TYPE_CHECKING:
    from wsi_ncmi.tiling.qc.params import QCParams

MIN_REFERENCE_TILES = 8
"""Fewer candidate tiles than this give no reliable median: only the absolute floor calls tiles blurry then."""


def blurry_tiles(scores: np.ndarray, params: QCParams) -> np.ndarray:
    """Which tiles' focus scores call them out of focus: below the absolute floor `min_sharpness`, or far below the
    slide's own median (more than `blur_mad` robust standard deviations of the log score, and under `blur_ratio`
    of the median), so that uniformly smooth tissue stays and a blurred patch on a sharp slide goes."""
    scores = np.asarray(scores, dtype=np.float64)
    out = scores < params.min_sharpness
    positive = np.log(scores[scores > 0])
    if len(positive) < MIN_REFERENCE_TILES:
        return out
    median = float(np.median(positive))
    spread = 1.4826 * float(np.median(np.abs(positive - median)))
    with np.errstate(divide="ignore"):
        logs = np.log(scores)
    return out | ((logs < median - params.blur_mad * spread) & (scores < params.blur_ratio * np.exp(median)))


def with_focus(
    chosen: TileSelection, scores: np.ndarray, params: QCParams, tile_mm2: float, focus_mpp: float
) -> TileSelection:
    """`chosen` with its blurry tiles dropped: `scores` are the focus scores of its kept tiles (in order), measured
    at `focus_mpp` um/px; `tile_mm2` is one tile's area, for the tissue the blurry tiles held."""
    kept = np.flatnonzero(chosen.keep)
    blurry_kept = blurry_tiles(scores, params)
    blurry = np.zeros(len(chosen.keep), dtype=bool)
    blurry[kept[blurry_kept]] = True
    sharpness = np.zeros(len(chosen.keep), dtype=np.float32)
    sharpness[kept] = scores
    positive = scores[scores > 0]
    summary = {
        **chosen.summary,
        "qc_tiles_blurry": int(blurry.sum()),
        "qc_blurry_mm2": float(chosen.tissue_fraction[blurry].sum() * tile_mm2),
        "qc_focus_mpp": float(focus_mpp),
        "qc_focus_median": float(np.median(positive)) if len(positive) else 0.0,
    }
    return TileSelection(chosen.keep & ~blurry, chosen.tissue_fraction, sharpness, summary, blurry)


@CHECKS.register("blur")
class BlurCheck(TileCheck):
    """Focus scores read from the open slide at about `focus_mpp`, judged against the slide's own tiles."""

    thresholds = ("blur", "focus_mpp", "min_sharpness", "blur_mad", "blur_ratio")
    switch = "blur"

    @classmethod
    def defaults(cls, qc_on: bool) -> dict[str, Any]:
        return {"qc_tiles_blurry": 0, "qc_blurry_mm2": 0.0} if qc_on else {"qc_tiles_blurry": 0}

    @classmethod
    def judge(cls, params: QCParams, chosen: TileSelection, tiles: SlideTiles) -> TileSelection:
        from wsi_ncmi.tiling.focus import focus_resolution, focus_scores

        focus_mpp = focus_resolution(tiles.slide, tiles.mpp0, params.focus_mpp)[2]
        scores = focus_scores(
            tiles.slide, tiles.grid[chosen.keep], tiles.size0, tiles.mpp0, params.focus_mpp, tiles.mask, tiles.scale
        )
        return with_focus(chosen, scores, params, (tiles.size0 * tiles.mpp0) ** 2 / 1e6, focus_mpp)
