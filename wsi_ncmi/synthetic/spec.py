"""What determines a synthetic slide's pixels: the slide spec, its painted artifacts (ink, blur, folds, a black
border) and the analytic tissue model every tile is rendered from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
