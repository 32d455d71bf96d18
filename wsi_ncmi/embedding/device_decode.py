"""Tiles decoded on the encoder's device: the slide's own JPEG tiles as whole streams, decoded by torchvision
(nvJPEG on CUDA) and resized as Pillow resizes them on the CPU path, so both give the same pixels up to the JPEG
decoder's rounding.

It applies to a slide whose every tile is exactly one YCbCr JPEG tile of the TIFF, inside the image; the tiles
it cannot serve (an unreadable stream, a batch the decoder rejects, a tile that decodes into colours of corrupt
data) are left to the CPU path, which retries and zero-fills them as it does its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.slides.integrity import MAX_IMPOSSIBLE, impossible

if TYPE_CHECKING:
    import torch

    from wsi_ncmi.slides.backend import Slide


def streams_available(slide: Slide, level: int, size: int, coords: np.ndarray) -> bool:
    """Whether every tile at `coords` (level 0) of `size` px read at `level` of the open `slide` is one whole JPEG
    stream of it; decided from the TIFF's tile layout, which is read once per slide and level and cached."""
    from wsi_ncmi.slides.direct import reader_for

    reader = reader_for(slide, level, size)
    return reader is not None and all(reader.streamable(int(x), int(y)) for x, y in coords)


def corrupt(tiles: torch.Tensor) -> torch.Tensor:
    """Per uint8 (n, 3, h, w) tile, whether it has the colours of corrupt JPEG data, by the same test (and
    threshold) as wsi_ncmi.slides.integrity.check_tile."""
    share = impossible(tiles.amin(dim=1), tiles[:, 1]).sum(dim=(1, 2)).double() / (tiles.shape[2] * tiles.shape[3])
    return share > MAX_IMPOSSIBLE


def decode_tiles(streams: list[bytes], tile_size: int, device: torch.device) -> tuple[torch.Tensor | None, list[int]]:
    """The streams decoded on `device` and resized (Pillow's bilinear) to `tile_size`: uint8 (k, 3, tile_size,
    tile_size) of the tiles that decoded into plausible pixels, in order, or None when there are none; and the
    positions of the others, for the CPU path."""
    from wsi_ncmi.embedding.resize import resize
    from wsi_ncmi.slides.direct import decode_on_device

    good = [i for i, stream in enumerate(streams) if stream]
    tiles = None
    if good:
        try:
            tiles = decode_on_device([streams[i] for i in good], device)
        except RuntimeError:
            tiles, good = _one_by_one(streams, good, device)
    if tiles is not None and good:
        plausible = (~corrupt(tiles)).cpu().tolist()
        if not all(plausible):
            tiles = tiles[[i for i, keep in enumerate(plausible) if keep]]
            good = [i for i, keep in zip(good, plausible, strict=True) if keep]
    others = sorted(set(range(len(streams))) - set(good))
    if not good:
        return None, others
    return resize(tiles, tile_size, "bilinear"), others


def _one_by_one(
    streams: list[bytes], positions: list[int], device: torch.device
) -> tuple[torch.Tensor | None, list[int]]:
    """After the decoder rejected a batch: each stream decoded alone, the ones it rejects left out."""
    import torch

    from wsi_ncmi.slides.direct import decode_on_device

    tiles, good = [], []
    for i in positions:
        try:
            tiles.append(decode_on_device([streams[i]], device))
        except RuntimeError:
            continue
        good.append(i)
    return (torch.cat(tiles) if tiles else None), good
