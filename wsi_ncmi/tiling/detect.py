"""The tiler's tissue detection with quality control: the tissue mask of a low-resolution image, QC's removals
(ink, dark regions, folds: every registered mask check) taken out. The tiler and the QuPath export (which redraws
the mask) both use it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from wsi_ncmi.tiling.qc import QCParams, QCResult, detect_artifacts, with_tissue_checks
from wsi_ncmi.tiling.tissue import TissueParams, channel_range, tissue_mask


def tissue_after_qc(
    image: np.ndarray, mpp: float, tissue: TissueParams, qc_params: QCParams
) -> tuple[np.ndarray, QCResult | None]:
    """The tiler's tissue mask of a low-resolution image whose pixels are `mpp` um wide, QC's removals (ink, dark
    regions, folds: every registered mask check) taken out, and QC's masks (None with QC off)."""
    if not qc_params.enabled:
        return tissue_mask(image, mpp, tissue), None
    channels = channel_range(image)
    qc = detect_artifacts(image, mpp, qc_params, channels)
    mask = tissue_mask(image, mpp, tissue, exclude=qc.removed, channels=channels)
    mask &= ~qc.removed
    mask, qc = with_tissue_checks(qc, image, mask, mpp, qc_params)
    if qc.removed.any():
        qc = replace(qc, tissue_before=int(np.count_nonzero(tissue_mask(image, mpp, tissue, channels=channels))))
    return mask, qc
