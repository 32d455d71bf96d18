"""MIL training throughput as users run it: bags/s of `train()` at bags_per_step 1 and 32; writes
results/mil_throughput.json (or --out).

`train()` (abmil, the default NCMI loss, AdamW, default settings otherwise) on synthetic bags held in memory,
epochs timed as train() records them in its history (training steps, the NCMI centroid pass and validation on one
small bag); the figure is training bags / median epoch seconds, the first epoch left out (warm-up, allocation).
`bags_per_step` goes to TrainConfig through its settings dictionary, as a config file gives it; where this tree's
TrainConfig does not know the setting, the bags_per_step 1 row runs without it (one bag per step is then the only
mode) and other rows are skipped with a note saying so.

    python benchmarks/mil_throughput.py                                   # CPU, small bags
    python benchmarks/mil_throughput.py --device cuda --bags 128 --tiles 4000 --features 1536 --out gpu/mil_throughput
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from common import write_result

from wsi_ncmi.mil.data import BagSet
from wsi_ncmi.mil.train import TrainConfig, train

CLASSES = 4


def make_bags(n: int, tiles: int, dim: int, seed: int) -> BagSet:
    """`n` bags of `tiles` x `dim` float32 features (class signal in a few tiles), in memory."""
    rng = np.random.default_rng(seed)
    ids = [f"b{seed}_{i}" for i in range(n)]
    labels = np.arange(n) % CLASSES
    directions = rng.normal(size=(CLASSES, dim)).astype(np.float32)
    cache = {}
    for slide_id, label in zip(ids, labels, strict=True):
        x = rng.normal(size=(tiles, dim)).astype(np.float32)
        x[: max(tiles // 50, 1)] += directions[label]
        cache[slide_id] = x
    return BagSet(ids, labels, [Path("-")] * n, dim, cache)


def settings(device: str, epochs: int, bags_per_step: int | None) -> tuple[TrainConfig | None, str | None]:
    """The run's TrainConfig, or None and the reason when this tree cannot run it."""
    values = {"model": "abmil", "epochs": epochs, "warmup_epochs": 0, "device": device, "cache_gb": 64.0}
    try:
        return TrainConfig.from_dict({**values, "bags_per_step": bags_per_step}), None
    except ValueError as exc:
        if "bags_per_step" not in str(exc):
            raise
    if bags_per_step == 1:
        return TrainConfig.from_dict(values), None
    return None, "skipped: this tree's TrainConfig has no bags_per_step setting (one bag per optimiser step only)"


def bags_per_second(bags: BagSet, val: BagSet, config: TrainConfig) -> dict:
    with tempfile.TemporaryDirectory() as run:
        result = train(bags, val, [str(c) for c in range(CLASSES)], config, Path(run), progress=False)
    seconds = [float(s) for s in result.history["seconds"]][1:]
    return {
        "bags_per_s": len(bags) / statistics.median(seconds),
        "epoch_seconds": seconds,
        "epochs_timed": len(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bags", type=int, default=64, help="training bags")
    parser.add_argument("--tiles", type=int, default=500, help="tiles per bag")
    parser.add_argument("--features", type=int, default=1024, help="feature dimension")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    parser.add_argument("--bags-per-step", default="1,32", help="comma-separated values to time")
    parser.add_argument("--full", action="store_true", help="256 bags of 2,000 tiles")
    parser.add_argument("--out", default="mil_throughput", help="result name under benchmarks/results/")
    args = parser.parse_args()
    n, tiles = (max(args.bags, 256), max(args.tiles, 2000)) if args.full else (args.bags, args.tiles)
    bags = make_bags(n, tiles, args.features, 0)
    val = make_bags(CLASSES, 16, args.features, 1)
    rows: dict[str, dict] = {}
    for value in (int(v) for v in args.bags_per_step.split(",")):
        config, note = settings(args.device, args.epochs, value)
        rows[f"bags_per_step_{value}"] = {"note": note} if config is None else bags_per_second(bags, val, config)
        figure = rows[f"bags_per_step_{value}"]
        print(f"mil throughput bags_per_step {value}: " + (note or f"{figure['bags_per_s']:.1f} bags/s"))
    payload = {
        "benchmark": "mil_throughput",
        "device": args.device,
        "model": "abmil",
        "loss": "ncmi",
        "bags": n,
        "tiles_per_bag": tiles,
        "feature_dim": args.features,
        "epochs": args.epochs,
        **rows,
    }
    print(f"wrote {write_result(args.out, payload)}")


if __name__ == "__main__":
    main()
