"""Quality control inside `tile`, checked against slides with painted artifacts whose truth is known exactly."""

from __future__ import annotations

import csv
import itertools
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.synthetic import (
    BlurRegion,
    CohortSpec,
    Lesion,
    PenStroke,
    SlideSpec,
    TissueFold,
    TissueModel,
    artifact_truth,
    blur_truth,
    cohort_specs,
    fold_truth,
    load_truth,
    pen_truth,
    render_region,
    write_slide,
    write_truth,
)
from wsi_ncmi.tiling.qc import PEN_COLORS, QCParams, detect_artifacts
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_geometry

runner = CliRunner()

PAINTED = SlideSpec(
    "painted",
    4096,
    3072,
    0.5,
    seed=3,
    tissue_fraction=0.6,
    tissue_to_edges=True,
    lesions=(Lesion(1650, 700, 500),),
    pen_strokes=(
        PenStroke("blue", ((150, 250), (900, 450), (1500, 250))),
        PenStroke("green", ((200, 1000), (500, 1450))),
        PenStroke("red", ((1300, 1000), (1700, 1250))),
        PenStroke("black", ((1100, 600), (1250, 1100))),
    ),
    blur_regions=(BlurRegion(950, 1300, 280, 20.0),),
    dark_border_um=(0.0, 0.0, 120.0, 0.0),
)


FOLDED = SlideSpec(
    "folded",
    4096,
    3072,
    0.5,
    seed=3,
    tissue_fraction=0.6,
    tissue_to_edges=True,
    lesions=(Lesion(1650, 700, 500), Lesion(550, 1200, 400), Lesion(1150, 450, 300)),
    folds=(TissueFold(((250, 750), (1000, 850)), 250.0), TissueFold(((1100, 1300), (1850, 1400)), 250.0)),
    pen_strokes=(PenStroke("blue", ((150, 250), (900, 300))),),
)
"""Two folds beside three lesions (one touching a fold) and a pen stroke."""
OLD_QC_FINGERPRINT = (
    '{"dark_max_value": 60, "enabled": true, "margin_um": 16.0, "max_artifact": 0.25, "min_sharpness": 10.0, '
    '"min_width_um": 24.0, "pen_colors": ["blue", "green", "red", "black"], "pen_min_saturation": 0.4}'
)
"""qc_params of coords files written with the default settings before folds could be looked for and before focus
was judged on tiles read at 2 um/px."""
DEFAULT_QC_FINGERPRINT = (
    '{"blur": true, "blur_mad": 3.0, "blur_ratio": 0.35, "dark_max_value": 60, "enabled": true, '
    '"focus_mpp": 2.0, "margin_um": 16.0, "max_artifact": 0.25, "min_sharpness": 1.0, "min_width_um": 24.0, '
    '"pen_colors": ["blue", "green", "black"], "pen_min_saturation": 0.4, "warn_removed": 0.25}'
)
"""qc_params of coords files written with the default settings (folds off)."""


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("folded")
    write_slide(FOLDED, folder / "folded.tif")
    write_truth(FOLDED, folder)
    return folder / "folded.tif"


@pytest.fixture(scope="module")
def painted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("painted")
    write_slide(PAINTED, folder / "painted.tif")
    write_truth(PAINTED, folder)
    return folder / "painted.tif"


def _geometry(path: Path, tmp_path: Path, **qc: object) -> object:
    params = TilingParams(qc=QCParams(**qc))
    return tile_geometry(TileTask(path.stem, str(path), str(tmp_path), params))


def _pixel_centres_um(shape: tuple[int, int], mpp: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx + 0.5) * mpp, (yy + 0.5) * mpp


