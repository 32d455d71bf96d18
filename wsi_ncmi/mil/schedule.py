"""Learning-rate schedules, per optimiser step: a linear warm-up, then cosine decay to zero or step decay at
milestone epochs (the multi-step schedule of the authors' image-classification recipe)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

SCHEDULES = ("cosine", "step")


def lr_factor(
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    steps_per_epoch: int = 1,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """The factor on the base learning rate for optimiser step `step` (0-based).

    Warm-up: (step + 1) / warmup_steps. Then `cosine`: 0.5 (1 + cos(pi t)), t the fraction of the steps after
    the warm-up done; `step`: gamma to the number of milestones already reached, a milestone m (in epochs)
    applying from epoch m + 1 on (as torch's MultiStepLR with 0-based epochs)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    boundaries = sorted(int(m) * max(1, steps_per_epoch) for m in milestones)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "step":
            return gamma ** sum(step >= b for b in boundaries)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def fit_warmup(settings: dict[str, Any], default_warmup: int) -> str | None:
    """Lower warmup_epochs to half the epochs when it exceeds them (a short --epochs run); return the note to show."""
    epochs, warmup = settings.get("epochs"), settings.get("warmup_epochs", default_warmup)
    if isinstance(epochs, int) and isinstance(warmup, int) and epochs >= 1 and warmup > epochs:
        settings["warmup_epochs"] = epochs // 2
        return f"warmup_epochs {warmup} is more than epochs {epochs}: using {epochs // 2} (set warmup_epochs to choose)"
    return None
