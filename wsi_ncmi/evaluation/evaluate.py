"""Evaluating a trained run on a split: prediction CSV, metrics JSON, figures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.evaluation.predictions import prediction_table, write_predictions
from wsi_ncmi.formats.layout import LAST, RunFolder
from wsi_ncmi.mil.data import BagDataError, load_bagset
from wsi_ncmi.mil.metrics import core_metrics, full_metrics
from wsi_ncmi.mil.runfolder import RunError
from wsi_ncmi.mil.runs import bag_encoder_problems, check_feature_size, load_run_model
from wsi_ncmi.mil.train import Trained, predict

SPLIT_CHOICES = ("test", "val", "train", "all")
_NODE_ID = re.compile(r"^patient_\d+_node_\d+$")


def run_config(run: Path) -> dict[str, Any]:
    """RUN/config.yaml as written by `train`."""
    from wsi_ncmi.core.config import load_yaml

    path = RunFolder(run).config
    if not path.exists():
        raise RunError(f"{run}: no config.yaml; is this a run folder written by `wsi-ncmi train`?")
    config = load_yaml(path)
    training, inputs = config.get("training"), config.get("inputs")
    problems = [f"no {k!r} section" for k, v in (("training", training), ("inputs", inputs)) if not isinstance(v, dict)]
    if isinstance(training, dict):
        problems += [f"no training.{k}" for k in ("model", "loss", "seed") if k not in training]
    if not isinstance(config.get("encoder", {}), dict):
        problems.append("'encoder' is not a mapping")
    if problems:
        raise RunError(f"{path}: not the config.yaml `wsi-ncmi train` writes ({'; '.join(problems)}); copy the run "
                       "folder again or train it again")  # fmt: skip
    return config


def is_camelyon17(manifest: pd.DataFrame) -> bool:
    """Slide ids like patient_XXX_node_N and only the four node labels: pN-stage is defined."""
    from wsi_ncmi.cohort.camelyon17 import NODE_LABELS

    return (
        bool(len(manifest))
        and manifest["slide_id"].map(lambda s: bool(_NODE_ID.match(s))).all()
        and set(manifest["label"]) <= set(NODE_LABELS)
    )


def pn_stage_metrics(manifest: pd.DataFrame, table: pd.DataFrame) -> dict[str, Any]:
    """Patient pN-stage from predicted vs true node labels, for patients whose nodes are all in the table."""
    from wsi_ncmi.cohort.camelyon17 import pn_stage, stage_kappa

    in_table = set(table["slide_id"])
    complete = [case for case, group in manifest.groupby("case_id") if set(group["slide_id"]) <= in_table]
    rows = table.set_index("slide_id")
    truth, predicted = [], []
    for case in sorted(complete):
        nodes = manifest.loc[manifest["case_id"] == case, "slide_id"]
        truth.append(pn_stage(rows.loc[nodes, "y_true"]))
        predicted.append(pn_stage(rows.loc[nodes, "y_pred"]))
    return {
        "patients": len(complete),
        "patients_skipped": int(table["case_id"].nunique() - len(complete)),
        "accuracy": float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)])) if truth else math.nan,
        "kappa_quadratic": stage_kappa(truth, predicted) if truth else math.nan,
        "stages": [
            {"case_id": c, "true": t, "predicted": p}
            for c, t, p in zip(sorted(complete), truth, predicted, strict=True)
        ],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_json(payload: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(_json_safe(payload), indent=2, sort_keys=False) + "\n")


def evaluate_split(
    trained: Trained,
    manifest: pd.DataFrame,
    split: pd.Series,
    split_name: str,
    features: Path,
    run: Path,
    bootstrap: int = 1000,
    seed: int = 0,
    pn_stage: bool | None = None,
    skip_missing: bool = False,
    last: Trained | None = None,
) -> dict[str, Any]:
    """Predict one split, write predictions_{split}.csv, metrics_{split}.json, confusion_{split}.png.

    The metrics are those of the selected model (model.pt); with `last` (the last epoch's model) its core metrics
    are added under `last_epoch`, so a reader sees how much the choice of epoch moved the figures.
    """
    from wsi_ncmi.evaluation.plots import confusion_figure

    classes = trained.classes
    ids = split.index[split == split_name].tolist()
    if not ids:
        raise BagDataError(f"the split file has no {split_name} slides")
    mismatch = bag_encoder_problems(features, ids, trained.checkpoint.get("encoder_attrs", {}))
    if mismatch:
        raise BagDataError(f"{mismatch}; evaluate bags embedded with the model's encoder and weights")
    rows = manifest.set_index("slide_id").loc[ids].reset_index()
    unknown = sorted(set(rows["label"]) - set(classes) - {""})
    if unknown:
        raise BagDataError(f"label(s) {unknown} in the manifest are not classes of this model ({classes})")
    unlabelled = rows.loc[rows["label"] == "", "slide_id"].tolist()
    if unlabelled:
        raise BagDataError(
            f"{len(unlabelled)} {split_name} slide(s) have no label: {', '.join(unlabelled[:20])}; "
            "use `wsi-ncmi predict` for unlabelled slides"
        )
    index = {c: i for i, c in enumerate(classes)}
    bags = load_bagset(ids, [index[label] for label in rows["label"]], features, skip_missing, what=split_name)
    rows = rows.set_index("slide_id").loc[bags.slide_ids].reset_index()
    rows["split"] = split_name
    check_feature_size(bags, trained, features)
    probs, preds, no_tiles = predict(trained, bags)
    table = prediction_table(rows, classes, probs, preds, no_tiles)
    write_predictions(table, RunFolder(run).predictions(split_name))
    order = rows["slide_id"].tolist()
    y_true = np.asarray([index[label] for label in rows["label"]])
    metrics = full_metrics(y_true, preds, probs, classes, rows["case_id"].to_numpy(), bootstrap, seed)
    metrics["split"] = split_name
    metrics["selection"] = {
        "rule": trained.checkpoint.get("select", "best_f1"),
        "epoch": trained.checkpoint.get("epoch"),
    }
    if last is not None:
        last_probs, last_preds, _ = predict(last, bags)
        metrics["last_epoch"] = {"epoch": last.checkpoint.get("epoch")} | core_metrics(
            y_true, last_preds, last_probs, len(classes)
        )
    metrics["slides_without_tiles"] = [order[i] for i in np.flatnonzero(no_tiles)]
    if pn_stage if pn_stage is not None else is_camelyon17(manifest):
        metrics["pn_stage"] = pn_stage_metrics(manifest, table)
    write_json(metrics, RunFolder(run).metrics(split_name))
    confusion_figure(
        np.asarray(metrics["confusion_matrix"]["matrix"]),
        classes,
        RunFolder(run).confusion(split_name),
        f"{split_name}: macro-F1 {metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}",
    )
    return metrics


def evaluate_run(
    run: Path,
    split_name: str = "test",
    features: Path | None = None,
    manifest: Path | None = None,
    split_file: Path | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    pn_stage: bool | None = None,
    skip_missing: bool = False,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Evaluate RUN on one split (or each of train/val/test with 'all'); inputs default to those it was trained on."""
    from wsi_ncmi.cohort.manifest import read_manifest
    from wsi_ncmi.cohort.splits import read_split
    from wsi_ncmi.evaluation.plots import curves_figure
    from wsi_ncmi.evaluation.runfiles import read_history

    folder = RunFolder(run)
    run = folder.root
    if split_name not in SPLIT_CHOICES:
        raise ValueError(f"--split must be one of {', '.join(SPLIT_CHOICES)}")
    config = run_config(run)
    trained = load_run_model(run, device)
    last = load_run_model(run, device, LAST) if folder.last.exists() else None
    given = {"manifest": manifest, "split": split_file, "features": features}
    inputs = {k: v or config["inputs"].get(k) for k, v in given.items()}
    missing = [k for k, v in inputs.items() if not v]
    if missing:
        raise RunError(
            f"{folder.config}: no inputs.{missing[0]}; pass --{missing[0].replace('split', 'split-file')}"
        )
    table = read_manifest(inputs["manifest"])
    split = read_split(inputs["split"])
    features = Path(inputs["features"])
    names = ["train", "val", "test"] if split_name == "all" else [split_name]
    results = {}
    for name in names:
        if split_name == "all" and not (split == name).any():
            continue
        results[name] = evaluate_split(
            trained, table, split, name, features, run, bootstrap, seed, pn_stage, skip_missing, last
        )
    if folder.history.exists():
        loss = config.get("training", {}).get("loss")
        curves_figure(read_history(folder.history), folder.curves, loss)
    return results


def predict_slides(
    run: Path,
    features: Path,
    manifest: Path | None,
    out: Path,
    force: bool = False,
    device: str = "cpu",
) -> pd.DataFrame:
    """Predict unlabelled slides (all bags in FEATURES, or the manifest's); refuse bags from another encoder."""
    from wsi_ncmi.cohort.manifest import read_manifest

    trained = load_run_model(Path(run), device)
    if manifest is not None:
        rows = read_manifest(manifest)
    else:
        ids = sorted(p.stem for p in Path(features).glob("*.h5"))
        rows = pd.DataFrame({"slide_id": ids, "case_id": ids, "center": "", "label": ""})
    if rows.empty:
        raise BagDataError(f"no slides to predict in {manifest or features}")
    expected = trained.checkpoint.get("encoder_attrs", {})
    mismatch = None if force else bag_encoder_problems(Path(features), rows["slide_id"].tolist(), expected)
    if mismatch:
        raise BagDataError(f"{mismatch}; embed with the same encoder and weights, or pass --force")
    bags = load_bagset(
        rows["slide_id"].tolist(), [-1] * len(rows), Path(features), what="prediction", check_encoders=not force
    )
    rows = rows.set_index("slide_id").loc[bags.slide_ids].reset_index()
    rows["split"] = "predict"
    check_feature_size(bags, trained, features)
    probs, preds, no_tiles = predict(trained, bags)
    table = prediction_table(rows, trained.classes, probs, preds, no_tiles, with_truth=False)
    write_predictions(table, Path(out))
    return table
