"""Tissue folds: the same tissue twice, so about twice the tissue's optical density with the same mix of stains.
Off by default (`qc.folds`); validated on synthetic slides only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.tiling.qc.base import MaskCheck
from wsi_ncmi.tiling.qc.masks import QCImage, without_thin
from wsi_ncmi.tiling.qc.registry import CHECKS

if TYPE_CHECKING:
    from wsi_ncmi.tiling.qc.params import QCParams


def fold_mask(rgb: np.ndarray, tissue: np.ndarray, mpp: float, params: QCParams) -> np.ndarray:
    """Tissue pixels whose optical density (a 3 x 3 mean, against noise) is at least `fold_min_density` times
    the reference's and within `fold_max_angle` degrees of its direction; parts narrower than `min_width_um`
    dropped. Reference: the median colour of the tissue's lighter half (by summed OD), single-layer tissue even
    when folds and dense regions cover up to half of it."""
    if not tissue.any():
        return np.zeros_like(tissue)
    table = np.log10(np.float32(255.0) / np.maximum(np.arange(256, dtype=np.float32), np.float32(1.0)))
    od = table[rgb]
    pixels = rgb[tissue]
    summed = od[tissue].sum(axis=1)
    median = np.median(pixels[summed <= np.median(summed)], axis=0)
    reference = np.log10(255.0 / np.maximum(median, 1.0)).astype(np.float32)
    smooth = od.copy()
    smooth[1:-1] += od[:-2] + od[2:]
    wide = smooth.copy()
    wide[:, 1:-1] += smooth[:, :-2] + smooth[:, 2:]
    wide /= np.float32(9.0)  # a 3 x 3 mean inside; border rows and columns (partial sums) are never folds
    wide[[0, -1]] = 0.0
    wide[:, [0, -1]] = 0.0
    along = wide @ (reference / np.linalg.norm(reference))
    dense = wide.sum(axis=2) >= np.float32(params.fold_min_density * reference.sum())
    aligned = along >= np.float32(np.cos(np.radians(params.fold_max_angle))) * np.linalg.norm(wide, axis=2)
    return without_thin(tissue & dense & aligned, mpp, params)


@CHECKS.register("fold")
class FoldCheck(MaskCheck):
    """Folds within the tissue mask (ink and dark regions already out): its reference colour is the tissue's."""

    thresholds = ("fold_min_density", "fold_max_angle")
    switch = "folds"
    optional = True
    after_tissue = True

    @classmethod
    def find(cls, image: QCImage, tissue: np.ndarray | None) -> np.ndarray:
        return fold_mask(image.rgb, tissue, image.mpp, image.params)
