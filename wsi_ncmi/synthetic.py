"""Synthetic H&E-like whole-slide images and cohorts, for tests, the demo and users' smoke tests.

Slides are tiled, pyramidal, JPEG-compressed TIFFs laid out like the CAMELYON-16/17 files (OpenSlide reads
them as generic-tiff) or, on request, like Aperio SVS files. Every tile is rendered from a small analytic
model (a smooth random tissue field plus circular lesions given in micrometres), so memory stays flat in the
slide size and the ground truth is known exactly.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

from wsi_ncmi.core.atomic import atomic_path

TILE = 256
FIELD_MPP = 16.0
"""Resolution (um/px) of the low-frequency tissue field the renderer samples from."""
BLOB_UM = 600.0
"""Typical size of a tissue lobe, in micrometres."""
NUCLEUS_UM = 6.0
LESION_CLASSES = ("negative", "itc", "micro", "macro")
LESION_RANGES_UM = {"itc": (60.0, 180.0), "micro": (300.0, 1500.0), "macro": (2200.0, 3200.0)}

BACKGROUND = np.array([242.0, 241.0, 245.0])
EOSIN = np.array([232.0, 160.0, 200.0])
HEMATOXYLIN = np.array([75.0, 45.0, 125.0])


def label_for_lesions(diameters_um: list[float]) -> str:
    """CAMELYON-17 node label from the largest lesion: none, itc (<200 um), micro (<=2000 um), macro."""
    if not diameters_um:
        return "negative"
    largest = max(diameters_um)
    if largest < 200.0:
        return "itc"
    if largest <= 2000.0:
        return "micro"
    return "macro"


@dataclass(frozen=True)
class Lesion:
    """A round metastasis: centre and diameter in level-0 micrometres."""

    x_um: float
    y_um: float
    diameter_um: float


INK = {
    "blue": (0.10, 0.55, 0.90),
    "green": (0.20, 0.70, 0.30),
    "red": (0.85, 0.18, 0.22),
    "black": (0.10, 0.10, 0.12),
}
"""Marker inks as transmittance per RGB channel: ink multiplies whatever lies under it."""
DARK = np.array([14.0, 14.0, 17.0])
"""Colour of a scanner's black border."""


@dataclass(frozen=True)
class PenStroke:
    """A marker stroke: a polyline through level-0 micrometre points, `width_um` wide, of an INK colour."""

    color: str
    points: tuple[tuple[float, float], ...]
    width_um: float = 150.0


@dataclass(frozen=True)
class BlurRegion:
    """An out-of-focus disc: centre and radius in level-0 micrometres, Gaussian blur of `sigma_um`."""

    x_um: float
    y_um: float
    radius_um: float
    sigma_um: float = 12.0


@dataclass(frozen=True)
class TissueFold:
    """Tissue doubled over on itself along a polyline through level-0 micrometre points, `width_um` wide: two layers
    absorb twice, so on tissue the transmittance is squared (I_fold = I^2 / 255 per channel)."""

    points: tuple[tuple[float, float], ...]
    width_um: float = 300.0


@dataclass(frozen=True)
class SlideSpec:
    """Everything that determines a synthetic slide's pixels."""

    slide_id: str
    width: int
    height: int
    mpp: float = 0.25
    seed: int = 0
    center: int = 0
    lesions: tuple[Lesion, ...] = ()
    tissue_fraction: float = 0.45
    stain_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tile_size: int = TILE
    jpeg_quality: int = 85
    pen_strokes: tuple[PenStroke, ...] = ()
    blur_regions: tuple[BlurRegion, ...] = ()
    dark_border_um: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Widths of a black border along the left, top, right and bottom edges."""
    tissue_to_edges: bool = False
    """Let tissue run into the slide's edges instead of fading out before them."""
    folds: tuple[TissueFold, ...] = ()

    @property
    def label(self) -> str:
        return label_for_lesions([lesion.diameter_um for lesion in self.lesions])

    @property
    def has_artifacts(self) -> bool:
        return bool(self.pen_strokes or self.blur_regions or any(self.dark_border_um) or self.folds)