def _tile_truth(coords: np.ndarray, size0: int, kind: str, spec: SlideSpec = PAINTED) -> np.ndarray:
    """Fraction of each tile (level-0 px at 0.5 um/px) covered by the painted truth of one kind."""
    offsets = (np.arange(16) + 0.5) * size0 / 16 * spec.mpp
    out = []
    for x, y in coords.tolist():
        xs, ys = x * spec.mpp + offsets, y * spec.mpp + offsets
        if kind == "lesion":
            out.append(TissueModel.from_spec(spec).lesion_mask(xs[None, :], ys[:, None]).mean())
        elif kind == "blur_of_tissue":
            tissue = TissueModel.from_spec(spec).tissue(xs[None, :], ys[:, None])
            blur = artifact_truth(spec, xs[None, :], ys[:, None])["blur"]
            out.append((tissue & blur).sum() / max(tissue.sum(), 1))
        else:
            out.append(artifact_truth(spec, xs[None, :], ys[:, None])[kind].mean())
    return np.array(out)


@pytest.mark.parametrize("kind", ["pen", "dark"])
def test_masks_find_painted_ink_and_borders(painted: Path, tmp_path: Path, kind: str) -> None:
    result = _geometry(painted, tmp_path, pen_colors=PEN_COLORS)
    mpp = PAINTED.mpp * result.lowres_scale
    truth = artifact_truth(PAINTED, *_pixel_centres_um(result.mask.shape, mpp))[kind]
    found = getattr(result.qc, kind)
    precision = (found & truth).sum() / found.sum()
    recall = (found & truth).sum() / truth.sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


@pytest.mark.parametrize("color", ["blue", "green", "red", "black"])
def test_every_ink_colour_is_found(painted: Path, tmp_path: Path, color: str) -> None:
    result = _geometry(painted, tmp_path, pen_colors=PEN_COLORS)
    inked = pen_truth(PAINTED, *_pixel_centres_um(result.mask.shape, PAINTED.mpp * result.lowres_scale))[color]
    assert (result.qc.pen & inked).sum() / inked.sum() >= 0.9


def test_kept_tiles_hold_no_ink_or_border_and_artifact_tiles_go(painted: Path, tmp_path: Path) -> None:
    from wsi_ncmi.tiling.grid import grid_coords

    result = _geometry(painted, tmp_path, pen_colors=PEN_COLORS)
    size0 = result.geometry.size_level0
    kept = _tile_truth(result.coords, size0, "pen") + _tile_truth(result.coords, size0, "dark")
    assert kept.max() <= 0.35, kept.max()
    grid = grid_coords(PAINTED.width, PAINTED.height, size0, size0)
    dirty = grid[(_tile_truth(grid, size0, "pen") + _tile_truth(grid, size0, "dark")) >= 0.5]
    kept_set = {tuple(c) for c in result.coords.tolist()}
    assert len(dirty) >= 20
    assert sum(tuple(c) in kept_set for c in dirty.tolist()) <= 0.1 * len(dirty)


def test_blurry_tiles_are_dropped_and_scored(painted: Path, tmp_path: Path) -> None:
    unjudged = _geometry(painted, tmp_path, blur=False)
    result = _geometry(painted, tmp_path)
    size0 = result.geometry.size_level0
    kept_set = {tuple(c) for c in result.coords.tolist()}
    dropped = np.array([tuple(c) not in kept_set for c in unjudged.coords.tolist()])
    blur = _tile_truth(unjudged.coords, size0, "blur")
    assert (blur >= 0.9).sum() >= 6
    recall = (dropped & (blur >= 0.9)).sum() / (blur >= 0.9).sum()
    precision = (dropped & (_tile_truth(unjudged.coords, size0, "blur_of_tissue") >= 0.45)).sum() / dropped.sum()
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)
    assert result.attrs["qc_tiles_blurry"] == dropped.sum() and unjudged.attrs["qc_tiles_blurry"] == 0
    assert unjudged.sharpness is None and "qc_focus_median" not in unjudged.attrs
    median = result.attrs["qc_focus_median"]
    assert len(result.sharpness) == len(result.coords) and (result.sharpness >= 0.35 * median).all()
    assert sorted(map(tuple, result.blurry_coords.tolist())) == sorted(map(tuple, unjudged.coords[dropped].tolist()))


