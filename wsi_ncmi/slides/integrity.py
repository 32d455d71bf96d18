"""Checks for tiles whose compressed data is corrupt: libjpeg's own complaints, and colours no stain makes.

A flipped byte in a JPEG tile often still decodes (tiffslide and tifffile never complain; OpenSlide raises for about
half) into blocks of wrong colour for the rest of the tile. Two checks catch most of them:

- the tile's JPEG stream is decoded again (at 1/8 scale, which still reads every coded coefficient) with libjpeg's
  warnings as errors ("Corrupt JPEG data: premature end of data segment", "bad Huffman code", extraneous bytes): a
  flip that throws the entropy decoder out of step is reported there; verdicts are cached per TIFF tile;
- light through a stained section keeps every channel above black, and neither hematoxylin nor eosin makes green
  the brightest channel at saturation (eosin saturates red, hematoxylin blue; both absorb green), so more than
  MAX_IMPOSSIBLE of such pixels marks the tile as corrupt.

Not detectable here: a flip that keeps the entropy decoder in step and only shifts colours within the range stains
produce (about a third of the silently garbled tiles in our measurements).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.core.errors import WsiNcmiError

if TYPE_CHECKING:
    from wsi_ncmi.slides.backend import Slide

MAX_IMPOSSIBLE = 0.05
"""Largest share of a tile's pixels that may have a colour stained tissue or glass cannot produce."""


class CorruptTileError(WsiNcmiError):
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


def stream_problem(stream: bytes) -> str | None:
    """What libjpeg reports about a whole JPEG stream decoded with its warnings as errors; None when it is clean."""
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(stream, strict=True, min_factor=8)
    except ValueError as exc:
        return " ".join(str(exc).split()) or "libjpeg refused the data"
    return None


@dataclass(frozen=True, eq=False)
class JpegTiles:
    """Where the JPEG tiles of one pyramid level are in the file, to check the ones a region is read from (compared
    and hashed by identity: one object per level, from the cached `jpeg_tiles`)."""

    path: str
    downsample: float
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    tables: bytes | None

    def overlapping(self, x: int, y: int, size: int) -> list[int]:
        """Indices of the TIFF tiles under the region of `size` level px whose top-left is level-0 (x, y)."""
        left, top = int(x / self.downsample), int(y / self.downsample)
        right, bottom = min(left + size, self.width), min(top + size, self.height)
        if right <= max(left, 0) or bottom <= max(top, 0):
            return []
        across = -(-self.width // self.tile_width)
        cols = range(max(left, 0) // self.tile_width, (right - 1) // self.tile_width + 1)
        rows = range(max(top, 0) // self.tile_height, (bottom - 1) // self.tile_height + 1)
        return [r * across + c for r in rows for c in cols if r * across + c < len(self.counts)]


@functools.lru_cache(maxsize=8)
def jpeg_tiles(
    path: str, level: int, levels: tuple[tuple[int, int], ...], downsample: float
) -> JpegTiles | None:
    """The JPEG tiles of `level` (`downsample` times smaller than level 0) when tifffile sees the same pyramid as
    the slide library (`levels`, width and height per level); None for other compressions or layouts."""
    import tifffile

    from wsi_ncmi.slides.direct import JPEG

    try:
        with tifffile.TiffFile(path) as tiff:
            pyramid = tiff.series[0].levels
            if [tuple(lv.shape[:2]) for lv in pyramid[: len(levels)]] != [(h, w) for w, h in levels]:
                return None
            page = pyramid[level].pages[0]
            if not page.is_tiled or page.compression != JPEG or page.tiledepth != 1:
                return None
            return JpegTiles(
                path,
                float(downsample),
                int(page.imagewidth),
                int(page.imagelength),
                int(page.tilewidth),
                int(page.tilelength),
                tuple(int(v) for v in page.dataoffsets),
                tuple(int(v) for v in page.databytecounts),
                page.jpegtables,
            )
    except Exception:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _tile_problem(tiles: JpegTiles, index: int) -> str | None:
    """libjpeg's verdict on one TIFF tile of `tiles` (cached: neighbouring regions share tiles)."""
    from wsi_ncmi.slides.direct import with_tables

    if tiles.counts[index] == 0:
        return None
    with open(tiles.path, "rb") as handle:
        data = os.pread(handle.fileno(), tiles.counts[index], tiles.offsets[index])
    return stream_problem(with_tables(data, tiles.tables))


def check_region_streams(slide: Slide, location: tuple[int, int], level: int, size: int, where: str) -> None:
    """Raise CorruptTileError when libjpeg reports corrupt data in a TIFF tile under the region read at level-0
    `location`, `level`, `size` px; slides whose tiles are not JPEG in a pyramid tifffile reads are not checked."""
    levels = tuple(tuple(d) for d in slide.level_dimensions)
    tiles = jpeg_tiles(str(slide.path), level, levels, float(slide.level_downsamples[level]))
    if tiles is None:
        return
    for index in tiles.overlapping(int(location[0]), int(location[1]), size):
        problem = _tile_problem(tiles, index)
        if problem is not None:
            raise CorruptTileError(f"{where}: corrupt JPEG data in the slide file ({problem})")
