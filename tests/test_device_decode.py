"""Decoding tiles on the encoder's device gives the CPU path's pixels and features, and steps aside slide by slide.

On the CPU, torchvision's decode_jpeg and imagecodecs (both libjpeg-turbo) give the same pixels (tests/test_direct.py),
and the tensor resize reproduces Pillow's exactly, so the device path forced onto the CPU must match bit for bit.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_embed import _corrupt_tile_under
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.embedding.device_decode import corrupt, streams_available
from wsi_ncmi.embedding.embed import EmbedSettings, SlideWork, TileDataset, bag_path, embed_slides
from wsi_ncmi.embedding.registry import Preprocess
from wsi_ncmi.embedding.resize import resize
from wsi_ncmi.formats.bags import read_bag, read_bag_attrs, read_coords
from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.slides.direct import direct_reader
from wsi_ncmi.slides.integrity import MAX_IMPOSSIBLE, check_tile
from wsi_ncmi.synthetic import SlideSpec, render_region, write_slide
from wsi_ncmi.tiling.tile import TilingParams, tile_slides

runner = CliRunner()
CPU = EmbedSettings(encoder="resnet18", weights="random", batch_size=8, workers=0, device="cpu", decode="cpu")
DEVICE = replace(CPU, decode="device")
TILING = TilingParams(mpp=2.0, tile_size=128)
"""256-px reads at level 2 (one TIFF tile each) resized to 128 px, then to resnet18's 224: both resizes run."""


@pytest.fixture(autouse=True)
def fresh_readers() -> None:
    direct_reader.cache_clear()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("device_decode")
    tiled = write_slide(SlideSpec("tiled", 4096, 3072, 0.25, seed=21, tissue_fraction=0.6), folder / "tiled.tif")
    strips = write_slide(SlideSpec("strips", 2048, 2048, 0.25, seed=4), folder / "strips.tif", tiled=False)
    return {"tiled": tiled, "strips": strips}


def _tile(slides: dict[str, Path], job: Path, params: TilingParams = TILING) -> Path:
    table = pd.DataFrame(
        {"slide_id": list(slides), "path": [str(p) for p in slides.values()], "mpp": [np.nan] * len(slides)}
    )
    rows = tile_slides(table, job, params, progress=False)
    assert all(not r.failed for r in rows), rows
    return job


def _embed(job: Path, settings: EmbedSettings, slide_id: str) -> tuple[np.ndarray, dict]:
    row = embed_slides([(slide_id, None)], job, settings, progress=False)[0]
    assert row.status == "ok", row
    path = bag_path(job, settings.encoder, slide_id)
    return read_bag(path).features, read_bag_attrs(path)


def _tiles() -> list[np.ndarray]:
    image = render_region(SlideSpec("t", 1024, 512, 0.25, seed=5, tissue_fraction=0.8))
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return [image[:256, :256], image[256:, 512:768], noise]


@pytest.mark.parametrize("kind", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("source", "size"), [(256, 224), (256, 128), (128, 224), (224, 256), (512, 448), (300, 97)])
def test_tensor_resize_gives_pillows_pixels(kind: str, source: int, size: int) -> None:
    resample = Image.Resampling.BICUBIC if kind == "bicubic" else Image.Resampling.BILINEAR
    tiles = [np.array(Image.fromarray(t).resize((source, source))) if source != 256 else t for t in _tiles()]
    batch = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    out = resize(batch, size, kind).permute(0, 2, 3, 1).numpy()
    for tile, got in zip(tiles, out, strict=True):
        np.testing.assert_array_equal(got, np.array(Image.fromarray(tile).resize((size, size), resample)))


def test_preprocess_on_tensors_equals_preprocess_on_arrays() -> None:
    batch = torch.from_numpy(np.stack(_tiles())).permute(0, 3, 1, 2)
    for prep in (Preprocess(224, 256, "bicubic"), Preprocess(224, 224), Preprocess(256, 256)):
        got = prep.tensor(batch).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(got, np.stack([prep(t) for t in _tiles()]))


def test_corrupt_tiles_are_told_as_check_tile_tells_them() -> None:
    tiles = np.full((4, 64, 64, 3), 200, dtype=np.uint8)
    limit = int(MAX_IMPOSSIBLE * 64 * 64)
    for tile, black in zip(tiles, (limit, limit + 1, 0, 64 * 64), strict=True):
        tile.reshape(-1, 3)[:black] = 0
    tiles[2, :40, :40] = (150, 255, 150)
    expected = []
    for tile in tiles:
        try:
            check_tile(tile, "t")
            expected.append(False)
        except Exception:
            expected.append(True)
    assert expected == [False, True, True, True]
    assert corrupt(torch.from_numpy(tiles).permute(0, 3, 1, 2)).tolist() == expected


def test_device_decode_gives_the_cpu_paths_pixels_and_features(slides: dict[str, Path], tmp_path: Path) -> None:
    job = _tile({"tiled": slides["tiled"]}, tmp_path / "job")
    coords = read_coords(job / "tiles" / "tiled.h5")
    work = [SlideWork("tiled", str(slides["tiled"]), {}, coords)]
    preps = [Preprocess(224, 224), Preprocess(224, 256, "bicubic")]
    keys = range(len(coords.coords))
    cpu = [TileDataset(work, preps, "openslide")[(0, t)][0] for t in keys]
    work[0].decode = "device"
    dataset = TileDataset(work, preps, "openslide")
    streams = [dataset[(0, t)][0] for t in keys]
    assert all(isinstance(s, bytes) and s for s in streams)
    inputs, ok = dataset.device_inputs(streams, 0, list(keys), torch.device("cpu"))
    assert ok.all() and len(inputs) == 2
    for i, batch in enumerate(inputs):
        assert batch.dtype == torch.uint8 and batch.shape == (len(keys), 3, 224, 224)
        np.testing.assert_array_equal(batch.numpy(), torch.stack([c[i] for c in cpu]).numpy())

    features, attrs = _embed(job, CPU, "tiled")
    on_device, device_attrs = _embed(job, replace(DEVICE, overwrite=True, workers=1), "tiled")
    assert attrs["decode"] == "cpu" and device_attrs["decode"] == "device"
    assert features.shape[0] == len(keys) and np.array_equal(features, on_device)


