"""Reading tiles straight from a slide's own JPEG tiles when the tile grid lines up with them.

A region read through OpenSlide or tiffslide decodes the slide's tiles, composes them into an RGBA canvas and
converts it; when a tile of ours is exactly one (or a square block of) the TIFF's own tiles, the compressed
bytes can be read and decoded directly, several times faster, with the same pixels. Anything else (another
compression, tiles that do not line up, a pyramid tifffile sees differently from the slide library, a missing
tile) reads through the library as before. DICOM slides whose frames are baseline YCbCr JPEG tiles of a
TILED_FULL instance are read the same way (their frames are whole JPEG streams). WSI_NCMI_DIRECT_READ=0 turns the
direct path off.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from wsi_ncmi.slides.backend import Slide

JPEG = 7
RGB, YCBCR = 2, 6
SWITCH = "WSI_NCMI_DIRECT_READ"


@dataclass(frozen=True)
class DirectReader:
    """The JPEG tiles of one pyramid level: where their bytes are and how to decode them."""

    path: str
    size: int
    downsample: float
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray
    counts: np.ndarray
    tables: bytes | None
    decode: Any
    ycbcr: bool

    @property
    def across(self) -> int:
        return -(-self.width // self.tile_width)

    def _index(self, x: int, y: int) -> tuple[int, int] | None:
        """The TIFF tile column and row where the region at level-0 (x, y) starts; None when not aligned."""
        xl, yl = x / self.downsample, y / self.downsample
        if xl < 0 or yl < 0 or xl != int(xl) or yl != int(yl):
            return None
        xl, yl = int(xl), int(yl)
        if xl % self.tile_width or yl % self.tile_height:
            return None
        return xl // self.tile_width, yl // self.tile_height

    def _segments(self, x: int, y: int) -> list[tuple[int, int, int]] | None:
        """(TIFF tile index, row offset, column offset) of each tile inside the image, None when not aligned or
        when a tile is missing from the file."""
        start = self._index(x, y)
        if start is None:
            return None
        col0, row0 = start
        down = -(-self.height // self.tile_height)
        segments = []
        for dy in range(0, self.size, self.tile_height):
            for dx in range(0, self.size, self.tile_width):
                col, row = col0 + dx // self.tile_width, row0 + dy // self.tile_height
                if col >= self.across or row >= down:
                    continue
                index = row * self.across + col
                if index >= len(self.counts) or self.counts[index] == 0:
                    return None
                segments.append((index, dy, dx))
        return segments

    def __call__(self, x: int, y: int) -> np.ndarray | None:
        """RGB uint8 (size, size, 3) of the region at level-0 (x, y), as the slide library reads it (white beyond
        the image); None when the region does not line up with the TIFF's tiles."""
        segments = self._segments(x, y)
        if segments is None:
            return None
        out = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        th, tw = self.tile_height, self.tile_width
        with open(self.path, "rb") as handle:
            for index, dy, dx in segments:
                data = os.pread(handle.fileno(), int(self.counts[index]), int(self.offsets[index]))
                tile, _, _ = self.decode(data, index, jpegtables=self.tables)
                out[dy : dy + th, dx : dx + tw] = tile.reshape(th, tw, -1)[..., :3]
        x0, y0 = int(x / self.downsample), int(y / self.downsample)
        out[:, max(0, self.width - x0) :] = 255
        out[max(0, self.height - y0) :] = 255
        return out

    def _stream_index(self, x: int, y: int) -> int | None:
        """The TIFF tile that is exactly the region at level-0 (x, y), when it is a YCbCr tile inside the image."""
        segments = self._segments(x, y)
        if not self.ycbcr or segments is None or len(segments) != 1 or self.size != self.tile_width:
            return None
        x0, y0 = int(x / self.downsample), int(y / self.downsample)
        if x0 + self.size > self.width or y0 + self.size > self.height:
            return None
        return segments[0][0]

    def streamable(self, x: int, y: int) -> bool:
        """Whether `stream(x, y)` gives a JPEG stream, decided from the tile layout alone (nothing is read)."""
        return self._stream_index(x, y) is not None

    def stream(self, x: int, y: int) -> bytes | None:
        """The whole JPEG stream (shared tables put back in) of a region that is exactly one YCbCr tile inside the
        image, for decoders that take plain JPEG files (torchvision.io.decode_jpeg on a GPU); None otherwise."""
        index = self._stream_index(x, y)
        if index is None:
            return None
        with open(self.path, "rb") as handle:
            data = os.pread(handle.fileno(), int(self.counts[index]), int(self.offsets[index]))
        return with_tables(data, self.tables)


