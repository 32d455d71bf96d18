"""Tiling throughput and memory on synthetic slides of two sizes; writes benchmarks/results/tiling.json.

Figures: slides/s and tiles/s; peak RSS of a fresh process that tiles one slide; and the floor ratio, the
time of the whole per-slide tiling (open, resolve mpp, mask, grid, coords file, thumbnail) divided by the time
just to open the slide and read the mask level (goal <= 2.0). Times are CPU seconds of this process
(time.process_time; tiling is single-threaded), which a shared machine disturbs far less than wall clock.

    python benchmarks/tiling.py            # 10k x 8k and 20k x 15k px slides
    python benchmarks/tiling.py --full     # 10k x 8k and 40k x 30k px slides
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import in_child, summary, write_result

from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.slides.lowres import read_lowres
from wsi_ncmi.synthetic import Lesion, SlideSpec, write_slide
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_slide


def read_floor(path: str) -> None:
    with open_slide(path) as slide:
        read_lowres(slide, 0.25, TilingParams().tissue.mask_mpp)


def tile_once(path: str, job: str) -> int:
    row = tile_slide(TileTask("bench", path, job, TilingParams(), overwrite=True))
    if row.failed:
        raise RuntimeError(row.error)
    return row.n_tiles


def cpu_timed(func: Callable[[], object]) -> list[float]:
    """CPU seconds of one call (time.process_time)."""
    start = time.process_time()
    func()
    return [time.process_time() - start]


def measure(path: Path, job: Path, repeats: int) -> dict[str, object]:
    tile_once(str(path), str(job))
    floor, full = [], []
    for _ in range(repeats):
        floor += cpu_timed(lambda: read_floor(str(path)))
        full += cpu_timed(lambda: tile_once(str(path), str(job)))
    n_tiles, _, rss = in_child(tile_once, str(path), str(job))
    _, _, rss_floor = in_child(read_floor, str(path))
    median = summary(full)["median"]
    return {
        "tiles": n_tiles,
        "tiling_seconds": summary(full),
        "mask_read_seconds": summary(floor),
        "floor_ratio": median / summary(floor)["median"],
        "slides_per_s": 1.0 / median,
        "tiles_per_s": n_tiles / median,
        "peak_rss_mib": rss,
        "peak_rss_mask_read_only_mib": rss_floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="use a 40k x 30k px slide as the large size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = [(10_000, 8_000), (40_000, 30_000) if args.full else (20_000, 15_000)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in sizes:
            spec = SlideSpec(f"s{width}", width, height, 0.25, seed=1, lesions=(Lesion(2000, 2000, 800),))
            path = Path(tmp) / f"{spec.slide_id}.tif"
            write_slide(spec, path)
            job = Path(tmp) / "job"
            job.mkdir(exist_ok=True)
            figures = measure(path, job, args.repeats)
            results[f"{width}x{height}"] = figures
            print(
                f"tiling {width}x{height}: {figures['tiles']} tiles, {figures['slides_per_s']:.1f} slides/s, "
                f"{figures['tiles_per_s']:.0f} tiles/s, floor ratio {figures['floor_ratio']:.2f}, "
                f"peak RSS {figures['peak_rss_mib']:.0f} MiB "
                f"(mask read alone {figures['peak_rss_mask_read_only_mib']:.0f})"
            )
    out = write_result("tiling", {"benchmark": "tiling", "params": TilingParams().to_dict(), "sizes": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
