"""The HDF5 formats: coords files (one per slide, from `tile`) and feature bags (from `embed`).

Coords files carry CLAM's attributes (`patch_size`, `patch_level`) and TRIDENT's (`patch_size_level0`,
`level0_magnification`, `target_magnification`, `level0_width`, `level0_height`, `overlap`, `name`), so those
tools' readers accept them, plus this project's own (`mpp_target`, `mpp_level0`, `mpp_source`, `read_level`,
`tissue_params`, `format_version`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.core.atomic import GuardedFile, h5_atomic, raise_write_error, save_torch
from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.core.pending import PENDING

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
    "grid": str,
    "edge_tiles": bool,
    "tissue_params": str,
    "slide_path": str,
    "backend": str,
    "format_version": int,
}
"""Every attribute of the `coords` dataset and its type; the on-disk contract."""


class BagFormatError(WsiNcmiError):
    """A coords file or bag is missing, unreadable or of another format; the message names the file."""


class BagMismatchError(BagFormatError):
    """A readable bag that was made for another model: other encoder, weights, stain normalisation or feature size."""


@dataclass(frozen=True)
class CoordsGeometry:
    """How a coords file's tiles map onto their slide, read back from its attributes as typed values: where the
    slide is, its level-0 size and resolution, and each tile's size at level 0, at the level it is read from and
    as stored. The one reader of these attributes; a missing one is a BagFormatError naming it."""

    attrs: Mapping[str, Any]

    def _value(self, name: str) -> Any:
        if name not in self.attrs:
            raise BagFormatError(f"coords attributes missing: {name}")
        return self.attrs[name]

    def check(self, path: Path | str) -> CoordsGeometry:
        """Self, when every attribute the geometry reads is present; else a BagFormatError naming `path`."""
        missing = [name for name in GEOMETRY_ATTRS if name not in self.attrs]
        if "read_level" in missing and "patch_level" in self.attrs:
            missing.remove("read_level")
        if missing:
            raise BagFormatError(f"{path}: coords attributes missing: {', '.join(missing)}")
        return self

    @property
    def slide_path(self) -> str:
        return str(self._value("slide_path"))

    @property
    def backend(self) -> str:
        """The slide reader the tiler used ('auto' when not recorded)."""
        return str(self.attrs.get("backend", "auto"))

    @property
    def width(self) -> int:
        """Level-0 width in pixels when tiled."""
        return int(self._value("level0_width"))

    @property
    def height(self) -> int:
        return int(self._value("level0_height"))

    @property
    def mpp_level0(self) -> float:
        return float(self._value("mpp_level0"))

    @property
    def mpp_source(self) -> str:
        return str(self._value("mpp_source"))

    @property
    def size_level0(self) -> int:
        """A tile's side in level-0 pixels."""
        return int(self._value("patch_size_level0"))

    @property
    def step_level0(self) -> int:
        return int(self._value("step_level0"))

    @property
    def read_level(self) -> int:
        """The pyramid level tiles are read from. Written twice, as `read_level` (ours) and `patch_level` (CLAM's
        name), always equal; either one is enough."""
        return int(self.attrs["read_level"] if "read_level" in self.attrs else self._value("patch_level"))

    @property
    def read_size(self) -> int:
        """A tile's side in pixels at the read level (`patch_size`)."""
        return int(self._value("patch_size"))

    @property
    def tile_size(self) -> int:
        """A tile's side in pixels as embedded (at the target resolution)."""
        return int(self._value("tile_size"))


GEOMETRY_ATTRS = (
    "slide_path",
    "level0_width",
    "level0_height",
    "mpp_level0",
    "mpp_source",
    "patch_size_level0",
    "step_level0",
    "read_level",
    "patch_size",
    "tile_size",
)
"""The coords attributes CoordsGeometry reads (`read_level` may be `patch_level` alone)."""


