"""Tile reading on CPU: direct JPEG-tile reads against the slide library, and reader processes; writes
results/decode.json.

Figures: tiles/s of one process reading 256-px tiles of a synthetic 0.25 um/px slide (tiled JPEG TIFF, 256-px
tiles): straight from the JPEG tiles (wsi_ncmi.slides.direct), through OpenSlide and tiffslide read_region at the
same aligned places, and through OpenSlide half a tile off the TIFF's grid (what unaligned grids cost). Then
tiles/s of the embedding's reader (TileDataset in a DataLoader, resized to 224 px, no model) on a tiled job
(0.5 um/px, 256 px: level 1, aligned) with 1, 2 and 4 reader processes and `--workers auto`, with the direct path
on and off. Also tiles/s of torchvision.io.decode_jpeg on whole JPEG streams of the same tiles in batches of 256,
on --device (nvJPEG on CUDA; libjpeg on the CPU), bytes already read. Interleaved repeats; medians.

    python benchmarks/decode.py
    python benchmarks/decode.py --device cuda    # the whole-stream batch decode on the GPU (nvJPEG)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import torch
from common import summary, write_result
from embedding import make_job, read_alone

from wsi_ncmi.core.cores import auto_workers, cpu_cores
from wsi_ncmi.embedding.embed import EmbedSettings
from wsi_ncmi.formats.bags import read_coords
from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.slides.direct import SWITCH, decode_on_device, direct_reader, read_direct, reader_for


def single_process(slide_path: Path, tiles: int, repeats: int, device: str) -> dict:
    """Tiles/s of each way of reading `tiles` aligned 256-px tiles of level 0 in this process."""
    with open_slide(slide_path, "openslide") as probe:
        width, height = probe.dimensions
    rng = np.random.default_rng(0)
    grid = [(x, y) for y in range(0, height - 256, 256) for x in range(0, width - 256, 256)]
    places = [grid[i] for i in rng.choice(len(grid), size=min(tiles, len(grid)), replace=False)]
    slides = {name: open_slide(slide_path, name) for name in ("openslide", "tiffslide")}
    ways = {
        "direct": lambda x, y: read_direct(slides["openslide"], (x, y), 0, 256),
        "openslide": lambda x, y: slides["openslide"].read_region((x, y), 0, (256, 256)),
        "tiffslide": lambda x, y: slides["tiffslide"].read_region((x, y), 0, (256, 256)),
        "openslide_unaligned": lambda x, y: slides["openslide"].read_region((x + 128, y + 128), 0, (256, 256)),
    }
    reader = reader_for(slides["openslide"], 0, 256)
    streams = [reader.stream(x, y) for x, y in places]
    target = torch.device(device)
    batch_key = f"torchvision_decode_only_{target.type}_batch256"

    def batch_decode() -> None:
        for start in range(0, len(streams), 256):
            decode_on_device(streams[start : start + 256], target)
        if target.type == "cuda":
            torch.cuda.synchronize()

    batch_decode()
    seconds: dict[str, list[float]] = {name: [] for name in [*ways, batch_key]}
    for _ in range(repeats):
        for name, read in ways.items():
            start = time.perf_counter()
            for x, y in places:
                read(x, y)
            seconds[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        batch_decode()
        seconds[batch_key].append(time.perf_counter() - start)
    for slide in slides.values():
        slide.close()
    rates = {name: len(places) / summary(s)["median"] for name, s in seconds.items()}
    return {
        "tiles": len(places),
        "tiles_per_s": rates,
        "direct_over_openslide": rates["direct"] / rates["openslide"],
        "direct_over_tiffslide": rates["direct"] / rates["tiffslide"],
    }


def readers(job: Path, slide_id: str, repeats: int, counts: list[int]) -> dict:
    """Tiles/s of the embedding's DataLoader reading (no model) by reader processes, direct path on and off."""
    n = len(read_coords(job / "tiles" / f"{slide_id}.h5").coords)
    seconds: dict[str, list[float]] = {}
    for _ in range(repeats):
        for path in ("direct", "library"):
            os.environ[SWITCH] = "1" if path == "direct" else "0"
            for workers in counts:
                direct_reader.cache_clear()
                settings = EmbedSettings(encoder="resnet18", batch_size=32, workers=workers, device="cpu")
                seconds.setdefault(f"{path}_{workers}", []).append(read_alone(job, slide_id, settings))
    os.environ.pop(SWITCH, None)
    return {"tiles": n, "tiles_per_s": {key: n / summary(s)["median"] for key, s in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiles", type=int, default=400, help="tiles read in the single-process comparison")
    parser.add_argument("--size", default="16384x12288", help="slide size WxH (px at 0.25 um/px)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to add GPU JPEG decoding")
    parser.add_argument("--out", default="decode")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    auto = auto_workers(args.device)
    counts = sorted({1, 2, 4, auto})
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        job, slide_id = make_job(Path(tmp), width, height)
        slide_path = Path(read_coords(job / "tiles" / f"{slide_id}.h5").attrs["slide_path"])
        single = single_process(slide_path, args.tiles, args.repeats, args.device)
        loader = readers(job, slide_id, args.repeats, counts)
    load.append(os.getloadavg()[0])
    figures = {
        "slide_px": [width, height],
        "cpu_cores": cpu_cores(),
        "auto_workers": auto,
        "load_average_1min_before_after": load,
        "single_process": single,
        "reader_processes": loader,
    }
    for name, rate in single["tiles_per_s"].items():
        print(f"decode one process, {name}: {rate:.0f} tiles/s")
    for name, rate in loader["tiles_per_s"].items():
        print(f"decode reader processes, {name}: {rate:.0f} tiles/s")
    print(f"wrote {write_result(args.out, {'benchmark': 'decode', **figures})}")


if __name__ == "__main__":
    main()
