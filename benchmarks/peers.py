"""Side by side with peers: tiling against hs2p, ABMIL training against torchmil; writes results/peers.json.

Both peers are installed into a throw-away venv under benchmarks/results/tmp/ (never project dependencies); it
reuses this environment's torch through a .pth file so nothing large is downloaded. If a peer cannot be
installed or run, the results file says exactly why.

Tiling: the same synthetic slides at 0.5 um/px and 256 px, interleaved fresh processes (ours, hs2p, ours, ...),
each timing the tiling call once cold (imports and library start-up inside it) and then `--warm-runs` times (the
cost per slide in a cohort run); time ratio ours/hs2p per slide (goal <= 0.5), and agreement: the fraction of our
tiles within half a tile of one of theirs, and the reverse (goal >= 95%). Ours is run in both its layouts: the
default (one slide-wide lattice) and hs2p's own (a lattice per tissue region, edge tiles kept).
Training: binary bags, ABMIL from torchmil against ours (abmil + CE), same optimiser, learning rate and steps;
median step time ratio (goal <= 1.0) and validation accuracy of each.

    python benchmarks/peers.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from common import RESULTS, summary, write_result

RUNNER = Path(__file__).parent / "peer_runner.py"
SEEDS = (0, 1, 2)
LAYOUTS = {"default": {}, "clam_layout": {"grid": "tissue", "edge_tiles": True}}
"""Our two tile layouts: the default (one slide-wide lattice, whole tiles) and hs2p's (a lattice per tissue
region, tiles may overhang the edge)."""
VENV = RESULTS / "tmp" / "peers-venv"


def peer_python() -> Path:
    """The throw-away venv's python, created and filled on first use; raises RuntimeError saying why it failed."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        Path(purelib, "reuse_project_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "hs2p[openslide]", "torchmil"], capture_output=True, text=True
    )
    if installed.returncode:
        raise RuntimeError(f"pip install hs2p[openslide] torchmil failed: {installed.stderr.strip()[-800:]}")
    return python


def ours_tile(slide: str, layout: str, warm_runs: int) -> dict:
    """Our tile_geometry on one slide in one layout: the first call's time (cold) and `warm_runs` more calls."""
    from wsi_ncmi.tiling import TileTask, TilingParams, tile_geometry

    seconds = []
    for _ in range(1 + warm_runs):
        start = time.perf_counter()
        result = tile_geometry(TileTask("bench", slide, tempfile.gettempdir(), TilingParams(**LAYOUTS[layout])))
        seconds.append(time.perf_counter() - start)
    return {
        "cold_seconds": seconds[0],
        "warm_seconds": seconds[1:],
        "coords": result.coords.tolist(),
        "tile_size_lv0": result.geometry.size_level0,
    }


def run_json(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command[:3]))} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(a: np.ndarray, b: np.ndarray, half: float) -> float:
    """Fraction of tiles of `a` whose top-left is within half a tile of some tile of `b` (both axes)."""
    if len(a) == 0:
        return float("nan")
    if len(b) == 0:
        return 0.0
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(b).query(a, p=np.inf)
    return float(np.mean(distance <= half))


def cold_and_warm(runs: list[dict]) -> tuple[dict, dict]:
    """Summaries of the first calls of several processes and of all their later calls."""
    return (
        summary([run["cold_seconds"] for run in runs]),
        summary([t for run in runs for t in run["warm_seconds"]]),
    )


def tiling(python: Path, slides: list[Path], repeats: int, warm_runs: int) -> dict:
    ours_cmd = [
        sys.executable,
        "-c",
        "import json,sys; sys.path.insert(0, sys.argv[1]); from peers import ours_tile; "
        "print(json.dumps(ours_tile(sys.argv[2], sys.argv[3], int(sys.argv[4]))))",
        str(Path(__file__).parent),
    ]
    out = {}
    for slide in slides:
        ours_runs: list[dict] = [{} for _ in range(repeats)]
        peer_runs = []
        for repeat in range(repeats):
            for layout in LAYOUTS:
                ours_runs[repeat][layout] = run_json([*ours_cmd, str(slide), layout, str(warm_runs)])
            peer_runs.append(
                run_json([str(python), str(RUNNER), "hs2p", str(slide), "0.5", "256", "0.1", str(warm_runs)])
            )
        peer = peer_runs[-1]
        peer_cold, peer_warm = cold_and_warm(peer_runs)
        b = np.asarray(peer["coords"])
        row: dict = {
            "hs2p_cold_seconds": peer_cold,
            "hs2p_warm_seconds": peer_warm,
            "hs2p_tiles": len(b),
            "hs2p_version": peer.get("version"),
            "hs2p_min_tissue_fraction": peer.get("min_tissue_fraction"),
        }
        for layout in LAYOUTS:
            ours = ours_runs[-1][layout]
            cold, warm = cold_and_warm([run[layout] for run in ours_runs])
            a = np.asarray(ours["coords"])
            half = ours["tile_size_lv0"] / 2
            row[layout] = {
                "settings": LAYOUTS[layout],
                "cold_seconds": cold,
                "warm_seconds": warm,
                "time_ratio_ours_over_hs2p_cold": cold["median"] / peer_cold["median"],
                "time_ratio_ours_over_hs2p_warm": warm["median"] / peer_warm["median"],
                "tiles": len(a),
                "agreement_ours_in_hs2p": agreement(a, b, half),
                "agreement_hs2p_in_ours": agreement(b, a, half),
            }
            figures = row[layout]
            print(
                f"peers tiling {slide.name} {layout}: ours/hs2p time {figures['time_ratio_ours_over_hs2p_warm']:.2f}"
                f" per slide in a run ({figures['time_ratio_ours_over_hs2p_cold']:.2f} first call), agreement "
                f"{figures['agreement_ours_in_hs2p']:.3f} / {figures['agreement_hs2p_in_ours']:.3f}"
            )
        out[slide.name] = row
    return out


