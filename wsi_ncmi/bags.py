"""The HDF5 formats: coords files (one per slide, from `tile`) and feature bags (from `embed`).

Coords files carry CLAM's attributes (`patch_size`, `patch_level`) and TRIDENT's (`patch_size_level0`,
`level0_magnification`, `target_magnification`, `level0_width`, `level0_height`, `overlap`, `name`), so those
tools' readers accept them, plus this project's own (`mpp_target`, `mpp_level0`, `mpp_source`, `read_level`,
`tissue_params`, `format_version`, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wsi_ncmi.atomic import atomic_path

FORMAT_VERSION = 1

COORDS_ATTRS: dict[str, type] = {
    "patch_size": int,
    "patch_level": int,
    "patch_size_level0": int,
    "level0_magnification": float,
    "target_magnification": float,
    "level0_width": int,
    "level0_height": int,
    "overlap": int,
    "name": str,
    "tile_size": int,
    "step_level0": int,
    "mpp_target": float,
    "mpp_level0": float,
    "mpp_source": str,
    "read_level": int,
    "read_downsample": float,
    "min_tissue": float,
    "tissue_params": str,
    "slide_path": str,
    "backend": str,
    "format_version": int,
}
"""Every attribute of the `coords` dataset and its type; the on-disk contract."""


class BagFormatError(Exception):
    """A coords file or bag is missing, unreadable or of another format; the message names the file."""


@dataclass
class CoordsFile:
    """Tile coordinates of one slide (level-0 top-left x, y) with their tissue fractions and attributes."""

    coords: np.ndarray
    tissue_fraction: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def tissue_params(self) -> dict[str, Any]:
        return json.loads(self.attrs.get("tissue_params", "{}"))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _typed_attrs(attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    missing = sorted(set(COORDS_ATTRS) - set(attrs))
    if missing:
        raise BagFormatError(f"{path}: coords attributes missing: {', '.join(missing)}")
    return {key: (COORDS_ATTRS[key](value) if key in COORDS_ATTRS else value) for key, value in attrs.items()}


def write_coords(path: Path, coords: np.ndarray, tissue_fraction: np.ndarray, attrs: dict[str, Any]) -> None:
    """Write a coords file atomically; `attrs` must hold every key of COORDS_ATTRS except format_version."""
    path = Path(path)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    tissue_fraction = np.asarray(tissue_fraction, dtype=np.float32).reshape(-1)
    if len(coords) != len(tissue_fraction):
        raise ValueError(f"{len(coords)} coords but {len(tissue_fraction)} tissue fractions")
    typed = _typed_attrs({**attrs, "format_version": FORMAT_VERSION}, path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        dset = h5.create_dataset("coords", data=coords, maxshape=(None, 2), chunks=(max(1, min(len(coords), 4096)), 2))
        for key, value in typed.items():
            dset.attrs[key] = value
        h5.create_dataset("tissue_fraction", data=tissue_fraction)
        h5.attrs["format_version"] = FORMAT_VERSION


def read_coords_attrs(path: Path) -> dict[str, Any]:
    """The attributes of a coords file, without reading the coordinates."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: _plain(v) for k, v in h5["coords"].attrs.items()}
    except FileNotFoundError as exc:
        raise BagFormatError(f"{path}: coords file not found; run `wsi-ncmi tile` for this slide first") from exc
    except (OSError, KeyError) as exc:
        raise BagFormatError(f"{path}: not a readable coords file ({exc}); delete it and tile the slide again") from exc
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise BagFormatError(
            f"{path}: coords format_version {version!r}, this version reads {FORMAT_VERSION}; "
            "tile the slide again with --overwrite"
        )
    return attrs


def read_coords(path: Path) -> CoordsFile:
    """Read and validate a coords file written by `write_coords`."""
    path = Path(path)
    attrs = read_coords_attrs(path)
    with h5py.File(path, "r") as h5:
        coords = h5["coords"][:]
        fractions = h5["tissue_fraction"][:] if "tissue_fraction" in h5 else np.ones(len(coords), np.float32)
    return CoordsFile(coords.astype(np.int64), fractions.astype(np.float32), _typed_attrs(attrs, path))