def _lesion_slides() -> list[SlideSpec]:
    specs = cohort_specs(CohortSpec(slides=10, centers=5, width=4096, height=3072, mpp=0.5, labels=("macro", "micro")))
    shifts = [tuple(float(v) for v in s) for s in itertools.product((-22.0, 22.0), repeat=3)]
    extremes = [replace(specs[0], slide_id=f"shift{i}", stain_shift=s) for i, s in enumerate(shifts)]
    return specs + extremes


def test_lesions_are_never_taken_for_ink_or_folds() -> None:
    from wsi_ncmi.tiling.qc import fold_mask
    from wsi_ncmi.tiling.tissue import TissueParams, tissue_mask

    for spec in _lesion_slides():
        image = render_region(spec, 16)
        qc = detect_artifacts(image, spec.mpp * 16, QCParams())
        lesion = TissueModel.from_spec(spec).lesion_mask(*_pixel_centres_um(image.shape[:2], spec.mpp * 16))
        assert lesion.sum() > 50, spec.slide_id
        assert not (qc.pen | qc.dark).any(), (spec.slide_id, spec.stain_shift, qc.pen.sum(), qc.dark.sum())
        tissue = tissue_mask(image, spec.mpp * 16, TissueParams())
        folds = fold_mask(image, tissue, spec.mpp * 16, QCParams(folds=True))
        assert not folds.any(), (spec.slide_id, spec.stain_shift, folds.sum())


def test_folds_are_found_at_the_tile_level_and_lesions_kept(folded: Path, tmp_path: Path) -> None:
    from wsi_ncmi.tiling.grid import grid_coords

    off = _geometry(folded, tmp_path)
    on = _geometry(folded, tmp_path, folds=True)
    size0 = on.geometry.size_level0
    grid = grid_coords(FOLDED.width, FOLDED.height, size0, size0)
    fold = _tile_truth(grid, size0, "fold", FOLDED)
    kept_off, kept_on = ({tuple(c) for c in r.coords.tolist()} for r in (off, on))
    dropped = np.array([c in kept_off and c not in kept_on for c in map(tuple, grid.tolist())])
    was_kept = np.array([c in kept_off for c in map(tuple, grid.tolist())])
    folded_tiles = was_kept & (fold >= 0.5)
    assert folded_tiles.sum() >= 15
    recall = (dropped & folded_tiles).sum() / folded_tiles.sum()
    precision = (dropped & (fold >= 0.1)).sum() / dropped.sum()
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)
    lesion_only = was_kept & (_tile_truth(grid, size0, "lesion", FOLDED) >= 0.5) & (fold == 0)
    assert lesion_only.sum() >= 10 and not (dropped & lesion_only).any()
    xs, ys = _pixel_centres_um(on.mask.shape, FOLDED.mpp * on.lowres_scale)
    lesion = TissueModel.from_spec(FOLDED).lesion_mask(xs, ys)
    assert not (on.qc.fold & lesion & ~fold_truth(FOLDED, xs, ys)).any()
    assert on.attrs["qc_fold_mm2"] > 0.1 and "qc_fold_mm2" not in off.attrs and off.qc.fold is None


def test_fold_detection_off_changes_nothing(painted: Path, tmp_path: Path) -> None:
    assert QCParams().fingerprint() == DEFAULT_QC_FINGERPRINT != OLD_QC_FINGERPRINT
    assert QCParams(fold_max_angle=5.0).fingerprint() == DEFAULT_QC_FINGERPRINT
    assert '"folds": true' in QCParams(folds=True).fingerprint()
    result = _geometry(painted, tmp_path)
    assert result.qc.fold is None and "qc_fold_mm2" not in result.attrs
    reference = detect_artifacts(result.lowres_image, PAINTED.mpp * result.lowres_scale, QCParams())
    np.testing.assert_array_equal(result.qc.removed, reference.removed)