@dataclass
class CoordsFile:
    """Tile coordinates of one slide (level-0 top-left x, y) with their tissue fractions and attributes."""

    coords: np.ndarray
    tissue_fraction: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def geometry(self) -> CoordsGeometry:
        """The typed view of `attrs`' tile geometry."""
        return CoordsGeometry(self.attrs)


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


def write_coords(
    path: Path,
    coords: np.ndarray,
    tissue_fraction: np.ndarray,
    attrs: dict[str, Any],
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a coords file atomically; `attrs` must hold every key of COORDS_ATTRS except format_version; `extra`
    adds per-tile datasets (one value per tile, such as `qc_sharpness`)."""
    path = Path(path)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    tissue_fraction = np.asarray(tissue_fraction, dtype=np.float32).reshape(-1)
    if len(coords) != len(tissue_fraction):
        raise ValueError(f"{len(coords)} coords but {len(tissue_fraction)} tissue fractions")
    typed = _typed_attrs({**attrs, "format_version": FORMAT_VERSION}, path)
    with h5_atomic(path) as h5:
        dset = h5.create_dataset("coords", data=coords, maxshape=(None, 2), chunks=(max(1, min(len(coords), 4096)), 2))
        for key, value in typed.items():
            dset.attrs[key] = value
        h5.create_dataset("tissue_fraction", data=tissue_fraction)
        for name, values in (extra or {}).items():
            if len(values) != len(coords):
                raise ValueError(f"{len(coords)} coords but {len(values)} values of {name}")
            h5.create_dataset(name, data=values)
        h5.attrs["format_version"] = FORMAT_VERSION


def read_coords_attrs(path: Path) -> dict[str, Any]:
    """The attributes of a coords file, without reading the coordinates."""
    import h5py

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


def read_geometry(path: Path) -> CoordsGeometry:
    """The tile geometry of a coords file, without reading the coordinates."""
    return CoordsGeometry(read_coords_attrs(path)).check(path)


def read_coords(path: Path) -> CoordsFile:
    """Read and validate a coords file written by `write_coords`."""
    import h5py

    path = Path(path)
    attrs = read_coords_attrs(path)
    with h5py.File(path, "r") as h5:
        coords = h5["coords"][:]
        fractions = h5["tissue_fraction"][:] if "tissue_fraction" in h5 else np.ones(len(coords), np.float32)
    return CoordsFile(coords.astype(np.int64), fractions.astype(np.float32), _typed_attrs(attrs, path))


FEATURE_ATTRS: dict[str, type] = {
    "encoder": str,
    "weights": str,
    "precision": str,
    "input_size": int,
    "normalization": str,
    "feature_dtype": str,
    "coords_sha256": str,
    "decode": str,
    "format_version": int,
}
"""Attributes of the `features` dataset of a bag written by `embed`."""


def coords_digest(coords: np.ndarray) -> str:
    """sha256 of the int64 coordinates: ties a bag to the exact tiling it was computed from."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(coords, dtype=np.int64).tobytes()).hexdigest()


class BagWriter:
    """Streams a bag's features to a temporary HDF5 file in chunks; `finish` renames it into place.

    Features never have to be held in memory at once; an aborted or interrupted writer leaves no file under the
    final name.
    """

    def __init__(self, path: Path, n_tiles: int, dim: int, dtype: str = "float32"):
        import os

        import h5py

        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        PENDING.add(self.tmp)
        self.guard = GuardedFile(self.tmp)
        self.h5 = h5py.File(self.guard, "w")
        chunk = (min(n_tiles, 1024), dim) if n_tiles else None
        self.features = self.h5.create_dataset("features", shape=(n_tiles, dim), dtype=dtype, chunks=chunk)

    def write(self, start: int, block: np.ndarray) -> None:
        self.features[start : start + len(block)] = block

    def finish(
        self, coords: CoordsFile, attrs: dict[str, Any], failed_tiles: np.ndarray, also_pt: Path | None = None
    ) -> None:
        import os

        dset = self.h5.create_dataset("coords", data=coords.coords.astype(np.int64))
        for key, value in coords.attrs.items():
            dset.attrs[key] = value
        self.h5.create_dataset("tissue_fraction", data=coords.tissue_fraction.astype(np.float32))
        self.h5.create_dataset("failed_tiles", data=np.asarray(failed_tiles, dtype=np.int64).reshape(-1))
        for key, value in {**attrs, "format_version": FORMAT_VERSION}.items():
            self.features.attrs[key] = FEATURE_ATTRS[key](value) if key in FEATURE_ATTRS else value
        self.h5.attrs["format_version"] = FORMAT_VERSION
        if also_pt is not None:
            import torch

            save_torch(torch.from_numpy(self.features[:].astype(np.float32)), also_pt)
        self.h5.close()
        self.guard.close()
        if self.guard.error is not None:
            self.tmp.unlink(missing_ok=True)
            raise_write_error(self.guard, self.path)
        os.replace(self.tmp, self.path)
        PENDING.discard(self.tmp)

    def abort(self) -> None:
        try:
            self.h5.close()
            self.guard.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            PENDING.discard(self.tmp)


@dataclass
class Bag:
    """A slide's tile features as training and prediction see them, whatever tool wrote the file."""

    slide_id: str
    features: np.ndarray
    coords: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])


