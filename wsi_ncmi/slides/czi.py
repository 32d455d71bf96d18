"""Zeiss CZI through pylibCZIrw (the `czi` extra): brightfield RGB mosaics, with or without a pyramid.

The slide's level 0 is the bounding rectangle of its level-0 sub-blocks (CZI coordinates may start anywhere;
they are shifted so the slide starts at (0, 0)). Lower levels are whole-factor reductions (2, 4, 8, ...) read
with libCZI's scaling accessor, which uses the file's pyramid where it has one and subsamples level 0 where it
has not. Areas without data read as white. The pixel size comes from the scaling metadata
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
        zoom = 1.0 / factor if factor > 1 else None
        bgr = self._reader.read(roi=roi, zoom=zoom, pixel_type="Bgr24", background_pixel=WHITE)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        rows, cols = min(h, bgr.shape[0]), min(w, bgr.shape[1])
        out[:rows, :cols] = bgr[:rows, :cols, ::-1]
        return out

    def close(self) -> None:
        self._reader.close()
