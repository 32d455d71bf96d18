"""Which grid tiles a slide keeps after the removal masks, and what QC took away, as coords attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.tiling.qc.registry import mask_checks, tile_checks

if TYPE_CHECKING:
    from wsi_ncmi.tiling.qc.params import QCParams
    from wsi_ncmi.tiling.qc.run import QCResult


@dataclass
class TileSelection:
    """The tiles kept on one slide and what quality control took away (areas in mm^2, counts in tiles)."""

    keep: np.ndarray
    tissue_fraction: np.ndarray
    sharpness: np.ndarray | None
    summary: dict[str, float | int]
    blurry: np.ndarray | None = None
    """Grid tiles dropped as out of focus (boolean, the grid's length), None without QC."""


def select_tiles(
    tissue: np.ndarray,
    qc: QCResult | None,
    params: QCParams,
    scale: float,
    mpp: float,
    grid: np.ndarray,
    size0: int,
    min_tissue: float,
) -> TileSelection:
    """Keep the grid's tiles with at least `min_tissue` of tissue left after QC and at most `max_artifact` of
    removals; `tissue` must already exclude `qc.removed`. The tile checks (focus) judge afterwards (`judge_tiles`),
    on the tiles kept here. `mpp` is the mask's um per pixel. Each mask's area is the attribute qc_{check}_mm2."""
    from wsi_ncmi.tiling.grid import TileSums

    pixel_mm2 = mpp * mpp / 1e6
    kept_pixels = int(np.count_nonzero(tissue))
    summary: dict[str, float | int] = {"qc_tissue_mm2": float(kept_pixels * pixel_mm2)}
    planes = [tissue] if qc is None or not qc.removed.any() else [tissue, qc.removed]
    sums = TileSums.of(planes, scale, grid, size0)
    fractions = np.clip(sums.exact(0) / (size0 / scale) ** 2, 0.0, 1.0).astype(np.float32)
    keep = (fractions >= min_tissue) & (fractions > 0)
    if qc is None:
        summary.update({f"qc_{check.name}_mm2": 0.0 for check in mask_checks() if not check.optional})
        summary["qc_tiles_before"] = int(keep.sum())
        for check in tile_checks():
            summary.update(check.defaults(qc_on=False))
        return TileSelection(keep, fractions, None, summary)
    artifact = sums.rounded(1) / (size0 / scale) ** 2 if len(planes) == 2 else np.zeros(len(grid))
    before = fractions + artifact  # `tissue` excludes the removals, so their areas add up
    keep &= artifact <= params.max_artifact
    summary.update({f"qc_{name}_mm2": float(np.count_nonzero(mask) * pixel_mm2) for name, mask in qc.masks.items()})
    tissue_before = kept_pixels if qc.tissue_before is None else qc.tissue_before
    summary.update(
        qc_tissue_before_mm2=float(tissue_before * pixel_mm2),
        qc_tiles_before=int(((before >= min_tissue) & (before > 0)).sum()),
    )
    for check in tile_checks():
        summary.update(check.defaults(qc_on=True))
    return TileSelection(keep, fractions, None, summary, np.zeros(len(grid), dtype=bool))