def test_slides_the_device_cannot_decode_fall_back_to_the_cpu(slides: dict[str, Path], tmp_path: Path) -> None:
    job = _tile(slides, tmp_path / "job")
    coords = read_coords(job / "tiles" / "tiled.h5")
    level, size = int(coords.attrs["read_level"]), int(coords.attrs["patch_size"])
    with open_slide(slides["tiled"], "openslide") as slide:
        assert streams_available(slide, level, size, coords.coords)
        assert not streams_available(slide, level, size, coords.coords + np.array([128, 0]))
        assert not streams_available(slide, level, 128, coords.coords)
    rows = embed_slides([(s, None) for s in slides], job, DEVICE, progress=False)
    assert [r.status for r in rows] == ["ok", "ok"]
    device = {s: read_bag(bag_path(job, "resnet18", s)).features for s in slides}
    assert read_bag_attrs(bag_path(job, "resnet18", "tiled"))["decode"] == "device"
    assert read_bag_attrs(bag_path(job, "resnet18", "strips"))["decode"] == "cpu"
    embed_slides([(s, None) for s in slides], job, replace(CPU, overwrite=True), progress=False)
    for slide_id, features in device.items():
        assert np.array_equal(features, read_bag(bag_path(job, "resnet18", slide_id)).features), slide_id

    unaligned = _tile({"tiled": slides["tiled"]}, tmp_path / "unaligned", TilingParams(mpp=0.5, tile_size=224))
    _, attrs = _embed(unaligned, replace(DEVICE, batch_size=64), "tiled")
    assert attrs["decode"] == "cpu"


def test_unreadable_tiles_fall_back_as_on_the_cpu(slides: dict[str, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tif"
    shutil.copy(slides["tiled"], damaged)
    job = _tile({"damaged": damaged}, tmp_path / "job")
    coords = read_coords(job / "tiles" / "damaged.h5")
    x0, y0 = coords.coords[len(coords.coords) // 2]
    _corrupt_tile_under(damaged, int(coords.attrs["read_level"]), int(x0), int(y0))
    tolerant = replace(CPU, max_failed_fraction=0.9)
    cpu, _ = _embed(job, tolerant, "damaged")
    cpu_failed = read_bag(bag_path(job, "resnet18", "damaged")).metadata["failed_tiles"].tolist()
    device, attrs = _embed(job, replace(tolerant, decode="device", overwrite=True), "damaged")
    assert attrs["decode"] == "device" and len(coords.coords) // 2 in cpu_failed
    assert read_bag(bag_path(job, "resnet18", "damaged")).metadata["failed_tiles"].tolist() == cpu_failed
    assert np.array_equal(cpu, device)


def test_the_decode_path_does_not_stop_a_resume(slides: dict[str, Path], tmp_path: Path) -> None:
    job = _tile({"tiled": slides["tiled"]}, tmp_path / "job")
    _embed(job, CPU, "tiled")
    assert embed_slides([("tiled", None)], job, DEVICE, progress=False)[0].status == "skipped"
    with h5py.File(bag_path(job, "resnet18", "tiled"), "a") as h5:
        del h5["features"].attrs["decode"]
    assert embed_slides([("tiled", None)], job, DEVICE, progress=False)[0].status == "skipped"


def test_bad_decode_settings_fail_in_one_line(slides: dict[str, Path], tmp_path: Path) -> None:
    job = _tile({"tiled": slides["tiled"]}, tmp_path / "job")
    base = ["embed", "--job", str(job), "--encoder", "resnet18", "--weights", "random", "--device", "cpu"]
    result = runner.invoke(app, [*base, "--decode", "gpu"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: decode must be one of auto, cpu, device, got 'gpu'"
    result = runner.invoke(app, [*base, "--decode", "device", "--stain-norm", "macenko"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "stain normalisation" in result.output and "decode auto or cpu" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decode_is_close_to_the_cpu_path(slides: dict[str, Path], tmp_path: Path) -> None:
    job = _tile({"tiled": slides["tiled"]}, tmp_path / "job")
    coords = read_coords(job / "tiles" / "tiled.h5")
    work = [SlideWork("tiled", str(slides["tiled"]), {}, coords, decode="device")]
    dataset = TileDataset(work, [Preprocess(224, 224)], "openslide")
    keys = list(range(len(coords.coords)))
    (gpu,), ok = dataset.device_inputs([dataset.stream(0, t) for t in keys], 0, keys, torch.device("cuda"))
    work[0].decode = "cpu"
    cpu = torch.stack([dataset[(0, t)][0][0] for t in keys])
    diff = (gpu.cpu().int() - cpu.int()).abs()
    assert ok.all() and diff.float().mean() <= 1.0, (diff.max(), diff.float().mean())
    settings = replace(CPU, device="cuda", precision="fp32", decode="auto")
    features, _ = _embed(job, replace(settings, decode="cpu"), "tiled")
    on_gpu, attrs = _embed(job, replace(settings, overwrite=True), "tiled")
    assert attrs["decode"] == "device"
    cosine = (features * on_gpu).sum(1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(on_gpu, axis=1))
    assert cosine.min() >= 0.999, cosine.min()