def test_qc_settings_are_read_back_from_the_coords_attribute() -> None:
    assert QCParams.from_fingerprint(DEFAULT_QC_FINGERPRINT) == QCParams()
    old = QCParams.from_fingerprint(OLD_QC_FINGERPRINT)
    assert old.min_sharpness == 10.0 and "red" in old.pen_colors and old.fingerprint() != OLD_QC_FINGERPRINT
    custom = QCParams(pen_colors=("blue",), margin_um=8.0, folds=True, fold_max_angle=5.0)
    assert QCParams.from_fingerprint(custom.fingerprint()) == custom
    assert QCParams.from_fingerprint("off") == QCParams(enabled=False)


def test_fold_is_painted_only_on_tissue_inside_its_band() -> None:
    plain = replace(FOLDED, folds=(), pen_strokes=())
    a, b = render_region(plain, 8).astype(float), render_region(replace(plain, folds=FOLDED.folds), 8).astype(float)
    xs, ys = _pixel_centres_um(a.shape[:2], FOLDED.mpp * 8)
    inside = fold_truth(FOLDED, xs, ys)
    assert inside.sum() > 1000
    assert np.array_equal(a[~inside], b[~inside])
    np.testing.assert_allclose(b[inside], np.round(a[inside] ** 2 / 255.0), atol=0.5)


def test_lesion_next_to_ink_stays_tissue(painted: Path, tmp_path: Path) -> None:
    result = _geometry(painted, tmp_path)
    xs, ys = _pixel_centres_um(result.mask.shape, PAINTED.mpp * result.lowres_scale)
    lesion = TissueModel.from_spec(PAINTED).lesion_mask(xs, ys)
    assert lesion.sum() > 100 and not (result.qc.pen & lesion).any()


def test_truth_masks_are_written_and_read_back(painted: Path) -> None:
    from PIL import Image

    spec, _ = load_truth(painted.parent / "painted.truth.json")
    assert spec == PAINTED
    assert not (painted.parent / "painted.fold.png").exists()
    for kind in ("pen", "dark", "blur"):
        mask = np.asarray(Image.open(painted.parent / f"painted.{kind}.png")) > 0
        xs, ys = _pixel_centres_um(mask.shape, 16.0)
        np.testing.assert_array_equal(mask, artifact_truth(PAINTED, xs, ys)[kind])
        assert mask.any()


def test_fold_truth_is_written_and_read_back(folded: Path) -> None:
    from PIL import Image

    spec, _ = load_truth(folded.parent / "folded.truth.json")
    assert spec == FOLDED
    mask = np.asarray(Image.open(folded.parent / "folded.fold.png")) > 0
    xs, ys = _pixel_centres_um(mask.shape, 16.0)
    np.testing.assert_array_equal(mask, artifact_truth(FOLDED, xs, ys)["fold"])
    assert mask.any() and not (mask & ~TissueModel.from_spec(FOLDED).tissue(xs, ys)).any()


def test_blur_is_painted_only_inside_its_disc() -> None:
    sharp = replace(PAINTED, pen_strokes=(), dark_border_um=(0.0, 0.0, 0.0, 0.0), blur_regions=())
    blurred = replace(sharp, blur_regions=PAINTED.blur_regions)
    a, b = render_region(sharp, 8).astype(float), render_region(blurred, 8).astype(float)
    xs, ys = _pixel_centres_um(a.shape[:2], PAINTED.mpp * 8)
    inside = blur_truth(PAINTED, xs, ys)
    assert np.array_equal(a[~inside], b[~inside])
    lap = np.abs(np.diff(b, axis=1))[inside[:, 1:]].mean()
    assert lap < 0.5 * np.abs(np.diff(a, axis=1))[inside[:, 1:]].mean()


def test_tissue_can_touch_the_edges() -> None:
    spec = SlideSpec("edge", 4096, 3072, 0.5, seed=3, tissue_fraction=0.6, tissue_to_edges=True)
    model = TissueModel.from_spec(spec)
    edge_um = np.arange(0, 4096 * 0.5, 16.0)
    assert model.tissue(edge_um, np.full_like(edge_um, 1.0)).any()
    fenced = TissueModel.from_spec(replace(spec, tissue_to_edges=False))
    assert not fenced.tissue(edge_um, np.full_like(edge_um, 1.0)).any()


