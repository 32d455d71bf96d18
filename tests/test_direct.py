"""Direct reads of a slide's own JPEG tiles give the slide library's pixels, and step aside when they cannot."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch

from wsi_ncmi.embedding.embed import SlideWork, TileDataset
from wsi_ncmi.formats.bags import CoordsFile
from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.slides.direct import SWITCH, decode_on_device, direct_reader, read_direct, reader_for
from wsi_ncmi.synthetic import SlideSpec, render_region, write_slide

BACKENDS = ("openslide", "tiffslide")


@pytest.fixture(autouse=True)
def fresh_readers() -> None:
    direct_reader.cache_clear()


def _positions(width: int, height: int, size: int, downsample: int) -> list[tuple[int, int]]:
    """Level-0 corners of aligned regions: the first, middle and last tile rows and columns, one past the edge."""
    step = size * downsample
    xs = sorted({0, step * (width // step // 2), step * ((width - 1) // step)})
    ys = sorted({0, step * (height // step // 2), step * ((height - 1) // step)})
    return [(x, y) for x in xs for y in ys]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["tiff_025.tif", "svs_025.svs", "tiff_050.tif"])
def test_direct_reads_equal_the_library(slide_dir: Path, name: str, backend: str) -> None:
    with open_slide(slide_dir / name, backend) as slide:
        for level in range(min(2, slide.level_count)):
            downsample = round(slide.level_downsamples[level])
            for size in (256, 512):
                assert reader_for(slide, level, size) is not None
                for x, y in _positions(*slide.dimensions, size, downsample):
                    direct = read_direct(slide, (x, y), level, size)
                    assert direct is not None
                    np.testing.assert_array_equal(direct, slide.read_region((x, y), level, (size, size)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_tile_readers_take_the_files_own_tile_size(tmp_path: Path, backend: str) -> None:
    """Size None: regions of exactly one TIFF tile, whatever its size (Aperio writes 240 px), the library's pixels."""
    path = write_slide(SlideSpec("t240", 1500, 1100, 0.25, seed=3, tile_size=240), tmp_path / "t240.tif")
    with open_slide(path, backend) as slide:
        assert slide.level_count == 2 and reader_for(slide, 0, 256) is None
        for level in range(slide.level_count):
            reader = reader_for(slide, level, None)
            assert reader is not None and reader.size == reader.tile_width == reader.tile_height == 240
            for x, y in _positions(*slide.dimensions, 240, round(slide.level_downsamples[level])):
                np.testing.assert_array_equal(reader(x, y), slide.read_region((x, y), level, (240, 240)))


def _split_tables(stream: bytes) -> tuple[bytes, bytes]:
    """(JPEGTables, abbreviated stream): the quantisation and Huffman tables moved out of a whole JPEG stream."""
    tables, body, pos = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while stream[pos : pos + 2] != b"\xff\xda":
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        (tables if stream[pos + 1] in (0xDB, 0xC4) else body).append(stream[pos : pos + 2 + length])
        pos += 2 + length
    return b"".join(tables) + b"\xff\xd9", b"".join(body) + stream[pos:]


def _write_with_tables(path: Path, image: np.ndarray, photometric: str) -> Path:
    """A one-level tiled JPEG TIFF whose tiles share one JPEGTables tag, as Aperio's SVS files do: 'rgb' stores
    RGB components (no colour transform, Aperio's usual), 'ycbcr' stores YCbCr 4:2:0."""
    h, w = image.shape[:2]
    padded = np.zeros((-(-h // 256) * 256, -(-w // 256) * 256, 3), np.uint8)
    padded[:h, :w] = image
    options = {"outcolorspace": "RGB"} if photometric == "rgb" else {"outcolorspace": "YCBCR", "subsampling": "420"}
    streams = [
        imagecodecs.jpeg8_encode(padded[y : y + 256, x : x + 256], level=85, colorspace="RGB", **options)
        for y in range(0, padded.shape[0], 256)
        for x in range(0, padded.shape[1], 256)
    ]
    split = [_split_tables(s) for s in streams]
    assert len({t for t, _ in split}) == 1
    description = f"Aperio Image Library v12.0.15\r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=85|MPP = 0.25"
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            iter([body for _, body in split]),
            shape=(h, w, 3),
            dtype=np.uint8,
            tile=(256, 256),
            compression="jpeg",
            compressionargs={"outcolorspace": photometric},
            photometric="rgb",
            subsampling=(2, 2) if photometric == "ycbcr" else (1, 1),
            jpegtables=split[0][0],
            description=description,
            metadata=None,
        )
    return path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("photometric", ["rgb", "ycbcr"])
def test_shared_jpeg_tables_and_edge_tiles(tmp_path: Path, photometric: str, backend: str) -> None:
    image = render_region(SlideSpec("t", 1000, 700, 0.25, seed=5, tissue_fraction=0.8))
    path = _write_with_tables(tmp_path / "aperio.svs", image, photometric)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].jpegtables is not None
        assert tiff.pages[0].photometric == (2 if photometric == "rgb" else 6)
    with open_slide(path, backend) as slide:
        for x, y in [(0, 0), (256, 256), (768, 0), (768, 512), (512, 512)]:
            for size in (256, 512):
                direct = read_direct(slide, (x, y), 0, size)
                assert direct is not None
                np.testing.assert_array_equal(direct, slide.read_region((x, y), 0, (size, size)))
        reader = reader_for(slide, 0, 256)
        stream = reader.stream(256, 256)
        if photometric == "ycbcr":
            decoded = decode_on_device([stream, stream], torch.device("cpu"))
            assert decoded.shape == (2, 3, 256, 256)
            np.testing.assert_array_equal(decoded[0].permute(1, 2, 0).numpy(), reader(256, 256))
        else:
            assert stream is None
        assert reader.stream(768, 512) is None


def test_regions_that_do_not_line_up_read_through_the_library(
    slide_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_slide(slide_dir / "tiff_025.tif") as slide:
        assert read_direct(slide, (128, 0), 0, 256) is None
        assert read_direct(slide, (256, 128), 0, 512) is None
        assert read_direct(slide, (-256, 0), 0, 256) is None
        assert reader_for(slide, 0, 384) is None
        assert reader_for(slide, 0, 128) is None
    strips = write_slide(SlideSpec("s", 1024, 768, 0.25, seed=2), tmp_path / "strips.tif", tiled=False)
    with open_slide(strips) as slide:
        assert reader_for(slide, 0, 256) is None
    monkeypatch.setenv(SWITCH, "0")
    direct_reader.cache_clear()
    with open_slide(slide_dir / "tiff_025.tif") as slide:
        assert reader_for(slide, 0, 256) is None


def test_tile_dataset_reads_the_same_with_and_without_the_direct_path(
    slide_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coords = np.array([[0, 0], [512, 256], [7680, 5632], [1024, 1024]], dtype=np.int64)
    attrs = {"read_level": 1, "patch_size": 256, "tile_size": 224}
    work = [SlideWork("tiff_025", str(slide_dir / "tiff_025.tif"), Path("-"), CoordsFile(coords, np.ones(4), attrs))]
    direct = [TileDataset(work, [], "openslide").decoded(0, i) for i in range(len(coords))]
    assert direct_reader.cache_info().currsize == 1
    monkeypatch.setenv(SWITCH, "0")
    direct_reader.cache_clear()
    library = [TileDataset(work, [], "openslide").decoded(0, i) for i in range(len(coords))]
    for (a, ok_a), (b, ok_b) in zip(direct, library, strict=True):
        assert ok_a and ok_b and a.shape == (224, 224, 3)
        np.testing.assert_array_equal(a, b)
