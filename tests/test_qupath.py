"""QuPath GeoJSON: valid FeatureCollections whose tile squares are the coords file's tiles exactly, numeric
measurements, a tissue annotation that follows the right-hand rule, and exact polygons of masks and tile unions."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from matplotlib.path import Path as MplPath
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.export.contours import mask_polygons, union_polygons

runner = CliRunner()


def shoelace(ring: list[list[float]]) -> float:
    x, y = np.asarray(ring, dtype=float).T
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def check_polygon(rings: list[list[list[float]]]) -> float:
    """Closed rings of >= 4 points, exterior counter-clockwise (positive) and holes clockwise; returns the area."""
    for k, ring in enumerate(rings):
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert (shoelace(ring) > 0) == (k == 0), "exterior counter-clockwise, holes clockwise (RFC 7946)"
    return sum(shoelace(ring) for ring in rings)


def polygons_of(geometry: dict) -> list:
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


@pytest.fixture(scope="module")
def exported(results_job: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    job, run = results_job
    out = tmp_path_factory.mktemp("qupath")
    result = runner.invoke(app, ["export", "qupath", "--job", str(job), "--run", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_tiles_equal_the_coords_file(exported: Path, results_job: tuple[Path, Path]) -> None:
    job, _ = results_job
    files = sorted(exported.glob("*.geojson"))
    assert [f.stem for f in files] == sorted(p.stem for p in (job / "tiles").glob("*.h5"))
    for path in files:
        collection = json.loads(path.read_text())
        assert collection["type"] == "FeatureCollection"
        with h5py.File(job / "tiles" / f"{path.stem}.h5", "r") as h5:
            coords = h5["coords"][:]
            size = int(h5["coords"].attrs["patch_size_level0"])
            fractions = h5["tissue_fraction"][:]
        if len(coords) == 0:
            assert collection["features"] == [], "a slide without tiles gives an empty FeatureCollection"
            continue
        tiles = [f for f in collection["features"] if f["properties"]["objectType"] == "detection"]
        assert len(tiles) == len(coords)
        for tile, (x, y), fraction in zip(tiles, coords.tolist(), fractions, strict=True):
            assert tile["type"] == "Feature" and tile["geometry"]["type"] == "Polygon"
            (ring,) = tile["geometry"]["coordinates"]
            assert ring == [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
            check_polygon([ring])
            measurements = tile["properties"]["measurements"]
            assert all(isinstance(v, float | int) and math.isfinite(v) for v in measurements.values())
            assert measurements["tissue_fraction"] == pytest.approx(float(fraction), rel=1e-5)
            assert measurements["p_neg"] + measurements["p_pos"] == pytest.approx(1.0, abs=1e-5)
        attention = np.array([t["properties"]["measurements"]["attention"] for t in tiles])
        assert attention.sum() == pytest.approx(1.0, abs=1e-3) and (attention > 0).all()
        (tissue,) = [f for f in collection["features"] if f["properties"]["objectType"] == "annotation"]
        area = sum(check_polygon(p) for p in polygons_of(tissue["geometry"]))
        assert float((fractions * size * size).sum()) <= area * 1.01, "the tiles' tissue lies within the contour"
        assert area <= 2048 * 1536
        prediction = collection["properties"]["prediction"]
        assert prediction["predicted"] in ("neg", "pos") and prediction["p_neg"] + prediction["p_pos"] == 1.0
        assert collection["properties"]["tissue_source"] == "tissue mask"


def test_extra_tile_datasets_and_the_tile_union(results_job: tuple[Path, Path], tmp_path: Path) -> None:
    job, _ = results_job
    copy = tmp_path / "job"
    (copy / "tiles").mkdir(parents=True)
    shutil.copy(job / "tiles" / "r0.h5", copy / "tiles" / "r0.h5")
    with h5py.File(copy / "tiles" / "r0.h5", "a") as h5:
        n = len(h5["coords"])
        sharpness = np.linspace(0.5, 2.5, n, dtype=np.float32)
        h5["focus_score"] = sharpness
        h5["coords"].attrs["slide_path"] = str(tmp_path / "moved.tif")
        coords, size = h5["coords"][:], int(h5["coords"].attrs["patch_size_level0"])
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", "qupath", "--job", str(copy), "--out", str(out)])
    assert result.exit_code == 0, result.output
    collection = json.loads((out / "r0.geojson").read_text())
    tiles = [f for f in collection["features"] if f["properties"]["objectType"] == "detection"]
    values = [t["properties"]["measurements"]["focus_score"] for t in tiles]
    assert values == pytest.approx(sharpness.tolist(), rel=1e-5)
    assert "attention" not in tiles[0]["properties"]["measurements"] and "prediction" not in collection["properties"]
    assert collection["properties"]["tissue_source"] == "tile union"
    (tissue,) = [f for f in collection["features"] if f["properties"]["objectType"] == "annotation"]
    area = sum(check_polygon(p) for p in polygons_of(tissue["geometry"]))
    assert area == len(coords) * size * size, "non-overlapping tiles: the union's area is the sum of the tiles'"
    result = runner.invoke(app, ["export", "qupath", "--job", str(copy), "--out", str(out)])
    assert result.exit_code == 0 and "kept 1 existing" in result.output
    result = runner.invoke(app, ["export", "qupath", "--job", str(tmp_path / "nowhere"), "--out", str(out)])
    assert result.exit_code == 2 and "no tiles/ folder" in result.output


def covered(polygons: list, points: np.ndarray) -> np.ndarray:
    """Even-odd membership of points in polygons with holes, by matplotlib's point-in-path test."""
    inside = np.zeros(len(points), dtype=bool)
    for polygon in polygons:
        for ring in polygon:
            inside ^= MplPath(np.asarray(ring, dtype=float)).contains_points(points)
    return inside


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_mask_polygons_cover_exactly_the_mask(mask: np.ndarray) -> None:
    polygons = mask_polygons(mask)
    area = sum(check_polygon([[list(v) for v in ring] for ring in p]) for p in polygons)
    assert area == mask.sum()
    rows, cols = np.mgrid[: mask.shape[0], : mask.shape[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1)
    assert (covered(polygons, centres) == mask.ravel()).all()


@settings(max_examples=40, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=30))
def test_tile_union_on_a_lattice(cells: set[tuple[int, int]]) -> None:
    size = 512
    coords = np.array(sorted(cells), dtype=np.int64) * size
    polygons = union_polygons(coords, size)
    area = sum(check_polygon([[list(v) for v in ring] for ring in p]) for p in polygons)
    assert area == len(cells) * size * size
    grid = np.stack(np.meshgrid(np.arange(7), np.arange(7), indexing="ij"), -1).reshape(-1, 2)
    expected = np.array([tuple(c) in cells for c in grid.tolist()])
    assert (covered(polygons, (grid + 0.5) * size) == expected).all()