def read_bag_attrs(path: Path) -> dict[str, Any]:
    """The `features` attributes of a bag (empty for CLAM/TRIDENT bags, which carry none of ours)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            if "features" not in h5:
                raise BagFormatError(f"{path}: no 'features' dataset; not a feature bag")
            return {k: _plain(v) for k, v in h5["features"].attrs.items()}
    except FileNotFoundError as exc:
        raise BagFormatError(f"{path}: bag not found; run `wsi-ncmi embed` for this slide first") from exc
    except OSError as exc:
        raise BagFormatError(f"{path}: not a readable HDF5 bag ({exc}); embed the slide again") from exc


def read_bag(path: Path, slide_id: str | None = None) -> Bag:
    """Read a bag written by this project, by CLAM (`h5_files/*.h5`) or by TRIDENT (`features_*/*.h5`).

    `metadata['source']` says which; ours and TRIDENT's coords attributes are kept in `metadata['coords_attrs']`.
    """
    import h5py

    path = Path(path)
    slide_id = slide_id or path.stem
    attrs = read_bag_attrs(path)
    with h5py.File(path, "r") as h5:
        features = np.asarray(h5["features"][:])
        if features.ndim == 3 and features.shape[0] == 1:
            features = features[0]
        if features.ndim != 2:
            raise BagFormatError(f"{path}: features have shape {features.shape}, expected (tiles, dim)")
        coords = np.asarray(h5["coords"][:]) if "coords" in h5 else np.zeros((len(features), 2), np.int64)
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
        coords_attrs = {k: _plain(v) for k, v in h5["coords"].attrs.items()} if "coords" in h5 else {}
        failed = np.asarray(h5["failed_tiles"][:]) if "failed_tiles" in h5 else np.zeros(0, np.int64)
    if len(coords) != len(features):
        raise BagFormatError(f"{path}: {len(features)} feature rows but {len(coords)} coords")
    if attrs.get("format_version") is not None:
        if attrs["format_version"] != FORMAT_VERSION:
            raise BagFormatError(
                f"{path}: bag format_version {attrs['format_version']!r}, this version reads "
                f"{FORMAT_VERSION}; embed the slide again with --overwrite"
            )
        source, encoder = "wsi-ncmi", attrs.get("encoder", "")
    elif path.parent.name.startswith("features_"):
        source, encoder = "trident", path.parent.name[len("features_") :]
    else:
        source, encoder = "clam", attrs.get("encoder", "")
    metadata = {**attrs, "source": source, "encoder": encoder, "coords_attrs": coords_attrs, "failed_tiles": failed}
    return Bag(slide_id, features.astype(np.float32, copy=False), coords.astype(np.int64), metadata)
