"""The per-epoch metrics training and evaluation share: macro-F1, accuracy, balanced accuracy, AUC, NCMI.

Below both `mil/` (training reports them every epoch) and `evaluation/` (which adds CIs and per-class figures).
"""

from __future__ import annotations

import math

import numpy as np


def auc_ovr_macro(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> tuple[float, list[int]]:
    """One-vs-rest macro AUC over the classes present in y_true (and not all of it); returns (auc, classes used)."""
    from sklearn.metrics import roc_auc_score

    used = [c for c in range(n_classes) if 0 < (y_true == c).sum() < len(y_true)]
    if not used:
        return math.nan, []
    scores = [roc_auc_score((y_true == c).astype(int), probs[:, c]) for c in used]
    return float(np.mean(scores)), used


def ncmi_of(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """The NCMI diagnostic (CMI, Gamma, NCMI) of class-probability outputs."""
    import torch

    from wsi_ncmi.mil.ncmi import ncmi_diagnostic

    return ncmi_diagnostic(torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(y_true), n_classes)


def core_metrics(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """macro-F1, accuracy, balanced accuracy, OvR macro AUC and NCMI: what training reports every epoch."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    if len(y_true) == 0:
        return {k: math.nan for k in ("macro_f1", "accuracy", "balanced_accuracy", "auc", "ncmi", "cmi", "gamma")}
    import warnings

    labels = list(range(n_classes))
    present = sorted(set(y_true.tolist()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    out = {
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced if len(present) > 1 else float(accuracy_score(y_true, y_pred)),
        "auc": auc_ovr_macro(y_true, probs, n_classes)[0],
    }
    return out | ncmi_of(y_true, probs, n_classes)
