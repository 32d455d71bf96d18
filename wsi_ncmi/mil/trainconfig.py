"""The settings of a training run (TrainConfig), checked as a whole before anything is written; each loss's own
rules come from its registration (wsi_ncmi.mil.heads)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from wsi_ncmi.core.config import check_settings
from wsi_ncmi.core.device import DEFAULT_DEVICE
from wsi_ncmi.mil.heads import HEADS
from wsi_ncmi.mil.models import BATCH_NECKS
from wsi_ncmi.mil.schedule import SCHEDULES
from wsi_ncmi.mil.selection import SELECT_RULES
from wsi_ncmi.mil.settings import loss_settings
from wsi_ncmi.mil.speed import OPTIMIZERS

DEFAULT_NECK = "mlp"
"""The neck a run gets when model_args does not name one (the shipped comparison configs' neck)."""


@dataclass
class TrainConfig:
    """Every setting of a training run (configs/README.md documents each key). The defaults are the shipped
    comparison configs' settings (configs/camelyon17_*.yaml), so a run without a config trains as they do."""

    model: str = "abmil"
    model_args: dict[str, Any] = field(default_factory=lambda: {"neck": DEFAULT_NECK})
    loss: str = "ncmi"
    loss_args: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    epochs: int = 50
    warmup_epochs: int = 5
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    bags_per_step: int = 1
    grad_clip: float | None = 1.0
    seed: int = 1
    device: str = DEFAULT_DEVICE
    threads: int | None = None
    max_tiles: int | None = None
    balanced_sampling: bool = False
    class_weights: str = "none"
    patience: int | None = None
    cache_gb: float = 8.0
    skip_missing: bool = False
    select: str = "best_f1"
    select_window: int = 5
    select_from: int | None = None

    def __post_init__(self) -> None:
        self.loss_args = loss_settings(self.loss, self.loss_args)
        if "neck" not in self.model_args:
            self.model_args = {**self.model_args, "neck": DEFAULT_NECK}
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            problems.append(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(
                f"optimizer must be one of {', '.join(OPTIMIZERS)} (adam: L2 weight decay in the gradient), "
                f"got {self.optimizer!r}"
            )
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.milestones and self.schedule != "step":
            problems.append(f"milestones apply to schedule: step only; got them with schedule: {self.schedule}")
        if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in self.milestones) or list(
            self.milestones
        ) != sorted(set(self.milestones)):
            problems.append(f"milestones must be increasing epoch numbers >= 1, got {self.milestones}")
        if not 0 < self.gamma <= 1:
            problems.append(f"gamma must be in (0, 1], got {self.gamma}")
        if self.bags_per_step < 1:
            problems.append(f"bags_per_step must be >= 1, got {self.bags_per_step}")
        neck = self.model_args.get("neck")
        if neck in BATCH_NECKS and self.bags_per_step < 2:
            problems.append(
                f"neck {neck} normalises over the bags of a step and needs bags_per_step >= 2 (e.g. 8), "
                f"got {self.bags_per_step}"
            )
        if self.select_window < 1:
            problems.append(f"select_window must be >= 1, got {self.select_window}")
        if self.select_from is not None and self.select_from < 1:
            problems.append(f"select_from must be >= 1 (or null: after the warm-up), got {self.select_from}")
        if self.class_weights not in ("none", "balanced"):
            problems.append(f"class_weights must be none or balanced, got {self.class_weights!r}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1 (or null: chosen from the step size), got {self.threads}")
        if self.max_tiles is not None and self.max_tiles < 1:
            problems.append(f"max_tiles must be >= 1, got {self.max_tiles}")
        if self.select not in SELECT_RULES:
            problems.append(f"select must be one of {', '.join(SELECT_RULES)}, got {self.select!r}")
        head = HEADS.get(self.loss)
        if head is not None:
            problems += head.training_problems(self)
        if "projector" in self.loss_args:
            problems.append(
                "loss_args.projector is now model_args.neck (mlp|none), shared by every loss; move the setting there"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        check_settings(values, cls, "training")
        return cls(**values)
