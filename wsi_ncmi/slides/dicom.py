"""DICOM WSI: a series of `.dcm` instances (one per pyramid level, plus label and overview) in one folder.

OpenSlide 4 reads it from any one file of the series (it finds the others beside it); wsidicom (the `dicom`
extra) is the fallback for series OpenSlide refuses. The pixel size is the level-0 instance's PixelSpacing (mm),
exposed under OpenSlide's property name by both. Tiles stored as baseline JPEG frames of a TILED_FULL instance
can be read straight from their bytes (see `frame_table`), as the TIFF family's JPEG tiles are.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.slides.formats import dicom_files, missing_extra

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SPACING = "dicom.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing"
ITEM, SEQUENCE_END = 0xE000, 0xE0DD


def series_files(path: Path | str) -> list[Path]:
    """The `.dcm` files of the slide a path names: every one in the folder, or in the folder of the one given."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return dicom_files(folder)


def entry_file(path: Path | str) -> Path:
    """The file to hand OpenSlide for a slide path: the `.dcm` given, or the first one in the folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    files = dicom_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: a folder without .dcm files; a DICOM slide is a folder of its .dcm series")
    return files[0]


def open_openslide(path: Path | str) -> Any:
    """An OpenSlide handle on the DICOM series the path names (OpenSlide finds the other instances itself)."""
    import openslide

    handle = openslide.OpenSlide(str(entry_file(path)))
    if handle.properties.get("openslide.vendor") != "dicom":
        handle.close()
        raise ValueError("OpenSlide did not read it as DICOM")
    return handle


class WsiDicomSlide:
    """A DICOM series opened with wsidicom, with the slide-library interface the rest of the code uses."""

    def __init__(self, path: Path | str):
        try:
            from wsidicom import WsiDicom
        except ImportError as exc:
            raise missing_extra("dicom", "the wsidicom fallback for DICOM slides", exc) from exc
        path = Path(path)
        self._wsi = WsiDicom.open(path if path.is_dir() else series_files(path))
        try:
            self._levels = list(self._wsi.levels)
            width, height = (int(v) for v in self._levels[0].size.to_tuple())
            self.level_dimensions = [tuple(int(v) for v in level.size.to_tuple()) for level in self._levels]
            self.level_downsamples = [(width / w + height / h) / 2 for w, h in self.level_dimensions]
            self.dimensions = (width, height)
            self.level_count = len(self._levels)
            spacing = self._levels[0].pixel_spacing
        except Exception:
            self._wsi.close()
            raise
        self.properties = {"wsidicom.level-count": str(self.level_count)}
        if spacing is not None:
            self.properties[f"{SPACING}[0]"] = str(spacing.height)
            self.properties[f"{SPACING}[1]"] = str(spacing.width)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int], as_array: bool = True
    ) -> np.ndarray:
        """RGB uint8 (h, w, 3) of `size` pixels at `level`, top-left at level-0 `location`; white beyond the image
        (wsidicom reads only inside it)."""
        w, h = size
        scale = self.level_downsamples[level]
        x0, y0 = int(location[0] / scale), int(location[1] / scale)
        level_w, level_h = self.level_dimensions[level]
        left, top = max(0, x0), max(0, y0)
        right, bottom = min(level_w, x0 + w), min(level_h, y0 + h)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        if right > left and bottom > top:
            region = self._wsi.read_region((left, top), self._levels[level].level, (right - left, bottom - top))
            out[top - y0 : bottom - y0, left - x0 : right - x0] = np.asarray(region.convert("RGB"))
        return out

    @property
    def associated_images(self) -> dict[str, Any]:
        """The label and the overview (as `macro`), those present, as PIL images."""
        images = {}
        for name, read in (("label", self._wsi.read_label), ("macro", self._wsi.read_overview)):
            try:
                images[name] = read()
            except Exception:
                continue
        return images

    def close(self) -> None:
        self._wsi.close()


@dataclass(frozen=True)
class FrameTable:
    """Where each JPEG frame of one TILED_FULL instance lies in its file, and the level geometry."""

    path: str
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray
    counts: np.ndarray


def _fragments(handle: Any) -> list[tuple[int, int]]:
    """(offset, length) of each fragment of encapsulated pixel data, the file positioned at its PixelData tag; the
    Basic Offset Table (the first item) is skipped."""
    head = handle.read(12)
    group, element, _, length = struct.unpack("<HH4sI", head)
    if (group, element) != (0x7FE0, 0x0010) or length != 0xFFFFFFFF:
        return []
    items = []
    while True:
        tag = handle.read(8)
        if len(tag) < 8:
            return []
        group, element, length = struct.unpack("<HHI", tag)
        if group != 0xFFFE or element == SEQUENCE_END:
            break
        if element != ITEM:
            return []
        items.append((handle.tell(), length))
        handle.seek(length, 1)
    return items[1:]


def frame_table(path: str, width: int, height: int) -> FrameTable | None:
    """The frame table of the series' volume instance of `width` x `height` pixels when its tiles are baseline
    JPEG (YCbCr, 8-bit, 3 samples), TILED_FULL in one focal plane and optical path, one fragment per frame;
    None otherwise or when pydicom (the `dicom` extra) is not installed."""
    try:
        import pydicom
    except ImportError:
        return None
    for file in series_files(path):
        try:
            with open(file, "rb") as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
                if (
                    "VOLUME" not in list(ds.get("ImageType", []))[2:3]
                    or int(ds.get("TotalPixelMatrixColumns", 0)) != width
                    or int(ds.get("TotalPixelMatrixRows", 0)) != height
                ):
                    continue
                usable = (
                    str(ds.file_meta.TransferSyntaxUID) == JPEG_BASELINE
                    and ds.get("DimensionOrganizationType", "") == "TILED_FULL"
                    and int(ds.get("TotalPixelMatrixFocalPlanes", 1)) == 1
                    and int(ds.get("NumberOfOpticalPaths", 1)) == 1
                    and "ConcatenationUID" not in ds
                    and int(ds.SamplesPerPixel) == 3
                    and int(ds.BitsAllocated) == 8
                    and ds.PhotometricInterpretation in ("YBR_FULL_422", "YBR_FULL")
                )
                if not usable:
                    return None
                tile_w, tile_h = int(ds.Columns), int(ds.Rows)
                frames = _fragments(handle)
        except Exception:
            return None
        expected = -(-width // tile_w) * -(-height // tile_h)
        if len(frames) != expected or int(ds.get("NumberOfFrames", 1)) != expected:
            return None
        offsets, counts = (np.asarray(v, dtype=np.int64) for v in zip(*frames, strict=True))
        return FrameTable(str(file), width, height, tile_w, tile_h, offsets, counts)
    return None


def decode_frame(data: bytes, index: int, jpegtables: bytes | None = None) -> tuple[np.ndarray, None, None]:
    """One JPEG frame decoded to RGB (the signature of tifffile's page.decode, which the direct reader calls)."""
    import imagecodecs

    return imagecodecs.jpeg8_decode(data), None, None


def read_whole_level(path: str, width: int, height: int) -> np.ndarray | None:
    """The whole volume level of `width` x `height` px as RGB, decoded frame by frame from its JPEG frames (as
    OpenSlide decodes them, without composing regions); None when its frames cannot be read directly."""
    table = frame_table(path, width, height)
    if table is None:
        return None
    across = -(-width // table.tile_width)
    th, tw = table.tile_height, table.tile_width
    image = np.empty((-(-height // th) * th, across * tw, 3), dtype=np.uint8)
    with open(table.path, "rb") as handle:
        for index, (offset, count) in enumerate(zip(table.offsets, table.counts, strict=True)):
            handle.seek(int(offset))
            frame = decode_frame(handle.read(int(count)), index)[0]
            if frame.shape != (th, tw, 3):
                return None
            row, col = divmod(index, across)
            image[row * th : (row + 1) * th, col * tw : (col + 1) * tw] = frame
    return np.ascontiguousarray(image[:height, :width])
