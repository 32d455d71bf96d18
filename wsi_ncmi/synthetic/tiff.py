"""Writing a synthetic slide as a tiled pyramidal JPEG TIFF or an Aperio-style SVS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.synthetic.render import render_region, render_tile
from wsi_ncmi.synthetic.spec import SlideSpec, TissueModel


def _levels(spec: SlideSpec, min_size: int = 512) -> list[int]:
    """Downsample factors of the pyramid: 1, 2, 4, ... while the level stays at least min_size px."""
    factors = [1]
    while min(spec.width, spec.height) // (factors[-1] * 2) >= min_size:
        factors.append(factors[-1] * 2)
    return factors


def _tiles(spec: SlideSpec, model: TissueModel, ds: int) -> Iterator[np.ndarray]:
    width, height = -(-spec.width // ds), -(-spec.height // ds)
    t = spec.tile_size
    for ty in range(0, height, t):
        for tx in range(0, width, t):
            yield render_tile(spec, model, ds, tx, ty, t, t)


def write_slide(
    spec: SlideSpec,
    path: Path,
    fmt: str = "tiff",
    pyramid: bool = True,
    tiled: bool = True,
    write_mpp: bool = True,
) -> Path:
    """Write the slide as a tiled pyramidal JPEG TIFF (fmt 'tiff', microns per pixel in the resolution tags) or an
    Aperio-style SVS (fmt 'svs', microns per pixel only in the ImageDescription).

    `pyramid=False` writes level 0 alone; `tiled=False` writes it in strips (no pyramid); `write_mpp=False` leaves
    the resolution out, as some scanners' exports do.
    """
    import tifffile

    if fmt not in ("tiff", "svs"):
        raise ValueError(f"unknown synthetic slide format {fmt!r}; use 'tiff' or 'svs'")
    model = TissueModel.from_spec(spec)
    factors = _levels(spec) if pyramid and tiled else [1]
    bigtiff = spec.width * spec.height * 3 > 2**31
    t = spec.tile_size
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for index, ds in enumerate(factors):
            width, height = -(-spec.width // ds), -(-spec.height // ds)
            mpp = spec.mpp * ds
            description = _aperio_description(spec, width, height, ds) if fmt == "svs" else None
            resolution = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
            layout = {"tile": (t, t)} if tiled else {"rowsperstrip": 64}
            tif.write(
                _tiles(spec, model, ds) if tiled else render_region(spec, ds),
                shape=(height, width, 3),
                dtype=np.uint8,
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": spec.jpeg_quality},
                subfiletype=0 if index == 0 or fmt == "svs" else 1,
                description=description,
                metadata=None,
                **layout,
                **(resolution if write_mpp and fmt == "tiff" else {}),
            )
            if fmt == "svs" and index == 0:
                thumb_ds = factors[-1] * 2
                thumb = render_region(spec, thumb_ds)
                tif.write(
                    thumb,
                    photometric="rgb",
                    description=_aperio_description(spec, *thumb.shape[1::-1], 0),
                    metadata=None,
                )
    return path


def _aperio_description(spec: SlideSpec, width: int, height: int, ds: int) -> str:
    magnification = 10.0 / spec.mpp
    head = f"Aperio Image Library v12.0.15\r\n{spec.width}x{spec.height} [0,0 {spec.width}x{spec.height}]"
    if ds == 0:
        return f"{head} -> {width}x{height} - |AppMag = {magnification:g}|MPP = {spec.mpp:g}"
    if ds == 1:
        return (
            f"{head} ({spec.tile_size}x{spec.tile_size}) JPEG/RGB Q={spec.jpeg_quality}|AppMag = "
            f"{magnification:g}|MPP = {spec.mpp:g}"
        )
    return f"{head} -> {width}x{height} JPEG/RGB Q={spec.jpeg_quality}"
