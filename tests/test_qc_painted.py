"""Quality control on painted slides whose truth is known pixel by pixel: smooth tissue kept, a blurred box on
structured tissue removed, haemorrhage kept, heavy ink removed and warned. Each slide is painted at level 0
(0.5 um/px) and its pyramid built by averaging, as a scanner does, so fine texture fades at coarse levels as it
does on real slides."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.synthetic import INK, SlideSpec, TissueModel
from wsi_ncmi.tiling.qc import QCParams, blurry_tiles, removal_warning
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_geometry

runner = CliRunner()

MPP = 0.5
WIDTH, HEIGHT = 3072, 2304
STAINS = {
    "standard": ((232.0, 160.0, 200.0), (75.0, 45.0, 125.0)),
    "pale": ((240.0, 195.0, 220.0), (120.0, 90.0, 170.0)),
    "eosin-rich": ((222.0, 118.0, 168.0), (80.0, 40.0, 120.0)),
}
"""Eosin and haematoxylin colours (RGB) of the painted stains."""
BLOOD = {"bright": ((218.0, 110.0, 118.0), (196.0, 42.0, 58.0)), "dark": ((190.0, 80.0, 90.0), (150.0, 28.0, 45.0))}
"""Plasma and red-blood-cell colours of the painted haemorrhages."""


@dataclass(frozen=True)
class Painting:
    """A painted slide: texture (fine grain of `grain_um` or nuclei of `nucleus_um`), stain, and what is on it."""

    name: str
    texture: str = "nuclei"
    scale_um: float = 7.0
    stain: str = "standard"
    seed: int = 0
    blur: str = ""
    """'' or a kernel: 'box20' (uniform 20 um wide) or 'gauss5' (Gaussian, sigma 5 um)."""
    blood: str = ""
    ink_share: float = 0.0


def _soft_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = rng.standard_normal(shape).astype(np.float32)
    if sigma_px > 0.3:
        noise = gaussian_filter(noise, sigma_px)
    return noise / noise.std()


def _blobs(rng: np.random.Generator, shape: tuple[int, int], diameter_px: float, density: float) -> np.ndarray:
    """Soft round blobs (0-1) of `diameter_px` whose centres cover `density` of the area on average."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    count = int(density * shape[0] * shape[1] / (np.pi * (diameter_px / 2) ** 2))
    free = np.ones(shape, dtype=bool)
    free[rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)] = False
    inside = (distance_transform_edt(free) <= diameter_px / 2 * rng.uniform(0.8, 1.2)).astype(np.float32)
    return gaussian_filter(inside, 0.6)


