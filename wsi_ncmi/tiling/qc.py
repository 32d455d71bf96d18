"""Slide quality control: pen ink, near-black regions and (optionally) tissue folds as masks on the low-resolution
image the tissue mask comes from (plain numpy), and blurry tiles called from focus scores read at 1-2 um/px
(slides/focus.py) relative to the slide's own tiles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from wsi_ncmi.tiling.morphology import dilate, erode, label

PEN_HUES = {"blue": (185.0, 235.0), "green": (70.0, 175.0), "red": (348.0, 15.0)}
"""Hue bands (degrees, HSV) of marker inks; H&E's pinks and purples lie between 250 and 345 degrees."""
PEN_COLORS = ("blue", "green", "red", "black")
DEFAULT_PEN_COLORS = ("blue", "green", "black")
"""Red is looked for only on request: haemorrhage (dense red blood cells) reaches red ink's colour at the mask's
resolution, and removing it silently costs more than keeping a red stroke."""
MIN_REFERENCE_TILES = 8
"""Fewer candidate tiles than this give no reliable median: only the absolute floor calls tiles blurry then."""
RED_MIN_SATURATION = 0.6
"""Red ink needs more saturation than the other hues: eosin-rich tissue reaches the red band at lower saturation."""
FOLD_KEYS = ("folds", "fold_min_density", "fold_max_angle")
"""Fold settings, left out of the fingerprint while folds are off so that it reads as before they existed."""


