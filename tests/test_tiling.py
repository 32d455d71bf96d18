"""The tile stage end to end on synthetic slides with known geometry, and every kind of bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.formats.bags import COORDS_ATTRS, FORMAT_VERSION, read_coords
from wsi_ncmi.synthetic import SlideSpec, load_truth, write_slide
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_geometry, tile_slide

runner = CliRunner()


def _status(job: Path) -> dict[str, dict[str, str]]:
    with open(job / "status" / "tile.csv", newline="") as handle:
        return {row["slide_id"]: row for row in csv.DictReader(handle)}


def _manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_tile_count_matches_tissue_area(slide_dir: Path, tmp_path: Path) -> None:
    spec, model = load_truth(slide_dir / "tiff_025.truth.json")
    params = TilingParams(mpp=0.5, tile_size=64, min_tissue=0.5)
    result = tile_geometry(TileTask("tiff_025", str(slide_dir / "tiff_025.tif"), str(tmp_path), params))
    tile_um = 64 * 0.5
    ny, nx = int(spec.height * spec.mpp // 4), int(spec.width * spec.mpp // 4)
    yy, xx = np.mgrid[0:ny, 0:nx]
    tissue_um2 = model.tissue(xx * 4.0 + 2.0, yy * 4.0 + 2.0).mean() * spec.width * spec.height * spec.mpp**2
    expected = tissue_um2 / tile_um**2
    assert len(result.coords) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(
    ("grid", "edges"), [("slide", "none"), ("slide", "inward"), ("slide", "overhang"), ("tissue", "overhang")]
)
def test_kept_tiles_are_tissue_by_ground_truth(slide_dir: Path, tmp_path: Path, grid: str, edges: str) -> None:
    from wsi_ncmi.tiling.grid import grid_coords, tissue_grid_coords

    _, model = load_truth(slide_dir / "tiff_025.truth.json")
    params = TilingParams(min_tissue=0.5, grid=grid, edges=edges)
    result = tile_geometry(TileTask("tiff_025", str(slide_dir / "tiff_025.tif"), str(tmp_path), params))
    size0, step0 = result.geometry.size_level0, result.geometry.step_level0
    size_um = size0 * 0.25
    kept = {tuple(c) for c in result.coords.tolist()}
    if grid == "slide":
        candidates = grid_coords(8192, 6144, size0, step0, edges)
    else:
        candidates = tissue_grid_coords(result.mask, result.lowres_scale, 8192, 6144, size0, step0, edges)
    assert kept <= {tuple(c) for c in candidates.tolist()} and len(kept) > 50
    assert (result.attrs["grid"], result.attrs["edges"], result.attrs["edge_tiles"]) == (
        grid,
        edges,
        edges == "overhang",
    )
    for x, y in candidates.tolist():
        truth = model.tissue_fraction(x * 0.25, y * 0.25, size_um)
        if (x, y) in kept:
            assert truth >= 0.5 - 0.1, (x, y, truth)
        elif truth >= 0.5 + 0.1:
            pytest.fail(f"tile at {(x, y)} is {truth:.0%} tissue but was not kept")


@pytest.mark.parametrize(("name", "step"), [("tiff_025.tif", 512), ("tiff_050.tif", 256), ("svs_025.svs", 512)])
def test_level0_step_follows_resolution(slide_dir: Path, tmp_path: Path, name: str, step: int) -> None:
    result = tile_geometry(TileTask("s", str(slide_dir / name), str(tmp_path), TilingParams()))
    assert result.geometry.size_level0 == step
    xs = np.unique(result.coords[:, 0])
    assert len(xs) > 1 and set(np.diff(xs).tolist()) <= {step * k for k in range(1, 20)}
    assert result.attrs["patch_size"] == 256 and result.attrs["mpp_source"] == "metadata"


def test_backends_give_the_same_coordinates(slide_dir: Path, tmp_path: Path) -> None:
    results = [
        tile_geometry(TileTask("s", str(slide_dir / "tiff_025.tif"), str(tmp_path), TilingParams(backend=b)))
        for b in ("openslide", "tiffslide")
    ]
    assert results[0].attrs["backend"] == "openslide" and results[1].attrs["backend"] == "tiffslide"
    assert np.array_equal(results[0].coords, results[1].coords)
    assert np.array_equal(results[0].tissue_fraction, results[1].tissue_fraction)


def test_svs_reports_aperio_mpp(slide_dir: Path, tmp_path: Path) -> None:
    result = tile_geometry(TileTask("s", str(slide_dir / "svs_025.svs"), str(tmp_path), TilingParams()))
    assert result.attrs["mpp_level0"] == 0.25 and result.attrs["level0_magnification"] == 40.0


def test_cli_writes_documented_outputs_and_resumes(slide_dir: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    result = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(job)])
    assert result.exit_code == 0, result.output
    status = _status(job)
    assert set(status) == {"tiff_025", "svs_025", "tiff_050"}
    assert all(row["status"] == "ok" for row in status.values())
    for slide_id, row in status.items():
        coords = read_coords(job / "tiles" / f"{slide_id}.h5")
        assert len(coords.coords) == int(row["n_tiles"]) > 0
        assert coords.coords.dtype == np.int64 and coords.tissue_fraction.dtype == np.float32
        assert (coords.tissue_fraction >= 0.1).all()
        with h5py.File(job / "tiles" / f"{slide_id}.h5", "r") as h5:
            attrs = h5["coords"].attrs
            for key, kind in COORDS_ATTRS.items():
                value = attrs[key]
                assert isinstance(value.item() if hasattr(value, "item") else value, kind), (key, type(value))
            assert attrs["format_version"] == FORMAT_VERSION
            assert json.loads(attrs["tissue_params"])["mask_mpp"] == 8.0
        assert (job / "thumbnails" / f"{slide_id}.jpg").stat().st_size > 0
    before = (job / "tiles" / "tiff_025.h5").stat().st_mtime_ns
    again = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(job)])
    assert again.exit_code == 0
    assert all(row["status"] == "skipped" for row in _status(job).values())
    assert (job / "tiles" / "tiff_025.h5").stat().st_mtime_ns == before
    changed = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(job), "--min-tissue", "0.5"])
    assert changed.exit_code == 1
    assert all("--overwrite" in row["error"] for row in _status(job).values())
    assert (job / "tiles" / "tiff_025.h5").stat().st_mtime_ns == before
    redo = runner.invoke(
        app, ["tile", "--slides", str(slide_dir), "--out", str(job), "--min-tissue", "0.5", "--overwrite"]
    )
    assert redo.exit_code == 0
    assert read_coords(job / "tiles" / "tiff_025.h5").attrs["min_tissue"] == 0.5
    regrid = runner.invoke(
        app, ["tile", "--slides", str(slide_dir), "--out", str(job), "--min-tissue", "0.5", "--grid", "tissue"]
    )
    assert regrid.exit_code == 1
    assert all("grid was 'slide', now 'tissue'" in row["error"] for row in _status(job).values())


def test_parallel_workers_match_serial(slide_dir: Path, tmp_path: Path) -> None:
    for workers, job in ((1, tmp_path / "serial"), (2, tmp_path / "parallel")):
        result = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(job), "--workers", str(workers)])
        assert result.exit_code == 0, result.output
    for name in ("tiff_025", "svs_025", "tiff_050"):
        a = read_coords(tmp_path / "serial" / "tiles" / f"{name}.h5")
        b = read_coords(tmp_path / "parallel" / "tiles" / f"{name}.h5")
        assert np.array_equal(a.coords, b.coords)


@pytest.fixture(scope="module")
def bad_cohort(tmp_path_factory: pytest.TempPathFactory, slide_dir: Path) -> Path:
    """A manifest mixing one good slide with every kind of bad input."""
    folder = tmp_path_factory.mktemp("bad")
    good = folder / "good.tif"
    shutil.copy(slide_dir / "tiff_050.tif", good)
    (folder / "notes.svs").write_text("not a slide at all\n")
    truncated = folder / "truncated.tif"
    data = (slide_dir / "tiff_025.tif").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    small = SlideSpec("x", 2048, 1536, 0.5, seed=5)
    write_slide(small, folder / "nompp.tif", write_mpp=False)
    write_slide(SlideSpec("x", 2048, 1536, 0.5, seed=5, tissue_fraction=0.0), folder / "blank.tif")
    write_slide(small, folder / "single.tif", pyramid=False)
    write_slide(small, folder / "strips.tif", tiled=False)
    rows = [
        {"slide_id": p.stem if p.suffix != ".svs" else "notaslide", "path": p.name}
        for p in [
            good,
            folder / "notes.svs",
            truncated,
            folder / "nompp.tif",
            folder / "blank.tif",
            folder / "single.tif",
            folder / "strips.tif",
        ]
    ]
    rows.append({"slide_id": "missing", "path": "nowhere/missing.svs"})
    return _manifest(folder / "manifest.csv", rows)


def test_bad_inputs_fail_alone_with_clear_rows(bad_cohort: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    result = runner.invoke(app, ["tile", "--manifest", str(bad_cohort), "--out", str(job)])
    assert result.exit_code == 1
    status = _status(job)
    expected = {
        "good": "ok",
        "single": "ok",
        "strips": "ok",
        "blank": "no_tissue",
        "notaslide": "failed",
        "truncated": "failed",
        "nompp": "failed",
        "missing": "failed",
    }
    assert {k: v["status"] for k, v in status.items()} == expected
    assert "file not found" in status["missing"]["error"]
    assert "not a readable slide" in status["notaslide"]["error"]
    assert "truncated" in status["truncated"]["error"] or "readable" in status["truncated"]["error"]
    assert "--assume-mpp" in status["nompp"]["error"] and "mpp column" in status["nompp"]["error"]
    assert all("\n" not in row["error"] for row in status.values())
    blank = read_coords(job / "tiles" / "blank.h5")
    assert blank.coords.shape == (0, 2) and "no tissue" in status["blank"]["warning"]
    assert (job / "thumbnails" / "blank.jpg").exists()
    assert not (job / "tiles" / "missing.h5").exists()


def test_assume_mpp_rescues_a_slide_without_metadata(bad_cohort: Path, tmp_path: Path) -> None:
    row = tile_slide(
        TileTask("nompp", str(bad_cohort.parent / "nompp.tif"), str(tmp_path), TilingParams(assume_mpp=0.5))
    )
    assert (row.status, row.mpp_source, row.mpp_level0) == ("ok", "assumed", 0.5)


def test_manifest_mpp_overrides_metadata(slide_dir: Path, tmp_path: Path) -> None:
    row = tile_slide(TileTask("t", str(slide_dir / "tiff_050.tif"), str(tmp_path), TilingParams(), manifest_mpp=0.25))
    assert (row.mpp_source, row.mpp_level0) == ("manifest", 0.25)
    assert read_coords(tmp_path / "tiles" / "t.h5").attrs["patch_size_level0"] == 512


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"slide_id": "a", "path": "a.tif"}, {"slide_id": "a", "path": "b.tif"}],
            "row 3: duplicate slide_id 'a'",
        ),
        ([{"slide_id": "../evil", "path": "a.tif"}], "row 2: slide_id '../evil'"),
        ([{"slide_id": "", "path": "a.tif"}], "row 2: slide_id '' is empty"),
        ([{"slide_id": "a"}], "missing required column 'path'"),
    ],
)
def test_bad_manifests_are_refused_before_any_work(tmp_path: Path, rows: list[dict[str, str]], message: str) -> None:
    manifest = _manifest(tmp_path / "m.csv", rows)
    result = runner.invoke(app, ["tile", "--manifest", str(manifest), "--out", str(tmp_path / "job")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "job").exists()


def test_output_folder_problems(slide_dir: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    blocked_parent = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(a_file / "b" / "job")])
    assert blocked_parent.exit_code == 2 and f"{a_file} is a file, not a folder" in blocked_parent.output
    not_a_folder = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(a_file)])
    assert not_a_folder.exit_code == 2 and "not a folder" in not_a_folder.output


def test_config_file_and_flags(slide_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiling.yaml"
    config.write_text("mpp: 1.0\ntile_size: 128\ntissue:\n  mask_mpp: 16.0\n")
    job = tmp_path / "job"
    result = runner.invoke(
        app,
        ["tile", "--slides", str(slide_dir), "--out", str(job), "--config", str(config), "--tile-size", "64"],
    )
    assert result.exit_code == 0, result.output
    attrs = read_coords(job / "tiles" / "tiff_025.h5").attrs
    assert (attrs["mpp_target"], attrs["tile_size"], attrs["patch_size_level0"]) == (1.0, 64, 256)
    assert json.loads(attrs["tissue_params"])["mask_mpp"] == 16.0
    config.write_text("mpp: 1.0\nbogus: 3\n")
    bad = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(job), "--config", str(config)])
    assert bad.exit_code == 2 and "bogus" in bad.output


def test_shipped_tiling_config_equals_the_defaults() -> None:
    from wsi_ncmi.core.config import load_yaml

    shipped = TilingParams.from_dict(load_yaml(Path(__file__).parents[1] / "configs" / "tiling.yaml"))
    assert shipped == TilingParams()


def test_shards_cover_every_slide_once_and_merge_like_one_run(slide_dir: Path, tmp_path: Path) -> None:
    from wsi_ncmi.formats.shards import parse_shard, shard_of

    ids = [f"slide_{i}" for i in range(200)]
    owners = [[i for i in range(4) if shard_of(s, 4) == i] for s in ids]
    assert all(len(o) == 1 for o in owners) and {o[0] for o in owners} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="0 <= I < N"):
        parse_shard("4/4")
    single = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(tmp_path / "single")])
    assert single.exit_code == 0
    sharded = tmp_path / "sharded"
    for i in range(3):
        result = runner.invoke(app, ["tile", "--slides", str(slide_dir), "--out", str(sharded), "--shard", f"{i}/3"])
        assert result.exit_code == 0, result.output
        assert (sharded / "status" / f"tile.shard-{i}-of-3.csv").exists()
    merged = runner.invoke(app, ["status", str(sharded)])
    assert merged.exit_code == 0, merged.output
    columns = ["slide_id", "status", "n_tiles", "mpp_level0", "mpp_source"]
    a = pd.read_csv(tmp_path / "single" / "status" / "tile.csv")[columns]
    b = pd.read_csv(sharded / "status" / "tile.csv")[columns]
    pd.testing.assert_frame_equal(a, b)
    qc_single = pd.read_csv(tmp_path / "single" / "status" / "qc.csv")
    assert len(qc_single) == len(a)
    pd.testing.assert_frame_equal(qc_single, pd.read_csv(sharded / "status" / "qc.csv"))


def test_status_merges_every_encoders_shards(tmp_path: Path) -> None:
    from wsi_ncmi.formats.status import StatusRow, write_status

    status = tmp_path / "job" / "status"
    write_status(status / "tile.csv", [StatusRow("a", "ok", 3), StatusRow("b", "ok", 2)])
    for encoder in ("resnet18", "uni"):
        write_status(status / f"embed-{encoder}.shard-0-of-2.csv", [StatusRow("a", "ok", 3)])
        write_status(status / f"embed-{encoder}.shard-1-of-2.csv", [StatusRow("b", "ok", 2)])
    manifest = tmp_path / "m.csv"
    manifest.write_text("slide_id,path\na,a.tif\nb,b.tif\n")
    result = runner.invoke(app, ["status", str(tmp_path / "job"), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "embed-resnet18: 0 slide(s) left" in result.output and "embed-uni: 0 slide(s) left" in result.output
    for encoder in ("resnet18", "uni"):
        rows = pd.read_csv(status / f"embed-{encoder}.csv")
        assert rows["slide_id"].tolist() == ["a", "b"] and (rows["status"] == "ok").all()


def _crash_once(task: object) -> object:
    """A per-slide function whose first call for slide 'tiff_050' kills its worker process outright."""
    import os

    from wsi_ncmi.tiling.tile import tile_slide as real

    marker = Path(task.job) / "crashed-once"
    if task.slide_id == "tiff_050" and not marker.exists():
        marker.write_text("x")
        os._exit(1)
    return real(task)


def test_dask_worker_killed_mid_task_is_retried(slide_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from wsi_ncmi.batch.runner import run_slides

    job = tmp_path / "job"
    for folder in ("tiles", "thumbnails", "status"):
        (job / folder).mkdir(parents=True)
    names = ["tiff_025", "svs_025", "tiff_050"]
    suffix = {"svs_025": ".svs"}
    tasks = [TileTask(n, str(slide_dir / f"{n}{suffix.get(n, '.tif')}"), str(job), TilingParams()) for n in names]
    rows = run_slides(_crash_once, tasks, names, workers=2, show_progress=False, executor="dask")
    assert (job / "crashed-once").exists()
    assert all(r.status in ("ok", "skipped") for r in rows), rows
    for name in names:
        assert len(read_coords(job / "tiles" / f"{name}.h5").coords) > 0
    assert not list((job / "tiles").glob(".*tmp*")) and not list((job / "tiles").glob("*.lock"))


EDGE_TISSUE = (1700, 1500)
"""Level-0 x and y beyond which the edge slide is tissue: an L-shaped band along its right and bottom edges."""


def _edge_tissue(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x >= EDGE_TISSUE[0]) | (y >= EDGE_TISSUE[1])


@pytest.fixture(scope="module")
def edge_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyramidal JPEG TIFF (3000 x 2300 px at 0.5 um/px) whose tissue touches its right and bottom edges,
    neither of which falls on a tile boundary."""
    import tifffile

    path, width, height, mpp = tmp_path_factory.mktemp("edge") / "edge.tif", 3000, 2300, 0.5
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(path) as tif:
        for index, ds in enumerate((1, 2, 4, 8, 16)):
            w, h = -(-width // ds), -(-height // ds)
            x, y = (np.arange(w) + 0.5) * ds, (np.arange(h) + 0.5) * ds
            tissue = _edge_tissue(x[None, :], y[:, None])
            image = np.where(tissue[..., None], np.array([215, 130, 185]), np.array([242, 241, 245]))
            image = np.clip(image + rng.normal(0, 5, image.shape) * tissue[..., None], 0, 255).astype(np.uint8)
            tif.write(
                image,
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                subfiletype=0 if index == 0 else 1,
                resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return path


def _edge_recall(coords: np.ndarray, size0: int, width: int, height: int) -> float:
    """Share of the edge slide's tissue area (sampled every 4 px) that lies inside some tile."""
    covered = np.zeros((height // 4, width // 4), dtype=bool)
    for x, y in coords.tolist():
        covered[-(-y // 4) : (y + size0) // 4, -(-x // 4) : (x + size0) // 4] = True
    ys, xs = np.mgrid[0 : height // 4, 0 : width // 4] * 4
    tissue = _edge_tissue(xs, ys)
    return float((covered & tissue).sum() / tissue.sum())


@pytest.mark.parametrize(("edges", "low", "high"), [("inward", 0.99, 1.0), ("overhang", 0.99, 1.0), ("none", 0.0, 0.8)])
def test_tissue_touching_the_edges_is_covered_by_default(
    edge_slide: Path, tmp_path: Path, edges: str, low: float, high: float
) -> None:
    path = edge_slide
    assert TilingParams().edges == "inward"
    result = tile_geometry(TileTask("edge", str(path), str(tmp_path), TilingParams(edges=edges)))
    coords, size0 = result.coords, result.geometry.size_level0
    assert low <= _edge_recall(coords, size0, 3000, 2300) <= high
    for x, y in coords.tolist():
        xs, ys = np.meshgrid(np.arange(x, x + size0, 8), np.arange(y, y + size0, 8))
        inside = (xs < 3000) & (ys < 2300)
        assert (_edge_tissue(xs, ys) & inside).mean() >= 0.1 - 0.02
    beyond = (coords + size0 > [3000, 2300]).any(axis=1)
    assert beyond.any() == (edges == "overhang")
    if edges == "overhang":
        from wsi_ncmi.slides.backend import open_slide

        x, y = coords[beyond][-1]
        with open_slide(path) as slide:
            tile = slide.read_region((int(x), int(y)), 0, (size0, size0))
        assert (tile[2300 - y :] == 255).all() and (tile[:, 3000 - x :] == 255).all()


def test_thumbnail_is_large_enough_and_associated_images_are_saved(slide_dir: Path, tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    folder = tmp_path / "slides"
    folder.mkdir()
    svs = shutil.copy(slide_dir / "svs_025.svs", folder / "labelled.svs")
    label = np.full((300, 320, 3), 250, dtype=np.uint8)
    label[100:200, 50:270] = 10
    macro = np.full((400, 1100, 3), (40, 90, 200), dtype=np.uint8)
    with tifffile.TiffWriter(svs, append=True) as tif:
        for name, image, kind in (("label", label, 1), ("macro", macro, 9)):
            description = f"Aperio Image Library v12.0.15\r\n{name} {image.shape[1]}x{image.shape[0]}"
            tif.write(
                image, photometric="rgb", compression="lzw", description=description, metadata=None, subfiletype=kind
            )
    shutil.copy(slide_dir / "tiff_050.tif", folder / "plain.tif")
    job = tmp_path / "job"
    result = runner.invoke(app, ["tile", "--slides", str(folder), "--out", str(job)])
    assert result.exit_code == 0, result.output
    thumbnails = job / "thumbnails"
    assert sorted(p.name for p in thumbnails.iterdir()) == [
        "labelled.jpg",
        "labelled.label.png",
        "labelled.macro.png",
        "plain.jpg",
    ]
    assert np.array_equal(np.asarray(Image.open(thumbnails / "labelled.label.png")), label)
    assert np.array_equal(np.asarray(Image.open(thumbnails / "labelled.macro.png")), macro)
    for name in ("labelled.jpg", "plain.jpg"):
        with Image.open(thumbnails / name) as image:
            assert image.format == "JPEG" and image.width == 1024 and image.height > 768
    bare = tmp_path / "bare"
    result = runner.invoke(app, ["tile", "--slides", str(folder), "--out", str(bare), "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    assert list((bare / "thumbnails").iterdir()) == [] and len(list((bare / "tiles").iterdir())) == 2
    again = runner.invoke(app, ["tile", "--slides", str(folder), "--out", str(bare), "--no-thumbnails"])
    assert again.exit_code == 0 and all(row["status"] == "skipped" for row in _status(bare).values())


def test_old_outputs_without_edge_handling_are_not_reused(slide_dir: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    params = TilingParams(edges="none")
    task = TileTask("tiff_050", str(slide_dir / "tiff_050.tif"), str(job), params)
    (job / "status").mkdir(parents=True)
    assert tile_slide(task).status == "ok"
    path = job / "tiles" / "tiff_050.h5"
    with h5py.File(path, "a") as h5:
        del h5["coords"].attrs["edges"]
    row = tile_slide(TileTask("tiff_050", str(slide_dir / "tiff_050.tif"), str(job), TilingParams()))
    assert row.status == "failed" and "edges was 'none', now 'inward'" in row.error
    assert tile_slide(task).status == "skipped"


def test_a_tile_moved_inward_is_considered_only_when_its_strip_holds_tissue() -> None:
    from wsi_ncmi.tiling.grid import grid_coords
    from wsi_ncmi.tiling.tile import _adds_tissue

    # 800 x 800 px slide, 256 px tiles: lattice at 0, 256, 512; moved-in column and row at 544 (strips 768-800).
    # Mask pixels are 16 px wide; tissue covers x 608-704 on every row: none in the right strip, some in the
    # bottom strip below x 512-768 only.
    mask = np.zeros((50, 50), dtype=bool)
    mask[:, 38:44] = True
    grid = grid_coords(800, 800, 256, 256, "inward")
    x, y = grid[:, 0], grid[:, 1]
    lattice = (x != 544) & (y != 544)
    eligible = _adds_tissue(grid, mask, 16.0, 800, 800, 256, 256, 0.1)
    assert eligible[lattice].all() and not eligible[x == 544].any()
    assert eligible[(y == 544) & (x != 544)].tolist() == [False, False, True]
    mask[:, 48:] = True  # now tissue in the right strip too
    eligible = _adds_tissue(grid, mask, 16.0, 800, 800, 256, 256, 0.1)
    assert eligible[x == 544].all() and eligible[y == 544].tolist() == [False, False, True, True]
