"""A cheap check for tiles that decode but cannot be stained tissue: the signature of corrupt JPEG data.

A flipped byte in a JPEG tile often still decodes (tiffslide never complains; OpenSlide raises for about half, when
libjpeg reports the data as corrupt) into blocks of wrong colour for the rest of the tile. Light through a stained
section keeps every channel above black, and neither hematoxylin nor eosin makes green the brightest channel at
saturation (eosin saturates red, hematoxylin blue; both absorb green), so more than MAX_IMPOSSIBLE of such pixels
marks the tile as corrupt. Not detectable here: corruption that only shifts colours within the range stains
produce (over half of the silently garbled tiles in our measurements).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_IMPOSSIBLE = 0.05
"""Largest share of a tile's pixels that may have a colour stained tissue or glass cannot produce."""


class CorruptTileError(Exception):
    """A tile decoded into colours no stained slide has: its compressed data is corrupt."""


def impossible(lowest: Any, green: Any) -> Any:
    """Per pixel, from its lowest channel and its green channel (numpy arrays or torch tensors alike), whether its
    colour is impossible: a channel at black (<= 2), or green saturated (>= 253) while red or blue is below 200; a
    saturated red (eosin) or blue (hematoxylin) channel is ordinary in bright stained tissue."""
    return (lowest <= 2) | ((green >= 253) & (lowest < 200))


def impossible_fraction(rgb: np.ndarray) -> float:
    """Share of the pixels of `rgb` (H x W x 3 uint8) with an impossible colour."""
    return float(impossible(rgb.min(axis=-1), rgb[..., 1]).mean())


def check_tile(rgb: np.ndarray, where: str) -> None:
    """Raise CorruptTileError when `rgb` (H x W x 3 uint8) looks like corrupt JPEG data; `where` names the tile."""
    share = impossible_fraction(rgb)
    if share > MAX_IMPOSSIBLE:
        raise CorruptTileError(f"{where}: {share:.0%} of the pixels have impossible colours (corrupt JPEG data)")
