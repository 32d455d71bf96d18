"""Running the registered checks: the mask checks on the low-resolution image, before and within the tissue
mask, and the tile checks on the tiles chosen; QC's masks as one result."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.tiling.qc.masks import QCImage, grown
from wsi_ncmi.tiling.qc.registry import CHECKS, MaskCheck, mask_checks, tile_checks

if TYPE_CHECKING:
    from wsi_ncmi.tiling.qc.params import QCParams
    from wsi_ncmi.tiling.qc.selection import TileSelection


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


def judge_tiles(
    slide: Any,
    params: QCParams,
    chosen: TileSelection,
    grid: np.ndarray,
    size0: int,
    mpp0: float,
    mask: np.ndarray,
    scale: float,
) -> TileSelection:
    """`chosen` after every tile check these settings enable (focus), each reading from the open slide."""
    for check in tile_checks(params):
        chosen = check.judge(slide, params, chosen, grid, size0, mpp0, mask, scale)
    return chosen
