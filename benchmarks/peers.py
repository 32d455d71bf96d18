"""Side by side with peers: tiling against hs2p, ABMIL training against torchmil; writes results/peers.json.

Both peers are installed into a throw-away venv under benchmarks/results/tmp/ (never project dependencies); it
reuses this environment's torch through a .pth file so nothing large is downloaded. If a peer cannot be
installed or run, the results file says exactly why.

Tiling: whole command-line runs as a user starts them (`wsi-ncmi tile` and `python -m hs2p`), each tool at its own
defaults with only the resolution (0.5 um/px), the tile size (256 px) and one worker set, and hs2p's previews off.
hs2p's defaults are read from the installed package and recorded (6.1.0: HSV segmentation at downsample 64,
minimum tissue coverage 0.01); ours are QC on, thumbnails on, minimum tissue 0.1. Extra, labelled rows: ours with
--qc off (hs2p does no pixel QC by default) and, on the batch, also --no-thumbnails; hs2p with the Otsu
configuration of earlier rounds of this table (`seg_params: {method: otsu}`, minimum coverage 0.1). Six 0.25 um/px
synthetic slides (four 20k x 15k, two 40k x 30k px; written once into benchmarks/results/tmp/peer-slides/). Fresh
processes pinned to one CPU (`--cpu`, the last by default), the tools alternating (the order reversed every
repeat), `--repeats` times; CPU time (user + system, waited-for children included) of each whole process.
Figures: the batch of six (goals: ours with --qc off <= 0.7x hs2p's defaults, ours with its defaults <= 1.0x, and
QC's own cost: the paired difference of the two), and the per-slide work at each size, from the difference between
runs on one slide and on eight of that size. Quality of the tile sets against the synthetic truth: tissue-area
recall and precision, and the share of tiles under 1% tissue.
Training: binary bags, ABMIL from torchmil against ours (abmil + CE), same optimiser, learning rate and steps;
median step time ratio (goal <= 1.0) and validation accuracy of each.

    python benchmarks/peers.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from common import RESULTS, summary, write_result

RUNNER = Path(__file__).parent / "peer_runner.py"
SEEDS = (0, 1, 2)
VENV = RESULTS / "tmp" / "peers-venv"
PEER_PACKAGES = ("hs2p[openslide]==6.1.0", "torchmil==1.0.2")
"""The peers, pinned: the versions the README table reports."""


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
        [python, "-m", "pip", "install", "-q", *PEER_PACKAGES], capture_output=True, text=True
    )
    if installed.returncode:
        raise RuntimeError(f"pip install {' '.join(PEER_PACKAGES)} failed: {installed.stderr.strip()[-800:]}")
    return python


def run_json(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command[:3]))} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


SLIDES = tuple(
    (f"s{i}_{w // 1000}k", w, h, 5 + i) for i, (w, h) in enumerate([(20_000, 15_000)] * 4 + [(40_000, 30_000)] * 2)
)
"""Name, width and height (level-0 px at 0.25 um/px) and seed of each slide of the batch."""
RUNS = {
    "20k_x1": ("s0_20k",),
    "20k_x8": ("s0_20k", "s1_20k", "s2_20k", "s3_20k") * 2,
    "40k_x1": ("s4_40k",),
    "40k_x8": ("s4_40k", "s5_40k") * 4,
    "batch": tuple(name for name, *_ in SLIDES),
}
"""The slide sets each tool runs on (a slide named twice is tiled twice, under two names); the per-slide work at
a size is the CPU-time difference between its x8 and x1 runs over 7, which keeps timing noise small."""
TRUTH_STEP_UM = 4.0
HS2P_CONFIG = """csv: {csv}
output_dir: {out}
tiling:
  params: {{requested_spacing_um: 0.5, requested_tile_size_px: 256}}
  preview: {{save_mask_preview: false, save_tiling_preview: false}}
{extra}speed: {{num_workers: 1}}
"""
HS2P = {
    "hs2p": "",
    "hs2p_otsu": "  seg_params: {method: otsu}\n  masks: {min_coverage: {tissue: 0.1}}\n",
}
"""hs2p's runs: its defaults (only the resolution, tile size, one worker and no previews set), and the Otsu
configuration earlier rounds of this table used (batch only)."""
HS2P_DEFAULTS = (
    "import json; from omegaconf import OmegaConf; from hs2p.configs.loader import default_config as c; "
    "print(json.dumps({'seg_params': OmegaConf.to_container(c.tiling.seg_params), "
    "'min_coverage': OmegaConf.to_container(c.tiling.masks.min_coverage), 'backend': c.tiling.backend}))"
)


def _spec(name: str) -> Any:
    from wsi_ncmi.synthetic import Lesion, SlideSpec

    _, width, height, seed = next(entry for entry in SLIDES if entry[0] == name)
    return SlideSpec(name, width, height, 0.25, seed=seed, lesions=(Lesion(2000, 2000, 900),))


def benchmark_slides(folder: Path) -> dict[str, Path]:
    """The batch's slides, written on first use and reused afterwards."""
    from wsi_ncmi.synthetic import write_slide

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, *_, seed in SLIDES:
        path = folder / f"{name}_seed{seed}.tif"
        if not path.exists():
            print(f"writing benchmark slide {path.name} (once)")
            write_slide(_spec(name), path)
        paths[name] = path
    return paths


