"""Per-slide prediction tables: one row per slide, one probability column per class, byte-stable on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wsi_ncmi.atomic import atomic_path

NO_TILES = "no_tiles"


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


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path,
        dtype={"slide_id": str, "case_id": str, "center": str, "split": str, "y_true": str, "y_pred": str},
        keep_default_na=False,
    )
