"""Bit flips in a slide's JPEG tiles: the tiles that decode silently into garbage are caught (libjpeg's own
warnings, then colours no stain makes) on the CPU and the device paths alike, and counted in the status row."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.synthetic import SlideSpec, write_slide

runner = CliRunner()


def _flip(source: Path, target: Path, share: float, seed: int) -> None:
    """Copy `source` to `target` with 3 bits flipped in each of `share` of its level-0 JPEG tiles."""
    import tifffile

    shutil.copy(source, target)
    with tifffile.TiffFile(target) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    data = bytearray(target.read_bytes())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(offsets), size=round(len(offsets) * share), replace=False)
    for index in chosen:
        offset, count = offsets[index], counts[index]
        for _ in range(3):
            data[offset + int(rng.integers(count // 4, count - 4))] ^= 1 << int(rng.integers(8))
    target.write_bytes(data)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(clean slide, the slide with bits flipped in every level-0 JPEG tile, the slide with a fifth of them
    flipped)."""
    folder = tmp_path_factory.mktemp("jpeg_flips")
    clean = folder / "clean.tif"
    write_slide(SlideSpec("s", 4096, 3072, 0.25, seed=41, tissue_fraction=0.6), clean)
    _flip(clean, folder / "all.tif", 1.0, 0)
    _flip(clean, folder / "fifth.tif", 0.2, 1)
    return clean, folder / "all.tif", folder / "fifth.tif"


def _tiles(clean: Path, tmp_path: Path) -> object:
    """A coords file of `clean` at level 0, 256 px (one TIFF tile per tile)."""
    from wsi_ncmi.formats.bags import read_coords

    pd.DataFrame([{"slide_id": "d", "path": str(clean)}]).to_csv(tmp_path / "m.csv", index=False)
    job = tmp_path / "job"
    args = ["tile", "--manifest", str(tmp_path / "m.csv"), "--out", str(job), "--mpp", "0.25", "--tile-size", "256"]
    args += ["--min-tissue", "0", "--qc", "off"]
    assert runner.invoke(app, args).exit_code == 0
    return read_coords(job / "tiles" / "d.h5")


def _silently_garbled(clean: Path, damaged: Path, coords: object) -> list[int]:
    """Tiles that tiffslide decodes from the damaged slide without an error into pixels unlike the clean ones."""
    from wsi_ncmi.slides.backend import open_slide

    size = int(coords.attrs["patch_size"])
    found = []
    with open_slide(clean, "tiffslide") as good, open_slide(damaged, "tiffslide") as bad:
        for i, (x, y) in enumerate(coords.coords):
            try:
                tile = bad.read_region((int(x), int(y)), 0, (size, size))
            except Exception:
                continue
            if np.abs(tile.astype(int) - good.read_region((int(x), int(y)), 0, (size, size))).mean() > 2:
                found.append(i)
    return found


@pytest.mark.parametrize("direct", ["1", "0"], ids=["direct JPEG reads", "slide library reads"])
def test_most_silently_garbled_tiles_are_caught(
    slides: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: str
) -> None:
    from wsi_ncmi.embedding.embed import SlideWork, TileDataset
    from wsi_ncmi.embedding.registry import Preprocess
    from wsi_ncmi.slides.direct import direct_reader

    monkeypatch.setenv("WSI_NCMI_DIRECT_READ", direct)
    direct_reader.cache_clear()
    clean, damaged, _ = slides
    coords = _tiles(clean, tmp_path)
    silent = _silently_garbled(clean, damaged, coords)
    assert len(silent) >= 10, "the flips should leave tiles that decode into garbage without an error"
    outputs = {"e": tmp_path / "x.h5"}
    dataset = TileDataset([SlideWork("d", str(damaged), outputs, coords)], [Preprocess(32, 32)], "tiffslide")
    flagged = [i for i in silent if not dataset[(0, i)][3]]
    assert len(flagged) >= 0.4 * len(silent), (len(flagged), len(silent))
    clean_set = TileDataset([SlideWork("d", str(clean), outputs, coords)], [Preprocess(32, 32)], "tiffslide")
    assert all(clean_set[(0, i)][3] for i in range(len(coords.coords)))
    direct_reader.cache_clear()


def test_the_device_path_hands_corrupt_streams_to_the_checked_cpu_path(
    slides: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from wsi_ncmi.embedding.embed import SlideWork, TileDataset
    from wsi_ncmi.embedding.registry import Preprocess
    from wsi_ncmi.slides.integrity import stream_problem

    clean, damaged, _ = slides
    coords = _tiles(clean, tmp_path)
    work = SlideWork("d", str(damaged), {"e": tmp_path / "x.h5"}, coords, decode="device")
    dataset = TileDataset([work], [Preprocess(32, 32)], "tiffslide")
    streams = [dataset.stream(0, i) for i in range(len(coords.coords))]
    assert all(stream_problem(s) is None for s in streams if s)
    withheld = [i for i, s in enumerate(streams) if not s]
    assert withheld, "corrupt streams should not reach the device decoder"
    assert all(not dataset.decoded(0, i)[1] for i in withheld)


def test_embedding_counts_the_corrupt_tiles_in_the_status_row(slides: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from wsi_ncmi.formats.bags import read_bag
    from wsi_ncmi.formats.status import read_status

    clean, _, damaged = slides
    coords = _tiles(clean, tmp_path)
    silent = _silently_garbled(clean, damaged, coords)
    job = tmp_path / "job"
    pd.DataFrame([{"slide_id": "d", "path": str(damaged)}]).to_csv(tmp_path / "d.csv", index=False)
    args = ["embed", "--job", str(job), "--manifest", str(tmp_path / "d.csv"), "--encoder", "resnet18"]
    result = runner.invoke(app, [*args, "--weights", "random", "--workers", "0", "--batch-size", "16"])
    (row,) = read_status(job / "status" / "embed.csv")
    failed = read_bag(job / "features" / "resnet18" / "d.h5").metadata["failed_tiles"].tolist()
    assert result.exit_code == 0 and row.status == "ok", result.output
    assert f"{len(failed)} of {len(coords.coords)} tile(s) unreadable or with corrupt data" in row.warning, row
    assert len(set(failed) & set(silent)) >= 0.4 * len(silent), (failed, silent)