def cpu_seconds(command: list[str], cpu: int | None = None) -> tuple[float, float]:
    """CPU seconds (user + system, its waited-for children included) and wall seconds of one whole process, pinned
    to CPU `cpu` when given (its threads then cannot spin on other cores, and every tool gets the same core)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=pin)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command[:4]))} failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


OURS = {"ours": [], "ours_qc_off": ["--qc", "off"], "ours_qc_off_no_thumbnails": ["--qc", "off", "--no-thumbnails"]}
"""Our runs: the defaults (quality control and thumbnails on), without quality control (hs2p does none by
default), and without thumbnails either (batch only)."""
BATCH_ONLY = ("ours_qc_off_no_thumbnails", "hs2p_otsu")


def ours_command(folder: Path, out: Path, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "wsi_ncmi", "tile", "--slides", str(folder), "--out", str(out), *flags]


def hs2p_command(python: Path, paths: list[Path], work: Path, out: Path, extra: str = "") -> list[str]:
    """hs2p's command line on `paths`, with its CSV and YAML config (`extra`: lines under `tiling:`) written into
    `work`."""
    rows = ["sample_id,image_path", *(f"{p.stem},{p}" for p in paths)]
    (work / "slides.csv").write_text("\n".join(rows) + "\n")
    config = work / f"{out.name}.yaml"
    config.write_text(HS2P_CONFIG.format(csv=work / "slides.csv", out=out, extra=extra))
    return [str(python), "-m", "hs2p", str(config), "--output-dir", str(out), "--skip-datetime"]


def truth_grid(name: str) -> np.ndarray:
    """Tissue truth of a benchmark slide sampled every TRUTH_STEP_UM (at the centres of that grid's cells)."""
    from wsi_ncmi.synthetic import TissueModel

    spec = _spec(name)
    model = TissueModel.from_spec(spec)
    xs = (np.arange(int(spec.width * spec.mpp / TRUTH_STEP_UM)) + 0.5) * TRUTH_STEP_UM
    ys = (np.arange(int(spec.height * spec.mpp / TRUTH_STEP_UM)) + 0.5) * TRUTH_STEP_UM
    return (model.sample_grid(xs, ys) > 0) | model.lesion_mask(xs[None, :], ys[:, None])


def tile_quality(truth: np.ndarray, coords: np.ndarray, size0: int, mpp0: float = 0.25) -> dict:
    """Share of the tissue inside the tiles (recall), share of the tiles' union that is tissue (precision), and
    share of tiles under 1% tissue, on the truth grid."""
    step = TRUTH_STEP_UM / mpp0
    h, w = truth.shape
    first = np.ceil(coords / step - 0.5).astype(np.int64)
    stop = np.ceil((coords + size0) / step - 0.5).astype(np.int64)
    x0, y0 = np.clip(first[:, 0], 0, w), np.clip(first[:, 1], 0, h)
    x1, y1 = np.clip(stop[:, 0], 0, w), np.clip(stop[:, 1], 0, h)
    edges = np.zeros((h + 1, w + 1), dtype=np.int64)
    for rows, cols, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        np.add.at(edges, (rows, cols), sign)
    covered = np.cumsum(np.cumsum(edges, axis=0), axis=1)[:h, :w] > 0
    table = np.zeros((h + 1, w + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(truth, axis=0), axis=1)
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    points = np.maximum((x1 - x0) * (y1 - y0), 1)
    return {
        "tiles": len(coords),
        "tissue_recall": float((covered & truth).sum() / max(truth.sum(), 1)),
        "tissue_precision": float((covered & truth).sum() / max(covered.sum(), 1)),
        "share_of_tiles_under_1pct_tissue": float(np.mean(inside / points < 0.01)) if len(coords) else 0.0,
    }


def _quality(per_slide: dict[str, dict]) -> dict:
    """The batch's figures (mean recall and precision over slides, tiles summed) and each slide's."""
    tiles = sum(f["tiles"] for f in per_slide.values())
    under = sum(f["share_of_tiles_under_1pct_tissue"] * f["tiles"] for f in per_slide.values())
    return {
        "tiles": tiles,
        "tissue_recall": float(np.mean([f["tissue_recall"] for f in per_slide.values()])),
        "tissue_precision": float(np.mean([f["tissue_precision"] for f in per_slide.values()])),
        "share_of_tiles_under_1pct_tissue": under / max(tiles, 1),
        "per_slide": per_slide,
    }


def ours_coords(out: Path, name: str) -> tuple[np.ndarray, int]:
    from wsi_ncmi.formats.bags import read_coords

    coords = read_coords(out / "tiles" / f"{name}.h5")
    return coords.coords, int(coords.attrs["patch_size_level0"])


def hs2p_coords(out: Path, name: str) -> tuple[np.ndarray, int]:
    data = np.load(out / "tiles" / f"{name}.coordinates.npz")
    meta = json.loads((out / "tiles" / f"{name}.coordinates.meta.json").read_text())
    size0 = next(value for key, value in _leaves(meta) if key == "tile_size_lv0")
    return np.stack([data["x"], data["y"]], axis=1).astype(np.int64), int(size0)


def _leaves(tree: dict) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        out += _leaves(value) if isinstance(value, dict) else [(key, value)]
    return out


def _per_slide(cpu: dict[str, dict]) -> dict:
    """Per-slide work from run differences, and the start-up (imports, set-up) paid once per run."""
    median = {run: figures["cpu_seconds"]["median"] for run, figures in cpu.items()}
    per_20k = (median["20k_x8"] - median["20k_x1"]) / 7
    return {
        "per_slide_cpu_seconds_20k": per_20k,
        "per_slide_cpu_seconds_40k": (median["40k_x8"] - median["40k_x1"]) / 7,
        "startup_cpu_seconds": median["20k_x1"] - per_20k,
    }


def _time_runs(
    python: Path, paths: dict[str, Path], tmp: Path, repeats: int, cpu: int | None
) -> tuple[dict, dict]:
    """CPU and wall seconds of every tool on every slide set, alternating tools; tile sets of the first batch run."""
    times: dict[str, dict[str, list[tuple[float, float]]]] = {}
    outputs: dict[str, Path] = {}
    for run, names in RUNS.items():
        (tmp / run).mkdir()
        for copy, name in enumerate(names):
            (tmp / run / f"{paths[name].stem}_{copy}.tif").symlink_to(paths[name])
    for repeat in range(repeats):
        for run in RUNS:
            work = tmp / f"{run}-{repeat}"
            work.mkdir()
            commands = {tool: ours_command(tmp / run, work / tool, flags) for tool, flags in OURS.items()}
            for tool, extra in HS2P.items():
                commands[tool] = hs2p_command(python, sorted((tmp / run).iterdir()), work, work / tool, extra)
            tools = [tool for tool in commands if run == "batch" or tool not in BATCH_ONLY]
            for tool in tools[:: 1 if repeat % 2 == 0 else -1]:
                times.setdefault(tool, {}).setdefault(run, []).append(cpu_seconds(commands[tool], cpu))
            if run == "batch" and repeat == 0:
                outputs = {tool: work / tool for tool in ("ours", "ours_qc_off", *HS2P)}
            else:
                shutil.rmtree(work)
    return times, outputs


def tiling(python: Path, repeats: int, pin: int | None) -> dict:
    paths = benchmark_slides(RESULTS / "tmp" / "peer-slides")
    readers = {"ours": ours_coords, "ours_qc_off": ours_coords, **dict.fromkeys(HS2P, hs2p_coords)}
    with tempfile.TemporaryDirectory() as tmp:
        times, outputs = _time_runs(python, paths, Path(tmp), repeats, pin)
        quality = {tool: {} for tool in readers}
        for copy, name in enumerate(RUNS["batch"]):
            truth = truth_grid(name)
            for tool, read in readers.items():
                quality[tool][name] = tile_quality(truth, *read(outputs[tool], f"{paths[name].stem}_{copy}"))
    slides = {name: [w, h] for name, w, h, _ in SLIDES}
    out: dict = {"repeats": repeats, "pinned_to_cpu": pin, "slides": slides, "runs": dict(RUNS)}
    for tool, runs in times.items():
        cpu = {
            run: {"cpu_seconds": summary([c for c, _ in pairs]), "wall_seconds": summary([w for _, w in pairs])}
            for run, pairs in runs.items()
        }
        out[tool] = {"runs": cpu, **(_per_slide(cpu) if "20k_x1" in cpu else {})}
    batch = {tool: out[tool]["runs"]["batch"]["cpu_seconds"]["median"] for tool in times}
    paired = {tool: [cpu for cpu, _ in runs["batch"]] for tool, runs in times.items()}
    qc_cost = [on - off for on, off in zip(paired["ours"], paired["ours_qc_off"], strict=True)]
    out["qc_cost_batch_cpu_seconds"] = summary(qc_cost)
    out["qc_cost_share_of_ours_batch"] = float(np.median(qc_cost)) / batch["ours"]
    for tool in OURS:
        for peer in HS2P:
            out[f"batch_cpu_ratio_{tool}_over_{peer}"] = batch[tool] / batch[peer]
            out[f"batch_cpu_ratio_{tool}_over_{peer}_per_repeat"] = summary(
                [a / b for a, b in zip(paired[tool], paired[peer], strict=True)]
            )
        for size in ("20k", "40k"):
            key = f"per_slide_cpu_seconds_{size}"
            if key in out[tool]:
                out[f"per_slide_cpu_ratio_{tool}_over_hs2p_{size}"] = out[tool][key] / out["hs2p"][key]
    out["quality"] = {tool: _quality(per_slide) for tool, per_slide in quality.items()}
    out["hs2p_version"] = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('hs2p'))"], capture_output=True, text=True
    ).stdout.strip()
    out["hs2p_defaults"] = run_json([str(python), "-c", HS2P_DEFAULTS])
    out["hs2p_configs"] = {tool: HS2P_CONFIG.format(csv="CSV", out="OUT", extra=extra) for tool, extra in HS2P.items()}
    peer = out["hs2p"]
    for tool in OURS:
        ours = out[tool]
        per_slide = (
            f"; per slide {ours['per_slide_cpu_seconds_20k'] * 1e3:.0f} vs "
            f"{peer['per_slide_cpu_seconds_20k'] * 1e3:.0f} ms at 20k, {ours['per_slide_cpu_seconds_40k'] * 1e3:.0f}"
            f" vs {peer['per_slide_cpu_seconds_40k'] * 1e3:.0f} ms at 40k"
            if "per_slide_cpu_seconds_20k" in ours
            else ""
        )
        print(
            f"peers tiling {tool}: batch of {len(SLIDES)} slides, whole-process CPU / hs2p defaults "
            f"{out[f'batch_cpu_ratio_{tool}_over_hs2p']:.2f} ({batch[tool]:.2f} s vs {batch['hs2p']:.2f} s), / hs2p "
            f"Otsu {out[f'batch_cpu_ratio_{tool}_over_hs2p_otsu']:.2f} ({batch['hs2p_otsu']:.2f} s){per_slide}"
        )
    print(
        f"peers tiling: QC's own cost on the batch {out['qc_cost_batch_cpu_seconds']['median']:.3f} s "
        f"({out['qc_cost_share_of_ours_batch']:.1%} of ours with its defaults)"
    )
    for tool, figures in out["quality"].items():
        print(
            f"peers tiling {tool}: {figures['tiles']} tiles, tissue recall {figures['tissue_recall']:.3f}, precision "
            f"{figures['tissue_precision']:.3f}, {figures['share_of_tiles_under_1pct_tissue']:.1%} of tiles under 1%"
        )
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
    parser.add_argument("--repeats", type=int, default=5, help="whole tiling runs per tool and slide set, alternated")
    parser.add_argument("--out", default="peers", help="result name under benchmarks/results/")
    parser.add_argument(
        "--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="pin every tiling process to this CPU (-1: none)"
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--full", action="store_true", help="1,000 training steps")
    parser.add_argument(
        "--part", choices=["all", "tiling", "training"], default="all", help="run one part; the file keeps the other"
    )
    args = parser.parse_args()

    payload: dict = {"benchmark": "peers"}
    previous = RESULTS / f"{args.out}.json"
    if args.part != "all" and previous.exists():
        kept = {k: v for k, v in json.loads(previous.read_text()).items() if k in ("tiling", "training")}
        payload.update({k: v for k, v in kept.items() if k != args.part})
    try:
        python = peer_python()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        payload["error"] = f"peers could not be installed: {exc}"
        print(payload["error"])
        print(f"wrote {write_result(args.out, payload)}")
        return
    for name, part in (
        ("tiling", lambda: tiling(python, args.repeats, None if args.cpu < 0 else args.cpu)),
        ("training", lambda: training(python, max(args.steps, 1000) if args.full else args.steps)),
    ):
        if args.part not in ("all", name):
            continue
        try:
            payload[name] = part()
        except RuntimeError as exc:
            payload[name] = {"error": str(exc)}
            print(f"peers {name}: {exc}")
    print(f"wrote {write_result(args.out, payload)}")


if __name__ == "__main__":
    main()