def test_overlapping_tiles_union() -> None:
    polygons = union_polygons(np.array([[0, 0], [100, 50]]), 200)
    (polygon,) = polygons
    assert check_polygon([[list(v) for v in ring] for ring in polygon]) == 2 * 200 * 200 - 100 * 150


def test_tissue_annotation_is_the_tilers_mask_with_qc_removals_out(tmp_path: Path) -> None:
    from wsi_ncmi.slides.backend import open_slide
    from wsi_ncmi.slides.lowres import read_lowres
    from wsi_ncmi.synthetic import PenStroke, SlideSpec, write_slide
    from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_geometry
    from wsi_ncmi.tiling.tissue import TissueParams, tissue_mask

    spec = SlideSpec(
        "inked",
        2048,
        1536,
        0.5,
        seed=71,
        tissue_fraction=0.6,
        pen_strokes=(PenStroke("blue", ((100, 100), (900, 650))),),
    )
    slides = tmp_path / "slides"
    slides.mkdir()
    write_slide(spec, slides / "inked.tif")
    job, out = tmp_path / "job", tmp_path / "out"
    args = ["--mpp", "2.0", "--tile-size", "64", "--no-thumbnails"]
    result = runner.invoke(app, ["tile", "--slides", str(slides), "--out", str(job), *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "qupath", "--job", str(job), "--out", str(out)])
    assert result.exit_code == 0, result.output
    collection = json.loads((out / "inked.geojson").read_text())
    (tissue,) = [f for f in collection["features"] if f["properties"]["objectType"] == "annotation"]
    area = sum(check_polygon(p) for p in polygons_of(tissue["geometry"]))
    tiled = tile_geometry(TileTask("inked", str(slides / "inked.tif"), str(job), TilingParams(mpp=2.0, tile_size=64)))
    assert tiled.qc.pen.any(), "the stroke is found as ink"
    assert area == pytest.approx(tiled.mask.sum() * tiled.lowres_scale**2, rel=1e-9)
    with open_slide(str(slides / "inked.tif")) as slide:
        low = read_lowres(slide, spec.mpp, TissueParams().mask_mpp)
    unqc = tissue_mask(low.image, spec.mpp * low.scale, TissueParams()).sum() * low.scale**2
    assert area < unqc * 0.97, "the ink over the tissue is not part of the tissue annotation"