@dataclass(frozen=True)
class QCParams:
    """Quality-control settings (configs/tiling.yaml, `qc:`); sizes in micrometres, colours in HSV.

    pen_colors: marker inks removed (blue, green, red hues; black = near-black not touching the slide's edge).
    pen_min_saturation: HSV saturation (0-1) an ink pixel needs. dark_max_value: HSV value (0-255) at or below
    which a pixel is near-black. min_width_um: ink and dark regions narrower than this are ignored (specks, JPEG).
    margin_um: removals grow by this much (blended stroke edges). max_artifact: a tile with more of its area in
    removals is dropped.
    blur: drop out-of-focus tiles. Each candidate tile is read at about `focus_mpp` um/px and scored by the RMS
    Laplacian of its tissue (grey levels); a tile is blurry when its score is below `min_sharpness` (an absolute
    floor: featureless), or when it lies more than `blur_mad` robust standard deviations (1.4826 MAD, on log
    scores) below the slide's median score and below `blur_ratio` times that median.
    warn_removed: a slide whose QC removed more than this share of its tissue or of its tiles gets a warning.
    folds: also remove tissue folds (off by default; validated on synthetic slides only). A fold is the same
    tissue twice, so its optical density (OD = log10(255 / I) per channel) is about twice the tissue's with the
    same mix of stains. Reference: the median colour of the tissue's lighter half. fold_min_density: a fold's OD
    summed over RGB is at least this multiple of the reference's (one fold doubles it at full resolution; less
    at the mask's, where nuclei and stroma are averaged). fold_max_angle: degrees between a fold's OD vector and
    the reference's at most this; denser tumour changes the stain mix (7-19 degrees on the synthetic cohort,
    depending on the stain) and is kept.
    """

    enabled: bool = True
    pen_colors: tuple[str, ...] = DEFAULT_PEN_COLORS
    pen_min_saturation: float = 0.4
    dark_max_value: int = 60
    min_width_um: float = 24.0
    margin_um: float = 16.0
    max_artifact: float = 0.25
    blur: bool = True
    focus_mpp: float = 2.0
    min_sharpness: float = 1.0
    blur_mad: float = 3.0
    blur_ratio: float = 0.35
    warn_removed: float = 0.25
    folds: bool = False
    fold_min_density: float = 1.6
    fold_max_angle: float = 7.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "pen_colors", tuple(self.pen_colors))

    def problems(self) -> list[str]:
        """What is wrong with these settings, one message per setting (empty when valid)."""
        out = []
        unknown = sorted(set(self.pen_colors) - set(PEN_COLORS))
        if unknown:
            out.append(f"qc.pen_colors must be among {', '.join(PEN_COLORS)}, got {', '.join(unknown)}")
        if not 0.0 <= self.pen_min_saturation <= 1.0:
            out.append(f"qc.pen_min_saturation must be in [0, 1], got {self.pen_min_saturation}")
        if not (isinstance(self.dark_max_value, int) and 0 <= self.dark_max_value <= 255):
            out.append(f"qc.dark_max_value must be an integer 0-255, got {self.dark_max_value!r}")
        for key in ("min_width_um", "margin_um", "min_sharpness", "blur_mad"):
            if not getattr(self, key) >= 0:
                out.append(f"qc.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("max_artifact", "blur_ratio", "warn_removed"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                out.append(f"qc.{key} must be a fraction in [0, 1], got {getattr(self, key)}")
        if not 0.25 <= self.focus_mpp <= 4.0:
            out.append(f"qc.focus_mpp must be in [0.25, 4] um/px (focus shows at 1-2), got {self.focus_mpp}")
        for key in ("folds", "blur"):
            if not isinstance(getattr(self, key), bool):
                out.append(f"qc.{key} must be true or false, got {getattr(self, key)!r}")
        if not self.fold_min_density > 1.0:
            out.append(
                f"qc.fold_min_density must be more than 1 (folds are denser than tissue), got {self.fold_min_density}"
            )
        if not 0.0 < self.fold_max_angle < 90.0:
            out.append(f"qc.fold_max_angle must be in (0, 90) degrees, got {self.fold_max_angle}")
        return out

    def fingerprint(self) -> str:
        """The settings as one string for the coords attributes and the resume check; 'off' when disabled."""
        if not self.enabled:
            return "off"
        values = asdict(self)
        values["pen_colors"] = list(self.pen_colors)
        if not self.folds:
            for key in FOLD_KEYS:
                del values[key]
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_fingerprint(cls, text: str) -> QCParams:
        """The settings a coords file's `qc_params` attribute records (fold settings left out mean folds off)."""
        return cls(enabled=False) if text == "off" else cls(**json.loads(text))


@dataclass(frozen=True)
class QCResult:
    """QC masks at the tissue mask's resolution (same shape): `pen`, `dark` and `fold` (None when folds are not
    looked for) as detected, `removed` their union grown by the margin (what is taken out of the tissue), and the
    size of the tissue before QC (what a warning compares the removals with)."""

    pen: np.ndarray
    dark: np.ndarray
    removed: np.ndarray
    fold: np.ndarray | None = None
    tissue_before: int | None = None
    """Pixels of the tissue mask as QC off finds it (None: the same as after QC, nothing was removed)."""


def _hue(r: np.ndarray, g: np.ndarray, b: np.ndarray, hi: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """HSV hue in degrees (float32) of pixels with delta = max - min > 0."""
    r, g, b, delta = (v.astype(np.float32) for v in (r, g, b, delta))
    hue = np.where(hi == r, (g - b) / delta % 6.0, np.where(hi == g, (b - r) / delta + 2.0, (r - g) / delta + 4.0))
    return hue * np.float32(60.0)


def ink_mask(
    rgb: np.ndarray, params: QCParams, channels: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a listed ink hue with enough saturation and not near-black, and the HSV value (max channel, uint8)
    of every pixel; hue is computed only where the saturation could qualify, a minority of pixels on H&E.
    `channels` is the image's channel_range when already computed."""
    from wsi_ncmi.tiling.tissue import channel_range

    hi, lo = channel_range(rgb) if channels is None else channels
    delta = hi - lo  # uint8: hi >= lo, so no wrap-around
    floor = min(params.pen_min_saturation, RED_MIN_SATURATION)
    candidates = np.flatnonzero((delta >= np.float32(floor) * hi) & (hi > params.dark_max_value) & (delta > 0))
    ink = np.zeros(hi.size, dtype=bool)
    if candidates.size == 0:
        return ink.reshape(hi.shape), hi
    pixels = rgb.reshape(-1, 3).take(candidates, axis=0).astype(np.int16)
    pick_hi, pick_delta = hi.ravel().take(candidates), delta.ravel().take(candidates)
    hue = _hue(pixels[:, 0], pixels[:, 1], pixels[:, 2], pick_hi, pick_delta)
    sat = pick_delta / pick_hi.astype(np.float32)
    for color in params.pen_colors:
        if color not in PEN_HUES:
            continue
        low, high = PEN_HUES[color]
        band = (hue >= low) & (hue <= high) if low <= high else (hue >= low) | (hue <= high)
        need = max(params.pen_min_saturation, RED_MIN_SATURATION) if color == "red" else params.pen_min_saturation
        ink[candidates[band & (sat >= need)]] = True
    return ink.reshape(hi.shape), hi


def _within_box(mask: np.ndarray, margin: int, op: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """op(mask) computed on the mask's bounding box grown by `margin` px and placed back; the same as op on the
    whole image for box dilations, erosions, openings and closings of radius r when margin > 2r (beyond the
    margin every pixel stays false), and several times cheaper when the mask is a small part of the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask
    box = (
        slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
        slice(max(cols[0] - margin, 0), cols[-1] + margin + 1),
    )
    out = np.zeros_like(mask)
    out[box] = op(mask[box])
    return out


def _opened(mask: np.ndarray, radius: int) -> np.ndarray:
    return dilate(erode(mask, 2 * radius + 1), 2 * radius + 1)


def _closed(mask: np.ndarray, radius: int) -> np.ndarray:
    return erode(dilate(mask, 2 * radius + 1), 2 * radius + 1)


def _without_thin(mask: np.ndarray, mpp: float, params: QCParams) -> np.ndarray:
    """The mask without its parts narrower than `min_width_um` (an opening, on the mask's bounding box)."""
    radius = round(params.min_width_um / mpp / 2)
    return _within_box(mask, 2 * radius + 1, lambda m: _opened(m, radius))


def _grown(mask: np.ndarray, mpp: float, params: QCParams) -> np.ndarray:
    """The mask grown by `margin_um` (blended edges), on its bounding box."""
    size = 2 * round(params.margin_um / mpp) + 1
    return _within_box(mask, size, lambda m: dilate(m, size))


def _touching_edge(mask: np.ndarray) -> np.ndarray:
    """The 8-connected parts of `mask` that touch the image's border; labelled within the bounding box of `mask`,
    which for borders and strokes is a small part of the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    parts = label(mask[box], diagonal=True)
    height, width = parts.shape
    on_side = (
        ((parts.rows == 0) & (rows[0] == 0))
        | ((parts.rows == height - 1) & (rows[-1] == mask.shape[0] - 1))
        | ((parts.starts == 0) & (cols[0] == 0))
        | ((parts.ends == width) & (cols[-1] == mask.shape[1] - 1))
    )
    keep = np.zeros(parts.count + 1, dtype=bool)
    keep[parts.run_label[on_side]] = True
    inside = np.zeros((height, width), dtype=bool)
    inside.reshape(-1)[parts.pixels(keep)] = True
    out = np.zeros_like(mask)
    out[box] = inside
    return out


def detect_artifacts(
    rgb: np.ndarray, mpp: float, params: QCParams, channels: tuple[np.ndarray, np.ndarray] | None = None
) -> QCResult:
    """Pen ink and near-black regions of an RGB image whose pixels are `mpp` um wide.

    Ink: a pixel of a listed hue band with enough saturation (gaps narrower than `min_width_um` closed, parts
    narrower than it dropped). Near-black regions that touch the image's edge are
    `dark` (scanner borders, out-of-tissue black); elsewhere they are black ink when black is listed, else dark.
    `channels` is the image's channel_range when already computed.
    """
    pen, value = ink_mask(rgb, params, channels)
    radius = round(params.min_width_um / mpp / 2)
    pen = _within_box(pen, 2 * radius + 1, lambda m: _opened(_closed(m, radius), radius))
    near_black = _without_thin(value <= params.dark_max_value, mpp, params)
    dark = _touching_edge(near_black)
    if "black" in params.pen_colors:
        pen |= near_black & ~dark
    else:
        dark = near_black
    return QCResult(pen, dark, _grown(pen | dark, mpp, params))


def fold_mask(rgb: np.ndarray, tissue: np.ndarray, mpp: float, params: QCParams) -> np.ndarray:
    """Tissue pixels whose optical density (a 3 x 3 mean, against noise) is at least `fold_min_density` times
    the reference's and within `fold_max_angle` degrees of its direction; parts narrower than `min_width_um`
    dropped. Reference: the median colour of the tissue's lighter half (by summed OD), single-layer tissue even
    when folds and dense regions cover up to half of it."""
    if not tissue.any():
        return np.zeros_like(tissue)
    table = np.log10(np.float32(255.0) / np.maximum(np.arange(256, dtype=np.float32), np.float32(1.0)))
    od = table[rgb]
    pixels = rgb[tissue]
    summed = od[tissue].sum(axis=1)
    median = np.median(pixels[summed <= np.median(summed)], axis=0)
    reference = np.log10(255.0 / np.maximum(median, 1.0)).astype(np.float32)
    smooth = od.copy()
    smooth[1:-1] += od[:-2] + od[2:]
    wide = smooth.copy()
    wide[:, 1:-1] += smooth[:, :-2] + smooth[:, 2:]
    wide /= np.float32(9.0)  # a 3 x 3 mean inside; border rows and columns (partial sums) are never folds
    wide[[0, -1]] = 0.0
    wide[:, [0, -1]] = 0.0
    along = wide @ (reference / np.linalg.norm(reference))
    dense = wide.sum(axis=2) >= np.float32(params.fold_min_density * reference.sum())
    aligned = along >= np.float32(np.cos(np.radians(params.fold_max_angle))) * np.linalg.norm(wide, axis=2)
    return _without_thin(tissue & dense & aligned, mpp, params)


def with_folds(qc: QCResult, rgb: np.ndarray, tissue: np.ndarray, mpp: float, params: QCParams) -> QCResult:
    """`qc` with the folds of the tissue mask `tissue` (ink and dark regions already out) found and, grown by the
    margin, added to the removals. Runs after the tissue mask, because the folds' reference is the tissue."""
    fold = fold_mask(rgb, tissue, mpp, params)
    return replace(qc, fold=fold, removed=qc.removed | _grown(fold, mpp, params))


def blurry_tiles(scores: np.ndarray, params: QCParams) -> np.ndarray:
    """Which tiles' focus scores call them out of focus: below the absolute floor `min_sharpness`, or far below the
    slide's own median (more than `blur_mad` robust standard deviations of the log score, and under `blur_ratio`
    of the median), so that uniformly smooth tissue stays and a blurred patch on a sharp slide goes."""
    scores = np.asarray(scores, dtype=np.float64)
    out = scores < params.min_sharpness
    positive = np.log(scores[scores > 0])
    if len(positive) < MIN_REFERENCE_TILES:
        return out
    median = float(np.median(positive))
    spread = 1.4826 * float(np.median(np.abs(positive - median)))
    with np.errstate(divide="ignore"):
        logs = np.log(scores)
    return out | ((logs < median - params.blur_mad * spread) & (scores < params.blur_ratio * np.exp(median)))


@dataclass
class TileSelection:
    """The tiles kept on one slide and what quality control took away (areas in mm^2, counts in tiles)."""

    keep: np.ndarray
    tissue_fraction: np.ndarray
    sharpness: np.ndarray | None
    summary: dict[str, float | int]
    blurry: np.ndarray | None = None
    """Grid tiles dropped as out of focus (boolean, the grid's length), None without QC."""


def select_tiles(
    tissue: np.ndarray,
    qc: QCResult | None,
    params: QCParams,
    scale: float,
    mpp: float,
    grid: np.ndarray,
    size0: int,
    min_tissue: float,
) -> TileSelection:
    """Keep the grid's tiles with at least `min_tissue` of tissue left after QC and at most `max_artifact` of
    removals; `tissue` must already exclude `qc.removed`. Focus is judged afterwards (`with_focus`), on the tiles
    kept here. `mpp` is the mask's um per pixel."""
    from wsi_ncmi.tiling.grid import TileSums

    pixel_mm2 = mpp * mpp / 1e6
    kept_pixels = int(np.count_nonzero(tissue))
    summary: dict[str, float | int] = {"qc_tissue_mm2": float(kept_pixels * pixel_mm2)}
    planes = [tissue] if qc is None or not qc.removed.any() else [tissue, qc.removed]
    sums = TileSums.of(planes, scale, grid, size0)
    fractions = np.clip(sums.exact(0) / (size0 / scale) ** 2, 0.0, 1.0).astype(np.float32)
    keep = (fractions >= min_tissue) & (fractions > 0)
    if qc is None:
        summary.update(qc_pen_mm2=0.0, qc_dark_mm2=0.0, qc_tiles_before=int(keep.sum()), qc_tiles_blurry=0)
        return TileSelection(keep, fractions, None, summary)
    artifact = sums.rounded(1) / (size0 / scale) ** 2 if len(planes) == 2 else np.zeros(len(grid))
    before = fractions + artifact  # `tissue` excludes the removals, so their areas add up
    keep &= artifact <= params.max_artifact
    if qc.fold is not None:
        summary["qc_fold_mm2"] = float(np.count_nonzero(qc.fold) * pixel_mm2)
    tissue_before = kept_pixels if qc.tissue_before is None else qc.tissue_before
    summary.update(
        qc_pen_mm2=float(np.count_nonzero(qc.pen) * pixel_mm2),
        qc_dark_mm2=float(np.count_nonzero(qc.dark) * pixel_mm2),
        qc_tissue_before_mm2=float(tissue_before * pixel_mm2),
        qc_tiles_before=int(((before >= min_tissue) & (before > 0)).sum()),
        qc_tiles_blurry=0,
        qc_blurry_mm2=0.0,
    )
    return TileSelection(keep, fractions, None, summary, np.zeros(len(grid), dtype=bool))


def with_focus(
    chosen: TileSelection, scores: np.ndarray, params: QCParams, tile_mm2: float, focus_mpp: float
) -> TileSelection:
    """`chosen` with its blurry tiles dropped: `scores` are the focus scores of its kept tiles (in order), measured
    at `focus_mpp` um/px; `tile_mm2` is one tile's area, for the tissue the blurry tiles held."""
    kept = np.flatnonzero(chosen.keep)
    blurry_kept = blurry_tiles(scores, params)
    blurry = np.zeros(len(chosen.keep), dtype=bool)
    blurry[kept[blurry_kept]] = True
    sharpness = np.zeros(len(chosen.keep), dtype=np.float32)
    sharpness[kept] = scores
    positive = scores[scores > 0]
    summary = {
        **chosen.summary,
        "qc_tiles_blurry": int(blurry.sum()),
        "qc_blurry_mm2": float(chosen.tissue_fraction[blurry].sum() * tile_mm2),
        "qc_focus_mpp": float(focus_mpp),
        "qc_focus_median": float(np.median(positive)) if len(positive) else 0.0,
    }
    return TileSelection(chosen.keep & ~blurry, chosen.tissue_fraction, sharpness, summary, blurry)