def _qc_rows(job: Path) -> dict[str, dict[str, str]]:
    with open(job / "status" / "qc.csv", newline="") as handle:
        return {row["slide_id"]: row for row in csv.DictReader(handle)}


def test_cli_qc_table_resume_and_qc_off(painted: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    args = ["tile", "--slides", str(painted.parent), "--out", str(job)]
    assert runner.invoke(app, args).exit_code == 0
    row = _qc_rows(job)["painted"]
    xs, ys = _pixel_centres_um((192 * 4, 256 * 4), 2.0)
    truth = artifact_truth(PAINTED, xs, ys)
    inks = pen_truth(PAINTED, xs, ys)
    looked_for = inks["blue"] | inks["green"] | inks["black"]
    assert float(row["pen_mm2"]) == pytest.approx(looked_for.sum() * 4e-6, rel=0.15)
    assert float(row["dark_mm2"]) == pytest.approx(truth["dark"].sum() * 4e-6, rel=0.15)
    before, after = int(row["tiles_before_qc"]), int(row["tiles_after_qc"])
    assert before == after + int(row["tiles_dropped_artifact"]) + int(row["tiles_dropped_blurry"])
    assert int(row["tiles_dropped_artifact"]) > 0 and int(row["tiles_dropped_blurry"]) > 0
    assert row["qc"] == "on" and row["min_sharpness"] == "1.0" and row["pen_colors"] == "blue green black"
    assert row["blur"] == "True" and row["focus_mpp"] == "2.0" and float(row["focus_median"]) > 10
    assert row["fold_mm2"] == row["fold_min_density"] == row["fold_max_angle"] == ""
    with h5py.File(job / "tiles" / "painted.h5") as h5:
        assert len(h5["qc_sharpness"]) == after == len(h5["coords"])
        assert '"min_sharpness": 1.0' in h5["coords"].attrs["qc_params"]
        assert h5["coords"].attrs["qc_focus_mpp"] == pytest.approx(2.0)

    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "skipped" in again.output
    changed = runner.invoke(app, [*args, "--qc", "off"])
    assert changed.exit_code == 1 and "qc_params" in changed.output
    redo = runner.invoke(app, [*args, "--qc", "off", "--overwrite"])
    assert redo.exit_code == 0
    off = _qc_rows(job)["painted"]
    assert off["qc"] == "off" and off["min_sharpness"] == "" and off["tiles_dropped_blurry"] == "0"
    assert off["tiles_before_qc"] == off["tiles_after_qc"] != row["tiles_after_qc"]
    with h5py.File(job / "tiles" / "painted.h5") as h5:
        assert "qc_sharpness" not in h5 and h5["coords"].attrs["qc_params"] == "off"
    assert runner.invoke(app, [*args, "--qc", "maybe"]).exit_code == 2


def test_qc_off_tiles_exactly_as_the_plain_tissue_mask(painted: Path, tmp_path: Path) -> None:
    from wsi_ncmi.tiling.grid import grid_coords, tissue_fractions
    from wsi_ncmi.tiling.tissue import tissue_mask

    result = _geometry(painted, tmp_path, enabled=False)
    mask = tissue_mask(result.lowres_image, PAINTED.mpp * result.lowres_scale, TilingParams().tissue)
    size0 = result.geometry.size_level0
    grid = grid_coords(PAINTED.width, PAINTED.height, size0, size0)
    fractions = tissue_fractions(mask, result.lowres_scale, grid, size0)
    expected = grid[(fractions >= 0.1) & (fractions > 0)]
    np.testing.assert_array_equal(result.coords, expected)


def test_slide_emptied_by_qc_is_no_tissue_with_the_reason(tmp_path: Path) -> None:
    spec = SlideSpec(
        "inked", 2048, 1536, 0.5, seed=5, tissue_fraction=0.5,
        pen_strokes=(PenStroke("blue", ((0.0, 384.0), (1024.0, 384.0)), 1200.0),),
    )  # fmt: skip
    folder = tmp_path / "slides"
    folder.mkdir()
    write_slide(spec, folder / "inked.tif")
    job = tmp_path / "job"
    result = runner.invoke(app, ["tile", "--slides", str(folder), "--out", str(job)])
    assert result.exit_code == 0
    assert "quality control removed all" in " ".join(result.output.split())
    with open(job / "status" / "tile.csv", newline="") as handle:
        status = next(csv.DictReader(handle))
    assert status["status"] == "no_tissue" and "quality control removed all" in status["warning"]
    row = _qc_rows(job)["inked"]
    assert int(row["tiles_before_qc"]) > 0 and row["tiles_after_qc"] == "0" and float(row["pen_mm2"]) > 0.7
    with h5py.File(job / "tiles" / "inked.h5") as h5:
        assert h5["coords"].shape == (0, 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"qc": {"pen_colors": ["purple"]}}, "qc.pen_colors"),
        ({"qc": {"max_artifact": 2}}, "qc.max_artifact"),
        ({"qc": {"dark_max_value": 300}}, "qc.dark_max_value"),
        ({"qc": {"blur": "yes"}}, "qc.blur"),
        ({"qc": {"bluriness": True}}, "qc.bluriness"),
        ({"qc": {"focus_mpp": 8.0}}, "qc.focus_mpp"),
        ({"qc": {"blur_ratio": 1.5}}, "qc.blur_ratio"),
        ({"qc": {"warn_removed": -0.1}}, "qc.warn_removed"),
        ({"qc": {"folds": True, "fold_min_density": 0.8}}, "qc.fold_min_density"),
        ({"qc": {"fold_max_angle": 90}}, "qc.fold_max_angle"),
        ({"qc": {"folds": "yes"}}, "qc.folds"),
    ],
)
def test_bad_qc_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TilingParams.from_dict(settings)


