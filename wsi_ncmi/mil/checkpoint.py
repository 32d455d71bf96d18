"""Checkpoints: what model.pt and last.pt hold (written each epoch by wsi_ncmi.mil.train), how older layouts are
upgraded so they predict exactly as when written, and loading one as a model and head ready to predict."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from wsi_ncmi.core.device import resolve_device
from wsi_ncmi.mil.heads import HEADS, Head, build_head
from wsi_ncmi.mil.models import MILModel, build_model
from wsi_ncmi.mil.runfolder import RunError

if TYPE_CHECKING:
    from wsi_ncmi.mil.trainconfig import TrainConfig

CHECKPOINT_VERSION = 1
LOOP_SETTINGS = {
    "optimizer": "adamw",
    "momentum": 0.9,
    "schedule": "cosine",
    "milestones": [],
    "gamma": 0.1,
    "bags_per_step": 1,
}
"""Settings a resumed run must share with its last.pt (optimiser state and step count depend on them), with the
values checkpoints written before they existed were trained with."""


@dataclass
class Trained:
    """A model, its head and what is needed to use them (class names, prior, encoder attributes, device)."""

    model: MILModel
    head: Head
    classes: list[str]
    prior: np.ndarray
    checkpoint: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def upgrade(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint in today's layout, predicting exactly as it did when written.

    Older NCMI checkpoints kept a Linear-ReLU-Linear projector in the head (`head_state["projector.*"]`, setting
    `loss_args.projector`); it is the model's neck now, with the same weights. Checkpoints without those weights
    had no projector; CE-family checkpoints from before the neck existed had none either. Then the loss upgrades
    its own head (Head.upgrade_state: anchor-mode NCMI checkpoints without class means predicted with the anchors).
    """
    checkpoint = dict(checkpoint)
    model_args, loss_args = dict(checkpoint["model_args"]), dict(checkpoint["loss_args"])
    state, head_state = dict(checkpoint["state_dict"]), dict(checkpoint["head_state"])
    loss_args.pop("projector", None)
    if "neck" not in model_args:
        projector = {k: head_state.pop(k) for k in list(head_state) if k.startswith("projector.")}
        model_args["neck"] = "mlp" if projector else "none"
        state.update({"neck." + k.removeprefix("projector."): v for k, v in projector.items()})
    head = HEADS.get(checkpoint.get("loss"))
    if head is not None:
        head.upgrade_state(loss_args, head_state)
    checkpoint.update(model_args=model_args, loss_args=loss_args, state_dict=state, head_state=head_state)
    return checkpoint


def build(checkpoint: dict[str, Any]) -> tuple[MILModel, Head]:
    """Model and head from the names and settings of a checkpoint in today's layout (`upgrade`), weights not loaded."""
    model = build_model(checkpoint["model"], checkpoint["in_dim"], **checkpoint["model_args"])
    head = build_head(checkpoint["loss"], model.dim, len(checkpoint["classes"]), **checkpoint["loss_args"])
    return model, head


def load_trained(path: Path, device: str = "cpu") -> Trained:
    """Load model.pt (or last.pt) with torch.load(weights_only=True): a checkpoint is data, never code."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no checkpoint; train the run first (wsi-ncmi train)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
    checkpoint = data.get("checkpoint", data)
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise RunError(
            f"{path}: checkpoint format {checkpoint.get('format_version')!r}, this version reads {CHECKPOINT_VERSION}"
        )
    checkpoint = upgrade(checkpoint)
    model, head = build(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    head.load_state_dict(checkpoint["head_state"])
    target = resolve_device(device)
    return Trained(
        model.to(target).eval(),
        head.to(target).eval(),
        list(checkpoint["classes"]),
        np.asarray(checkpoint["prior"], dtype=np.float64),
        checkpoint,
        target,
    )


def checkpoint_of(
    model: MILModel, head: Head, config: TrainConfig, classes: list[str], prior: np.ndarray, extra: dict[str, Any]
) -> dict[str, Any]:
    """Weights, buffers and every resolved model and head setting (defaults included), so a reader sees T etc."""
    return {
        "format_version": CHECKPOINT_VERSION,
        "model": config.model,
        "model_args": dict(model.settings or config.model_args),
        "in_dim": model.in_dim,
        "loss": config.loss,
        "loss_args": dict(head.settings or config.loss_args),
        "classes": list(classes),
        "prior": [float(p) for p in prior],
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "head_state": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
        "select": config.select,
        "select_window": config.select_window,
        **{key: copy.deepcopy(getattr(config, key)) for key in LOOP_SETTINGS},
        "calibration": dict(getattr(head, "calibration", {})),
        **extra,
    }


def check_loop_settings(checkpoint: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse to resume with an optimiser, schedule or step size other than last.pt's (its optimiser state and
    step count belong to them), or with another neck (a run from before the default neck became mlp)."""
    for key, legacy in LOOP_SETTINGS.items():
        saved, now = checkpoint.get(key, legacy), getattr(config, key)
        if saved != now:
            raise RunError(
                f"{path}: trained with {key} {saved}, resumed with {now}; resume with {key}: {saved} "
                "or start again with --overwrite"
            )
    saved_neck, neck = upgrade(checkpoint)["model_args"]["neck"], config.model_args["neck"]
    if saved_neck != neck:
        raise RunError(
            f"{path}: trained with neck {saved_neck}, resumed with {neck}; resume with model_args: {{neck: "
            f"{saved_neck}}} or start again with --overwrite"
        )
