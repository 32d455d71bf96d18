"""What a QC check is: a mask check (removes regions of the low-resolution image) or a tile check (drops tiles),
and the registered checks (registry.CHECKS) of each kind, in registration order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from wsi_ncmi.tiling.qc.registry import CHECKS

if TYPE_CHECKING:
    import numpy as np

    from wsi_ncmi.tiling.qc.masks import QCImage
    from wsi_ncmi.tiling.qc.params import QCParams
    from wsi_ncmi.tiling.qc.selection import TileSelection


@dataclass(frozen=True)
class SlideTiles:
    """What a tile check reads: the open slide (level-0 `mpp0` um/px), its candidate tiles' level-0 top-left
    corners `grid`, `size0` level-0 px wide, and the tiler's tissue `mask`, whose pixels are `scale` level-0 px."""

    slide: Any
    grid: np.ndarray
    size0: int
    mpp0: float
    mask: np.ndarray
    scale: float


class QCCheck:
    """One quality-control check. `name` (set by registration) is how the QC table, the coords attributes and the
    thumbnail's legend call it; `thresholds` are the settings (QCParams fields) the QC table shows for it."""

    name: ClassVar[str]
    thresholds: ClassVar[tuple[str, ...]] = ()
    switch: ClassVar[str | None] = None
    """The QCParams field (true or false) that turns the check on; None: it runs whenever QC does."""
    optional: ClassVar[bool] = False
    """Added after coords files existed without it, and off by default: while it is off its switch and thresholds
    are left out of the settings' fingerprint (which so reads as before it existed), and a mask check's area is
    missing from the coords attributes, blank in the QC table and left out of the messages."""

    @classmethod
    def enabled(cls, params: QCParams) -> bool:
        """Whether the check runs with these settings (QC itself on)."""
        return cls.switch is None or bool(getattr(params, cls.switch))


class MaskCheck(QCCheck):
    """A check that removes regions of the low-resolution image the tissue mask comes from. Its area (mm^2) is
    the coords attribute qc_{name}_mm2 and the QC table's column {name}_mm2; the thumbnail shades it."""

    after_tissue: ClassVar[bool] = False
    """Found within the tissue mask (other removals already out) instead of on the whole image, before it."""

    @classmethod
    def find(cls, image: QCImage, tissue: np.ndarray | None) -> np.ndarray:
        """The check's mask (boolean, the image's shape); `tissue` is the tissue mask for `after_tissue` checks."""
        raise NotImplementedError


class TileCheck(QCCheck):
    """A check that drops tiles after the tissue and the removals chose them (focus: read from the slide)."""

    @classmethod
    def defaults(cls, qc_on: bool) -> dict[str, Any]:
        """The check's coords attributes before it runs (or with QC off), so every slide has them."""
        return {}

    @classmethod
    def judge(cls, params: QCParams, chosen: TileSelection, tiles: SlideTiles) -> TileSelection:
        """`chosen` (indices into `tiles.grid`) with the tiles this check drops taken out."""
        raise NotImplementedError


def mask_checks(params: QCParams | None = None, after_tissue: bool | None = None) -> list[type[MaskCheck]]:
    """The registered mask checks, in order: only those `params` enable and of the given stage, when given."""
    return [
        check
        for check in CHECKS.values()
        if issubclass(check, MaskCheck)
        and (params is None or check.enabled(params))
        and (after_tissue is None or check.after_tissue == after_tissue)
    ]


def tile_checks(params: QCParams | None = None) -> list[type[TileCheck]]:
    """The registered tile checks, in order; only those `params` enable, when given."""
    return [
        check for check in CHECKS.values() if issubclass(check, TileCheck) and (params is None or check.enabled(params))
    ]
