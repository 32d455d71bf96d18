"""Which epoch a run keeps as model.pt: a rule (`best_f1`, `best_loss`, `last`) scored over a trailing window of
epochs, from a first eligible epoch on.

With about 30 validation slides one epoch's macro-F1 moves by a bag or two, so the single best epoch is mostly the
luckiest one, often an early one. Scoring each epoch by the mean of its last `window` epochs' metric and ignoring
the warm-up makes the choice follow the trend, not the noise. A validation loss that is negative or not finite is
degenerate (a numerical failure, not a good fit) and makes every window holding it ineligible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SELECT_RULES = ("best_f1", "best_loss", "last")


def _finite(value: Any, fallback: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else fallback


def first_eligible(select_from: int | None, warmup_epochs: int, epochs: int) -> int:
    """The first epoch (1-based) that may be selected: `select_from`, or the first epoch after the warm-up;
    never later than the last epoch, so every run selects one."""
    first = warmup_epochs + 1 if select_from is None else select_from
    return max(1, min(first, epochs))


def selection_score(
    rule: str, history: Sequence[dict[str, Any]], window: int, first: int, epochs: int
) -> tuple[float, ...] | None:
    """The score of the latest epoch of `history` under `rule` (larger is better), or None when it cannot be
    selected: before epoch `first`, before a full window (of min(window, epochs) epochs) or, for best_loss, with a
    negative or non-finite validation loss in the window. best_f1: mean macro-F1, ties mean AUC; best_loss: minus
    the mean loss, ties mean macro-F1; last: the epoch number."""
    epoch = len(history)
    if rule not in SELECT_RULES:
        raise ValueError(f"select must be one of {', '.join(SELECT_RULES)}, got {rule!r}")
    if rule == "last":
        return (float(epoch),)
    span = min(window, epochs)
    if epoch < first or epoch < span:
        return None
    rows = history[epoch - span :]
    f1 = sum(_finite(row["val_macro_f1"], -1.0) for row in rows) / span
    if rule == "best_f1":
        return (f1, sum(_finite(row["val_auc"], -1.0) for row in rows) / span)
    losses = [float(row["val_loss"]) for row in rows]
    if not all(math.isfinite(v) and v >= 0 for v in losses):
        return None
    return (-sum(losses) / span, f1)


def improves(score: tuple[float, ...] | None, best: Sequence[float] | None) -> bool:
    """Whether an epoch with `score` replaces the one selected so far (`best`; None before any): strictly better
    only, so ties keep the earlier epoch."""
    if score is None:
        return False
    return best is None or tuple(score) > tuple(best)