@dataclass
class TissueModel:
    """The slide's tissue as a smooth scalar field on a coarse grid; tissue is where field > 0."""

    field: np.ndarray
    field_mpp: float
    lesions: tuple[Lesion, ...] = field(default_factory=tuple)

    @classmethod
    def from_spec(cls, spec: SlideSpec) -> TissueModel:
        from scipy.ndimage import gaussian_filter

        rng = np.random.default_rng([spec.seed, 7])
        width_um, height_um = spec.width * spec.mpp, spec.height * spec.mpp
        shape = (
            max(2, int(np.ceil(height_um / FIELD_MPP)) + 1),
            max(2, int(np.ceil(width_um / FIELD_MPP)) + 1),
        )
        noise = gaussian_filter(rng.standard_normal(shape), sigma=BLOB_UM / FIELD_MPP / 2, mode="reflect")
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        margin = 0.06 * min(shape)
        border = np.minimum.reduce([yy, xx, shape[0] - 1 - yy, shape[1] - 1 - xx]) / max(margin, 1.0)
        noise = noise - noise.mean()
        noise /= noise.std() + 1e-12
        if not spec.tissue_to_edges:
            noise = noise - 3.0 * np.clip(1.0 - border, 0.0, 1.0)
        threshold = np.quantile(noise, 1.0 - spec.tissue_fraction)
        return cls(field=(noise - threshold).astype(np.float32), field_mpp=FIELD_MPP, lesions=spec.lesions)

    def sample(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """Bilinear sample of the field at physical positions (broadcast arrays of micrometres)."""
        fx = np.clip(x_um / self.field_mpp, 0, self.field.shape[1] - 1.001)
        fy = np.clip(y_um / self.field_mpp, 0, self.field.shape[0] - 1.001)
        x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        ax, ay = fx - x0, fy - y0
        f = self.field
        top = f[y0, x0] * (1 - ax) + f[y0, x0 + 1] * ax
        bottom = f[y0 + 1, x0] * (1 - ax) + f[y0 + 1, x0 + 1] * ax
        return top * (1 - ay) + bottom * ay

    def _weights(self, coords_um: np.ndarray, size: int) -> tuple[np.ndarray, int]:
        f = np.clip(coords_um / self.field_mpp, 0, size - 1.001)
        i0 = np.floor(f).astype(np.int64)
        start = int(i0.min())
        weights = np.zeros((len(f), int(i0.max()) - start + 2), dtype=np.float32)
        rows = np.arange(len(f))
        weights[rows, i0 - start] = 1 - (f - i0)
        weights[rows, i0 - start + 1] = f - i0
        return weights, start

    def sample_grid(self, xs_um: np.ndarray, ys_um: np.ndarray) -> np.ndarray:
        """The field on the grid ys x xs (1-D arrays of micrometres): bilinear, as two small matrix products."""
        wx, x_start = self._weights(xs_um, self.field.shape[1])
        wy, y_start = self._weights(ys_um, self.field.shape[0])
        window = self.field[y_start : y_start + wy.shape[1], x_start : x_start + wx.shape[1]]
        return wy @ window @ wx.T

    def lesion_mask(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        inside = np.zeros(np.broadcast_shapes(x_um.shape, y_um.shape), dtype=bool)
        for lesion in self.lesions:
            r = lesion.diameter_um / 2
            inside |= (x_um - lesion.x_um) ** 2 + (y_um - lesion.y_um) ** 2 <= r * r
        return inside

    def tissue(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """Boolean tissue truth at physical positions (lesions are tissue too)."""
        return (self.sample(x_um, y_um) > 0) | self.lesion_mask(x_um, y_um)

    def tissue_fraction(self, x_um: float, y_um: float, size_um: float, samples: int = 32) -> float:
        """Exact-enough fraction of a square (top-left x, y; side size) that is tissue, by dense sampling."""
        offsets = (np.arange(samples) + 0.5) * size_um / samples
        yy, xx = np.meshgrid(y_um + offsets, x_um + offsets, indexing="ij")
        return float(self.tissue(xx, yy).mean())


def _segment_distance(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(x - (ax + t * dx), y - (ay + t * dy))


def _band(
    points: tuple[tuple[float, float], ...], width_um: float, x_um: np.ndarray, y_um: np.ndarray, out: np.ndarray
) -> None:
    """Set `out` where a position lies within width_um / 2 of the polyline through `points`, in place."""
    x_lo, x_hi, y_lo, y_hi = np.min(x_um), np.max(x_um), np.min(y_um), np.max(y_um)
    r = width_um / 2
    for a, b in pairwise(points):
        box = (min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r, max(a[1], b[1]) + r)
        if _near(box, x_lo, y_lo, x_hi, y_hi):
            out |= _segment_distance(x_um, y_um, a, b) <= r


def pen_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> dict[str, np.ndarray]:
    """Per ink colour, where that ink lies (broadcast arrays of level-0 micrometres)."""
    shape = np.broadcast_shapes(np.shape(x_um), np.shape(y_um))
    out: dict[str, np.ndarray] = {}
    for stroke in spec.pen_strokes:
        _band(stroke.points, stroke.width_um, x_um, y_um, out.setdefault(stroke.color, np.zeros(shape, dtype=bool)))
    return out


def fold_bands(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where the fold bands lie, tissue or not (broadcast arrays of level-0 micrometres)."""
    out = np.zeros(np.broadcast_shapes(np.shape(x_um), np.shape(y_um)), dtype=bool)
    for fold in spec.folds:
        _band(fold.points, fold.width_um, x_um, y_um, out)
    return out


def fold_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where tissue is folded: a fold band and tissue."""
    bands = fold_bands(spec, x_um, y_um)
    if not bands.any():
        return bands
    return bands & _model(spec).tissue(x_um, y_um)


def dark_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where the black border lies."""
    left, top, right, bottom = spec.dark_border_um
    width_um, height_um = spec.width * spec.mpp, spec.height * spec.mpp
    return (x_um < left) | (y_um < top) | (x_um >= width_um - right) | (y_um >= height_um - bottom)


def blur_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where the slide is out of focus."""
    inside = np.zeros(np.broadcast_shapes(np.shape(x_um), np.shape(y_um)), dtype=bool)
    for region in spec.blur_regions:
        inside |= (x_um - region.x_um) ** 2 + (y_um - region.y_um) ** 2 <= region.radius_um**2
    return inside


def artifact_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> dict[str, np.ndarray]:
    """Ground truth of the painted artifacts: 'pen' (any ink), 'dark' (border), 'blur' and 'fold' masks."""
    shape = np.broadcast_shapes(np.shape(x_um), np.shape(y_um))
    pen = np.zeros(shape, dtype=bool)
    for inked in pen_truth(spec, x_um, y_um).values():
        pen |= inked
    return {
        "pen": pen,
        "dark": dark_truth(spec, x_um, y_um),
        "blur": blur_truth(spec, x_um, y_um),
        "fold": fold_truth(spec, x_um, y_um),
    }


@lru_cache(maxsize=8)
def _model(spec: SlideSpec) -> TissueModel:
    """The spec's tissue model, kept for the truth masks that repeat it tile by tile."""
    return TissueModel.from_spec(spec)


def _stain(spec: SlideSpec) -> tuple[np.ndarray, np.ndarray]:
    shift = np.asarray(spec.stain_shift)
    return np.clip(EOSIN + shift, 0, 255), np.clip(HEMATOXYLIN + 0.5 * shift, 0, 255)


_NOISE = np.random.default_rng(12345).normal(0.0, 6.0, size=(1024, 1024)).astype(np.int16)


def _palette(spec: SlideSpec) -> np.ndarray:
    """Colours of: background, tissue, nucleus, lesion tissue, lesion nucleus."""
    eosin, hema = _stain(spec)
    return np.stack([BACKGROUND, eosin, hema, eosin * 0.85, hema * 0.9]).astype(np.int16)


def _near(box: tuple[float, float, float, float], x0: float, y0: float, x1: float, y1: float) -> bool:
    """Whether the axis-aligned box (left, top, right, bottom) meets the rectangle [x0, x1] x [y0, y1]."""
    return box[0] <= x1 and box[2] >= x0 and box[1] <= y1 and box[3] >= y0


def _extent(points: tuple[tuple[float, float], ...], width_um: float) -> tuple[float, float, float, float]:
    """A box (left, top, right, bottom) holding a band of `width_um` along the polyline through `points`."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return (min(xs) - width_um, min(ys) - width_um, max(xs) + width_um, max(ys) + width_um)


def _artifacts_in(spec: SlideSpec, x0: float, y0: float, x1: float, y1: float) -> SlideSpec:
    """The spec with only the artifacts that can touch the rectangle (micrometres), so clean tiles render fast."""
    from dataclasses import replace

    strokes = tuple(s for s in spec.pen_strokes if _near(_extent(s.points, s.width_um), x0, y0, x1, y1))
    box = (x0, y0, x1, y1)
    folds = tuple(fold for fold in spec.folds if _near(_extent(fold.points, fold.width_um), *box))
    blurs = tuple(
        b
        for b in spec.blur_regions
        if _near((b.x_um - b.radius_um, b.y_um - b.radius_um, b.x_um + b.radius_um, b.y_um + b.radius_um), *box)
    )
    left, top, right, bottom = spec.dark_border_um
    width_um, height_um = spec.width * spec.mpp, spec.height * spec.mpp
    touches = x0 < left or y0 < top or x1 >= width_um - right or y1 >= height_um - bottom
    border = spec.dark_border_um if touches else (0.0, 0.0, 0.0, 0.0)
    return replace(spec, pen_strokes=strokes, blur_regions=blurs, dark_border_um=border, folds=folds)


def render_tile(spec: SlideSpec, model: TissueModel, level_ds: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """RGB uint8 (h, w, 3) for the region whose top-left is (x0, y0) in pixels of the level downsampled by level_ds,
    with the spec's painted artifacts: out-of-focus discs, then tissue folds, then marker ink, then the black border."""
    mpp_level = spec.mpp * level_ds
    if spec.has_artifacts:
        spec = _artifacts_in(spec, x0 * mpp_level, y0 * mpp_level, (x0 + w) * mpp_level, (y0 + h) * mpp_level)
    if not spec.has_artifacts:
        return _render_tissue(spec, model, level_ds, x0, y0, w, h)
    xs = (x0 + np.arange(w) + 0.5) * mpp_level
    ys = (y0 + np.arange(h) + 0.5) * mpp_level
    blurred = blur_truth(spec, xs[None, :], ys[:, None])
    if blurred.any():
        from PIL import Image
        from scipy.ndimage import gaussian_filter

        sigma = max(region.sigma_um for region in spec.blur_regions) / mpp_level
        m = int(np.ceil(3 * sigma))
        wide = _render_tissue(spec, model, level_ds, x0 - m, y0 - m, w + 2 * m, h + 2 * m)
        k = max(1, int(sigma / 4))
        small = np.asarray(Image.fromarray(wide).reduce(k)).astype(np.float32)
        soft = gaussian_filter(small, sigma=(sigma / k, sigma / k, 0), mode="nearest")
        soft = Image.fromarray(np.clip(soft, 0, 255).astype(np.uint8)).resize(wide.shape[1::-1], Image.BILINEAR)
        crop = (slice(m, m + h), slice(m, m + w))
        image = _render_tissue(spec, model, level_ds, x0, y0, w, h)
        image = np.where(blurred[..., None], np.asarray(soft)[crop], image).astype(np.float32)
    else:
        image = _render_tissue(spec, model, level_ds, x0, y0, w, h).astype(np.float32)
    if spec.folds:
        folded = fold_bands(spec, xs[None, :], ys[:, None])
        folded &= (model.sample_grid(xs, ys) > 0) | model.lesion_mask(xs[None, :], ys[:, None])
        image = np.where(folded[..., None], np.round(image) ** 2 / np.float32(255.0), image)
    for color, inked in pen_truth(spec, xs[None, :], ys[:, None]).items():
        image = np.where(inked[..., None], image * np.asarray(INK[color], dtype=np.float32), image)
    border = dark_truth(spec, xs[None, :], ys[:, None])
    if border.any():
        noise = np.random.default_rng([spec.seed, level_ds, y0, x0, 5]).normal(0.0, 4.0, (h, w, 3))
        image = np.where(border[..., None], DARK + noise, image)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _render_tissue(spec: SlideSpec, model: TissueModel, level_ds: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    mpp_level = spec.mpp * level_ds
    xs = (x0 + np.arange(w) + 0.5) * mpp_level
    ys = (y0 + np.arange(h) + 0.5) * mpp_level
    lesion = model.lesion_mask(xs[None, :], ys[:, None])
    tissue = (model.sample_grid(xs, ys) > 0) | lesion
    if not tissue.any():
        return np.broadcast_to(BACKGROUND.astype(np.uint8), (h, w, 3)).copy()
    shifted = [spec.seed, level_ds, 1 << 31, y0 + (1 << 30), x0 + (1 << 30)]
    seed = [spec.seed, level_ds, y0, x0] if min(x0, y0) >= 0 else shifted
    rng = np.random.default_rng(seed)
    density = np.where(lesion, 0.55, 0.12)
    cell_px = NUCLEUS_UM / mpp_level
    if cell_px >= 2.0:
        cells_x = int(np.ceil(w / cell_px)) + 1
        cells_y = int(np.ceil(h / cell_px)) + 1
        draws = rng.random((cells_y, cells_x), dtype=np.float32)
        ix = np.minimum((np.arange(w) / cell_px).astype(np.int64), cells_x - 1)
        iy = np.minimum((np.arange(h) / cell_px).astype(np.int64), cells_y - 1)
        nuclei = draws[iy[:, None], ix[None, :]] < density
        index = tissue * (1 + nuclei + 2 * lesion)
        colors = _palette(spec)[index]
    else:
        palette = _palette(spec).astype(np.float32)
        blend = np.stack([palette[1] + (palette[2] - palette[1]) * 0.12, palette[3] + (palette[4] - palette[3]) * 0.55])
        colors = np.where(tissue[..., None], blend[lesion.astype(np.int64)], palette[0]).astype(np.int16)
    oy, ox = (int(v) for v in rng.integers(0, _NOISE.shape[0] - max(h, w), size=2)) if max(h, w) < 1024 else (0, 0)
    noise = _NOISE[oy : oy + h, ox : ox + w] if max(h, w) < 1024 else rng.normal(0, 6, (h, w)).astype(np.int16)
    colors += (noise * tissue)[..., None]
    return np.clip(colors, 0, 255).astype(np.uint8)


def _levels(spec: SlideSpec, min_size: int = 512) -> list[int]:
    """Downsample factors of the pyramid: 1, 2, 4, ... while the level stays at least min_size px."""
    factors = [1]
    while min(spec.width, spec.height) // (factors[-1] * 2) >= min_size:
        factors.append(factors[-1] * 2)
    return factors


def _tiles(spec: SlideSpec, model: TissueModel, ds: int) -> Iterator[np.ndarray]:
    width, height = -(-spec.width // ds), -(-spec.height // ds)
    t = spec.tile_size
    for ty in range(0, height, t):
        for tx in range(0, width, t):
            yield render_tile(spec, model, ds, tx, ty, t, t)


def render_region(spec: SlideSpec, level_ds: int = 1) -> np.ndarray:
    """Whole level as one array; for small slides and tests only."""
    model = TissueModel.from_spec(spec)
    width, height = -(-spec.width // level_ds), -(-spec.height // level_ds)
    return render_tile(spec, model, level_ds, 0, 0, width, height)


def write_slide(
    spec: SlideSpec,
    path: Path,
    fmt: str = "tiff",
    pyramid: bool = True,
    tiled: bool = True,
    write_mpp: bool = True,
) -> Path:
    """Write the slide as a tiled pyramidal JPEG TIFF (fmt 'tiff', microns per pixel in the resolution tags) or an
    Aperio-style SVS (fmt 'svs', microns per pixel only in the ImageDescription).

    `pyramid=False` writes level 0 alone; `tiled=False` writes it in strips (no pyramid); `write_mpp=False` leaves
    the resolution out, as some scanners' exports do.
    """
    import tifffile

    if fmt not in ("tiff", "svs"):
        raise ValueError(f"unknown synthetic slide format {fmt!r}; use 'tiff' or 'svs'")
    model = TissueModel.from_spec(spec)
    factors = _levels(spec) if pyramid and tiled else [1]
    bigtiff = spec.width * spec.height * 3 > 2**31
    t = spec.tile_size
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for index, ds in enumerate(factors):
            width, height = -(-spec.width // ds), -(-spec.height // ds)
            mpp = spec.mpp * ds
            description = _aperio_description(spec, width, height, ds) if fmt == "svs" else None
            resolution = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
            layout = {"tile": (t, t)} if tiled else {"rowsperstrip": 64}
            tif.write(
                _tiles(spec, model, ds) if tiled else render_region(spec, ds),
                shape=(height, width, 3),
                dtype=np.uint8,
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": spec.jpeg_quality},
                subfiletype=0 if index == 0 or fmt == "svs" else 1,
                description=description,
                metadata=None,
                **layout,
                **(resolution if write_mpp and fmt == "tiff" else {}),
            )
            if fmt == "svs" and index == 0:
                thumb_ds = factors[-1] * 2
                thumb = render_region(spec, thumb_ds)
                tif.write(
                    thumb,
                    photometric="rgb",
                    description=_aperio_description(spec, *thumb.shape[1::-1], 0),
                    metadata=None,
                )
    return path


def _aperio_description(spec: SlideSpec, width: int, height: int, ds: int) -> str:
    magnification = 10.0 / spec.mpp
    head = f"Aperio Image Library v12.0.15\r\n{spec.width}x{spec.height} [0,0 {spec.width}x{spec.height}]"
    if ds == 0:
        return f"{head} -> {width}x{height} - |AppMag = {magnification:g}|MPP = {spec.mpp:g}"
    if ds == 1:
        return (
            f"{head} ({spec.tile_size}x{spec.tile_size}) JPEG/RGB Q={spec.jpeg_quality}|AppMag = "
            f"{magnification:g}|MPP = {spec.mpp:g}"
        )
    return f"{head} -> {width}x{height} JPEG/RGB Q={spec.jpeg_quality}"


def write_truth(spec: SlideSpec, folder: Path) -> Path:
    """Ground truth beside the slide: the spec (lesions included) as JSON and the tissue mask as a PNG."""
    from PIL import Image

    model = TissueModel.from_spec(spec)
    mask_path = folder / f"{spec.slide_id}.tissue.png"
    ny, nx = model.field.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    mask = model.tissue((xx + 0.5) * model.field_mpp, (yy + 0.5) * model.field_mpp)
    with atomic_path(mask_path) as tmp:
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp, format="PNG")
    record = {k: v for k, v in asdict(spec).items() if k != "folds" or spec.folds} | {
        "label": spec.label,
        "tissue_mask": mask_path.name,
        "tissue_mask_mpp": model.field_mpp,
    }
    if spec.has_artifacts:
        truth = artifact_truth(spec, (xx + 0.5) * model.field_mpp, (yy + 0.5) * model.field_mpp)
        for kind, where in truth.items():
            if kind == "fold" and not spec.folds:
                continue
            with atomic_path(folder / f"{spec.slide_id}.{kind}.png") as tmp:
                Image.fromarray((where * 255).astype(np.uint8)).save(tmp, format="PNG")
            record[f"{kind}_mask"] = f"{spec.slide_id}.{kind}.png"
    path = folder / f"{spec.slide_id}.truth.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2))
    return path


def center_stain_shift(center: int, seed: int = 0) -> tuple[float, float, float]:
    """A reproducible per-centre colour shift (stain and scanner differences between hospitals)."""
    if center == 0:
        return (0.0, 0.0, 0.0)
    rng = np.random.default_rng([seed, 1000 + center])
    return tuple(float(v) for v in rng.uniform(-22.0, 22.0, size=3))


def _place_lesions(spec: SlideSpec, label: str, rng: np.random.Generator) -> tuple[Lesion, ...]:
    if label == "negative":
        return ()
    model = TissueModel.from_spec(spec)
    ys, xs = np.nonzero(model.field > 0)
    if len(xs) == 0:
        ys, xs = np.array([model.field.shape[0] // 2]), np.array([model.field.shape[1] // 2])
    low, high = LESION_RANGES_UM[label]
    count = int(rng.integers(1, 3))
    primary = float(rng.uniform(low, high))
    diameters = [primary] + [primary * float(rng.uniform(0.3, 0.9)) for _ in range(count - 1)]
    picks = rng.integers(len(xs), size=count)
    return tuple(
        Lesion(float(xs[p] * model.field_mpp), float(ys[p] * model.field_mpp), d)
        for p, d in zip(picks, diameters, strict=True)
    )


MIN_SIDE, MAX_SIDE = 256, 200_000
"""Slide sides `synth` makes, in level-0 px: at least one 256 px tile, at most a large scan's size."""


@dataclass(frozen=True)
class CohortSpec:
    """A CAMELYON-style cohort: patients in centres, several lymph-node slides per patient."""

    slides: int = 20
    centers: int = 5
    nodes_per_case: int = 1
    width: int = 8192
    height: int = 6144
    mpp: float = 0.25
    seed: int = 0
    fmt: str = "tiff"
    labels: tuple[str, ...] = LESION_CLASSES

    def __post_init__(self) -> None:
        problems = [f"{name} must be at least 1, got {getattr(self, name)}" for name in ("slides", "centers",
                    "nodes_per_case") if getattr(self, name) < 1]  # fmt: skip
        for name in ("width", "height"):
            value = getattr(self, name)
            if not MIN_SIDE <= value <= MAX_SIDE:
                problems.append(f"{name} must be {MIN_SIDE} to {MAX_SIDE:,} px, got {value:,}")
        if not self.mpp > 0:
            problems.append(f"mpp must be positive, got {self.mpp}")
        if problems:
            raise ValueError("; ".join(problems))


def cohort_specs(cohort: CohortSpec) -> list[SlideSpec]:
    """Slide specs for a cohort: slides spread evenly over centres, labels balanced within each centre."""
    if cohort.slides < 1 or cohort.centers < 1 or cohort.nodes_per_case < 1:
        raise ValueError("slides, centers and nodes_per_case must all be at least 1")
    rng = np.random.default_rng([cohort.seed, 99])
    per_center = [cohort.slides // cohort.centers + (c < cohort.slides % cohort.centers) for c in range(cohort.centers)]
    specs: list[SlideSpec] = []
    patient = 0
    offset = 0
    for center, n in enumerate(per_center):
        labels = [cohort.labels[(offset + i) % len(cohort.labels)] for i in range(n)]
        offset += n
        rng.shuffle(labels)
        for i, label in enumerate(labels):
            if i % cohort.nodes_per_case == 0 and i:
                patient += 1
            node = i % cohort.nodes_per_case
            slide_seed = int(rng.integers(2**31))
            slide_id = f"patient_{patient:03d}_node_{node}"
            base = SlideSpec(
                slide_id,
                cohort.width,
                cohort.height,
                cohort.mpp,
                slide_seed,
                center,
                stain_shift=center_stain_shift(center, cohort.seed),
            )
            lesions = _place_lesions(base, label, np.random.default_rng([slide_seed, 3]))
            specs.append(SlideSpec(**{**asdict(base), "lesions": lesions}))
        patient += 1
    return specs


def case_id(slide_id: str) -> str:
    """Patient of a synthetic slide id ('patient_007_node_2' -> 'patient_007')."""
    return slide_id.rsplit("_node_", 1)[0]


def write_cohort(cohort: CohortSpec, out: Path, progress: bool = False) -> Path:
    """Write every slide, its ground truth and a manifest (slide_id,case_id,center,label,path); returns the manifest.

    Slides already present are kept, so an interrupted run continues where it stopped.
    """
    from rich.progress import track

    out = Path(out)
    slides_dir = out / "slides"
    truth_dir = out / "truth"
    slides_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".svs" if cohort.fmt == "svs" else ".tif"
    rows = []
    specs = cohort_specs(cohort)
    for spec in track(specs, description="synthesising slides", disable=not progress):
        path = slides_dir / f"{spec.slide_id}{suffix}"
        if not path.exists():
            write_slide(spec, path, fmt=cohort.fmt)
        write_truth(spec, truth_dir)
        rows.append(
            {
                "slide_id": spec.slide_id,
                "case_id": case_id(spec.slide_id),
                "center": spec.center,
                "label": spec.label,
                "path": str(path.resolve()),
            }
        )
    manifest = out / "manifest.csv"
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide_id", "case_id", "center", "label", "path"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def load_truth(path: Path) -> tuple[SlideSpec, TissueModel]:
    """Read a ground-truth JSON back into the spec and its tissue model."""
    record = json.loads(Path(path).read_text())
    fields = {k: v for k, v in record.items() if k in SlideSpec.__dataclass_fields__}
    fields["lesions"] = tuple(Lesion(**lesion) for lesion in record["lesions"])
    fields["stain_shift"] = tuple(record["stain_shift"])
    fields["pen_strokes"] = tuple(
        PenStroke(p["color"], tuple(tuple(pt) for pt in p["points"]), p["width_um"])
        for p in record.get("pen_strokes", ())
    )
    fields["blur_regions"] = tuple(BlurRegion(**b) for b in record.get("blur_regions", ()))
    fields["dark_border_um"] = tuple(record.get("dark_border_um", (0.0, 0.0, 0.0, 0.0)))
    fields["folds"] = tuple(
        TissueFold(tuple(tuple(pt) for pt in f["points"]), f["width_um"]) for f in record.get("folds", ())
    )
    spec = SlideSpec(**fields)
    return spec, TissueModel.from_spec(spec)


COUNT_RULE = {"negative": (0, 0), "itc": (10, 20), "micro": (40, 60), "macro": (100, 140)}
"""Positive instances per bag for each class of the synthetic bag cohort (a CAMELYON-like count rule)."""


def write_synthetic_bags(
    out: Path,
    slides: int = 400,
    dim: int = 32,
    tiles: tuple[int, int] = (160, 200),
    centers: int = 5,
    seed: int = 0,
    signal: float = 4.0,
) -> tuple[Path, Path]:
    """Feature bags whose 4-class label is the number of 'positive' instances they hold, for learning tests.

    Negative instances are N(0, I); positives are shifted by `signal` along a fixed random direction. Writes
    OUT/features/{slide_id}.h5 (our bag format, encoder 'synthetic'), OUT/manifest.csv and OUT/split.csv
    (centres 0-2 train/val by case, 3-4 test). Returns (manifest, split).
    """
    import h5py
    import pandas as pd

    from wsi_ncmi.formats.bags import FORMAT_VERSION

    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    features_dir = Path(out) / "features"
    features_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(slides):
        label = LESION_CLASSES[i % 4]
        low, high = COUNT_RULE[label]
        n_tiles = int(rng.integers(tiles[0], tiles[1] + 1))
        n_pos = int(rng.integers(low, high + 1))
        x = rng.normal(size=(n_tiles, dim)).astype(np.float32)
        x[rng.choice(n_tiles, n_pos, replace=False)] += (signal * direction).astype(np.float32)
        slide_id = f"bag_{i:04d}"
        with atomic_path(features_dir / f"{slide_id}.h5") as tmp, h5py.File(tmp, "w") as h5:
            h5["features"] = x
            h5["coords"] = np.stack([np.arange(n_tiles) * 256, np.zeros(n_tiles)], 1).astype(np.int64)
            h5["features"].attrs.update(
                {
                    "encoder": "synthetic",
                    "weights": f"seed={seed}",
                    "precision": "fp32",
                    "input_size": 0,
                    "normalization": "none",
                    "feature_dtype": "float32",
                    "coords_sha256": "",
                    "format_version": FORMAT_VERSION,
                }
            )
        center = i % centers
        rows.append({"slide_id": slide_id, "case_id": f"case_{i:04d}", "center": str(center), "label": label})
    manifest = pd.DataFrame(rows)
    split = np.where(manifest["center"].astype(int) >= 3, "test", "train").astype(object)
    train_rows = np.flatnonzero(split == "train")
    split[rng.choice(train_rows, max(4, len(train_rows) // 5), replace=False)] = "val"
    manifest_path, split_path = Path(out) / "manifest.csv", Path(out) / "split.csv"
    manifest.to_csv(manifest_path, index=False)
    pd.DataFrame({"slide_id": manifest["slide_id"], "split": split}).to_csv(split_path, index=False)
    return manifest_path, split_path
