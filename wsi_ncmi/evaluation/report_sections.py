"""The metric sections of a run's HTML report: headline cards, per-class table, confusion matrix, ROC and
reliability charts, learning curves, NCMI diagnostic and per-centre table, each an HTML fragment built from what
`evaluate` and `train` wrote."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.evaluation.report_page import table
from wsi_ncmi.evaluation.svg import Series, chart

if TYPE_CHECKING:
    import pandas as pd


def number(value: Any, digits: int = 3) -> str:
    """`value` with `digits` decimals, or n/a when it is missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _with_ci(metrics: dict[str, Any], key: str) -> tuple[str, str]:
    ci = (metrics.get("bootstrap") or {}).get(key)
    return number(metrics.get(key)), (f"95% CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else "no CI")


def headline(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """Cards of the core metrics with their bootstrap CIs, the model and loss, and any notes or pN-stage figures."""
    cards = []
    for key, name in (("macro_f1", "macro-F1"), ("accuracy", "accuracy"), ("auc", "AUC (one-vs-rest, macro)")):
        value, ci = _with_ci(metrics, key)
        cards.append(f"<div class=card><span>{name}</span><b>{value}</b><span>{ci}</span></div>")
    for key, name in (("balanced_accuracy", "balanced accuracy"), ("cohen_kappa", "Cohen's kappa")):
        cards.append(f"<div class=card><span>{name}</span><b>{number(metrics.get(key))}</b></div>")
    cards.append(f"<div class=card><span>slides</span><b>{metrics.get('n_slides', 'n/a')}</b></div>")
    boot = metrics.get("bootstrap") or {}
    text = (
        f"<p class=muted>CIs: percentile bootstrap over {boot.get('unit', 'case')}s, {boot.get('resamples', 0)} "
        f"resamples. Model {escape(str(config['training'].get('model')))}, loss "
        f"{escape(str(config['training'].get('loss')))}, seed {escape(str(config['training'].get('seed')))}.</p>"
    )
    notes = "".join(f"<p class=note>{escape(n)}</p>" for n in metrics.get("notes", []))
    stage = metrics.get("pn_stage")
    if stage:
        notes += (
            f"<p>Patient pN-stage over {stage['patients']} patients with all nodes in the split: accuracy "
            f"{number(stage.get('accuracy'))}, quadratic-weighted kappa {number(stage.get('kappa_quadratic'))}.</p>"
        )
    return f"<div class=cards>{''.join(cards)}</div>{text}{notes}"


def per_class(metrics: dict[str, Any], classes: list[str]) -> str:
    """Precision, recall, F1 and support of each class."""
    rows = []
    for name in classes:
        c = (metrics.get("per_class") or {}).get(name, {})
        rows.append(
            [
                escape(name),
                number(c.get("precision")),
                number(c.get("recall")),
                number(c.get("f1")),
                str(c.get("support")),
            ]
        )
    return table(["class", "precision", "recall", "F1", "support"], rows)


def confusion_html(matrix: np.ndarray, classes: list[str]) -> str:
    """Counts with row-normalised shading: rows are true classes, columns predicted ones."""
    rows_sum = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows_sum, out=np.zeros(matrix.shape), where=rows_sum > 0)
    head = "".join(f"<th>{escape(c)}</th>" for c in classes)
    body = []
    for i, name in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            alpha = 0.08 + 0.8 * share[i, j]
            color = "255,255,255" if share[i, j] > 0.55 else "29,35,42"
            cells.append(
                f"<td style='background:rgba(31,95,168,{alpha:.2f});color:rgb({color})' "
                f"title='{share[i, j]:.0%} of true {escape(name)}'>{int(matrix[i, j])}</td>"
            )
        body.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    return (
        "<table class=cm><thead><tr><th>true \\ predicted</th>"
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "<p class=muted>Counts; shading is the share of each true class (row).</p>"
    )


def roc_chart(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> str:
    """One-vs-rest ROC curve per class present (and not alone) in the split, with its AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    series = [Series("", [0, 1], [0, 1], dash=True, color="#999")]
    for c, name in enumerate(classes):
        positive = y_true == c
        if not 0 < positive.sum() < len(y_true):
            continue
        fpr, tpr, _ = roc_curve(positive.astype(int), probs[:, c])
        auc = roc_auc_score(positive.astype(int), probs[:, c])
        series.append(Series(f"{name} (AUC {auc:.3f})", fpr.tolist(), tpr.tolist()))
    return chart(series, "ROC, one-vs-rest", "false positive rate", "true positive rate", (0, 1), (0, 1))


def reliability(
    y_true: np.ndarray, probs: np.ndarray, bins: int = 10
) -> tuple[list[float], list[float], list[int], float]:
    """Per confidence bin (equal width on the top probability): mean confidence, accuracy, count; and the ECE."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    conf, acc, counts, ece = [], [], [], 0.0
    for b in range(bins):
        members = index == b
        if not members.any():
            continue
        conf.append(float(confidence[members].mean()))
        acc.append(float(correct[members].mean()))
        counts.append(int(members.sum()))
        ece += members.mean() * abs(acc[-1] - conf[-1])
    return conf, acc, counts, float(ece)


def reliability_chart(y_true: np.ndarray, probs: np.ndarray) -> str:
    conf, acc, counts, ece = reliability(y_true, probs)
    labels = [f"{n} slides" for n in counts]
    series = [
        Series("", [0, 1], [0, 1], dash=True, color="#999"),
        Series(f"model (ECE {ece:.3f})", conf, acc, style="both", labels=labels),
    ]
    return chart(series, "Reliability (top-class confidence)", "mean confidence", "accuracy", (0, 1), (0, 1))


def curves_charts(history: pd.DataFrame, best_epoch: int | None, loss: str | None = None) -> str:
    """Loss, validation macro-F1 and validation NCMI per epoch; the selected epoch is marked; what each curve is
    said below them."""
    from wsi_ncmi.evaluation.plots import curve_notes

    epochs = history["epoch"].tolist()
    charts = []
    panels = (
        ("loss", [("train", "train_loss"), ("validation", "val_loss")]),
        ("validation macro-F1 / accuracy", [("macro-F1", "val_macro_f1"), ("accuracy", "val_accuracy")]),
        ("validation NCMI (diagnostic)", [("NCMI", "val_ncmi")]),
    )
    for title, columns in panels:
        series = [Series(name, epochs, history[col].tolist()) for name, col in columns if col in history]
        if best_epoch is not None and series:
            values = [v for s in series for v in s.y if v == v]
            if values:
                series.append(
                    Series(f"selected (epoch {best_epoch})", [best_epoch] * 2, [min(values), max(values)], dash=True)
                )
        charts.append(chart(series, title, "epoch", title.split(" / ")[0].split(" (")[0]))
    notes = "".join(f"<li>{escape(note)}</li>" for note in curve_notes(loss))
    return f"<div class=charts>{''.join(charts)}</div><ul class='muted notes'>{notes}</ul>"


def ncmi_section(metrics: dict[str, Any]) -> str:
    return (
        "<div class=cards>"
        + "".join(
            f"<div class=card><span>{name}</span><b>{number(metrics.get(key), 4)}</b></div>"
            for key, name in (("ncmi", "NCMI"), ("cmi", "CMI (concentration)"), ("gamma", "Gamma (separation)"))
        )
        + "</div><p class=muted>NCMI = CMI / Gamma of the class-probability outputs on this split: CMI measures how "
        "spread each class's outputs are around their class centroid, Gamma how far apart different classes' outputs "
        "are. Lower NCMI means tighter, better separated classes.</p>"
    )


def centre_table(predictions: pd.DataFrame, classes: list[str]) -> str:
    """Slides, accuracy, balanced accuracy and macro-F1 per centre (macro over the classes seen in that centre)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rows = []
    for centre, group in predictions.groupby("center", sort=True):
        yt, yp = group["y_true"].tolist(), group["y_pred"].tolist()
        seen = sorted(set(yt) | set(yp), key=classes.index)
        balanced = balanced_accuracy_score(yt, yp) if len(set(yt)) > 1 else accuracy_score(yt, yp)
        rows.append(
            [
                escape(str(centre) or "(none)"),
                str(len(group)),
                number(accuracy_score(yt, yp)),
                number(balanced),
                number(f1_score(yt, yp, labels=seen, average="macro", zero_division=0)),
                escape(", ".join(f"{c}: {yt.count(c)}" for c in classes if yt.count(c))),
            ]
        )
    return table(["centre", "slides", "accuracy", "balanced acc.", "macro-F1", "true classes"], rows)