def _train_ours(
    bags: list[np.ndarray], labels: list[int], n_train: int, dim: int, projection: int | None, steps: int, seed: int
) -> dict:
    """Our abmil + CE with AdamW, one bag per step: median step time, validation accuracy, parameter count."""
    import torch

    from wsi_ncmi.mil.heads import build_head
    from wsi_ncmi.mil.models import build_model

    torch.manual_seed(seed)
    model = build_model("abmil", dim, dim=projection, dropout=0.0, attention_dim=128)
    head = build_head("ce", model.dim, 2)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    times = []
    for step in range(steps):
        i = step % n_train
        x = torch.from_numpy(bags[i])
        start = time.perf_counter()
        loss = head.loss(model(x).h[None], torch.tensor([labels[i]]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        correct = sum(
            int(head.predict(model(torch.from_numpy(bags[i])).h[None])[0]) == labels[i]
            for i in range(n_train, len(bags))
        )
    return {
        "model_args": {"dim": projection, "attention_dim": 128, "dropout": 0.0},
        "step_seconds": float(np.median(times)),
        "val_accuracy": correct / (len(bags) - n_train),
        "parameters": sum(p.numel() for p in [*model.parameters(), *head.parameters()]),
    }


def _over_seeds(runs: list[dict]) -> dict:
    """One figure per seed list: median step time, mean accuracy, and the per-seed accuracies."""
    return {
        **{k: v for k, v in runs[0].items() if k not in ("step_seconds", "val_accuracy")},
        "step_seconds": float(np.median([run["step_seconds"] for run in runs])),
        "val_accuracy": float(np.mean([run["val_accuracy"] for run in runs])),
        "val_accuracy_per_seed": [run["val_accuracy"] for run in runs],
    }


def training(python: Path, steps: int) -> dict:
    rng = np.random.default_rng(0)
    dim, n_train, n_val = 256, 80, 40
    direction = rng.normal(size=dim) / np.sqrt(dim) * 3
    bags, labels = [], []
    for i in range(n_train + n_val):
        x = rng.normal(size=(int(rng.integers(200, 400)), dim)).astype(np.float32)
        label = i % 2
        if label:
            x[rng.choice(len(x), 20, replace=False)] += direction.astype(np.float32)
        bags.append(x)
        labels.append(label)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bags.npz"
        np.savez(data, y=np.asarray(labels), n_train=n_train, **{f"x{i}": b for i, b in enumerate(bags)})
        peers = [
            run_json([str(python), str(RUNNER), "torchmil", str(data), str(steps), "1e-3", str(seed)]) for seed in SEEDS
        ]
    peer = _over_seeds(peers)
    result: dict = {"torchmil": peer, "steps": steps, "feature_dim": dim, "seeds": list(SEEDS)}
    for name, projection in (("ours_same_architecture", None), ("ours_with_projection", dim)):
        ours = _over_seeds([_train_ours(bags, labels, n_train, dim, projection, steps, seed) for seed in SEEDS])
        ours["step_time_ratio_ours_over_torchmil"] = ours["step_seconds"] / peer["step_seconds"]
        result[name] = ours
        print(
            f"peers training {name}: step time ours/torchmil {ours['step_time_ratio_ours_over_torchmil']:.2f}, "
            f"val accuracy {ours['val_accuracy']:.3f} vs {peer['val_accuracy']:.3f} (mean of {len(SEEDS)} seeds)"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per tool and slide, interleaved")
    parser.add_argument("--warm-runs", type=int, default=5, help="timed calls per process after the first")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--full", action="store_true", help="adds a 40k x 30k px slide; 1,000 training steps")
    args = parser.parse_args()
    from wsi_ncmi.synthetic import Lesion, SlideSpec, write_slide

    payload: dict = {"benchmark": "peers"}
    try:
        python = peer_python()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        payload["error"] = f"peers could not be installed: {exc}"
        print(payload["error"])
        print(f"wrote {write_result('peers', payload)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        slides = []
        sizes = [(10_000, 8_000), (20_000, 15_000), *([(40_000, 30_000)] if args.full else [])]
        for i, (w, h) in enumerate(sizes):
            path = Path(tmp) / f"slide{i}.tif"
            write_slide(SlideSpec(f"slide{i}", w, h, 0.25, seed=5 + i, lesions=(Lesion(2000, 2000, 900),)), path)
            slides.append(path)
        for name, part in (
            ("tiling", lambda: tiling(python, slides, args.repeats, args.warm_runs)),
            ("training", lambda: training(python, max(args.steps, 1000) if args.full else args.steps)),
        ):
            try:
                payload[name] = part()
            except RuntimeError as exc:
                payload[name] = {"error": str(exc)}
                print(f"peers {name}: {exc}")
    print(f"wrote {write_result('peers', payload)}")


if __name__ == "__main__":
    main()
