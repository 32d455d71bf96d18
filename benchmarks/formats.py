"""Reading each slide format: opening, 256-px tile reads and tiling one slide; writes results/formats.json.

One synthetic slide (4096 x 3072 px, 0.25 um/px, 256-px JPEG tiles, 3 levels) is written as the tiled TIFF and
again, by the writers of tests/test_formats.py, as a DICOM series (the TIFF's JPEG tiles as frames), an OME-TIFF
(the same tiles) and a CZI (the decoded level 0, no pyramid). Figures per format and reader: milliseconds to open
the slide, tiles/s of one process reading aligned 256-px tiles of level 0 (through the reader's read_region, and
straight from the JPEG tiles where the format has them), and seconds to tile the slide (mask, grid, QC, thumbnail;
0.5 um/px, 256 px). Interleaved repeats; medians.

    python benchmarks/formats.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import numpy as np
from common import summary, write_result
from test_formats import write_czi, write_dicom, write_ome

from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.slides.direct import dicom_reader, direct_reader, read_direct
from wsi_ncmi.synthetic import SlideSpec, write_slide
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_geometry

READERS = {
    "tiff": ["openslide", "tiffslide"],
    "dicom": ["openslide", "wsidicom"],
    "ome-tiff": ["tiffslide"],
    "czi": ["pylibczirw"],
}


def write_formats(folder: Path) -> dict[str, Path]:
    """The source TIFF and its copies in each format."""
    source = write_slide(SlideSpec("bench", 4096, 3072, 0.25, seed=3, tissue_fraction=0.5), folder / "bench.tif")
    return {
        "tiff": source,
        "dicom": write_dicom(source, folder / "bench_dicom"),
        "ome-tiff": write_ome(source, folder / "bench.ome.tif"),
        "czi": write_czi(source, folder / "bench.czi"),
    }


def measure(paths: dict[str, Path], tiles: int, repeats: int) -> dict:
    """Open time, tile reads per second and tiling time of every format and reader."""
    rng = np.random.default_rng(0)
    grid = [(x, y) for y in range(0, 3072 - 256, 256) for x in range(0, 4096 - 256, 256)]
    places = [grid[i] for i in rng.choice(len(grid), size=min(tiles, len(grid)), replace=False)]
    opened: dict[str, list[float]] = {}
    reads: dict[str, list[float]] = {}
    tiling: dict[str, list[float]] = {}
    for _ in range(repeats):
        for fmt, readers in READERS.items():
            for reader in readers:
                key = f"{fmt}/{reader}"
                start = time.perf_counter()
                slide = open_slide(paths[fmt], reader)
                opened.setdefault(key, []).append(time.perf_counter() - start)
                start = time.perf_counter()
                for x, y in places:
                    slide.read_region((x, y), 0, (256, 256))
                reads.setdefault(key, []).append(time.perf_counter() - start)
                if read_direct(slide, places[0], 0, 256) is not None:
                    start = time.perf_counter()
                    for x, y in places:
                        read_direct(slide, (x, y), 0, 256)
                    reads.setdefault(f"{fmt}/direct", []).append(time.perf_counter() - start)
                slide.close()
                direct_reader.cache_clear()
                dicom_reader.cache_clear()
            with tempfile.TemporaryDirectory() as job:
                task = TileTask(fmt, str(paths[fmt]), job, TilingParams(mpp=0.5, tile_size=256))
                start = time.perf_counter()
                result = tile_geometry(task)
                tiling.setdefault(fmt, []).append(time.perf_counter() - start)
                tiling.setdefault(f"{fmt}:tiles", []).append(float(len(result.coords)))
    return {
        "tiles_read": len(places),
        "open_ms": {key: 1000 * summary(s)["median"] for key, s in opened.items()},
        "tiles_per_s": {key: len(places) / summary(s)["median"] for key, s in reads.items()},
        "tile_slide_s": {key: summary(s)["median"] for key, s in tiling.items() if ":" not in key},
        "tiles_kept": {key.split(":")[0]: int(s[0]) for key, s in tiling.items() if ":" in key},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_formats(Path(folder))
        figures = measure(paths, args.tiles, args.repeats)
    write_result("formats", {"settings": vars(args), **figures})


if __name__ == "__main__":
    main()
