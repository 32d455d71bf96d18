"""Slide quality control: checks that remove regions of the low-resolution image the tissue mask comes from (pen
ink, dark borders, optionally tissue folds; plain numpy) and checks that drop tiles (out of focus, from focus
scores read at 1-2 um/px relative to the slide's own tiles).

Each check is one module registered in CHECKS (registry.py); the QC table's area columns and thresholds, the
coords attributes qc_{check}_mm2, the tiler's passes, the thumbnail's legend and the QuPath export's tissue (QC's
removals taken out) all follow the registry, in registration order.

To add a check:
1. Write `qc/<name>.py` with a class deriving from MaskCheck (base.py; removes a region: `find(image, tissue)`
   returns its mask on the low-resolution image; `after_tissue` when it looks within the tissue mask) or TileCheck
   (drops tiles: `judge(params, chosen, tiles)`, the slide and its candidate tiles given as a SlideTiles, and
   `defaults(qc_on)` for its coords attributes), decorated with
   `@CHECKS.register("<name>")` (registry.py). `switch` names the setting that turns it on, `optional` keeps it out
   of the fingerprint and the messages while off (for a check added after coords files existed), and `thresholds`
   lists the settings the QC table shows for it.
2. Register it: import the module in the line below; its place there is its place in the QC table's columns, the
   thumbnail's legend and the messages.
Its settings are fields of QCParams (params.py), which is the `qc:` config section: their defaults, their checks
(`problems`) and the fingerprint recorded in the coords files stay in that one typed place.

The modules import one way, each only those before it: inks (the pen colours) and registry (CHECKS), params
(QCParams), masks (QCImage) and selection (TileSelection), base (the check kinds), the checks, run (QCResult and
the passes), table.
"""

from wsi_ncmi.tiling.qc import pen, dark, fold, blur  # noqa: F401, I001  (registration, in this order)
from wsi_ncmi.tiling.qc.base import MaskCheck, QCCheck, SlideTiles, TileCheck, mask_checks, tile_checks
from wsi_ncmi.tiling.qc.blur import MIN_REFERENCE_TILES, blurry_tiles, with_focus
from wsi_ncmi.tiling.qc.fold import fold_mask
from wsi_ncmi.tiling.qc.inks import DEFAULT_PEN_COLORS, PEN_COLORS, PEN_HUES, RED_MIN_SATURATION
from wsi_ncmi.tiling.qc.params import SHARED_THRESHOLDS, QCParams
from wsi_ncmi.tiling.qc.pen import ink_mask
from wsi_ncmi.tiling.qc.registry import CHECKS
from wsi_ncmi.tiling.qc.run import QCResult, detect_artifacts, judge_tiles, select_tiles, with_tissue_checks
from wsi_ncmi.tiling.qc.selection import TileSelection
from wsi_ncmi.tiling.qc.table import no_tiles_reason, removal_warning, table_layout, write_qc_table

__all__ = [
    "CHECKS",
    "DEFAULT_PEN_COLORS",
    "MIN_REFERENCE_TILES",
    "PEN_COLORS",
    "PEN_HUES",
    "RED_MIN_SATURATION",
    "SHARED_THRESHOLDS",
    "MaskCheck",
    "QCCheck",
    "QCParams",
    "QCResult",
    "SlideTiles",
    "TileCheck",
    "TileSelection",
    "blurry_tiles",
    "detect_artifacts",
    "fold_mask",
    "ink_mask",
    "judge_tiles",
    "mask_checks",
    "no_tiles_reason",
    "removal_warning",
    "select_tiles",
    "table_layout",
    "tile_checks",
    "with_focus",
    "with_tissue_checks",
    "write_qc_table",
]
