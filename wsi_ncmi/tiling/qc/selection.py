"""Which grid tiles a slide keeps after the removal masks and the tile checks, and what QC took away, as coords
attributes: what run.select_tiles makes and each tile check (base.TileCheck) judges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TileSelection:
    """The tiles kept on one slide and what quality control took away (areas in mm^2, counts in tiles)."""

    keep: np.ndarray
    tissue_fraction: np.ndarray
    sharpness: np.ndarray | None
    summary: dict[str, float | int]
    blurry: np.ndarray | None = None
    """Grid tiles dropped as out of focus (boolean, the grid's length), None without QC."""
