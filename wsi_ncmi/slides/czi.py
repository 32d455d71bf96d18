"""Zeiss CZI through pylibCZIrw (the `czi` extra): brightfield RGB mosaics, with or without a pyramid.

The slide's level 0 is the bounding rectangle of its level-0 sub-blocks (CZI coordinates may start anywhere;
they are shifted so the slide starts at (0, 0)). Lower levels are whole-factor reductions (2, 4, 8, ...) read
with libCZI's scaling accessor where the file stores a pyramid; without one, level 0 is read and box-averaged
here, because libCZI would subsample it (aliasing fine texture, so blur would look sharp).
Areas without data read as white. The pixel size comes from the scaling metadata
(`Scaling/Items/Distance[@Id=X|Y]/Value`, metres), exposed as `czi.Scaling.X`/`czi.Scaling.Y`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.slides.formats import missing_extra

MIN_LEVEL_SIDE = 256
"""The smallest level kept in the whole-factor pyramid: halving stops before a side drops below it."""
RGB_TYPES = ("Bgr24", "Bgr48")
WHITE = (1.0, 1.0, 1.0)


def _scaling(metadata: dict[str, Any]) -> dict[str, str]:
    """`czi.Scaling.X`/`Y` (metres, as stored) from the parsed metadata document; {} when absent."""
    try:
        items = metadata["ImageDocument"]["Metadata"]["Scaling"]["Items"]["Distance"]
    except (KeyError, TypeError):
        return {}
    items = items if isinstance(items, list) else [items]
    found = {}
    for item in items:
        if isinstance(item, dict) and item.get("@Id") in ("X", "Y") and item.get("Value") is not None:
            found[f"czi.Scaling.{item['@Id']}"] = str(item["Value"])
    return found


def _magnification(metadata: dict[str, Any]) -> dict[str, str]:
    """`czi.NominalMagnification` of the first objective in the instrument metadata; {} when absent."""
    try:
        objectives = metadata["ImageDocument"]["Metadata"]["Information"]["Instrument"]["Objectives"]["Objective"]
    except (KeyError, TypeError):
        return {}
    first = objectives[0] if isinstance(objectives, list) else objectives
    value = first.get("NominalMagnification") if isinstance(first, dict) else None
    return {} if value is None else {"czi.NominalMagnification": str(value)}


def _has_pyramid(reader: Any) -> bool:
    """Whether the file stores reduced sub-blocks (a zoom below 1); without them libCZI subsamples level 0."""
    found: list[bool] = []

    def visit(_index: int, info: Any) -> bool:
        if info.get_zoom() < 0.99:
            found.append(True)
            return False
        return True

    reader.enumerate_subblocks(visit)
    return bool(found)


def _block_mean(pixels: np.ndarray, factor: int, size: tuple[int, int]) -> np.ndarray:
    """`pixels` reduced by `factor` with box averaging (h, w, 3): subsampling would alias fine texture, which the
    blur check and tissue detection at coarse levels must not see as detail."""
    h, w = size
    padded = np.full((h * factor, w * factor, pixels.shape[2]), 255, dtype=np.uint8)
    rows, cols = min(padded.shape[0], pixels.shape[0]), min(padded.shape[1], pixels.shape[1])
    padded[:rows, :cols] = pixels[:rows, :cols]
    blocks = padded.reshape(h, factor, w, factor, -1).mean(axis=(1, 3), dtype=np.float32)
    return np.rint(blocks).astype(np.uint8)


class CziSlide:
    """An open CZI with the slide-library interface the rest of the code uses (dimensions, levels, properties,
    read_region returning RGB arrays)."""

    def __init__(self, path: Path | str):
        try:
            from pylibCZIrw import czi as pyczi
        except ImportError as exc:
            raise missing_extra("czi", "reading CZI slides", exc) from exc
        self._reader = pyczi.CziReader(str(path))
        try:
            kinds = self._reader.pixel_types
            if len(kinds) != 1 or kinds.get(0) not in RGB_TYPES:
                shown = ", ".join(f"channel {c}: {kind}" for c, kind in sorted(kinds.items()))
                raise ValueError(
                    f"not a brightfield RGB CZI ({shown}); only Bgr24/Bgr48 single-channel slides are read"
                )
            box = self._reader.total_bounding_rectangle_no_pyramid
            self._origin = (int(box.x), int(box.y))
            width, height = int(box.w), int(box.h)
            if width < 1 or height < 1:
                raise ValueError("no image data")
            metadata = self._reader.metadata
            self.stored_pyramid = _has_pyramid(self._reader)
        except Exception:
            self._reader.close()
            raise
        self.level_downsamples = [1.0]
        while min(width, height) // int(self.level_downsamples[-1] * 2) >= MIN_LEVEL_SIDE:
            self.level_downsamples.append(self.level_downsamples[-1] * 2)
        self.level_dimensions = [(width // int(d), height // int(d)) for d in self.level_downsamples]
        self.dimensions = self.level_dimensions[0]
        self.level_count = len(self.level_dimensions)
        self.properties = {"czi.pixel-type": kinds[0], **_scaling(metadata), **_magnification(metadata)}
        self.associated_images: dict[str, Any] = {}

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int], as_array: bool = True
    ) -> np.ndarray:
        """RGB uint8 (h, w, 3) of `size` pixels at `level`, top-left at level-0 `location` (white where no data)."""
        x, y = location
        w, h = size
        factor = int(self.level_downsamples[level])
        roi = (self._origin[0] + x, self._origin[1] + y, w * factor, h * factor)
        if factor > 1 and not self.stored_pyramid:
            bgr = _block_mean(
                self._reader.read(roi=roi, pixel_type="Bgr24", background_pixel=WHITE), factor, (h, w)
            )
        else:
            zoom = 1.0 / factor if factor > 1 else None
            bgr = self._reader.read(roi=roi, zoom=zoom, pixel_type="Bgr24", background_pixel=WHITE)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        rows, cols = min(h, bgr.shape[0]), min(w, bgr.shape[1])
        out[:rows, :cols] = bgr[:rows, :cols, ::-1]
        return out

    def close(self) -> None:
        self._reader.close()
