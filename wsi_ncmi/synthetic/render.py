"""Rendering a synthetic slide's pixels, tile by tile, from its spec and tissue model, painted artifacts included."""

from __future__ import annotations

import numpy as np

from wsi_ncmi.synthetic.spec import BACKGROUND, DARK, EOSIN, HEMATOXYLIN, INK, NUCLEUS_UM, SlideSpec, TissueModel
from wsi_ncmi.synthetic.truth import _near, blur_truth, dark_truth, fold_bands, pen_truth


def _stain(spec: SlideSpec) -> tuple[np.ndarray, np.ndarray]:
    shift = np.asarray(spec.stain_shift)
    return np.clip(EOSIN + shift, 0, 255), np.clip(HEMATOXYLIN + 0.5 * shift, 0, 255)


_NOISE = np.random.default_rng(12345).normal(0.0, 6.0, size=(1024, 1024)).astype(np.int16)


def _palette(spec: SlideSpec) -> np.ndarray:
    """Colours of: background, tissue, nucleus, lesion tissue, lesion nucleus."""
    eosin, hema = _stain(spec)
    return np.stack([BACKGROUND, eosin, hema, eosin * 0.85, hema * 0.9]).astype(np.int16)


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


def render_region(spec: SlideSpec, level_ds: int = 1) -> np.ndarray:
    """Whole level as one array; for small slides and tests only."""
    model = TissueModel.from_spec(spec)
    width, height = -(-spec.width // level_ds), -(-spec.height // level_ds)
    return render_tile(spec, model, level_ds, 0, 0, width, height)
