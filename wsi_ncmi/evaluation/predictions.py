"""Per-slide prediction tables: one row per slide, one probability column per class, byte-stable on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.evaluation.runfiles import RunFileError, read_csv

NO_TILES = "no_tiles"
PREDICTION_COLUMNS = ("slide_id", "case_id", "center", "split", "y_pred", "flag")
"""Columns every prediction CSV has, besides one p_<class> column per class (and y_true when labelled)."""


def prediction_table(
    rows: pd.DataFrame,
    classes: list[str],
    probs: np.ndarray,
    preds: np.ndarray,
    no_tiles: np.ndarray,
    with_truth: bool = True,
) -> pd.DataFrame:
    """slide_id, case_id, center, split, [y_true,] y_pred, p_<class>..., flag; sorted by slide_id.

    `rows` carries slide_id, case_id, center, split and (with_truth) label. Probabilities are rounded to 6
    decimals and renormalised so each row sums to 1 as written.
    """
    table = pd.DataFrame(
        {
            "slide_id": rows["slide_id"].to_numpy(),
            "case_id": rows["case_id"].to_numpy(),
            "center": rows["center"].to_numpy(),
            "split": rows["split"].to_numpy(),
        }
    )
    if with_truth:
        table["y_true"] = rows["label"].to_numpy()
    table["y_pred"] = [classes[i] for i in preds]
    rounded = np.round(probs, 6)
    rounded[np.arange(len(rounded)), rounded.argmax(1)] += 1.0 - rounded.sum(1)
    for i, name in enumerate(classes):
        table[f"p_{name}"] = np.round(rounded[:, i], 6)
    table["flag"] = np.where(no_tiles, NO_TILES, "")
    return table.sort_values("slide_id", kind="stable").reset_index(drop=True)


def write_predictions(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")


def read_predictions(path: Path, fix: str = "evaluate the run again") -> pd.DataFrame:
    """predictions_{split}.csv (or `predict`'s CSV): every column present, one row per slide, probabilities that
    are numbers."""
    path = Path(path)
    table = read_csv(
        path,
        {"slide_id": str, "case_id": str, "center": str, "split": str, "y_true": str, "y_pred": str, "flag": str},
        fix,
    )
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    classes = [c for c in table.columns if c.startswith("p_")]
    if missing or not classes:
        listed = ", ".join(missing + ([] if classes else ["p_<class>"]))
        raise RunFileError(f"{path}: no column(s) {listed}; {fix}")
    if table.empty:
        raise RunFileError(f"{path}: no slides; {fix}")
    duplicated = table["slide_id"][table["slide_id"].duplicated()].tolist()
    if duplicated:
        raise RunFileError(f"{path}: slide(s) listed twice: {', '.join(duplicated[:5])}; {fix}")
    for column in classes:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise RunFileError(f"{path}: row {row + 2}, {column} is not a number; {fix}")
        table[column] = values.astype(float)
    return table
