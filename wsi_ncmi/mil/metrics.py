"""Slide-level metrics a reviewer would trust, computed the way scikit-learn does: the per-epoch ones training
reports (macro-F1, accuracy, balanced accuracy, AUC, NCMI) and, for evaluation, per-class figures and bootstrap CIs."""

from __future__ import annotations

import math
from typing import Any

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


def full_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    cases: np.ndarray | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything in metrics_{split}.json: the core figures, per-class precision/recall/F1/support, the confusion
    matrix, Cohen's kappa, and bootstrap 95% CIs (resampling cases, seeded) for macro-F1, accuracy and AUC.

    macro-F1 averages over all the model's classes; a class absent from the split (support 0) is noted.
    """
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    n = len(classes)
    labels = list(range(n))
    out: dict[str, Any] = {"n_slides": len(y_true), "classes": classes}
    out.update(core_metrics(y_true, y_pred, probs, n))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = {
        c: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
    }
    out["confusion_matrix"] = {"labels": classes, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}
    out["cohen_kappa"] = float(cohen_kappa_score(y_true, y_pred, labels=labels)) if len(set(y_true)) > 1 else math.nan
    absent = [c for i, c in enumerate(classes) if support[i] == 0]
    _, auc_classes = auc_ovr_macro(y_true, probs, n) if len(y_true) else (math.nan, [])
    notes = []
    if absent:
        notes.append(
            f"class(es) {absent} absent from this split: their F1 is 0 in macro-F1 and they are left out of the AUC"
        )
    if len(y_true) and len(auc_classes) < n and not absent:
        notes.append("AUC undefined for some classes")
    out["notes"] = notes
    out["auc_classes"] = [classes[c] for c in auc_classes]
    out["bootstrap"] = bootstrap_ci(y_true, y_pred, probs, n, cases, bootstrap, seed)
    return out


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    n_classes: int,
    cases: np.ndarray | None,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Percentile 95% CIs of macro-F1, accuracy and AUC, resampling whole cases (patients) with replacement."""
    from sklearn.metrics import accuracy_score, f1_score

    if n_resamples <= 0 or len(y_true) == 0:
        return {"resamples": 0}
    cases = np.arange(len(y_true)) if cases is None else np.asarray(cases)
    unique, inverse = np.unique(cases, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(unique))]
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {"macro_f1": [], "accuracy": [], "auc": []}
    for _ in range(n_resamples):
        pick = np.concatenate([members[i] for i in rng.integers(0, len(unique), len(unique))])
        yt, yp = y_true[pick], y_pred[pick]
        values["macro_f1"].append(f1_score(yt, yp, labels=list(range(n_classes)), average="macro", zero_division=0))
        values["accuracy"].append(accuracy_score(yt, yp))
        values["auc"].append(auc_ovr_macro(yt, probs[pick], n_classes)[0])
    out: dict[str, Any] = {"resamples": n_resamples, "seed": seed, "unit": "case"}
    for key, series in values.items():
        finite = np.asarray([v for v in series if math.isfinite(v)])
        out[key] = [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))] if len(finite) else None
    return out
