"""A training run as an independent job (for `run`, `tune` and the ablation): train it, continue it from its
last.pt, or keep it when it finished earlier; then report its history and selected epoch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_ncmi.mil.train import TrainConfig


@dataclass(frozen=True)
class TrainSpec:
    """Everything one run needs (picklable, so it can go to a worker process or a Dask task)."""

    manifest: Path
    features: Path
    split: Path
    run: Path
    config: TrainConfig
    progress: bool = False


@dataclass(frozen=True)
class TrainSummary:
    """A finished run: its per-epoch history rows, the epoch its `select` rule kept, and how it got there."""

    run: Path
    history: list[dict[str, Any]]
    best_epoch: int
    state: str
    """trained, resumed or kept (finished earlier)."""

    def selected(self) -> dict[str, Any]:
        """The history row of the selected epoch."""
        return next(row for row in self.history if int(row["epoch"]) == self.best_epoch)


def training_state(run: Path) -> dict[str, Any] | None:
    """RUN/last.pt's state (history, best, finished), memory-mapped; None when there is none or it is unreadable."""
    import torch

    try:
        return torch.load(Path(run) / "last.pt", map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None


def finished(run: Path) -> bool:
    state = training_state(run)
    return bool(state and state.get("finished"))


def train_or_resume(spec: TrainSpec) -> TrainSummary:
    """Keep a finished run, resume an unfinished one from last.pt, or train it from the start."""
    from wsi_ncmi.mil.run import train_run

    state = training_state(spec.run)
    if state is not None and state.get("finished"):
        kind = "kept"
    else:
        resume = state is not None
        kind = "resumed" if resume else "trained"
        train_run(
            spec.manifest,
            spec.features,
            spec.split,
            spec.run,
            spec.config,
            resume=resume,
            overwrite=not resume,
            progress=spec.progress,
        )
        state = training_state(spec.run)
        if state is None:
            raise RuntimeError(f"{spec.run}: training ended without writing last.pt")
    return TrainSummary(spec.run, [dict(row) for row in state["history"]], int(state["best"]["epoch"]), kind)