def _structure(paint: Painting, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Haematoxylin share (0-1) of every pixel."""
    grain = _soft_noise(rng, shape, 0.5 * paint.scale_um / MPP if paint.texture == "grain" else 0.0)
    if paint.texture == "grain":
        return np.clip(0.18 + 0.08 * grain, 0.0, 1.0)
    return np.clip(0.08 + 0.8 * _blobs(rng, shape, paint.scale_um / MPP, 0.18) + 0.03 * grain, 0.0, 1.0)


def _box() -> tuple[slice, slice]:
    return slice(900, 1700), slice(1300, 2300)


def _blood_disc() -> tuple[float, float, float]:
    return 2200.0, 1250.0, 480.0


def paint(paint: Painting) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Level-0 RGB and truth masks ('tissue', 'blur', 'blood', 'ink') of a painted slide."""
    from scipy.ndimage import gaussian_filter, uniform_filter

    rng = np.random.default_rng(paint.seed)
    spec = SlideSpec("p", WIDTH, HEIGHT, MPP, seed=paint.seed + 11, tissue_fraction=0.75)
    xs, ys = (np.arange(WIDTH) + 0.5) * MPP, (np.arange(HEIGHT) + 0.5) * MPP
    tissue = TissueModel.from_spec(spec).sample_grid(xs, ys) > 0
    shape = tissue.shape
    eosin, hema = (np.asarray(c, dtype=np.float32) for c in STAINS[paint.stain])
    share = _structure(paint, rng, shape)[..., None]
    image = eosin + (hema - eosin) * share
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    truth = {"tissue": tissue, "blur": np.zeros(shape, bool), "blood": np.zeros(shape, bool)}
    if paint.blood:
        cx, cy, r = _blood_disc()
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        plasma, cells = (np.asarray(c, dtype=np.float32) for c in BLOOD[paint.blood])
        packed = np.clip(_blobs(rng, shape, 7.0 / MPP, 0.55), 0.0, 1.0)[..., None]
        image = np.where(disc[..., None], plasma + (cells - plasma) * packed, image)
        truth["blood"] = disc & tissue
    image = np.where(tissue[..., None], image + 4.0 * rng.standard_normal((*shape, 1)), 242.0)
    if paint.blur:
        rows, cols = _box()
        pad = 60
        wide = image[rows.start - pad : rows.stop + pad, cols.start - pad : cols.stop + pad]
        if paint.blur.startswith("box"):
            soft = uniform_filter(wide, (int(paint.blur[3:]) / MPP, int(paint.blur[3:]) / MPP, 1))
        else:
            sigma = float(paint.blur[5:]) / MPP
            soft = gaussian_filter(wide, (sigma, sigma, 0))
        image[rows, cols] = soft[pad:-pad, pad:-pad]
        truth["blur"][rows, cols] = True
    truth["ink"] = np.zeros(shape, bool)
    if paint.ink_share:
        column = np.cumsum(tissue.sum(axis=0)) / tissue.sum()
        inked = xx < np.searchsorted(column, paint.ink_share)
        image = np.where(inked[..., None], image * np.asarray(INK["blue"], dtype=np.float32), image)
        truth["ink"] = inked
    return np.clip(np.round(image), 0, 255).astype(np.uint8), truth


def write_pyramid(image: np.ndarray, path: Path) -> Path:
    """A tiled JPEG TIFF whose levels are 2x box averages of the one below (0.5, 1, 2, ... um/px)."""
    import tifffile
    from PIL import Image

    levels = [image]
    while min(levels[-1].shape[:2]) // 2 >= 512:
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            mpp = MPP * 2**index
            tif.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 85},
                subfiletype=0 if index == 0 else 1,
                resolution=(1e4 / mpp, 1e4 / mpp),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return path


SMOOTH = [
    Painting("grain05", "grain", 0.5, "standard"),
    Painting("grain1", "grain", 1.0, "pale", seed=1),
    Painting("grain2", "grain", 2.0, "eosin-rich", seed=2),
]
"""Tissue whose only texture is fine grain (no structure at the mask's 8 um), three grain sizes and stains."""
BLURRED = [
    Painting("nuclei7-box", "nuclei", 7.0, "standard", blur="box20"),
    Painting("nuclei5-box", "nuclei", 5.0, "pale", seed=1, blur="box20"),
    Painting("nuclei9-gauss", "nuclei", 9.0, "eosin-rich", seed=2, blur="gauss5"),
    Painting("grain2-box", "grain", 2.0, "standard", seed=3, blur="box20"),
]
"""A box of about 500 x 400 um blurred with a 20 um kernel (uniform 20 um wide, or a Gaussian of sigma 5 um)."""
BLEEDING = [
    Painting("blood-bright", "grain", 1.0, "standard", blood="bright"),
    Painting("blood-dark", "nuclei", 7.0, "eosin-rich", seed=1, blood="dark"),
]
INKED = Painting("inked", "nuclei", 7.0, "standard", ink_share=0.39)
"""Blue ink over 39% of the tissue (and over the glass beside it)."""


@pytest.fixture(scope="module")
def painted(tmp_path_factory: pytest.TempPathFactory):
    """Paint a slide once per module: returns (slide path, truth masks)."""
    folder = tmp_path_factory.mktemp("painted")
    done: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}

    def get(painting: Painting) -> tuple[Path, dict[str, np.ndarray]]:
        if painting.name not in done:
            image, truth = paint(painting)
            (folder / painting.name).mkdir()
            done[painting.name] = (write_pyramid(image, folder / painting.name / f"{painting.name}.tif"), truth)
        return done[painting.name]

    return get


def _tile(path: Path, tmp_path: Path, **qc: object):
    params = TilingParams(qc=QCParams(**qc))
    return tile_geometry(TileTask(path.stem, str(path), str(tmp_path), params))


