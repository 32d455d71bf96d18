"""Figures: confusion matrices and learning curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from wsi_ncmi.core.atomic import atomic_path


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


LOSS_NAMES = {"ncmi": "NCMI", "ce": "cross-entropy", "focal": "focal", "cmic": "CE + CMI constraint"}


def curve_notes(loss: str | None) -> list[str]:
    """What each learning curve is, in the words shown under the curves (report page and curves.png)."""
    name = LOSS_NAMES.get(str(loss), str(loss or "training"))
    notes = [
        f"loss ({name}): train is the mean over the epoch's training steps in training mode (dropout on, weights "
        "changing during the epoch); validation is the same loss on the validation slides after the epoch, in "
        "evaluation mode. They are not measured alike, so validation can sit below train.",
    ]
    if loss == "ncmi":
        notes.append(
            "The NCMI loss is concentration / separation of the slide embeddings around the class centroids, not a "
            "cross-entropy: its values are not comparable with a cross-entropy run's."
        )
    notes.append(
        "validation NCMI: the NCMI diagnostic (CMI / Gamma) of the validation class probabilities, for any loss; "
        "lower means tighter, better separated classes. When the probabilities hardly differ between slides, CMI "
        "and Gamma are both at rounding level and the ratio (1e-6 or less, even below 0) says nothing."
    )
    return notes


def curves_figure(history: pd.DataFrame, path: Path, loss: str | None = None) -> None:
    """Loss, validation macro-F1 and validation NCMI per epoch, legends outside the axes and what each curve is
    written below."""
    import textwrap

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(history["epoch"], history["train_loss"], label="train")
    axes[0].plot(history["epoch"], history["val_loss"], label="validation")
    axes[0].set_title(f"loss ({LOSS_NAMES.get(str(loss), loss)})" if loss else "loss")
    axes[0].legend(loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, frameon=False)
    axes[1].plot(history["epoch"], history["val_macro_f1"], color="tab:green")
    axes[1].set_title("validation macro-F1")
    axes[2].plot(history["epoch"], history["val_ncmi"], color="tab:purple")
    axes[2].set_title("validation NCMI (diagnostic)")
    for ax in axes:
        ax.set_xlabel("epoch")
    text = "\n".join(textwrap.fill(note, 150) for note in curve_notes(loss))
    fig.text(0.01, -0.12, text, ha="left", va="top", fontsize=8, color="#333")
    _save(fig, path)
    plt.close(fig)
