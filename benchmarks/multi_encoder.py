"""Several encoders in one embed pass against one run per encoder; writes benchmarks/results/multi_encoder.json.

Both ways embed the same tiled synthetic slide with the same two random-initialised encoders (resnet18 and a tiny
ViT, each with its own input size and normalisation). Figures: tile reads per tile and per encoder (counted in a
pass with in-process reading), and wall time of each way, measured interleaved; the ratio separate / one pass is
what reading and decoding once saves, bounded by the read+decode time of one pass (also measured, without models).

    python benchmarks/multi_encoder.py                      # CPU, one torch thread, reads on the main process
    python benchmarks/multi_encoder.py --device cuda --workers 4 --size 32768x24576
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from common import summary, write_result
from embedding import make_job
from torch.utils.data import DataLoader

from wsi_ncmi.embedding.embed import (
    EmbedSettings,
    SlideWork,
    TileDataset,
    embed_encoders,
    embed_slides,
    slide_batches,
)
from wsi_ncmi.embedding.registry import get_encoder
from wsi_ncmi.formats.bags import read_coords

ENCODERS = ["resnet18", "timm:vit_tiny_patch16_224"]


def one_pass(job: Path, slide_id: str, settings: EmbedSettings) -> float:
    start = time.perf_counter()
    rows = embed_encoders([(slide_id, None)], job, settings, ENCODERS, progress=False)
    if any(r[0].failed for r in rows.values()):
        raise RuntimeError(str(rows))
    return time.perf_counter() - start


def separate(job: Path, slide_id: str, settings: EmbedSettings) -> float:
    start = time.perf_counter()
    for encoder in ENCODERS:
        row = embed_slides([(slide_id, None)], job, replace(settings, encoder=encoder), progress=False)[0]
        if row.failed:
            raise RuntimeError(row.error)
    return time.perf_counter() - start


def read_decode(job: Path, slide_id: str, settings: EmbedSettings) -> float:
    """Seconds to read, decode and preprocess every tile for both encoders, without models: what a second read
    of the slide costs at most."""
    coords = read_coords(job / "tiles" / f"{slide_id}.h5")
    work = [SlideWork(slide_id, str(coords.attrs["slide_path"]), {}, coords)]
    dataset = TileDataset(work, [get_encoder(e).preprocess for e in ENCODERS], settings.backend)
    loader = DataLoader(dataset, batch_sampler=slide_batches(work, settings.batch_size), num_workers=settings.workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def count_reads(func: object, job: Path, slide_id: str, settings: EmbedSettings) -> int:
    """Tile reads of one call of func, read in this process (workers 0) so they can be counted."""
    counter = [0]
    read = TileDataset.read

    def counting(self: TileDataset, *args: object, **kwargs: object) -> object:
        counter[0] += 1
        return read(self, *args, **kwargs)

    TileDataset.read = counting  # type: ignore[method-assign]
    try:
        func(job, slide_id, replace(settings, workers=0))  # type: ignore[operator]
    finally:
        TileDataset.read = read  # type: ignore[method-assign]
    return counter[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--size", default="8192x6144", help="slide size WxH (px at 0.25 um/px)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    settings = EmbedSettings(
        weights="random", batch_size=args.batch_size, workers=args.workers, device=args.device, overwrite=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        job, slide_id = make_job(Path(tmp), width, height)
        n = len(read_coords(job / "tiles" / f"{slide_id}.h5").coords)
        reads = {"one_pass": count_reads(one_pass, job, slide_id, settings)}
        reads["separate"] = count_reads(separate, job, slide_id, settings)
        together, apart, reading = [], [], []
        for _ in range(args.repeats):
            together.append(one_pass(job, slide_id, settings))
            apart.append(separate(job, slide_id, settings))
            reading.append(read_decode(job, slide_id, settings))
    figures = {
        "encoders": ENCODERS,
        "device": args.device,
        "workers": args.workers,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "tiles": n,
        "reads_per_tile": {way: count / n for way, count in reads.items()},
        "seconds": {"one_pass": summary(together), "separate": summary(apart), "read_decode": summary(reading)},
        "read_decode_share_of_one_pass": summary(reading)["median"] / summary(together)["median"],
        "separate_over_one_pass": summary(apart)["median"] / summary(together)["median"],
    }
    print(f"multi-encoder reads per tile: {figures['reads_per_tile']}")
    print(f"multi-encoder separate / one pass: {figures['separate_over_one_pass']:.2f}")
    print(f"wrote {write_result('multi_encoder', {'benchmark': 'multi_encoder', **figures})}")


if __name__ == "__main__":
    main()
