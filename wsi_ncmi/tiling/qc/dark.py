"""Dark regions: near-black regions touching the slide's edge (scanner borders, out-of-tissue black), or every
near-black region when black is not a listed ink."""

from __future__ import annotations

import numpy as np

from wsi_ncmi.tiling.qc.base import MaskCheck
from wsi_ncmi.tiling.qc.masks import QCImage
from wsi_ncmi.tiling.qc.registry import CHECKS


@CHECKS.register("dark")
class DarkCheck(MaskCheck):
    """Near-black (HSV value at most `dark_max_value`, parts narrower than `min_width_um` dropped) regions that
    touch the image's edge; elsewhere they are black ink when black is listed (the pen check), else dark too."""

    thresholds = ("dark_max_value",)

    @classmethod
    def find(cls, image: QCImage, tissue: np.ndarray | None) -> np.ndarray:
        return image.near_black_at_edge if "black" in image.params.pen_colors else image.near_black
