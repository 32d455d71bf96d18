"""Running the registered checks: the mask checks on the low-resolution image, before and within the tissue
mask, the tiles kept after their removals, and the tile checks on the tiles chosen; QC's masks as one result."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.tiling.qc.base import MaskCheck, SlideTiles, mask_checks, tile_checks
from wsi_ncmi.tiling.qc.masks import QCImage, grown
from wsi_ncmi.tiling.qc.registry import CHECKS
from wsi_ncmi.tiling.qc.selection import TileSelection

if TYPE_CHECKING:
    from wsi_ncmi.tiling.qc.params import QCParams


@dataclass(frozen=True)
class QCResult:
    """QC masks at the tissue mask's resolution (same shape): `masks` by check name, in the registry's order, as
    detected (a check that did not run is absent; `qc.<name>` reads one, None when absent), `removed` their union
    grown by the margin (what is taken out of the tissue), and the size of the tissue before QC (what a warning
    compares the removals with)."""

    masks: dict[str, np.ndarray]
    removed: np.ndarray
    tissue_before: int | None = None
    """Pixels of the tissue mask as QC off finds it (None: the same as after QC, nothing was removed)."""

    def __getattr__(self, name: str) -> Any:
        check = CHECKS.get(name)
        if check is not None and issubclass(check, MaskCheck):
            return self.__dict__.get("masks", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def detect_artifacts(
    rgb: np.ndarray, mpp: float, params: QCParams, channels: tuple[np.ndarray, np.ndarray] | None = None
) -> QCResult:
    """The masks of the checks that look at the whole image (pen ink, dark regions), on an RGB image whose pixels
    are `mpp` um wide, and their union grown by the margin. `channels` is the image's channel_range when already
    computed."""
    image = QCImage(rgb, mpp, params, channels)
    masks = {check.name: check.find(image, None) for check in mask_checks(params, after_tissue=False)}
    union = np.zeros(rgb.shape[:2], dtype=bool)
    for mask in masks.values():
        union = union | mask
    return QCResult(masks, grown(union, mpp, params))


def with_tissue_checks(
    qc: QCResult, rgb: np.ndarray, tissue: np.ndarray, mpp: float, params: QCParams
) -> tuple[np.ndarray, QCResult]:
    """The tissue mask `tissue` (earlier removals already out) and `qc` after the checks that look within the
    tissue (folds: their reference is the tissue), each one's mask grown by the margin and taken out."""
    for check in mask_checks(params, after_tissue=True):
        found = check.find(QCImage(rgb, mpp, params), tissue)
        qc = replace(qc, masks={**qc.masks, check.name: found}, removed=qc.removed | grown(found, mpp, params))
        tissue = tissue & ~qc.removed
    return tissue, qc


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


def judge_tiles(params: QCParams, chosen: TileSelection, tiles: SlideTiles) -> TileSelection:
    """`chosen` after every tile check these settings enable (focus), each reading from the open slide."""
    for check in tile_checks(params):
        chosen = check.judge(params, chosen, tiles)
    return chosen
