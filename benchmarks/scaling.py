"""Scaling with slide size: tiling and embedding time and peak memory for four slides, area doubling each time.

Writes results/scaling.json with the fitted exponent b of time ~ area^b for each stage (goal: about 1.0 for
embedding, below 1 for tiling, which reads only a low-resolution level) and the peak RSS of a fresh process per
size (goal: flat). Each embed call has a fixed start-up (reader process, first batches); the intercept of a
straight line through time against tiles estimates it, and the exponent is also given for the time after it.

    python benchmarks/scaling.py                  # 5.7k x 4.2k ... 16k x 12k px at 0.25 um/px, median of 3
    python benchmarks/scaling.py --full           # 8k x 6k ... 22.6k x 17k px
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pandas as pd
from common import in_child, summary, write_result

from wsi_ncmi.synthetic import SlideSpec, write_slide
from wsi_ncmi.tiling.tile import TilingParams, tile_slides


def tile(slide: str, job: str) -> int:
    table = pd.DataFrame({"slide_id": [Path(slide).stem], "path": [slide], "mpp": [float("nan")]})
    return tile_slides(table, Path(job), TilingParams(), overwrite=True, progress=False)[0].n_tiles


def embed(slide_id: str, job: str) -> tuple[int, float]:
    """Embed one slide; returns (tiles, seconds), timed after torch and the encoder are loaded once (the fixed
    start-up cost a long batch pays once, not per slide)."""
    import time

    from wsi_ncmi.embedding.embed import EmbedSettings, embed_slides
    from wsi_ncmi.embedding.registry import get_encoder
    from wsi_ncmi.embedding.weights import load_encoder

    load_encoder(get_encoder("resnet18"), "random")
    settings = EmbedSettings(
        encoder="resnet18", weights="random", batch_size=32, workers=1, device="cpu", overwrite=True
    )
    start = time.perf_counter()
    tiles = embed_slides([(slide_id, None)], Path(job), settings, progress=False)[0].n_tiles
    return tiles, time.perf_counter() - start


def exponent(areas: list[float], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(area)."""
    return float(np.polyfit(np.log(areas), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="smallest slide WxH; each next one doubles the area")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per stage and size")
    parser.add_argument("--full", action="store_true", help="start from 8k x 6k px (up to 22.6k x 17k)")
    args = parser.parse_args()
    base = args.base or ("8000x6000" if args.full else "5657x4243")
    width, height = (int(v) for v in base.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(4):
            scale = math.sqrt(2**k)
            w, h = round(width * scale), round(height * scale)
            path = Path(tmp) / f"s{k}.tif"
            write_slide(SlideSpec(f"s{k}", w, h, 0.25, seed=9, tissue_fraction=0.6), path)
            job = Path(tmp) / f"job{k}"
            tile_runs = [in_child(tile, str(path), str(job)) for _ in range(args.repeats)]
            embed_runs = [in_child(embed, f"s{k}", str(job)) for _ in range(args.repeats)]
            tiles = tile_runs[0][0]
            row = {
                "size": f"{w}x{h}",
                "area_px": w * h,
                "tiles": tiles,
                "tile_seconds": summary([run[1] for run in tile_runs]),
                "tile_peak_rss_mib": max(run[2] for run in tile_runs),
                "embed_seconds": summary([run[0][1] for run in embed_runs]),
                "embed_peak_rss_mib": max(run[2] for run in embed_runs),
            }
            rows.append(row)
            print(
                f"scaling {w}x{h}: {tiles} tiles, tile {row['tile_seconds']['median']:.2f} s "
                f"({row['tile_peak_rss_mib']:.0f} MiB), embed {row['embed_seconds']['median']:.1f} s "
                f"({row['embed_peak_rss_mib']:.0f} MiB), median of {args.repeats}"
            )
    areas = [r["area_px"] for r in rows]
    embed_seconds = [r["embed_seconds"]["median"] for r in rows]
    per_tile, startup = (float(v) for v in np.polyfit([r["tiles"] for r in rows], embed_seconds, 1))
    figures = {
        "sizes": rows,
        "tiling_time_exponent": exponent(areas, [r["tile_seconds"]["median"] for r in rows]),
        "embedding_time_exponent": exponent(areas, embed_seconds),
        "embedding_startup_seconds": startup,
        "embedding_seconds_per_tile": per_tile,
        "embedding_time_exponent_after_startup": exponent(areas, [max(t - startup, 1e-9) for t in embed_seconds]),
        "tiling_rss_growth": rows[-1]["tile_peak_rss_mib"] / rows[0]["tile_peak_rss_mib"],
        "embedding_rss_growth": rows[-1]["embed_peak_rss_mib"] / rows[0]["embed_peak_rss_mib"],
    }
    print(
        f"scaling exponents: tiling {figures['tiling_time_exponent']:.2f}, embedding "
        f"{figures['embedding_time_exponent']:.2f} ({figures['embedding_time_exponent_after_startup']:.2f} after a "
        f"{startup:.1f} s start-up); RSS growth x{figures['tiling_rss_growth']:.2f} / "
        f"x{figures['embedding_rss_growth']:.2f} over an 8x area"
    )
    print(f"wrote {write_result('scaling', {'benchmark': 'scaling', **figures})}")


if __name__ == "__main__":
    main()
