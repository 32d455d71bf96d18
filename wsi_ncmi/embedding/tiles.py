"""The tiles the embedding stage reads: one slide's work (where to read, which bags to write) and the dataset that
reads and decodes each tile once for every encoder, on the CPU or, as JPEG streams, for decoding on the device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from wsi_ncmi.embedding.device_decode import decode_tiles
from wsi_ncmi.embedding.registry import Preprocess
from wsi_ncmi.embedding.stain import StainNormaliser
from wsi_ncmi.formats.bags import CoordsFile
from wsi_ncmi.slides.backend import Slide, open_slide
from wsi_ncmi.slides.direct import read_direct, reader_for
from wsi_ncmi.slides.integrity import check_region_streams, check_tile, stream_problem


@dataclass
class SlideWork:
    """One slide to embed: where to read, and the bag each encoder that still needs it writes."""

    slide_id: str
    slide_path: str
    outputs: dict[str, Path]
    coords: CoordsFile
    decode: str = "cpu"

    @property
    def read_level(self) -> int:
        return self.coords.geometry.read_level

    @property
    def read_size(self) -> int:
        return self.coords.geometry.read_size

    @property
    def tile_size(self) -> int:
        return self.coords.geometry.tile_size


class TileDataset(Dataset):
    """Tiles of several slides, addressed by (slide index, tile index); returns one uint8 CHW tensor per encoder.

    Each tile is read and decoded once (`read`: the slide region at the tile size, uint8 HWC, shared by every
    encoder), then each encoder's own resize and crop (`preprocess`) makes its input; normalisation happens on the
    device, so only uint8 crosses process and PCIe boundaries. A tile that cannot be read is retried once on a
    fresh handle, then returned as zeros with ok=False.
    """

    def __init__(
        self,
        work: list[SlideWork],
        preprocess: list[Preprocess],
        backend: str,
        max_open: int = 4,
        stain: StainNormaliser | None = None,
    ):
        self.work = work
        self.preprocess = preprocess
        self.stain = stain or StainNormaliser()
        self.backend = backend
        self.max_open = max_open
        self._slides: dict[int, Slide] = {}

    def __len__(self) -> int:
        return sum(len(w.coords.coords) for w in self.work)

    def _slide(self, index: int, fresh: bool = False) -> Slide:
        if fresh and index in self._slides:
            self._slides.pop(index).close()
        if index not in self._slides:
            if len(self._slides) >= self.max_open:
                oldest = next(iter(self._slides))
                self._slides.pop(oldest).close()
            self._slides[index] = open_slide(self.work[index].slide_path, self.backend)
        return self._slides[index]

    def read(self, slide_index: int, tile_index: int, fresh: bool = False) -> np.ndarray:
        """The decoded tile at the tiling's tile size (uint8 HWC): the one read shared by every encoder."""
        work = self.work[slide_index]
        x, y = work.coords.coords[tile_index]
        slide = self._slide(slide_index, fresh)
        region = None if fresh else read_direct(slide, (x, y), work.read_level, work.read_size)
        if region is None:
            region = slide.read_region((x, y), work.read_level, (work.read_size,) * 2)
        check_tile(region, f"{work.slide_id} tile {tile_index}")
        check_region_streams(slide, (x, y), work.read_level, work.read_size, f"{work.slide_id} tile {tile_index}")
        region = self.stain(region)
        if work.read_size == work.tile_size:
            return np.array(region)
        image = Image.fromarray(region).resize((work.tile_size,) * 2, Image.Resampling.BILINEAR)
        return np.array(image)

    def decoded(self, slide_index: int, tile_index: int) -> tuple[np.ndarray, bool]:
        """The decoded tile and whether it could be read (zeros at the tile size after one retry otherwise)."""
        try:
            return self.read(slide_index, tile_index), True
        except Exception:
            try:
                return self.read(slide_index, tile_index, fresh=True), True
            except Exception:
                size = self.work[slide_index].tile_size
                return np.zeros((size, size, 3), dtype=np.uint8), False

    def stream(self, slide_index: int, tile_index: int) -> bytes:
        """The tile's whole JPEG stream, to decode on the device; empty when it cannot be read so or libjpeg reports
        it corrupt (the main process then reads the tile the CPU way, whose checks flag it)."""
        work = self.work[slide_index]
        x, y = work.coords.coords[tile_index]
        try:
            reader = reader_for(self._slide(slide_index), work.read_level, work.read_size)
            stream = (reader.stream(int(x), int(y)) if reader is not None else None) or b""
            return b"" if stream and stream_problem(stream) else stream
        except Exception:
            return b""

    def device_inputs(
        self, streams: list[bytes], slide_index: int, tile_indices: list[int], device: torch.device
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each encoder's uint8 inputs on `device` for one slide's batch of JPEG streams, decoded there, and whether
        each tile could be read; tiles the device cannot serve go through `decoded` here (retried, zero-filled)."""
        size = self.work[slide_index].tile_size
        tiles, others = decode_tiles(streams, size, device)
        ok = torch.ones(len(streams), dtype=torch.bool)
        if others:
            batch = torch.empty((len(streams), 3, size, size), dtype=torch.uint8, device=device)
            if tiles is not None:
                batch[[i for i in range(len(streams)) if i not in set(others)]] = tiles
            for i in others:
                tile, ok[i] = self.decoded(slide_index, tile_indices[i])
                batch[i] = torch.from_numpy(tile).permute(2, 0, 1).to(device)
            tiles = batch
        return [prep.tensor(tiles) for prep in self.preprocess], ok

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[torch.Tensor] | bytes, int, int, bool]:
        slide_index, tile_index = key
        if self.work[slide_index].decode == "device":
            return self.stream(slide_index, tile_index), slide_index, tile_index, True
        tile, ok = self.decoded(slide_index, tile_index)
        inputs = [torch.from_numpy(prep(tile)).permute(2, 0, 1) for prep in self.preprocess]
        return inputs, slide_index, tile_index, ok


def slide_batches(work: list[SlideWork], batch_size: int) -> list[list[tuple[int, int]]]:
    """Batches of (slide, tile) keys in slide order; no batch spans two slides."""
    batches = []
    for s, item in enumerate(work):
        n = len(item.coords.coords)
        batches += [[(s, t) for t in range(start, min(n, start + batch_size))] for start in range(0, n, batch_size)]
    return batches
