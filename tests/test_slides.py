"""Slide-level building blocks: microns per pixel, read levels, tissue fractions, strip reading, tissue masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsi_ncmi.slides.backend import SlideError, open_slide
from wsi_ncmi.slides.lowres import choose_level, read_lowres
from wsi_ncmi.slides.mpp import MppError, mpp_from_metadata, resolve_mpp
from wsi_ncmi.tiling.grid import TileGeometry, grid_coords, tissue_fractions, tissue_grid_coords
from wsi_ncmi.tiling.tissue import TissueParams, otsu, saturation, tissue_mask


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527"}, 0.2527),
        ({"tiffslide.mpp-x": "0.5", "tiffslide.mpp-y": "0.5"}, 0.5),
        ({"aperio.MPP": "0.2498"}, 0.2498),
        (
            {"tiff.ResolutionUnit": "centimeter", "tiff.XResolution": "40000", "tiff.YResolution": "40000"},
            0.25,
        ),
        ({"tiff.ResolutionUnit": "INCH", "tiff.XResolution": "101600", "tiff.YResolution": "101600"}, 0.25),
    ],
)
def test_mpp_from_metadata(properties: dict[str, str], expected: float) -> None:
    value, warning = mpp_from_metadata(properties)
    assert value == pytest.approx(expected) and warning == ""


def test_implausible_resolution_tags_are_ignored() -> None:
    assert mpp_from_metadata({"tiff.ResolutionUnit": "inch", "tiff.XResolution": "72"}) is None


def test_mpp_priority_manifest_then_metadata_then_assumed_then_power() -> None:
    meta = {"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.25", "openslide.objective-power": "20"}
    assert resolve_mpp(meta, manifest_mpp=0.3, assume_mpp=0.9).source == "manifest"
    assert resolve_mpp(meta, assume_mpp=0.9).value == 0.25
    assert resolve_mpp({"openslide.objective-power": "20"}, assume_mpp=0.9).source == "assumed"
    power = resolve_mpp({"openslide.objective-power": "20"})
    assert (power.value, power.source) == (0.5, "objective-power") and "objective power" in power.warning
    with pytest.raises(MppError, match="--assume-mpp"):
        resolve_mpp({})


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "openslide.mpp-x",
                "openslide.mpp-y",
                "aperio.MPP",
                "tiff.XResolution",
                "tiff.ResolutionUnit",
                "openslide.objective-power",
                "aperio.AppMag",
            ]
        ),
        st.text(max_size=12),
    )
)
def test_resolve_mpp_never_crashes_on_odd_metadata(properties: dict[str, str]) -> None:
    try:
        mpp = resolve_mpp(properties)
    except MppError:
        return
    assert 0.05 <= mpp.value <= 20.0


@pytest.mark.parametrize(
    ("mpp0", "expected_size0", "expected_level"),
    [(0.25, 512, 1), (0.5, 256, 0), (0.2425, 528, 1), (1.0, 128, 0)],
)
def test_tile_geometry_in_physical_units(mpp0: float, expected_size0: int, expected_level: int) -> None:
    geometry = TileGeometry.build(256, 0.5, 0, mpp0, [1.0, 2.0, 4.0, 8.0])
    assert geometry.size_level0 == expected_size0 and geometry.step_level0 == expected_size0
    assert geometry.read_level == expected_level


def test_read_level_tolerance_is_five_percent() -> None:
    assert choose_level([0.24, 0.48, 0.96], 0.5, 0.05) == 1
    assert choose_level([0.26, 0.53, 1.06], 0.5, 0.05) == 0


def test_overlap_shrinks_the_step() -> None:
    geometry = TileGeometry.build(256, 0.5, 64, 0.25, [1.0, 2.0])
    assert (geometry.size_level0, geometry.step_level0) == (512, 384)


def test_grid_keeps_only_whole_tiles() -> None:
    coords = grid_coords(1100, 600, 512, 512, edges="none")
    assert coords.dtype == np.int64
    assert coords.tolist() == [[0, 0], [512, 0]]


def test_edge_tiles_overhang_the_right_and_bottom_edges() -> None:
    coords = grid_coords(1100, 600, 512, 512, edges="overhang")
    assert coords.tolist() == [[0, 0], [512, 0], [1024, 0], [0, 512], [512, 512], [1024, 512]]


def test_tissue_grid_is_anchored_at_each_region() -> None:
    mask = np.zeros((36, 60), dtype=bool)
    mask[3:9, 5:20] = True
    mask[20:35, 41:45] = True
    mask[35, 45] = True
    coords = tissue_grid_coords(mask, 10.0, 600, 360, 64, 64, edges="none")
    first = [[50, 30], [114, 30], [178, 30]]
    second = [[410, 200], [410, 264]]
    assert coords.tolist() == sorted(first + second, key=lambda c: (c[1], c[0]))
    edge = tissue_grid_coords(mask, 10.0, 600, 360, 64, 64, edges="overhang")
    assert edge.tolist() == [*coords.tolist(), [410, 328]]
    assert tissue_grid_coords(np.zeros((4, 4), dtype=bool), 10.0, 40, 40, 8, 8).shape == (0, 2)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_reads_beyond_the_slide_are_white(tiff_slide: Path, backend: str) -> None:
    with open_slide(tiff_slide, backend) as slide:
        width, height = slide.dimensions
        inside = slide.read_region((width - 300, height - 200), 0, (300, 200))
        region = slide.read_region((width - 300, height - 200), 0, (512, 512))
        before = slide.read_region((-64, -32), 1, (96, 64))
    assert np.array_equal(region[:200, :300], inside)
    assert (region[200:] == 255).all() and (region[:, 300:] == 255).all()
    assert (before[:16] == 255).all() and (before[:, :32] == 255).all()


def _overlap(lo: float, hi: float, n: int) -> np.ndarray:
    """Length of [lo, hi) inside each unit cell [k, k+1), k = 0..n-1."""
    cells = np.arange(n)
    return np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0, None)


@given(st.integers(2, 30), st.integers(2, 30), st.floats(1.0, 9.0), st.integers(1, 80), st.integers(0, 10_000))
def test_tissue_fractions_equal_exact_area_overlap(h: int, w: int, scale: float, size0: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < 0.5
    coords = np.stack([rng.integers(0, int(w * scale), 5), rng.integers(0, int(h * scale), 5)], axis=1)
    got = tissue_fractions(mask, scale, coords, size0)
    for (x, y), value in zip(coords, got, strict=True):
        wx = _overlap(x / scale, (x + size0) / scale, w)
        wy = _overlap(y / scale, (y + size0) / scale, h)
        expected = (wy[:, None] * wx[None, :] * mask).sum() / (size0 / scale) ** 2
        assert value == pytest.approx(expected, abs=1e-5)


@given(st.integers(1, 30), st.integers(1, 30), st.floats(0.5, 9.0), st.integers(1, 80), st.integers(0, 10_000))
def test_exact_tile_sums_of_a_float_plane_weigh_pixels_by_overlap(
    h: int, w: int, scale: float, size0: int, seed: int
) -> None:
    from wsi_ncmi.tiling.grid import TileSums

    rng = np.random.default_rng(seed)
    plane = rng.normal(size=(h, w))
    coords = np.stack([rng.integers(-size0, int(w * scale) + 2, 6), rng.integers(-size0, int(h * scale) + 2, 6)], 1)
    got = TileSums.of([plane], scale, coords, size0).exact()
    for (x, y), value in zip(coords, got, strict=True):
        wx = _overlap(x / scale, (x + size0) / scale, w)
        wy = _overlap(y / scale, (y + size0) / scale, h)
        assert value == pytest.approx((wy[:, None] * wx[None, :] * plane).sum(), abs=1e-9 * h * w + 1e-9)


def test_tissue_fraction_exact_on_pixel_aligned_tiles() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[0:2, 0:2] = True
    coords = np.array([[0, 0], [10, 0], [20, 20], [5, 5]])
    assert tissue_fractions(mask, 10.0, coords, 20).tolist() == [1.0, 0.5, 0.0, pytest.approx(0.5625)]


def test_strip_reading_equals_one_read(tiff_slide: Path) -> None:
    with open_slide(tiff_slide) as slide:
        whole = read_lowres(slide, 0.25, 8.0)
        strips = read_lowres(slide, 0.25, 8.0, max_read_pixels=1024 * 8)
    assert whole.scale == pytest.approx(32.0)
    assert np.array_equal(whole.image, strips.image)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
@pytest.mark.parametrize("name", ["tiff_025.tif", "svs_025.svs"])
def test_whole_level_read_equals_region_read(slide_dir: Path, name: str, backend: str) -> None:
    with open_slide(slide_dir / name, backend) as slide:
        for level in range(1, slide.level_count):
            whole = slide.read_level(level)
            assert whole is not None
            assert np.array_equal(whole, slide.read_region((0, 0), level, slide.level_dimensions[level]))


def test_whole_level_read_declines_a_tiff_that_is_not_the_pyramid(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, np.full((64, 96, 4), 200, dtype=np.uint8), tile=(16, 16), photometric="rgb")
    with open_slide(path) as slide:
        assert slide.read_level(0) is None
        assert read_lowres(slide, 0.5, 1.0).image.shape == (32, 48, 3)


def test_lowres_never_coarser_than_asked(tiff_slide: Path) -> None:
    with open_slide(tiff_slide) as slide:
        low = read_lowres(slide, 0.25, 5.0)
    assert 0.25 * low.scale <= 5.0 and 0.25 * low.scale > 2.5


def test_saturation_and_otsu() -> None:
    rgb = np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0], [200, 100, 100]]], dtype=np.uint8)
    assert saturation(rgb).tolist() == [[0, 255, 0, 127]]
    values = np.concatenate([np.full(100, 10), np.full(100, 200)]).astype(np.uint8)
    assert 10 < otsu(values) <= 200


def test_blank_image_has_no_tissue() -> None:
    rng = np.random.default_rng(0)
    blank = np.clip(240 + rng.normal(0, 3, (200, 300, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(blank, 8.0, TissueParams()).any()


def test_small_regions_dropped_and_small_holes_filled() -> None:
    image = np.full((200, 200, 3), 245, dtype=np.uint8)
    image[20:120, 20:120] = (220, 120, 180)
    image[60:64, 60:64] = 245
    image[180:183, 180:183] = (220, 120, 180)
    mask = tissue_mask(image, 8.0, TissueParams(median_um=8.0, closing_um=0.0))
    assert mask[62, 62] and not mask[181, 181]
    assert mask[25:115, 25:115].all()


def test_opening_missing_or_bogus_files_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="file not found"):
        open_slide(tmp_path / "missing.svs")
    bogus = tmp_path / "notes.svs"
    bogus.write_text("this is not a slide")
    with pytest.raises(SlideError, match="not a readable slide"):
        open_slide(bogus)


@given(st.integers(0, 10_000), st.sampled_from([1, 3, 5, 7]), st.integers(1, 254))
def test_median_shortcut_equals_median_filter(seed: int, size: int, threshold: int) -> None:
    from scipy import ndimage

    from wsi_ncmi.tiling.tissue import median_at_least

    values = np.random.default_rng(seed).integers(0, 256, (23, 31)).astype(np.uint8)
    expected = ndimage.median_filter(values, size=size, mode="reflect") >= threshold
    assert np.array_equal(median_at_least(values, threshold, size), expected)


def test_inward_edges_add_a_last_whole_tile_ending_at_the_edge() -> None:
    assert grid_coords(1100, 600, 512, 512).tolist() == [[0, 0], [512, 0], [588, 0], [0, 88], [512, 88], [588, 88]]
    assert grid_coords(1024, 512, 512, 512).tolist() == [[0, 0], [512, 0]]
    assert grid_coords(300, 200, 512, 512).tolist() == [[0, 0]]


@given(st.integers(1, 3000), st.integers(8, 600), st.floats(0.1, 1.0), st.sampled_from(["inward", "overhang", "none"]))
def test_lattice_edges_cover_the_slide_as_documented(extent: int, size0: int, step_share: float, edges: str) -> None:
    step0 = max(1, int(size0 * step_share))
    xs = grid_coords(extent, size0, size0, step0, edges)[:, 0]
    covered = np.zeros(extent, dtype=bool)
    for x in xs:
        covered[x : x + size0] = True
    whole_tiles = np.arange(0, max(extent - size0 + 1, 0), step0)
    if edges == "none":
        assert xs.tolist() == whole_tiles.tolist()
        return
    assert covered.all()
    assert xs[: len(whole_tiles)].tolist() == whole_tiles.tolist()
    if edges == "inward":
        assert (xs + size0 <= extent).all() or xs.tolist() == [0]
        assert len(xs) <= len(whole_tiles) + 1


def test_tissue_grid_inward_covers_regions_at_the_edge_with_whole_tiles() -> None:
    mask = np.zeros((36, 60), dtype=bool)
    mask[20:36, 41:60] = True
    coords = tissue_grid_coords(mask, 10.0, 600, 360, 64, 64)
    assert (coords + 64 <= [600, 360]).all()
    assert coords[:, 0].max() == 600 - 64 and coords[:, 1].max() == 360 - 64
    assert set(coords[:, 0].tolist()) == {410, 474, 536} and set(coords[:, 1].tolist()) == {200, 264, 296}


@given(st.integers(1, 30), st.integers(1, 30), st.floats(0.0, 1.0), st.integers(0, 10_000), st.booleans())
def test_numpy_morphology_equals_scipy(h: int, w: int, density: float, seed: int, fortran: bool) -> None:
    from scipy import ndimage

    from wsi_ncmi.tiling import morphology

    rng = np.random.default_rng(seed)
    mask = rng.random((h + 4, w + 4)) < density
    if fortran:
        mask = np.asfortranarray(mask)
    mask = mask[2:-2, 1:-3]
    size = int(rng.integers(0, 6)) * 2 + 1
    counts = ndimage.uniform_filter(mask.astype(np.float64), size=size, mode="reflect") * size * size
    assert np.allclose(morphology.window_count(mask, size, "reflect"), counts)
    padded = np.pad(mask, size // 2)
    closed = ndimage.minimum_filter(ndimage.maximum_filter(padded, size=size), size=size)
    assert np.array_equal(morphology.erode(morphology.dilate(padded, size), size), closed)
    for diagonal in (False, True):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)) if diagonal else None)
        components = morphology.label(mask, diagonal)
        assert components.count == count
        boxes = [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in ndimage.find_objects(labels)]
        assert components.boxes() == boxes
        assert components.sizes[1:].tolist() == np.bincount(labels.ravel(), minlength=count + 1)[1:].tolist()
    limit = int(rng.integers(1, 12))
    labels, _ = ndimage.label(mask)
    big = np.bincount(labels.ravel()) >= limit
    big[0] = False
    assert np.array_equal(morphology.remove_small(mask, limit), big[labels])
    labels, _ = ndimage.label(~mask)
    small = np.bincount(labels.ravel()) < limit
    small[0] = False
    assert np.array_equal(morphology.fill_holes(mask, limit), mask | small[labels])
    eroded = ndimage.binary_erosion(mask, iterations=1, border_value=0)
    assert np.array_equal(morphology.inner_edge(mask), mask & ~eroded)


@pytest.mark.parametrize(("thumbnail_px", "level", "longest"), [(1024, 2, 1024), (2048, 1, 2048), (5000, 0, 4096)])
def test_thumbnail_comes_from_a_level_large_enough(
    slide_dir: Path, thumbnail_px: int, level: int, longest: int
) -> None:
    from wsi_ncmi.slides.lowres import read_mask_and_thumbnail

    with open_slide(slide_dir / "svs_025.svs") as slide:
        mask_image, thumbnail = read_mask_and_thumbnail(slide, 0.25, 8.0, thumbnail_px)
        alone = read_lowres(slide, 0.25, 8.0)
    assert np.array_equal(mask_image.image, alone.image) and mask_image.scale == alone.scale
    assert thumbnail.level == level and max(thumbnail.image.shape[:2]) == longest


def test_one_read_gives_mask_and_thumbnail_whole_or_in_strips(tiff_slide: Path) -> None:
    from wsi_ncmi.slides.lowres import read_reduced

    with open_slide(tiff_slide) as slide:
        level = slide.level_count - 1
        whole = read_reduced(slide, level, [4, 1, 3])
        strips = read_reduced(slide, level, [4, 1, 3], max_read_pixels=1024 * 7)
        region = slide.read_region((0, 0), level, slide.level_dimensions[level])
    assert [image.shape[:2] for image in whole] == [(192, 256), (768, 1024), (256, 341)]
    assert np.array_equal(whole[1], region)
    for one, other in zip(whole, strips, strict=True):
        assert np.array_equal(one, other)


def test_thumbnail_draws_contour_tiles_removals_and_a_legend() -> None:
    from wsi_ncmi.tiling.overlay import CONTOUR, REMOVED, TILES, draw_thumbnail

    image = np.full((400, 600, 3), 240, dtype=np.uint8)
    mask = np.zeros((100, 150), dtype=bool)
    mask[20:80, 30:120] = True
    pen = np.zeros_like(mask)
    pen[40:50, 40:60] = True
    dark = np.zeros_like(mask)
    dark[:, 140:] = True
    coords = np.array([[128, 96], [160, 96]])
    out = draw_thumbnail(image, 2.0, mask, 8.0, coords, 32, {"pen": pen, "dark": dark})
    picture, legend = out[:400], out[400:]
    assert out.shape[1] == 600 and len(legend) >= 24
    assert (picture[80, 120:480] == CONTOUR).all(axis=1).mean() > 0.9
    assert not (picture[49:63, 65:79] == TILES).all(axis=-1).any()
    assert (picture[48, 64:96] == TILES).all() and (picture[63, 64:96] == TILES).all()
    shaded = picture[180:190, 180:220]
    assert (shaded[..., 1] < 120).all() and (shaded[..., 0] > shaded[..., 1]).all()
    assert (picture[:, 570:] != 240).any(axis=-1).all()
    colours = {tuple(c) for c in legend.reshape(-1, 3).tolist()}
    assert {CONTOUR, TILES, REMOVED[0], REMOVED[1]} <= colours
    plain = draw_thumbnail(image, 2.0, mask, 8.0, coords, 32)
    assert REMOVED[0] not in {tuple(c) for c in plain[400:].reshape(-1, 3).tolist()}
    blurry = draw_thumbnail(image, 2.0, mask, 8.0, coords, 32, {"pen": pen}, {"blurry": np.array([[256, 96]])})
    assert (blurry[48, 128:144] == REMOVED[1]).all() and (blurry[48:64, 143] == REMOVED[1]).all()
    assert (blurry[48, 64:96] == TILES).all()
    assert REMOVED[1] in {tuple(c) for c in blurry[400:].reshape(-1, 3).tolist()}


def test_a_moved_in_tile_is_judged_by_the_strip_it_adds() -> None:
    from wsi_ncmi.tiling.grid import added_starts

    coords = grid_coords(1100, 600, 512, 512)
    starts = added_starts(coords, 1100, 600, 512, 512)
    assert starts.tolist() == [[0, 0], [512, 0], [1024, 0], [0, 512], [512, 512], [1024, 512]]
    mask = np.zeros((60, 110), dtype=bool)
    mask[:, 60:100] = True
    whole = tissue_fractions(mask, 10.0, coords, 512)
    added = tissue_fractions(mask, 10.0, coords, 512, starts)
    assert whole[2] > 0.5 and added[2] == 0.0
    assert np.array_equal(added[[0, 1]], whole[[0, 1]])
    mask[:, 105:] = True
    assert tissue_fractions(mask, 10.0, coords, 512, starts)[2] == pytest.approx(5 / 7.6, abs=1e-3)


def _scipy_tissue_mask(rgb: np.ndarray, mpp: float, params: TissueParams) -> np.ndarray:
    """The tissue-mask recipe written with scipy.ndimage, as a reference for the numpy implementation."""
    from scipy import ndimage

    sat = saturation(rgb)
    threshold = max(otsu(sat), params.min_saturation)
    size = max(1, round(params.median_um / mpp))
    size += 1 - size % 2
    mask = ndimage.median_filter(sat, size=size, mode="reflect") >= threshold
    radius = round(params.closing_um / mpp / 2)
    padded = np.pad(mask, radius)
    closed = ndimage.minimum_filter(ndimage.maximum_filter(padded, size=2 * radius + 1), size=2 * radius + 1)
    mask = closed[radius:-radius, radius:-radius]
    labels, _ = ndimage.label(~mask)
    small = np.bincount(labels.ravel()) < params.max_hole_um2 / mpp**2
    small[0] = False
    mask = mask | small[labels]
    labels, _ = ndimage.label(mask)
    large = np.bincount(labels.ravel()) >= params.min_region_um2 / mpp**2
    large[0] = False
    return large[labels]


@pytest.mark.parametrize("mpp", [4.0, 8.0, 16.0])
def test_tissue_mask_equals_the_scipy_reference(tiff_slide: Path, mpp: float) -> None:
    with open_slide(tiff_slide) as slide:
        image = read_lowres(slide, 0.25, 8.0).image
    mask = tissue_mask(image, mpp, TissueParams())
    assert 0.2 < mask.mean() < 0.8
    assert np.array_equal(mask, _scipy_tissue_mask(image, mpp, TissueParams()))


def _reference_thumbnail(image, scale, mask, mask_scale, coords, size0, removals) -> np.ndarray:
    """draw_thumbnail written plainly: float blending through boolean masks, one removal after another."""
    from wsi_ncmi.tiling import overlay
    from wsi_ncmi.tiling.morphology import inner_edge

    pixels = np.array(image, dtype=np.uint8)
    shape = pixels.shape[:2]
    entries = [(overlay.CONTOUR, "tissue"), (overlay.TILES, f"tiles ({len(coords)})")]
    for index, (name, removed) in enumerate(removals.items()):
        colour = overlay.REMOVED[index]
        area = overlay._resample(removed, mask_scale, shape, scale)
        alpha = overlay.REMOVED_OPACITY
        pixels[area] = (pixels[area] * (1 - alpha) + alpha * np.asarray(colour, dtype=np.float32)).astype(np.uint8)
        pixels[inner_edge(area)] = colour
        entries.append((colour, f"{name} (removed)"))
    pixels[inner_edge(overlay._resample(mask, mask_scale, shape, scale))] = overlay.CONTOUR
    overlay._draw_tiles(pixels, coords, size0, scale)
    return np.concatenate([pixels, overlay._legend(shape[1], entries)], axis=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_thumbnail_shading_matches_plain_blending_exactly(seed: int) -> None:
    from wsi_ncmi.tiling.overlay import draw_thumbnail

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (150, 203, 3), dtype=np.uint8)
    mask = rng.random((40, 52)) < 0.6
    removals = {"pen": rng.random((40, 52)) < 0.2, "dark": rng.random((40, 52)) < 0.1}
    coords = np.array([[0, 0], [256, 512], [1024, 256]])
    args = (image, 5.0, mask, 19.0, coords, 256, removals)
    np.testing.assert_array_equal(draw_thumbnail(*args), _reference_thumbnail(*args))


@given(st.lists(st.integers(-5, 40), max_size=60))
def test_distinct_positions_are_np_unique(values: list[int]) -> None:
    from wsi_ncmi.tiling.grid import _distinct

    array = np.asarray(values, dtype=np.int64)
    assert np.array_equal(_distinct(array), np.unique(array))