@pytest.mark.parametrize(("scale", "size0", "step0"), [(16.0, 256, 256), (16.03, 257, 257), (10.0, 300, 150)])
def test_rounded_tile_sums_match_sums_over_rounded_tile_boxes(scale: float, size0: int, step0: int) -> None:
    from wsi_ncmi.tiling.grid import TileSums, grid_coords

    values = np.random.default_rng(0).random((97, 131, 2)).astype(np.float32)
    coords = grid_coords(round(131 * scale), round(97 * scale), size0, step0, edges="overhang")
    sums = TileSums.of([values[..., 0], values[..., 1]], scale, coords, size0)
    got = np.stack([sums.rounded(0), sums.rounded(1)], axis=1)
    for (x, y), tile in zip(coords.tolist(), got, strict=True):
        x0, y0 = round(x / scale), round(y / scale)
        x1, y1 = min(round((x + size0) / scale), 131), min(round((y + size0) / scale), 97)
        np.testing.assert_allclose(tile, values[y0:y1, x0:x1].sum(axis=(0, 1)), rtol=1e-5, atol=1e-4)


def test_rounded_tile_sums_of_integers_are_exact() -> None:
    from wsi_ncmi.tiling.grid import TileSums, grid_coords

    values = np.random.default_rng(1).integers(0, 1_040_401, (97, 131, 2), dtype=np.int32)
    coords = grid_coords(round(131 * 16.03), round(97 * 16.03), 257, 257, edges="overhang")
    sums = TileSums.of([values[..., 0], values[..., 1]], 16.03, coords, 257)
    got_all = np.stack([sums.rounded(0), sums.rounded(1)], axis=1)
    for (x, y), got in zip(coords.tolist(), got_all, strict=True):
        x0, y0 = round(x / 16.03), round(y / 16.03)
        x1, y1 = min(round((x + 257) / 16.03), 131), min(round((y + 257) / 16.03), 97)
        np.testing.assert_array_equal(got, values[y0:y1, x0:x1].astype(np.int64).sum(axis=(0, 1)))


