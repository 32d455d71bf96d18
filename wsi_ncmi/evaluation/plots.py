"""Figures: confusion matrices and learning curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from wsi_ncmi.atomic import atomic_path


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def confusion_figure(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Counts and row-normalised confusion matrices side by side."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(classes), 1.5 + 0.8 * len(classes)))
    for ax, values, name, fmt in ((axes[0], matrix, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        ax.imshow(values, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        top = values.max() if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            ax.text(
                j,
                i,
                format(value, fmt),
                ha="center",
                va="center",
                color="white" if top and value > top / 2 else "black",
            )
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def curves_figure(history: pd.DataFrame, path: Path) -> None:
    """Loss, validation macro-F1 and validation NCMI per epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(history["epoch"], history["train_loss"], label="train")
    axes[0].plot(history["epoch"], history["val_loss"], label="val")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(history["epoch"], history["val_macro_f1"], color="tab:green")
    axes[1].set_title("validation macro-F1")
    axes[2].plot(history["epoch"], history["val_ncmi"], color="tab:purple")
    axes[2].set_title("validation NCMI")
    for ax in axes:
        ax.set_xlabel("epoch")
    _save(fig, path)
    plt.close(fig)
