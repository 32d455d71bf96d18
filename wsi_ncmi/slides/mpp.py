"""Microns per pixel at level 0: from the manifest, the slide's metadata, the user's assumption, or objective power.

The formats with a pixel size of their own record which field gave it as the source: `OME PhysicalSizeX`
(OME-XML, in its unit), `DICOM PixelSpacing` (mm), `CZI Scaling` (metres); the TIFF family's vendor fields and
resolution tags record `metadata`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsi_ncmi.core.errors import WsiNcmiError

MPP_RANGE = (0.05, 20.0)
"""Plausible level-0 resolutions (um/px); values outside (e.g. 72-dpi defaults in resolution tags) are ignored."""

_MPP_KEYS = (("openslide.mpp-x", "openslide.mpp-y"), ("tiffslide.mpp-x", "tiffslide.mpp-y"))
_POWER_KEYS = (
    "openslide.objective-power",
    "tiffslide.objective-power",
    "aperio.AppMag",
    "hamamatsu.SourceLens",
    "ome.NominalMagnification",
)
_UNIT_UM = {"centimeter": 1e4, "cm": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}
_OME_UNIT_UM = {
    "m": 1e6,
    "cm": 1e4,
    "mm": 1e3,
    "\u00b5m": 1.0,
    "\u03bcm": 1.0,
    "um": 1.0,
    "nm": 1e-3,
    "pm": 1e-6,
    "\u00c5": 1e-4,
    "in": 25400.0,
}
"""OME UnitsLength symbols (OME-XML's default is um; micro sign or Greek mu) in micrometres."""
_DICOM_SPACING = "dicom.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing"
"""DICOM PixelSpacing (mm) as OpenSlide names it: [0] between rows (y), [1] between columns (x)."""


class MppError(WsiNcmiError):
    """No usable microns-per-pixel value; the message says how to supply one."""


@dataclass(frozen=True)
class Mpp:
    """A resolved level-0 resolution and where it came from (manifest, metadata or the format's own field,
    assumed, objective-power)."""

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


def _scaled(value: object, factor: float | None) -> float | None:
    number = _number(value)
    return None if number is None or factor is None else number * factor


def _format_fields(properties: dict[str, str]) -> list[tuple[float | None, float | None, str]]:
    """(x, y, source) from the pixel-size fields of the formats that have their own: OME, DICOM, CZI."""
    found = []
    if "ome.PhysicalSizeX" in properties:
        x_unit = _OME_UNIT_UM.get(properties.get("ome.PhysicalSizeXUnit", "\u00b5m").strip())
        y_unit = _OME_UNIT_UM.get(properties.get("ome.PhysicalSizeYUnit", "\u00b5m").strip())
        x = _scaled(properties.get("ome.PhysicalSizeX"), x_unit)
        y = _scaled(properties.get("ome.PhysicalSizeY"), y_unit)
        found.append((x, y, "OME PhysicalSizeX"))
    if f"{_DICOM_SPACING}[1]" in properties:
        x = _scaled(properties.get(f"{_DICOM_SPACING}[1]"), 1e3)
        y = _scaled(properties.get(f"{_DICOM_SPACING}[0]"), 1e3)
        found.append((x, y, "DICOM PixelSpacing"))
    if "czi.Scaling.X" in properties:
        x, y = _scaled(properties.get("czi.Scaling.X"), 1e6), _scaled(properties.get("czi.Scaling.Y"), 1e6)
        found.append((x, y, "CZI Scaling"))
    return found


def metadata_mpp(properties: dict[str, str]) -> tuple[float, str, str] | None:
    """Level-0 um/px from slide properties, the field it came from, and a warning when x and y differ by more than
    1%: a format's own pixel-size field (OME, DICOM, CZI), else vendor MPP, else TIFF resolution tags (source
    `metadata`); None when absent or implausible."""
    candidates = _format_fields(properties)
    candidates += [(_number(properties.get(kx)), _number(properties.get(ky)), "metadata") for kx, ky in _MPP_KEYS]
    candidates.append((_number(properties.get("aperio.MPP")), _number(properties.get("aperio.MPP")), "metadata"))
    unit = _UNIT_UM.get(str(properties.get("tiff.ResolutionUnit", "")).strip().lower())
    xres, yres = _number(properties.get("tiff.XResolution")), _number(properties.get("tiff.YResolution"))
    if unit and xres:
        candidates.append((unit / xres, unit / yres if yres else unit / xres, "metadata"))
    for mx, my, source in candidates:
        my = my if my is not None else mx
        if _plausible(mx) and _plausible(my):
            warning = ""
            if abs(mx - my) / max(mx, my) > 0.01:
                warning = f"pixels are not square (mpp x={mx:.4f}, y={my:.4f}); using their mean"
            return (mx + my) / 2, source, warning
    return None


def mpp_from_metadata(properties: dict[str, str]) -> tuple[float, str] | None:
    """Level-0 um/px from slide properties and the non-square warning (see metadata_mpp); None when absent."""
    found = metadata_mpp(properties)
    return None if found is None else (found[0], found[2])


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
    found = metadata_mpp(properties)
    if found is not None:
        return Mpp(found[0], found[1], found[2])
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
    ignored = "".join(
        f" ({source} gives {mx:g} um/px, outside {MPP_RANGE[0]}-{MPP_RANGE[1]})"
        for mx, _, source in _format_fields(properties)
        if mx is not None
    )
    fix = "add an mpp column to the manifest or pass --assume-mpp"
    raise MppError(f"no microns-per-pixel in the slide's metadata{ignored}; {fix}")
