"""Microns per pixel at level 0: from the manifest, the slide's metadata, the user's assumption, or objective power."""

from __future__ import annotations

import math
from dataclasses import dataclass

MPP_RANGE = (0.05, 20.0)
"""Plausible level-0 resolutions (um/px); values outside (e.g. 72-dpi defaults in resolution tags) are ignored."""

_MPP_KEYS = (("openslide.mpp-x", "openslide.mpp-y"), ("tiffslide.mpp-x", "tiffslide.mpp-y"))
_POWER_KEYS = (
    "openslide.objective-power",
    "tiffslide.objective-power",
    "aperio.AppMag",
    "hamamatsu.SourceLens",
)
_UNIT_UM = {"centimeter": 1e4, "cm": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}


class MppError(Exception):
    """No usable microns-per-pixel value; the message says how to supply one."""


@dataclass(frozen=True)
class Mpp:
    """A resolved level-0 resolution and where it came from (manifest, metadata, assumed, objective-power)."""

    value: float
    source: str
    warning: str = ""


def _number(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _plausible(value: float | None) -> bool:
    return value is not None and MPP_RANGE[0] <= value <= MPP_RANGE[1]


def mpp_from_metadata(properties: dict[str, str]) -> tuple[float, str] | None:
    """Level-0 um/px from slide properties (vendor MPP, then TIFF resolution tags); None when absent or implausible.

    Returns the value and a warning when x and y differ by more than 1%.
    """
    candidates: list[tuple[float | None, float | None]] = [
        (_number(properties.get(kx)), _number(properties.get(ky))) for kx, ky in _MPP_KEYS
    ]
    candidates.append((_number(properties.get("aperio.MPP")), _number(properties.get("aperio.MPP"))))
    unit = _UNIT_UM.get(str(properties.get("tiff.ResolutionUnit", "")).strip().lower())
    xres, yres = _number(properties.get("tiff.XResolution")), _number(properties.get("tiff.YResolution"))
    if unit and xres:
        candidates.append((unit / xres, unit / yres if yres else unit / xres))
    for mx, my in candidates:
        my = my if my is not None else mx
        if _plausible(mx) and _plausible(my):
            warning = ""
            if abs(mx - my) / max(mx, my) > 0.01:
                warning = f"pixels are not square (mpp x={mx:.4f}, y={my:.4f}); using their mean"
            return (mx + my) / 2, warning
    return None


def objective_power(properties: dict[str, str]) -> float | None:
    for key in _POWER_KEYS:
        power = _number(properties.get(key))
        if power is not None and 0.5 <= power <= 200:
            return power
    return None


def resolve_mpp(properties: dict[str, str], manifest_mpp: float | None = None, assume_mpp: float | None = None) -> Mpp:
    """Level-0 um/px in this order: manifest `mpp`; metadata; `--assume-mpp`; 10 / objective power (warns)."""
    if manifest_mpp is not None and not (isinstance(manifest_mpp, float) and math.isnan(manifest_mpp)):
        value = _number(manifest_mpp)
        if not _plausible(value):
            raise MppError(
                f"manifest mpp {manifest_mpp!r} is not a plausible microns-per-pixel value "
                f"({MPP_RANGE[0]}-{MPP_RANGE[1]}); fix the manifest's mpp column"
            )
        return Mpp(float(value), "manifest")
    found = mpp_from_metadata(properties)
    if found is not None:
        return Mpp(found[0], "metadata", found[1])
    if assume_mpp is not None:
        if not _plausible(assume_mpp):
            raise MppError(f"--assume-mpp {assume_mpp} is outside {MPP_RANGE[0]}-{MPP_RANGE[1]} um/px")
        return Mpp(float(assume_mpp), "assumed")
    power = objective_power(properties)
    if power is not None:
        return Mpp(
            10.0 / power,
            "objective-power",
            f"no microns-per-pixel in the metadata; assumed {10.0 / power:g} um/px from {power:g}x "
            "objective power (set the manifest's mpp column to be exact)",
        )
    raise MppError(
        "no microns-per-pixel in the slide's metadata; add an mpp column to the manifest or pass --assume-mpp"
    )