def with_tables(data: bytes, tables: bytes | None) -> bytes:
    """An abbreviated JPEG stream made whole: the JPEGTables segments (between their SOI and EOI) after its SOI."""
    if not tables:
        return data
    return data[:2] + tables[2:-2] + data[2:]


@functools.lru_cache(maxsize=8)
def direct_reader(
    path: str, level: int, size: int | None, levels: tuple[tuple[int, int], ...], downsample: float
) -> DirectReader | None:
    """The direct reader of `level` for regions of `size` px, or None when the slide's JPEG tiles cannot serve them.

    `levels` (width, height per level, as the slide library reports them) must equal the TIFF pyramid that
    tifffile sees, so the level means the same pixels to both; the region size must be a multiple of the tile size.
    `size` None: regions of one tile, whatever its size (square tiles only).
    """
    if os.environ.get(SWITCH, "1").strip() == "0":
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            pyramid = tiff.series[0].levels
            if [tuple(lv.shape) for lv in pyramid[: len(levels)]] != [(h, w, 3) for w, h in levels]:
                return None
            page = pyramid[level].pages[0]
            if size is None and page.is_tiled and page.tilewidth == page.tilelength:
                size = int(page.tilewidth)
            usable = size is not None and (
                page.is_tiled
                and page.compression == JPEG
                and page.photometric in (RGB, YCBCR)
                and page.planarconfig == 1
                and page.bitspersample == 8
                and page.samplesperpixel == 3
                and not page.extrasamples
                and page.tiledepth == 1
                and size % page.tilewidth == 0
                and size % page.tilelength == 0
            )
            if not usable:
                return None
            return DirectReader(
                path,
                size,
                float(downsample),
                int(page.imagewidth),
                int(page.imagelength),
                int(page.tilewidth),
                int(page.tilelength),
                np.asarray(page.dataoffsets, dtype=np.int64),
                np.asarray(page.databytecounts, dtype=np.int64),
                page.jpegtables,
                page.decode,
                page.photometric == YCBCR or bool(page.is_jfif),
            )
    except Exception:
        return None


@functools.lru_cache(maxsize=8)
def dicom_reader(path: str, size: int | None, width: int, height: int, downsample: float) -> DirectReader | None:
    """The direct reader of the DICOM series' level of `width` x `height` px for regions of `size` px (None: one
    frame, square frames only), or None when its frames cannot serve them (see wsi_ncmi.slides.dicom.frame_table)."""
    if os.environ.get(SWITCH, "1").strip() == "0":
        return None
    from wsi_ncmi.slides.dicom import decode_frame, frame_table

    table = frame_table(path, width, height)
    if table is not None and size is None and table.tile_width == table.tile_height:
        size = table.tile_width
    if table is None or size is None or size % table.tile_width or size % table.tile_height:
        return None
    return DirectReader(
        table.path,
        size,
        float(downsample),
        width,
        height,
        table.tile_width,
        table.tile_height,
        table.offsets,
        table.counts,
        None,
        decode_frame,
        True,
    )


def reader_for(slide: Slide, level: int, size: int | None) -> DirectReader | None:
    """The (cached) direct reader of an open slide's level for regions of `size` px (None: one of its tiles,
    whatever their size, when they are square), or None."""
    if slide.format == "dicom":
        width, height = slide.level_dimensions[level]
        return dicom_reader(str(slide.path), size, width, height, slide.level_downsamples[level])
    if slide.format not in ("tiff", "ome-tiff"):
        return None
    return direct_reader(str(slide.path), level, size, tuple(slide.level_dimensions), slide.level_downsamples[level])


def read_direct(slide: Slide, location: tuple[int, int], level: int, size: int) -> np.ndarray | None:
    """Slide.read_region((x, y), level, (size, size)) from the JPEG tiles when they line up; None otherwise."""
    reader = reader_for(slide, level, size)
    return None if reader is None else reader(int(location[0]), int(location[1]))


def decode_on_device(streams: list[bytes], device: torch.device) -> torch.Tensor:
    """Whole JPEG streams of equal-sized tiles decoded together on `device` (nvJPEG on CUDA): uint8 (n, 3, h, w),
    channels-last in memory as the decoder writes them (stacking them channels-first would cost a transposing copy).

    On CUDA the caller's stream is drained first: torchvision's decoder writes from a stream of its own without
    waiting on the caller's, into memory the allocator may just have taken back from kernels still queued there."""
    import warnings

    import torch

    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in streams]
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
