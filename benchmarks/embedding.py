"""Embedding throughput and memory on a synthetic slide; writes benchmarks/results/embedding.json.

Figures: tiles/s of the whole embed pipeline (read, decode, resize, normalise, model, write) for each --decode
path (cpu: reader processes decode; device: they pass on JPEG streams and the main process decodes and resizes
on the device); tiles/s of the model alone on tensors already in memory (same batch size); tiles/s of reading
and decoding alone (the DataLoader without a model, each path). The ratio pipeline / model-alone shows how well
I/O hides behind compute (goal >= 0.85). Against the physical ceiling: FLOPs per tile (torch's FLOP counter on
one tile through the encoder, built on the meta device) and the tiles/s an assumed peak would give at full use
(`--peak-tflops`; on CUDA 989 by default, dense bf16 of an H100/H200-class GPU); model-alone and pipeline over that
ceiling. Peak RSS of a fresh process embedding a slide (the first path), for two slide sizes, shows memory is flat
in the number of tiles. Slides are written once into benchmarks/results/tmp/embed-slides/ and reused.

    python benchmarks/embedding.py                                  # resnet18, CPU, fp32
    python benchmarks/embedding.py --encoder resnet50_trunc --device cuda --precision bf16 --batch-size 256 \
        --workers auto --decode cpu,device
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pandas as pd
import torch
from common import RESULTS, in_child, summary, write_result
from torch.utils.data import DataLoader

from wsi_ncmi.core.cores import parse_workers
from wsi_ncmi.core.device import resolve_device
from wsi_ncmi.embedding.embed import (
    Embedder,
    EmbedSettings,
    SlideWork,
    TileDataset,
    embed_slides,
    resolve_decode,
    resolve_precision,
    slide_batches,
)
from wsi_ncmi.embedding.registry import get_encoder
from wsi_ncmi.embedding.weights import load_encoder
from wsi_ncmi.formats.bags import read_coords
from wsi_ncmi.synthetic import SlideSpec, write_slide
from wsi_ncmi.tiling.tile import TilingParams, tile_slides

DEFAULT_PEAK_TFLOPS = 989.0
"""Dense bf16 peak of an H100/H200-class GPU (SXM), the ceiling assumed on CUDA unless --peak-tflops says another."""


def make_job(tmp: Path, width: int, height: int) -> tuple[Path, str]:
    slide = RESULTS / "tmp" / "embed-slides" / f"s{width}x{height}.tif"
    if not slide.exists():
        slide.parent.mkdir(parents=True, exist_ok=True)
        write_slide(SlideSpec(slide.stem, width, height, 0.25, seed=3, tissue_fraction=0.7), slide)
    job = tmp / f"job{width}"
    table = pd.DataFrame({"slide_id": [slide.stem], "path": [str(slide)], "mpp": [float("nan")]})
    tile_slides(table, job, TilingParams(), progress=False)
    return job, slide.stem


def pipeline(job: str, slide_id: str, settings: EmbedSettings) -> float:
    start = time.perf_counter()
    rows = embed_slides([(slide_id, None)], Path(job), settings, progress=False)
    if rows[0].failed:
        raise RuntimeError(rows[0].error)
    return time.perf_counter() - start


def model_alone(settings: EmbedSettings, n_tiles: int) -> float:
    spec = get_encoder(settings.encoder)
    device = resolve_device(settings.device)
    model, _ = load_encoder(spec, settings.weights)
    embedder = Embedder(model, spec, device, resolve_precision(settings.precision, device, spec))
    batch = torch.randint(0, 255, (settings.batch_size, 3, spec.input_size, spec.input_size), dtype=torch.uint8)
    embedder(batch[:2])
    start = time.perf_counter()
    done = 0
    while done < n_tiles:
        embedder(batch[: min(settings.batch_size, n_tiles - done)])
        done += settings.batch_size
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def flops_per_tile(name: str) -> int:
    """FLOPs of one tile through the encoder (multiply-adds count two), counted on the meta device: no weights, no
    arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_encoder(name)
    with torch.device("meta"):
        model = spec.build().eval()
    tile = torch.empty(1, 3, spec.input_size, spec.input_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(tile)
    return int(counter.get_total_flops())


def read_alone(job: Path, slide_id: str, settings: EmbedSettings) -> float:
    """Seconds to read and decode every tile into the encoder's uint8 inputs, on the device for decode device."""
    coords = read_coords(job / "tiles" / f"{slide_id}.h5")
    work = [SlideWork(slide_id, str(coords.attrs["slide_path"]), {settings.encoder: Path("unused")}, coords)]
    device = resolve_device(settings.device)
    work[0].decode = resolve_decode(settings, device)
    dataset = TileDataset(work, [get_encoder(settings.encoder).preprocess], settings.backend)
    loader = DataLoader(dataset, batch_sampler=slide_batches(work, settings.batch_size), num_workers=settings.workers)
    start = time.perf_counter()
    for payload, _, tile_index, _ in loader:
        if work[0].decode == "device":
            dataset.device_inputs(payload, 0, tile_index.tolist(), device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="1", help="reader processes, or auto (as embed --workers auto)")
    parser.add_argument("--size", default=None, help="slide size WxH (px at 0.25 um/px) [16384x12288]")
    parser.add_argument("--full", action="store_true", help="a 32768 x 24576 px slide")
    parser.add_argument("--decode", default="auto", help="comma-separated decode paths to time: auto, cpu, device")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="embedding", help="result name under benchmarks/results/")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help=f"assumed peak for the ceiling [CUDA: {DEFAULT_PEAK_TFLOPS}]"
    )
    args = parser.parse_args()
    peak = args.peak_tflops or (DEFAULT_PEAK_TFLOPS if resolve_device(args.device).type == "cuda" else None)
    flops = flops_per_tile(args.encoder)
    ceiling = peak * 1e12 / flops if peak else None
    size = args.size or ("32768x24576" if args.full else "16384x12288")
    width, height = (int(v) for v in size.split("x"))
    settings = EmbedSettings(
        encoder=args.encoder,
        weights="random",
        batch_size=args.batch_size,
        workers=parse_workers(args.workers, args.device),
        device=args.device,
        precision=args.precision,
        overwrite=True,
    )
    paths = {d: replace(settings, decode=d) for d in dict.fromkeys(args.decode.split(","))}
    with tempfile.TemporaryDirectory() as tmp:
        job, slide_id = make_job(Path(tmp), width, height)
        small_job, small_id = make_job(Path(tmp), width // 2, height // 2)
        n = len(read_coords(job / "tiles" / f"{slide_id}.h5").coords)
        n_small = len(read_coords(small_job / "tiles" / f"{small_id}.h5").coords)
        pipe: dict[str, list[float]] = {d: [] for d in paths}
        read: dict[str, list[float]] = {d: [] for d in paths}
        model = []
        for _ in range(args.repeats):
            for d, path_settings in paths.items():
                pipe[d].append(pipeline(str(job), slide_id, path_settings))
                read[d].append(read_alone(job, slide_id, path_settings))
            model.append(model_alone(settings, n))
        first = next(iter(paths))
        _, _, rss_large = in_child(pipeline, str(job), slide_id, paths[first])
        _, _, rss_small = in_child(pipeline, str(small_job), small_id, paths[first])
    figures = {
        "encoder": args.encoder,
        "device": str(resolve_device(args.device)),
        "precision": resolve_precision(args.precision, resolve_device(args.device), get_encoder(args.encoder)),
        "batch_size": args.batch_size,
        "workers": settings.workers,
        "tiles": n,
        "decode": {d: resolve_decode(s, resolve_device(args.device)) for d, s in paths.items()},
        "pipeline_tiles_per_s": n / summary(pipe[first])["median"],
        "model_alone_tiles_per_s": n / summary(model)["median"],
        "read_decode_tiles_per_s": n / summary(read[first])["median"],
        "pipeline_over_model_alone": summary(model)["median"] / summary(pipe[first])["median"],
        "by_decode": {
            d: {
                "pipeline_tiles_per_s": n / summary(pipe[d])["median"],
                "read_decode_tiles_per_s": n / summary(read[d])["median"],
                "pipeline_over_model_alone": summary(model)["median"] / summary(pipe[d])["median"],
            }
            for d in paths
        },
        "seconds": {
            "model_alone": summary(model),
            **{f"pipeline_{d}": summary(pipe[d]) for d in paths},
            **{f"read_decode_{d}": summary(read[d]) for d in paths},
        },
        "peak_rss_mib": {f"{n_small} tiles": rss_small, f"{n} tiles": rss_large},
        "flops_per_tile": flops,
        "assumed_peak_tflops": peak,
        "ceiling_tiles_per_s": ceiling,
    }
    if ceiling:
        figures["model_alone_over_ceiling"] = figures["model_alone_tiles_per_s"] / ceiling
        for rates in figures["by_decode"].values():
            rates["pipeline_over_ceiling"] = rates["pipeline_tiles_per_s"] / ceiling
    print(
        f"embedding {args.encoder}: {flops / 1e9:.1f} GFLOP per tile; ceiling "
        + (f"{ceiling:.0f} tiles/s at an assumed {peak:g} TFLOPS" if ceiling else "not computed (no --peak-tflops)")
    )
    print(f"embedding model_alone_tiles_per_s: {figures['model_alone_tiles_per_s']:.2f}")
    for d, rates in figures["by_decode"].items():
        for key, value in rates.items():
            print(f"embedding decode {d} {key}: {value:.2f}")
    print(f"embedding peak RSS: {figures['peak_rss_mib']}")
    print(f"wrote {write_result(args.out, {'benchmark': 'embedding', **figures})}")


if __name__ == "__main__":
    main()