def _covered(coords: np.ndarray, size0: int, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for x, y in coords.tolist():
        out[y : y + size0, x : x + size0] = True
    return out


def _share(coords: np.ndarray, size0: int, where: np.ndarray) -> np.ndarray:
    """Fraction of each tile's area (level-0 pixels) inside `where`."""
    return np.array([where[y : y + size0, x : x + size0].mean() for x, y in coords.tolist()])


@pytest.mark.parametrize("painting", SMOOTH, ids=lambda p: p.name)
def test_smooth_tissue_is_kept(painted, tmp_path: Path, painting: Painting) -> None:
    path, truth = painted(painting)
    on, off = _tile(path, tmp_path), _tile(path, tmp_path, enabled=False)
    size0 = on.geometry.size_level0
    clean = truth["tissue"]
    kept, baseline = _covered(on.coords, size0, clean.shape), _covered(off.coords, size0, clean.shape)
    recall = (kept & clean).sum() / (baseline & clean).sum()
    assert recall >= 0.95 and (kept & clean).sum() / clean.sum() >= 0.95, recall
    assert on.attrs["qc_focus_median"] > QCParams().min_sharpness
    assert removal_warning(on.attrs, len(on.coords)) == ""
    assert on.attrs["qc_pen_mm2"] == on.attrs["qc_dark_mm2"] == 0.0  # no stain taken for blue/green/black ink


@pytest.mark.parametrize("painting", BLURRED, ids=lambda p: p.name)
def test_blurred_box_is_removed_and_sharp_tissue_kept(painted, tmp_path: Path, painting: Painting) -> None:
    path, truth = painted(painting)
    on, unjudged = _tile(path, tmp_path), _tile(path, tmp_path, blur=False)
    size0 = on.geometry.size_level0
    candidates = _share(unjudged.coords, size0, truth["blur"])
    assert (candidates > 0.5).sum() >= 6
    inside = _share(on.coords, size0, truth["blur"])
    assert inside.max() <= 0.5, inside.max()
    kept = {tuple(c) for c in on.coords.tolist()}
    dropped = np.array([tuple(c) not in kept for c in unjudged.coords.tolist()])
    assert (candidates[dropped] >= 0.25).all(), candidates[dropped]
    clean = truth["tissue"] & ~truth["blur"]
    covered, baseline = (_covered(r.coords, size0, clean.shape) for r in (on, unjudged))
    assert (covered & clean).sum() / (baseline & clean).sum() >= 0.95
    assert on.attrs["qc_tiles_blurry"] == dropped.sum()
    assert on.attrs["qc_pen_mm2"] == on.attrs["qc_dark_mm2"] == 0.0


@pytest.mark.parametrize("painting", BLEEDING, ids=lambda p: p.name)
def test_haemorrhage_is_kept(painted, tmp_path: Path, painting: Painting) -> None:
    path, truth = painted(painting)
    on = _tile(path, tmp_path)
    blood = truth["blood"]
    assert blood.sum() * MPP**2 > 0.1e6  # um^2: the tissue in a disc of 0.18 mm^2 (about 11 tiles)
    kept = _covered(on.coords, on.geometry.size_level0, blood.shape)
    assert (kept & blood).sum() / blood.sum() >= 0.9
    assert on.attrs["qc_pen_mm2"] == 0.0 and on.attrs["qc_tiles_blurry"] == 0


def _status(job: Path) -> dict[str, dict[str, str]]:
    with open(job / "status" / "tile.csv", newline="") as handle:
        return {row["slide_id"]: row for row in csv.DictReader(handle)}


def test_heavy_ink_is_removed_and_warned(painted, tmp_path: Path) -> None:
    inked, truth = painted(INKED)
    clean, _ = painted(SMOOTH[0])
    folder = tmp_path / "slides"
    folder.mkdir()
    for path in (inked, clean):
        (folder / path.name).symlink_to(path)
    job = tmp_path / "job"
    args = ["tile", "--slides", str(folder), "--out", str(job)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _status(job)
    warning = rows["inked"]["warning"]
    share = re.search(r"quality control removed (\d+)% of the tissue", warning)
    # The share is of the tissue that tiling with QC off takes, which includes the ink on the glass beside it.
    expected = truth["ink"].sum() / (truth["ink"] | truth["tissue"]).sum()
    assert (truth["ink"] & truth["tissue"]).sum() / truth["tissue"].sum() == pytest.approx(0.39, abs=0.01)
    assert share and abs(int(share.group(1)) / 100 - expected) <= 0.07 and "pen" in warning, (warning, expected)
    assert rows["grain05"]["warning"] == "" and "inked" in " ".join(result.output.split())
    with h5py.File(job / "tiles" / "inked.h5") as h5:
        coords, size0 = h5["coords"][:], int(h5["coords"].attrs["patch_size_level0"])
    ink = truth["ink"] & truth["tissue"]
    assert _share(coords, size0, truth["ink"]).max() <= 0.35
    assert (_covered(coords, size0, ink.shape) & ink).sum() / ink.sum() <= 0.1

    status = runner.invoke(app, ["status", str(job)])
    assert "quality control warnings: 1 slide(s)" in " ".join(status.output.split()) and "inked" in status.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and _status(job)["inked"]["warning"] == warning
    with open(job / "status" / "qc.csv", newline="") as handle:
        qc = {row["slide_id"]: row for row in csv.DictReader(handle)}
    assert qc["inked"]["warning"] == warning and qc["grain05"]["warning"] == ""
    assert float(qc["inked"]["tissue_before_qc_mm2"]) > float(qc["inked"]["tissue_mm2"])


def test_the_report_lists_warned_slides(tmp_path: Path) -> None:
    from wsi_ncmi.evaluation.report import qc_warnings
    from wsi_ncmi.formats.status import StatusRow, write_status

    job = tmp_path / "job"
    message = "quality control removed 39% of the tissue (1.00 of 2.56 mm^2) and 40% of the tiles"
    write_status(
        job / "status" / "tile.csv",
        [
            StatusRow("a<b", "ok", 10, warning=message),
            StatusRow("b", "ok", 10, warning="no resolution in the metadata: assumed 0.25 um/px"),
            StatusRow("c", "ok", 10, warning=message),
        ],
    )
    html = qc_warnings(job, ["a<b", "b"])
    assert html is not None and "a&lt;b" in html and "39%" in html and ">b<" not in html and "1 slide(s)" in html
    assert qc_warnings(job, ["b"]) is None


def _attrs(**values: object) -> dict[str, object]:
    base = {
        "qc_params": QCParams().fingerprint(),
        "qc_tissue_before_mm2": 4.0,
        "qc_tissue_mm2": 4.0,
        "qc_blurry_mm2": 0.0,
        "qc_tiles_before": 100,
        "qc_tiles_blurry": 0,
        "qc_pen_mm2": 0.0,
        "qc_dark_mm2": 0.0,
    }
    return {**base, **values}


@pytest.mark.parametrize(
    ("values", "n_tiles", "warned"),
    [
        ({}, 100, False),
        ({"qc_tissue_mm2": 3.1, "qc_pen_mm2": 0.9}, 80, False),
        ({"qc_tissue_mm2": 2.9, "qc_pen_mm2": 1.1}, 80, True),
        ({"qc_tiles_blurry": 26, "qc_blurry_mm2": 0.9}, 74, True),
        ({"qc_tiles_blurry": 24, "qc_blurry_mm2": 0.9}, 76, False),
        ({"qc_tissue_mm2": 2.9, "qc_params": QCParams(warn_removed=0.5).fingerprint()}, 80, False),
        ({"qc_tissue_mm2": 0.1, "qc_params": "off"}, 80, False),
    ],
)
def test_removal_warning_follows_the_configured_share(values: dict, n_tiles: int, warned: bool) -> None:
    message = removal_warning(_attrs(**values), n_tiles)
    assert bool(message) == warned
    if warned:
        assert message.startswith("quality control removed") and "of the tissue" in message and "tiles" in message


@given(st.floats(0.5, 500.0), st.integers(0, 10_000), st.floats(1.01, 50.0))
def test_uniform_slides_lose_nothing_and_scale_does_not_matter(base: float, seed: int, factor: float) -> None:
    rng = np.random.default_rng(seed)
    scores = base * np.exp(rng.normal(0.0, 0.15, 60))
    params = QCParams(min_sharpness=0.0)
    assert not blurry_tiles(scores, params).any()
    planted = scores.copy()
    planted[:12] *= 0.12
    verdict = blurry_tiles(planted, params)
    assert verdict[:12].all() and not verdict[12:].any()
    np.testing.assert_array_equal(blurry_tiles(planted * factor, params), verdict)


def test_few_tiles_are_judged_by_the_floor_alone() -> None:
    scores = np.array([40.0, 42.0, 0.5, 4.0, 41.0])
    np.testing.assert_array_equal(blurry_tiles(scores, QCParams()), [False, False, True, False, False])
    many = np.concatenate([np.full(20, 40.0), scores])
    assert blurry_tiles(many, QCParams())[-2:].tolist() == [True, False]


def test_rms_laplacian_is_the_definition() -> None:
    from wsi_ncmi.tiling.focus import rms_laplacian

    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 255, (3, 64, 64)).astype(np.float32)
    tissue = rng.random((3, 64, 64)) < 0.8
    tissue[2] = False
    tissue[2, 10:12, 10:12] = True
    got = rms_laplacian(grey, tissue)
    for k in range(2):
        values = []
        for by in range(8):
            for bx in range(8):
                energy, count = 0.0, 0
                for y in range(by * 8, by * 8 + 8):
                    for x in range(bx * 8, bx * 8 + 8):
                        if 0 < y < 63 and 0 < x < 63 and tissue[k, y, x]:
                            g = grey[k].astype(np.float64)
                            lap = 4 * g[y, x] - g[y - 1, x] - g[y + 1, x] - g[y, x - 1] - g[y, x + 1]
                            energy, count = energy + lap * lap, count + 1
                if count * 2 >= 64:
                    values.append(np.sqrt(energy / count))
        assert got[k] == pytest.approx(np.median(values), rel=1e-4)
    g = grey[2].astype(np.float64)
    laps = [4 * g[y, x] - g[y - 1, x] - g[y + 1, x] - g[y, x - 1] - g[y, x + 1] for y in (10, 11) for x in (10, 11)]
    assert got[2] == pytest.approx(np.sqrt(np.mean(np.square(laps))), rel=1e-4)


def test_focus_is_read_in_bounded_strips_with_the_same_scores(painted, tmp_path: Path, monkeypatch) -> None:
    from wsi_ncmi.slides import direct
    from wsi_ncmi.slides.backend import Slide, open_slide
    from wsi_ncmi.tiling import focus

    path, _ = painted(BLURRED[0])
    unjudged = _tile(path, tmp_path, blur=False)
    reads: list[tuple[int, int, int]] = []
    original = Slide.read_region

    def recording(self, location, level, size):
        reads.append((level, *size))
        return original(self, location, level, size)

    monkeypatch.setattr(Slide, "read_region", recording)
    args = (unjudged.coords, unjudged.geometry.size_level0, MPP, 2.0, unjudged.mask, unjudged.lowres_scale)
    try:
        with open_slide(str(path)) as slide:
            tiles = focus.focus_scores(slide, *args)  # from the TIFF's own JPEG tiles
            assert reads == []
            monkeypatch.setenv(direct.SWITCH, "0")
            direct.direct_reader.cache_clear()
            strips = focus.focus_scores(slide, *args)  # through the slide library, a strip per read
            assert {level for level, _, _ in reads} == {2}  # the 2 um/px level, never level 0
            assert max(w for _, w, _ in reads) <= focus.STRIP_PIXELS and max(h for _, _, h in reads) == 64
            assert len(unjudged.coords) > len(reads) > 0
            monkeypatch.setattr(focus, "STRIP_PIXELS", 64)
            single = focus.focus_scores(slide, *args)
    finally:
        direct.direct_reader.cache_clear()
    assert len(reads) > len(unjudged.coords)
    np.testing.assert_array_equal(strips, single)
    np.testing.assert_array_equal(tiles, strips)


def _focus_by_definition(slide, coords: np.ndarray, size0: int, mask: np.ndarray, scale: float) -> np.ndarray:
    """Each tile's focus computed alone from a region read of it: the mean of R, G and B box-averaged to about
    2 um/px, tissue inside the mask where at least half of each box is not glass, then rms_laplacian."""
    from wsi_ncmi.tiling import focus

    level, factor, _ = focus.focus_resolution(slide, MPP, 2.0)
    pixel0 = slide.level_downsamples[level] * factor
    side = int(size0 / pixel0)
    centres = (np.arange(side) + 0.5) * pixel0
    out = []
    for x, y in coords.tolist():
        rgb = slide.read_region((x, y), level, (side * factor, side * factor)).astype(np.float64)
        boxes = (side, factor, side, factor)
        grey = rgb.mean(axis=2).reshape(boxes).mean(axis=(1, 3))
        stained = (rgb.max(axis=2) - rgb.min(axis=2) >= focus.GLASS_RANGE).reshape(boxes).mean(axis=(1, 3)) >= 0.5
        rows = np.minimum(((y + centres) / scale).astype(int), mask.shape[0] - 1)
        cols = np.minimum(((x + centres) / scale).astype(int), mask.shape[1] - 1)
        inside = mask[rows][:, cols] & ((y + centres) / scale < mask.shape[0])[:, None]
        inside &= ((x + centres) / scale < mask.shape[1])[None, :]
        out.append(focus.rms_laplacian(grey[None].astype(np.float32), (inside & stained)[None])[0])
    return np.asarray(out)


@pytest.mark.parametrize("overlap", [0, 96])
@pytest.mark.parametrize("reduction", [2, 1])
def test_focus_scores_are_the_definition_for_overlapping_tiles_and_box_reduced_levels(
    painted, tmp_path: Path, overlap: int, reduction: int
) -> None:
    """Scores read in strips and scored in batches equal each tile scored alone, for tiles side by side or
    overlapping, from a 2 um/px level or from a 1 um/px level box-reduced by 2 (a pyramid without 2 um/px)."""
    import tifffile
    from PIL import Image

    from wsi_ncmi.slides.backend import open_slide
    from wsi_ncmi.tiling import focus

    source, _ = painted(BLURRED[0])
    path = source
    if reduction == 2:  # levels of 0.5, 1 and 4 um/px: focus at 2 um/px is level 1 box-reduced by 2
        path = tmp_path / "no2um.tif"
        level0 = tifffile.imread(source, level=0)
        levels = [level0, np.asarray(Image.fromarray(level0).reduce(2))]
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(4)))
        with tifffile.TiffWriter(path) as tif:
            for index, (level, mpp) in enumerate(zip(levels, (MPP, 2 * MPP, 8 * MPP), strict=True)):
                tif.write(
                    level,
                    tile=(256, 256),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": 85},
                    subfiletype=0 if index == 0 else 1,
                    resolution=(1e4 / mpp, 1e4 / mpp),
                    resolutionunit="CENTIMETER",
                    metadata=None,
                )
    params = TilingParams(overlap=overlap, qc=QCParams(blur=False))
    result = tile_geometry(TileTask(path.stem, str(path), str(tmp_path), params))
    args = (result.coords, result.geometry.size_level0, result.mask, result.lowres_scale)
    with open_slide(str(path)) as slide:
        assert focus.focus_resolution(slide, MPP, 2.0)[1] == reduction
        scores = focus.focus_scores(slide, args[0], args[1], MPP, 2.0, *args[2:])
        expected = _focus_by_definition(slide, *args)
    assert len(scores) > 50 and (expected > 1).mean() > 0.9
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)


def test_blur_off_keeps_blurred_tiles_and_reads_as_yaml_off(painted, tmp_path: Path) -> None:
    from wsi_ncmi.core.config import load_yaml

    config = tmp_path / "tiling.yaml"
    config.write_text("qc:\n  blur: off\n")
    params = TilingParams.from_dict(load_yaml(config))
    assert params.qc.blur is False and params.qc.enabled
    path, truth = painted(BLURRED[0])
    result = tile_geometry(TileTask(path.stem, str(path), str(tmp_path), params))
    assert result.attrs["qc_tiles_blurry"] == 0 and result.sharpness is None
    assert _share(result.coords, result.geometry.size_level0, truth["blur"]).max() > 0.9
