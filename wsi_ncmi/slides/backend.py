"""One small interface over OpenSlide and tiffslide, so the rest of the code never cares which one opened a slide."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
BACKENDS = ("auto", "openslide", "tiffslide")


class SlideError(Exception):
    """A slide cannot be opened or read; the message names the file and what to do."""


@dataclass
class Slide:
    """An open slide: pyramid geometry, metadata, and RGB region reads."""

    path: Path
    backend: str
    handle: Any = field(repr=False)

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
        return {str(k): str(v) for k, v in self.handle.properties.items()}

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
        if rgba.shape[2] == 4:
            rgb = np.ascontiguousarray(rgba[..., :3])
            rgb[rgba[..., 3] == 0] = 255
            return rgb
        return np.ascontiguousarray(rgba[..., :3])

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_openslide(path: Path) -> Any:
    import openslide

    return openslide.OpenSlide(str(path))


def _open_tiffslide(path: Path) -> Any:
    import tiffslide

    return tiffslide.TiffSlide(str(path))


def open_slide(path: Path | str, backend: str = "auto") -> Slide:
    """Open a slide with OpenSlide, tiffslide, or (auto) OpenSlide first and tiffslide when OpenSlide refuses it."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise SlideError(f"{path}: file not found; check the manifest's path column or the --slides folder")
    if not path.is_file():
        raise SlideError(f"{path}: not a file; give the path of the slide file itself")
    order = ["openslide", "tiffslide"] if backend == "auto" else [backend]
    errors = []
    for name in order:
        opener = _open_openslide if name == "openslide" else _open_tiffslide
        try:
            handle = opener(path)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}".strip())
            continue
        slide = Slide(path, name, handle)
        if slide.level_count < 1 or min(slide.dimensions) < 1:
            slide.close()
            errors.append(f"{name}: no image levels")
            continue
        return slide
    raise SlideError(
        f"{path}: not a readable slide ({'; '.join(errors)}); check the file is a whole-slide image "
        "that is fully copied"
    )
