"""One small interface over the slide readers (OpenSlide, tiffslide, wsidicom, pylibCZIrw), so the rest of the code
never cares which one opened a slide, or which format it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.slides.formats import CZI_EXTENSION, TIFF_EXTENSIONS, MissingExtraError, slide_format

SLIDE_EXTENSIONS = (*TIFF_EXTENSIONS, CZI_EXTENSION)
"""Suffixes of slide files; a DICOM slide is a folder of `.dcm` files (see wsi_ncmi.slides.formats)."""
BACKENDS = ("auto", "openslide", "tiffslide", "wsidicom", "pylibczirw")
AUTO_ORDER = {
    "tiff": ("openslide", "tiffslide"),
    "ome-tiff": ("tiffslide",),
    "dicom": ("openslide", "wsidicom"),
    "czi": ("pylibczirw",),
}
"""The readers `auto` tries per format, in order (OpenSlide sees only the first level of an OME-TIFF)."""
ASSOCIATED_IMAGES = ("label", "macro")
"""The associated images kept beside thumbnails: the slide label and the macro (overview) photograph."""


class SlideError(WsiNcmiError):
    """A slide cannot be opened or read; the message names the file and what to do."""


@dataclass
class Slide:
    """An open slide: pyramid geometry, metadata, and RGB region reads."""

    path: Path
    backend: str
    handle: Any = field(repr=False)
    format: str = "tiff"
    extra_properties: dict[str, str] = field(default_factory=dict, repr=False)
    """Metadata the reader does not expose itself (an OME-TIFF's OME-XML pixel size), merged into `properties`."""
    _tiff: Any = field(default=None, init=False, repr=False)
    _tiff_tried: bool = field(default=False, init=False, repr=False)

    @property
    def dimensions(self) -> tuple[int, int]:
        return tuple(self.handle.dimensions)

    @property
    def level_count(self) -> int:
        return int(self.handle.level_count)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [tuple(int(v) for v in d) for d in self.handle.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self.handle.level_downsamples]

    @property
    def properties(self) -> dict[str, str]:
        return {**{str(k): str(v) for k, v in self.handle.properties.items()}, **self.extra_properties}

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array (h, w, 3) of `size` pixels at `level`, top-left at level-0 `location`.

        Areas outside the image read as white, as on a glass slide.
        """
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        try:
            if self.backend == "openslide":
                rgba = np.asarray(self.handle.read_region((x, y), level, (w, h)))
            else:
                rgba = np.asarray(self.handle.read_region((x, y), level, (w, h), as_array=True))
        except Exception as exc:
            raise SlideError(
                f"{self.path}: cannot read level {level} at ({x}, {y}) size {w}x{h} with {self.backend} "
                f"({type(exc).__name__}: {exc}); the file may be truncated or corrupt: copy it again"
            ) from exc
        if rgba.ndim == 2:
            rgba = np.repeat(rgba[..., None], 3, axis=2)
        rgb = np.ascontiguousarray(rgba[..., :3])
        if rgba.shape[2] == 4:
            rgb[rgba[..., 3] == 0] = 255
        if self.backend == "tiffslide":
            self._whiten_outside(rgb, x, y, level)
        return rgb

    def _whiten_outside(self, rgb: np.ndarray, x: int, y: int, level: int) -> None:
        """tiffslide pads reads beyond the image with black; make that area white (in place), as OpenSlide does."""
        level_w, level_h = self.level_dimensions[level]
        downsample = self.level_downsamples[level]
        x0, y0 = int(x / downsample), int(y / downsample)
        h, w = rgb.shape[:2]
        cols = np.arange(x0, x0 + w)
        rows = np.arange(y0, y0 + h)
        rgb[:, (cols < 0) | (cols >= level_w)] = 255
        rgb[(rows < 0) | (rows >= level_h)] = 255

    def read_level(self, level: int) -> np.ndarray | None:
        """The whole of `level` as RGB, decoded straight from the TIFF pyramid (several times faster than a region
        read of the same pixels), or from a DICOM level's JPEG frames; None when the file is neither a TIFF whose
        pyramid matches this slide's levels nor a DICOM level of JPEG frames."""
        if self.format == "dicom":
            from wsi_ncmi.slides.dicom import read_whole_level

            return read_whole_level(str(self.path), *self.level_dimensions[level])
        tiff = self._tiff_pyramid() if self.format in ("tiff", "ome-tiff") else None
        if tiff is None:
            return None
        pages = tiff.series[0].levels[level].pages
        if any(page is None or 0 in tuple(getattr(page, "dataoffsets", (0,))) for page in pages):
            return None
        try:
            image = tiff.series[0].levels[level].asarray()
        except Exception:
            return None
        w, h = self.level_dimensions[level]
        return image if image.shape == (h, w, 3) and image.dtype == np.uint8 else None

    def _tiff_pyramid(self) -> Any:
        """tifffile's view of the file when its first series has exactly this slide's levels, else None."""
        if not self._tiff_tried:
            self._tiff_tried = True
            self._tiff = _matching_tiff(self)
        return self._tiff

    def associated_images(self) -> dict[str, np.ndarray]:
        """The slide's label and macro images as RGB arrays, those present (an unreadable one is left out)."""
        try:
            available = self.handle.associated_images
            names = [name for name in ASSOCIATED_IMAGES if name in available]
        except Exception:
            return {}
        images = {}
        for name in names:
            try:
                images[name] = np.asarray(available[name].convert("RGB"))
            except Exception:
                continue
        return images

    def close(self) -> None:
        if self._tiff is not None and self.backend != "tiffslide":
            self._tiff.close()
        self.handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _matching_tiff(slide: Slide) -> Any:
    if slide.backend == "tiffslide":
        tiff = slide.handle.ts_tifffile
    else:
        import tifffile

        try:
            tiff = tifffile.TiffFile(slide.path)
        except Exception:
            return None
    try:
        levels = tiff.series[0].levels
        shapes = [tuple(level.shape) for level in levels[: slide.level_count]]
    except Exception:
        shapes = []
    if shapes == [(h, w, 3) for w, h in slide.level_dimensions]:
        return tiff
    if slide.backend != "tiffslide":
        tiff.close()
    return None


def _open_openslide(path: Path, fmt: str) -> Any:
    import openslide

    if fmt == "dicom":
        from wsi_ncmi.slides.dicom import open_openslide

        return open_openslide(path)
    return openslide.OpenSlide(str(path))


def _open_tiffslide(path: Path, fmt: str) -> Any:
    import tiffslide

    if fmt not in ("tiff", "ome-tiff"):
        raise ValueError(f"tiffslide does not read {fmt.upper()}")
    return tiffslide.TiffSlide(str(path))


def _open_wsidicom(path: Path, fmt: str) -> Any:
    if fmt != "dicom":
        raise ValueError(f"wsidicom reads DICOM only, not {fmt.upper()}")
    from wsi_ncmi.slides.dicom import WsiDicomSlide

    return WsiDicomSlide(path)


def _open_pylibczirw(path: Path, fmt: str) -> Any:
    if fmt != "czi":
        raise ValueError(f"pylibCZIrw reads CZI only, not {fmt.upper()}")
    from wsi_ncmi.slides.czi import CziSlide

    return CziSlide(path)


OPENERS = {
    "openslide": _open_openslide,
    "tiffslide": _open_tiffslide,
    "wsidicom": _open_wsidicom,
    "pylibczirw": _open_pylibczirw,
}


def _extra_properties(slide: Slide) -> dict[str, str]:
    """Metadata a reader leaves out: an OME-TIFF's OME-XML, read here when tiffslide opened it."""
    if slide.format != "ome-tiff" or slide.backend != "tiffslide":
        return {}
    from wsi_ncmi.slides.ome import tiff_ome_properties

    return tiff_ome_properties(slide.handle.ts_tifffile)


def open_slide(path: Path | str, backend: str = "auto") -> Slide:
    """Open a slide file (or a DICOM series folder) with the reader named, or (auto) the readers of its format in
    turn: OpenSlide then tiffslide for the TIFF family, tiffslide for OME-TIFF, OpenSlide then wsidicom for DICOM,
    pylibCZIrw for CZI."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise SlideError(f"{path}: file not found; check the manifest's path column or the --slides folder")
    fmt = slide_format(path)
    if path.is_dir() and not any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
        raise SlideError(f"{path}: a folder without .dcm files; give a slide file, or a folder of one DICOM series")
    if not path.is_dir() and not path.is_file():
        raise SlideError(f"{path}: not a file; give the path of the slide file itself")
    order = AUTO_ORDER[fmt] if backend == "auto" else (backend,)
    errors, missing = [], []
    for name in order:
        try:
            handle = OPENERS[name](path, fmt)
        except MissingExtraError as exc:
            missing.append(str(exc))
            continue
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}".strip())
            continue
        slide = Slide(path, name, handle, fmt)
        if slide.level_count < 1 or min(slide.dimensions) < 1:
            slide.close()
            errors.append(f"{name}: no image levels")
            continue
        slide.extra_properties = _extra_properties(slide)
        return slide
    if missing:
        tried = f"; {'; '.join(errors)}" if errors else ""
        raise SlideError(f"{path}: {missing[0]}{tried}")
    raise SlideError(
        f"{path}: not a readable slide ({'; '.join(errors)}); check the file is a whole-slide image "
        "that is fully copied"
    )
