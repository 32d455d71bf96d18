"""Training step time as users run it against a minimal hand-written loop; writes results/train_step.json.

Ours is `wsi_ncmi.mil.train.train` (abmil, CE head, AdamW, default settings: gradient clipping, warm-up/cosine
schedule, progress bar, a validation pass and checkpoints each epoch), timed whole and divided by its steps. The
minimal loop is what one writes by hand for the same model: abmil + a linear classifier, cross-entropy,
torch.optim.AdamW with its defaults, the same bags in the same number of steps; it runs with torch's default
intra-op threads and with one thread. Cases: tiny bags (160-200 tiles of 32-d features, abmil dim 64, as in the
tests) and 10k-tile bags (1024-d, abmil dim 512); validation is one 16-tile bag, so the figures are of the steps.
Each case runs on the machine as it is ("idle") and with CPU burner processes beside it ("loaded"); runs are
interleaved, medians reported. Goal: ours / minimal <= 1.2.

`--bags-per-step 1 8 32` measures instead training throughput (bags/s) of `train()` at each `bags_per_step`
(abmil, CE, default settings otherwise): the median over epochs 2.. of bags / epoch seconds, so start-up is left
out (an epoch's seconds include the validation of one 16-tile bag). Cases (`--cases`): the tiny bags above and
128 bags of 1k tiles (1024-d, abmil dim 512); by default tiny on the CPU, both on CUDA. `--device cuda` runs the
same on the GPU (bf16 autocast) and writes under results/gpu/.

    python benchmarks/train_step.py                 # 3 rounds
    python benchmarks/train_step.py --repeats 5 --burners 2
    python benchmarks/train_step.py --bags-per-step 1 8 32 [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import torch
from common import summary, write_result

from wsi_ncmi.mil.data import BagSet
from wsi_ncmi.mil.models import build_model
from wsi_ncmi.mil.train import TrainConfig, train

CASES = {
    "tiny": {"bags": 256, "tiles": (160, 200), "features": 32, "model_args": {"dim": 64}},
    "10k": {"bags": 8, "tiles": (10_000, 10_000), "features": 1024, "model_args": {"dim": 512}},
}
EPOCHS = 2
CLASSES = 4
THROUGHPUT_CASES = {
    "tiny": CASES["tiny"],
    "1k": {"bags": 128, "tiles": (1000, 1000), "features": 1024, "model_args": {"dim": 512}},
}
THROUGHPUT_EPOCHS = 3


def make_bags(case: dict, seed: int) -> BagSet:
    rng = np.random.default_rng(seed)
    n = case["bags"]
    ids = [f"b{i}" for i in range(n)]
    features = {
        s: rng.normal(size=(int(rng.integers(case["tiles"][0], case["tiles"][1] + 1)), case["features"])).astype(
            np.float32
        )
        for s in ids
    }
    labels = np.arange(n) % CLASSES
    return BagSet(ids, labels, [Path("-")] * n, case["features"], features)


def ours(case: dict, bags: BagSet, val: BagSet, folder: Path) -> float:
    """Seconds per step of a whole train() call."""
    config = TrainConfig(
        model="abmil", loss="ce", epochs=EPOCHS, warmup_epochs=0, device="cpu", model_args=case["model_args"]
    )
    run = Path(tempfile.mkdtemp(dir=folder))
    start = time.perf_counter()
    train(bags, val, [str(c) for c in range(CLASSES)], config, run, progress=False)
    return (time.perf_counter() - start) / (EPOCHS * len(bags))


def minimal(case: dict, bags: BagSet, threads: int, budget: float) -> float:
    """Seconds per step of the hand-written loop, stopping early once `budget` seconds have passed."""
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = build_model("abmil", bags.dim, **case["model_args"])
    head = torch.nn.Linear(model.dim, CLASSES)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4, weight_decay=1e-4)
    steps, start = 0, time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        for i in np.random.default_rng(steps).permutation(len(bags)):
            x = torch.from_numpy(bags.features(i))
            y = torch.tensor([int(bags.labels[i])])
            loss = torch.nn.functional.cross_entropy(head(model(x).h[None]), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start > budget:
                return (time.perf_counter() - start) / steps
    return (time.perf_counter() - start) / steps


def throughput(case: dict, bags: BagSet, val: BagSet, folder: Path, per_step: int, device: str) -> list[float]:
    """Bags/s of each epoch after the first of a train() call with `per_step` bags per optimiser step."""
    config = TrainConfig(
        model="abmil", loss="ce", epochs=THROUGHPUT_EPOCHS, warmup_epochs=0, device=device,
        model_args=case["model_args"], bags_per_step=per_step,
    )  # fmt: skip
    run = Path(tempfile.mkdtemp(dir=folder))
    result = train(bags, val, [str(c) for c in range(CLASSES)], config, run, progress=False)
    return [len(bags) / seconds for seconds in result.history["seconds"].iloc[1:]]


def sweep(sizes: list[int], device: str, repeats: int, out: str, cases: list[str]) -> None:
    """bags/s at each bags_per_step, runs interleaved; JSON in results/ (results/gpu/ on CUDA)."""
    figures: dict = {"benchmark": "train_step_bags_per_step", "device": device, "epochs": THROUGHPUT_EPOCHS}
    if device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name(torch.device(device))
    with tempfile.TemporaryDirectory() as tmp:
        for name in cases:
            case = THROUGHPUT_CASES[name]
            bags, val = make_bags(case, 0), make_bags({**case, "bags": 1, "tiles": (16, 16)}, 1)
            rates: dict[int, list[float]] = {n: [] for n in sizes}
            for r in range(repeats):
                for n in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:
                    rates[n] += throughput(case, bags, val, Path(tmp), n, device)
            medians = {n: summary(v)["median"] for n, v in rates.items()}
            figures[name] = {
                "case": dict(case),
                "bags_per_s": {str(n): summary(v) for n, v in rates.items()},
                "speedup_over_first": {str(n): m / medians[sizes[0]] for n, m in medians.items()},
            }
            for n in sizes:
                print(f"{name}: bags_per_step {n:>3}: {summary(rates[n])['median']:.1f} bags/s on {device}", flush=True)
    print(f"wrote {write_result(('gpu/' if device.startswith('cuda') else '') + out, figures)}")


def _ms(figures: dict[str, float]) -> dict[str, float]:
    """summary() figures in milliseconds (the run count as it is)."""
    return {k: v * 1e3 if k != "runs" else v for k, v in figures.items()}


def burners(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--burners", type=int, default=1, help="CPU burner processes in the loaded condition")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds at most per minimal-loop run")
    parser.add_argument("--out", default=None, help="results file name [train_step or train_step_bags_per_step]")
    parser.add_argument("--bags-per-step", type=int, nargs="+", help="measure bags/s at these bags_per_step instead")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the bags_per_step sweep)")
    parser.add_argument("--cases", nargs="+", choices=sorted(THROUGHPUT_CASES), help="[tiny; on cuda: tiny 1k]")
    args = parser.parse_args()
    if args.bags_per_step:
        cases = args.cases or (["tiny", "1k"] if args.device.startswith("cuda") else ["tiny"])
        sweep(args.bags_per_step, args.device, args.repeats, args.out or "train_step_bags_per_step", cases)
        return
    args.out = args.out or "train_step"
    default_threads = torch.get_num_threads()
    variants = ("ours", "minimal_default_threads", "minimal_one_thread")
    times: dict[str, dict[str, dict[str, list[float]]]] = {
        case: {cond: {v: [] for v in variants} for cond in ("idle", "loaded")} for case in CASES
    }
    load: dict[str, list[float]] = {"idle": [], "loaded": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = {
            name: (make_bags(case, 0), make_bags({**case, "bags": 1, "tiles": (16, 16)}, 1))
            for name, case in CASES.items()
        }
        ours(CASES["tiny"], *data["tiny"], Path(tmp))
        for r in range(args.repeats):
            for condition in ("idle", "loaded"):
                procs = burners(args.burners) if condition == "loaded" else []
                try:
                    time.sleep(0.5 if procs else 0.0)
                    load[condition].append(os.getloadavg()[0])
                    for name, case in CASES.items():
                        bags, val = data[name]
                        order = variants[r % 3 :] + variants[: r % 3]
                        for variant in order:
                            if variant == "ours":
                                seconds = ours(case, bags, val, Path(tmp))
                            else:
                                threads = default_threads if variant == "minimal_default_threads" else 1
                                seconds = minimal(case, bags, threads, args.budget)
                            times[name][condition][variant].append(seconds)
                        torch.set_num_threads(default_threads)
                finally:
                    for proc in procs:
                        proc.kill()
                        proc.wait()
                print(f"round {r + 1}/{args.repeats} {condition} done", flush=True)
    figures: dict = {"default_threads": default_threads, "burners": args.burners, "epochs": EPOCHS}
    for name, case in CASES.items():
        figures[name] = {"case": {k: v for k, v in case.items()}}
        for condition, by_variant in times[name].items():
            med = {v: summary(t)["median"] for v, t in by_variant.items()}
            figures[name][condition] = {
                "step_ms": {v: _ms(summary(t)) for v, t in by_variant.items()},
                "ours_over_minimal_default_threads": med["ours"] / med["minimal_default_threads"],
                "ours_over_minimal_one_thread": med["ours"] / med["minimal_one_thread"],
            }
            print(
                f"train step {name} {condition}: ours {med['ours'] * 1e3:.2f} ms, minimal "
                f"{med['minimal_default_threads'] * 1e3:.2f} ms ({default_threads} threads) / "
                f"{med['minimal_one_thread'] * 1e3:.2f} ms (1 thread)"
            )
    figures["load_average_1min"] = {c: summary(v) for c, v in load.items()}
    print(f"wrote {write_result(args.out, {'benchmark': 'train_step', **figures})}")


if __name__ == "__main__":
    main()
