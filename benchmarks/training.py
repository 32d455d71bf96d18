"""Training cost: NCMI against CE, the centroid pass's share, and bags/s by bag size; writes results/training.json.

Figures: median step time (forward, loss, backward, AdamW step) of abmil with the NCMI head over the same with
the CE head on the same bags (goal <= 1.10: "comparable cost"); the share of an NCMI epoch spent in the no-grad
centroid pass; training and inference bags/s of abmil and transmil at several bag sizes; peak RSS.

    python benchmarks/training.py               # bag sizes 1k and 10k tiles, 1024-d features, CPU
    python benchmarks/training.py --full        # adds 50k-tile bags
    python benchmarks/training.py --device cuda --out gpu/training
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import torch
from common import summary, write_result

from wsi_ncmi.mil.data import BagSet
from wsi_ncmi.mil.heads import build_head
from wsi_ncmi.mil.models import build_model
from wsi_ncmi.mil.train import embed_bags


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(
    model_name: str, loss: str, bags: list[torch.Tensor], labels: list[int], device: torch.device, repeats: int
) -> list[float]:
    torch.manual_seed(0)
    model = build_model(model_name, bags[0].shape[1], dim=512).to(device)
    head = build_head(loss, 512, 4).to(device)
    if head.needs_epoch_pass:
        with torch.no_grad():
            h = torch.stack([model(b).h for b in bags])
        head.epoch_pass(h, torch.tensor(labels, device=device))
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for r in range(repeats + 1):
        for bag, label in zip(bags, labels, strict=True):
            synchronise(device)
            start = time.perf_counter()
            y = torch.tensor([label], device=device)
            with autocast:
                out = model(bag)
            value = model.combine_loss(head.loss(out.h.float()[None], y), out, y)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            head.after_step(out.h.detach().float()[None], y)
            synchronise(device)
            if r:
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=None, help="bag sizes in tiles, comma-separated [1000,10000]")
    parser.add_argument("--out", default="training")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    dim = 1024
    base = [
        torch.from_numpy(rng.normal(size=(int(n), dim)).astype(np.float32)).to(device)
        for n in rng.integers(500, 3000, 32)
    ]
    labels = [i % 4 for i in range(len(base))]
    ce = step_times("abmil", "ce", base, labels, device, args.repeats)
    ncmi = step_times("abmil", "ncmi", base, labels, device, args.repeats)
    model = build_model("abmil", dim, dim=512).to(device)
    head = build_head("ncmi", 512, 4).to(device)
    bagset = BagSet(
        [f"b{i}" for i in range(len(base))],
        np.asarray(labels),
        [Path("-")] * len(base),
        dim,
        {f"b{i}": b.cpu().numpy() for i, b in enumerate(base)},
    )
    synchronise(device)
    start = time.perf_counter()
    h, _ = embed_bags(model, bagset, device)
    head.epoch_pass(h, torch.tensor(labels, device=device))
    synchronise(device)
    pass_seconds = time.perf_counter() - start
    epoch_seconds = float(np.sum(ncmi)) / args.repeats
    sizes = [1_000, 10_000, 50_000] if args.full else [1_000, 10_000]
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(",")]
    by_size = {}
    for name in ("abmil", "transmil"):
        for n in sizes:
            bag = torch.from_numpy(rng.normal(size=(n, dim)).astype(np.float32)).to(device)
            train = step_times(name, "ce", [bag], [0], device, args.repeats)
            model = build_model(name, dim, dim=512).to(device).eval()
            infer = []
            for _ in range(args.repeats):
                synchronise(device)
                start = time.perf_counter()
                with torch.no_grad():
                    model(bag)
                synchronise(device)
                infer.append(time.perf_counter() - start)
            by_size[f"{name}_{n}"] = {
                "train_bags_per_s": 1 / summary(train)["median"],
                "inference_bags_per_s": 1 / summary(infer)["median"],
            }
            print(
                f"training {name} {n} tiles: {by_size[f'{name}_{n}']['train_bags_per_s']:.2f} train bags/s, "
                f"{by_size[f'{name}_{n}']['inference_bags_per_s']:.2f} inference bags/s"
            )
    figures = {
        "device": str(device),
        "feature_dim": dim,
        "ncmi_over_ce_step_time": summary(ncmi)["median"] / summary(ce)["median"],
        "step_seconds": {"ce": summary(ce), "ncmi": summary(ncmi)},
        "centroid_pass_share_of_epoch": pass_seconds / (pass_seconds + epoch_seconds),
        "bags_per_s": by_size,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if device.type == "cuda":
        figures["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"training NCMI / CE step time: {figures['ncmi_over_ce_step_time']:.3f}")
    print(f"training centroid pass share of an epoch: {figures['centroid_pass_share_of_epoch']:.3f}")
    print(f"wrote {write_result(args.out, {'benchmark': 'training', **figures})}")


if __name__ == "__main__":
    main()
