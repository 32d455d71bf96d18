"""Peak memory of tiling a single-level slide (no pyramid: the whole of level 0 is read in strips to make the tissue
mask and thumbnail) at two sizes; writes benchmarks/results/lowres_memory.json. Flat in slide size is the goal.

    python benchmarks/lowres_memory.py            # 10k x 7.5k and 20k x 15k px single-level slides
    python benchmarks/lowres_memory.py --full     # 20k x 15k and 40k x 30k px
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import in_child, write_result

from wsi_ncmi.synthetic import SlideSpec, write_slide
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_slide


def tile_once(path: str, job: str) -> int:
    row = tile_slide(TileTask("bench", path, job, TilingParams(), overwrite=True))
    if row.failed:
        raise RuntimeError(row.error)
    return row.n_tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="20k x 15k and 40k x 30k px instead")
    parser.add_argument("--slides-dir", type=Path, help="keep the written slides here and reuse them next time")
    args = parser.parse_args()
    sizes = [(20_000, 15_000), (40_000, 30_000)] if args.full else [(10_000, 7_500), (20_000, 15_000)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in sizes:
            path = (args.slides_dir or Path(tmp)) / f"flat{width}x{height}.tif"
            if not path.exists():
                write_slide(SlideSpec(f"flat{width}", width, height, 0.25, seed=1), path, pyramid=False)
            job = Path(tmp) / "job"
            job.mkdir(exist_ok=True)
            start = time.perf_counter()
            n_tiles, _, rss = in_child(tile_once, str(path), str(job))
            results[f"{width}x{height}"] = {
                "tiles": n_tiles,
                "peak_rss_mib": rss,
                "seconds": time.perf_counter() - start,
            }
            print(f"single-level {width}x{height}: {n_tiles} tiles, peak RSS {rss:.0f} MiB")
    out = write_result("lowres_memory", {"benchmark": "lowres_memory", "slides": "single-level", "sizes": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