def test_excluded_pixels_count_as_white_for_the_tissue_mask(painted: Path, tmp_path: Path) -> None:
    from wsi_ncmi.tiling.tissue import TissueParams, channel_range, tissue_mask

    result = _geometry(painted, tmp_path)
    image = result.lowres_image
    removed = np.zeros(image.shape[:2], dtype=bool)
    removed[: image.shape[0] // 3] = True
    white = image.copy()
    white[removed] = 255
    mpp = PAINTED.mpp * result.lowres_scale
    expected = tissue_mask(white, mpp, TissueParams())
    assert expected.any() and not np.array_equal(expected, tissue_mask(image, mpp, TissueParams()))
    got = tissue_mask(image, mpp, TissueParams(), exclude=removed, channels=channel_range(image))
    np.testing.assert_array_equal(got, expected)


@given(st.integers(0, 10_000), st.integers(1, 3), st.floats(0.0, 0.2))
def test_morphology_on_the_bounding_box_equals_it_on_the_whole_image(seed: int, radius: int, density: float) -> None:
    from wsi_ncmi.tiling.morphology import dilate
    from wsi_ncmi.tiling.qc.masks import closed, opened, within_box

    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 50), dtype=bool)
    top, left = rng.integers(0, 40), rng.integers(0, 50)
    mask[top : top + 12, left : left + 15] = rng.random(mask[top : top + 12, left : left + 15].shape) < density + 0.5
    for op in (
        lambda m: opened(closed(m, radius), radius),
        lambda m: opened(m, radius),
        lambda m: dilate(m, 2 * radius + 1),
    ):
        np.testing.assert_array_equal(within_box(mask, 2 * radius + 1, op), op(mask))


QC_TABLE_COLUMNS = (
    "slide_id", "qc", "tissue_before_qc_mm2", "tissue_mm2", "pen_mm2", "dark_mm2", "fold_mm2", "tiles_before_qc",
    "tiles_after_qc", "tiles_dropped_artifact", "tiles_dropped_blurry", "focus_median", "warning", "pen_colors",
    "pen_min_saturation", "dark_max_value", "min_width_um", "margin_um", "max_artifact", "blur", "focus_mpp",
    "min_sharpness", "blur_mad", "blur_ratio", "warn_removed", "fold_min_density", "fold_max_angle",
)  # fmt: skip
"""The QC table's columns, in the order qc.csv has always had them."""


def test_qc_table_columns_come_from_the_registered_checks_in_their_order() -> None:
    from wsi_ncmi.tiling.qc import CHECKS, table_layout

    assert list(CHECKS) == ["pen", "dark", "fold", "blur"]
    assert table_layout().columns == QC_TABLE_COLUMNS


def test_a_registered_mask_check_reaches_the_masks_the_attributes_and_the_table(painted: Path, tmp_path: Path) -> None:
    from wsi_ncmi.formats.qc_table import qc_row
    from wsi_ncmi.tiling.qc import CHECKS, MaskCheck, table_layout

    @CHECKS.register("smudge")
    class Smudge(MaskCheck):
        thresholds = ("margin_um",)

        @classmethod
        def find(cls, image: object, tissue: np.ndarray | None) -> np.ndarray:
            out = np.zeros(image.rgb.shape[:2], dtype=bool)
            out[100:140, 100:140] = True
            return out

    try:
        result = _geometry(painted, tmp_path)
        layout = table_layout()
        row = qc_row("painted", result.attrs, len(result.coords), layout)
        assert result.qc.smudge[100:140, 100:140].all()
    finally:
        del CHECKS["smudge"]
    assert list(result.qc.masks) == ["pen", "dark", "smudge"]
    assert not (result.mask[100:140, 100:140]).any(), "the new check's removals are out of the tissue"
    assert layout.columns[: len(QC_TABLE_COLUMNS)] != QC_TABLE_COLUMNS
    assert layout.columns.index("smudge_mm2") == layout.columns.index("fold_mm2") + 1
    assert result.attrs["qc_smudge_mm2"] > 0
    assert float(row["smudge_mm2"]) == pytest.approx(result.attrs["qc_smudge_mm2"], abs=1e-4)
    assert table_layout().columns == QC_TABLE_COLUMNS
