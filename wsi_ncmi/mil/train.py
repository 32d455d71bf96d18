"""Training a MIL aggregator with any registered loss: `bags_per_step` bags per optimiser step (their slide
embeddings stacked, one loss over them), AdamW, Adam or SGD, warm-up then cosine or step decay.

The alternating algorithm of NCMI falls out of the epoch structure: a closed-form Q-step (a no-grad pass over
the training bags, model in eval mode) runs before the first epoch and after every epoch, so the centroids a
checkpoint carries are those of its own weights, and each epoch's gradient steps see fixed centroids.
Every epoch writes history.csv, last.pt (everything needed to resume exactly, every rank's CPU and CUDA generator
states included) and, when the epoch is selected by `select` (wsi_ncmi.mil.selection), model.pt.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from wsi_ncmi.core.atomic import atomic_path, save_torch
from wsi_ncmi.core.device import resolve_device
from wsi_ncmi.formats.layout import RunFolder
from wsi_ncmi.mil.checkpoint import Trained, check_loop_settings, checkpoint_of
from wsi_ncmi.mil.data import BagSet, class_weights, epoch_order, step_groups, subsample
from wsi_ncmi.mil.distributed import Cluster
from wsi_ncmi.mil.heads import Head, build_head
from wsi_ncmi.mil.metrics import core_metrics
from wsi_ncmi.mil.models import MODELS, MILModel, build_model
from wsi_ncmi.mil.schedule import lr_factor
from wsi_ncmi.mil.selection import first_eligible, improves, selection_score
from wsi_ncmi.mil.speed import EpochLosses, optimizer, sized_threads
from wsi_ncmi.mil.trainconfig import TrainConfig

SINGLE = Cluster()
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_macro_f1",
    "val_accuracy",
    "val_auc",
    "val_ncmi",
    "lr",
    "seconds",
]


@torch.no_grad()
def embed_bags(model: MILModel, bags: BagSet, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """Slide embeddings (n, m) of every non-empty bag, model in eval mode; and the mask of non-empty bags."""
    model.eval()
    rows, keep = [], np.ones(len(bags), dtype=bool)
    for i in range(len(bags)):
        features = bags.features(i)
        if len(features) == 0:
            keep[i] = False
            continue
        with _autocast(device):
            rows.append(model(torch.from_numpy(features).to(device)).h.float())
    h = torch.stack(rows) if rows else torch.zeros(0, model.dim, device=device)
    return h, keep


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def outputs(head: Head, prior: np.ndarray, h: torch.Tensor, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, C) and predictions (n,) from embeddings of the non-empty bags; empty ones get the prior."""
    probs = np.tile(prior, (len(keep), 1))
    preds = np.full(len(keep), int(np.argmax(prior)))
    if keep.any():
        probs[keep] = head.probabilities(h).double().cpu().numpy()
        preds[keep] = head.predict(h).cpu().numpy()
    return probs, preds


def predict(trained: Trained, bags: BagSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities (n, C), predictions (n,) and a no-tiles flag (n,); empty bags get the training prior."""
    h, keep = embed_bags(trained.model, bags, trained.device)
    probs, preds = outputs(trained.head, trained.prior, h, keep)
    return probs, preds, ~keep


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    best_metrics: dict[str, float]
    stopped_early: bool


def _write_history(rows: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return frame


def resolve_config(config: TrainConfig, labels: np.ndarray, n_classes: int) -> TrainConfig:
    """A copy with the settings training derives (the class count of a model that takes one, balanced class
    weights); warns about a class imbalance corrected twice (balanced sampling and balanced class weights together)."""
    config = copy.deepcopy(config)
    if getattr(MODELS.get(config.model), "takes_class_count", False):
        config.model_args.setdefault("n_classes", n_classes)
    if config.class_weights == "balanced":
        config.loss_args["class_weights"] = class_weights(labels, n_classes)
        if config.balanced_sampling:
            warnings.warn(
                "balanced_sampling and class_weights: balanced both correct the class imbalance, so rare classes "
                "count twice over; keep one of them",
                stacklevel=3,
            )
    return config


def make_optimizer(
    parameters: list[torch.nn.Parameter], config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimiser every loss trains with: config.optimizer (AdamW, Adam or SGD with config.momentum) at
    config.lr and config.weight_decay (fused where it can be)."""
    if not parameters:
        raise ValueError(
            f"{config.model} with {config.model_args} and loss {config.loss} has no trainable parameters; "
            "give the model a dim, a neck or a loss with a head"
        )
    return optimizer(config.optimizer, parameters, config.lr, config.weight_decay, device, config.momentum)


@dataclass
class _Session:
    """What the epoch loop works on: model, head, the DDP-wrapped step, optimiser and schedule."""

    model: MILModel
    head: Head
    step: torch.nn.Module
    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device


def _setup(config: TrainConfig, in_dim: int, n_classes: int, steps: int, device: torch.device, cluster: Cluster):
    """Seeded model and head, the optimiser and the warm-up + cosine or step schedule over optimiser steps
    (`steps` per epoch)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, in_dim, **config.model_args).to(device)
    head = build_head(config.loss, model.dim, n_classes, **config.loss_args).to(device)
    parameters = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = make_optimizer(parameters, config, device)
    step: torch.nn.Module = _Step(model, head, device)
    if cluster.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step = DistributedDataParallel(
            step, broadcast_buffers=False, device_ids=[device.index] if device.type == "cuda" else None
        )
    factor = lr_factor(
        config.schedule, config.warmup_epochs * steps, config.epochs * steps, steps, config.milestones, config.gamma
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return _Session(model, head, step, parameters, optimizer, scheduler, device)


def _rng_states(device: torch.device, cluster: Cluster) -> dict[str, torch.Tensor]:
    """Every rank's torch (and CUDA) generator state, one row per rank (a collective call on every rank)."""
    states = {"torch": cluster.gather(torch.get_rng_state()[None].to(device)).cpu()}
    if device.type == "cuda":
        states["cuda"] = cluster.gather(torch.cuda.get_rng_state(device)[None].to(device)).cpu()
    return states


def _restore_rng(state: dict[str, Any], device: torch.device, cluster: Cluster) -> None:
    """Put back this rank's generator states from last.pt (older files kept rank 0's CPU state only)."""
    states = state.get("rng_states")
    if states is None:
        torch.set_rng_state(state["torch_rng"])
        return
    rank = cluster.rank if len(states["torch"]) == cluster.world else 0
    torch.set_rng_state(states["torch"][rank].clone())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"][rank].clone(), device)


def _train_epoch(
    session: _Session,
    bags: BagSet,
    order: np.ndarray,
    config: TrainConfig,
    epoch: int,
    cluster: Cluster,
    console: Any,
) -> EpochLosses:
    """One pass of gradient steps over `order`, config.bags_per_step bags each (data.step_groups); the per-step
    losses (kept on the device)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    session.model.train()
    rng = np.random.default_rng([config.seed, epoch, 1])
    targets = torch.as_tensor(bags.labels, device=session.device)
    groups = step_groups(order, config.bags_per_step)
    losses = EpochLosses([", ".join(bags.slide_ids[i] for i in group) for group in groups], session.device)
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(order), loss="")
        for group in groups:
            xs = [
                torch.from_numpy(subsample(bags.features(i), config.max_tiles, rng)).to(session.device) for i in group
            ]
            y = targets[torch.from_numpy(group).to(session.device)]
            loss, h = session.step(xs, y)
            session.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(session.parameters, config.grad_clip)
            session.optimizer.step()
            session.scheduler.step()
            session.head.after_step(cluster.gather(h), cluster.gather(y))
            losses.add(loss)
            bar.update(task, advance=len(group), **losses.shown())
    return losses


@sized_threads
def train(
    train_bags: BagSet,
    val_bags: BagSet,
    classes: list[str],
    config: TrainConfig,
    run: Path,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
    cluster: Cluster = SINGLE,
) -> TrainResult:
    """Train on `train_bags`, select on `val_bags` by config.select, write RUN/model.pt, last.pt and history.csv.

    With a cluster of several ranks (torchrun), each rank steps through its share of every epoch under
    DistributedDataParallel and only rank 0 writes.
    """
    from rich.console import Console

    console = Console(highlight=False, quiet=not (progress and cluster.main))
    device = cluster.device(resolve_device(config.device))
    n_classes = len(classes)
    keep = np.asarray([s not in train_bags.empty for s in train_bags.slide_ids])
    if not keep.all():
        skipped = [s for s, k in zip(train_bags.slide_ids, keep, strict=True) if not k]
        warnings.warn(f"skipping {len(skipped)} empty training bag(s): {', '.join(skipped[:10])}", stacklevel=2)
    train_index = np.flatnonzero(keep)
    labels = train_bags.labels[train_index]
    config = resolve_config(config, train_bags.labels, n_classes)
    prior = np.bincount(labels, minlength=n_classes) / max(len(labels), 1)
    steps = len(step_groups(cluster.share(train_index), config.bags_per_step))
    session = _setup(config, train_bags.dim, n_classes, steps, device, cluster)
    model, head = session.model, session.head
    console.print(
        f"{config.model}: {sum(p.numel() for p in model.parameters()):,} parameters; {config.loss} head: "
        f"{sum(p.numel() for p in head.parameters()):,}; {len(train_index)} training and {len(val_bags)} "
        f"validation bags; device {device}, {torch.get_num_threads()} thread(s)"
        + (f"; {cluster.world} processes" if cluster.world > 1 else "")
    )
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "macro_f1": -math.inf, "auc": -math.inf, "val_loss": math.inf, "score": None}
    first = first_eligible(config.select_from, config.warmup_epochs, config.epochs)
    start_epoch, stale = 0, 0
    extra = dict(extra or {})
    if resume:
        state = torch.load(RunFolder(run).last, map_location="cpu", weights_only=True)
        check_loop_settings(state["checkpoint"], config, RunFolder(run).last)
        model.load_state_dict(state["checkpoint"]["state_dict"])
        head.load_state_dict(state["checkpoint"]["head_state"])
        session.optimizer.load_state_dict(state["optimizer"])
        session.scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state, device, cluster)
        history, best, stale = list(state["history"]), {**best, **state["best"]}, int(state["stale"])
        start_epoch = int(state["epoch"]) + 1
        if state.get("finished"):
            console.print(f"{run}: training already finished at epoch {start_epoch}; nothing to resume")
            return TrainResult(
                pd.DataFrame(history, columns=HISTORY_COLUMNS),
                int(best["epoch"]),
                dict(best),
                bool(state.get("stopped_early")),
            )
        console.print(f"resuming {run} at epoch {start_epoch + 1}/{config.epochs}")
    elif head.needs_epoch_pass:
        _epoch_pass(model, head, train_bags, train_index, device, cluster)

    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        order = cluster.share(train_index[epoch_order(labels, config.seed, epoch, config.balanced_sampling)])
        losses = _train_epoch(session, train_bags, order, config, epoch, cluster, console)
        cluster.average_buffers(model)
        if head.needs_epoch_pass:
            _epoch_pass(model, head, train_bags, train_index, device, cluster)
        metrics, val_loss = _validate(model, head, val_bags, prior, n_classes, device, cluster)
        row = {
            "epoch": epoch + 1,
            "train_loss": losses.mean(),
            "val_loss": val_loss,
            "val_macro_f1": metrics["macro_f1"],
            "val_accuracy": metrics["accuracy"],
            "val_auc": metrics["auc"],
            "val_ncmi": metrics["ncmi"],
            "lr": session.scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        f1 = metrics["macro_f1"] if math.isfinite(metrics["macro_f1"]) else -1.0
        auc = metrics["auc"] if math.isfinite(metrics["auc"]) else -1.0
        loss_value = val_loss if math.isfinite(val_loss) else math.inf
        score = selection_score(config.select, history, config.select_window, first, config.epochs)
        finished = epoch + 1 == config.epochs
        fallback = finished and best["epoch"] < 0 and score is None
        selected = improves(score, best["score"]) or fallback
        if fallback:
            console.print(
                f"no epoch met the selection rule ({config.select}: none had a valid validation score); "
                "model.pt is the last epoch"
            )
        checkpoint = checkpoint_of(
            model,
            head,
            config,
            classes,
            prior,
            {**extra, "epoch": epoch + 1, "val_metrics": {k: float(v) for k, v in metrics.items()}},
        )
        if selected:
            kept = None if score is None else [float(v) for v in score]
            best = {"epoch": epoch + 1, "macro_f1": f1, "auc": auc, "val_loss": loss_value, "score": kept}
            stale = 0
            if cluster.main:
                save_torch(checkpoint, RunFolder(run).model)
        elif score is not None or best["epoch"] > 0:
            stale += 1
        stopped_early = config.patience is not None and stale >= config.patience and best["epoch"] > 0
        finished = stopped_early or finished
        rng_states = _rng_states(device, cluster)
        if cluster.main:
            _write_history(history, RunFolder(run).history)
            save_torch(
                {
                    "checkpoint": checkpoint,
                    "optimizer": session.optimizer.state_dict(),
                    "scheduler": session.scheduler.state_dict(),
                    "rng_states": rng_states,
                    "epoch": epoch,
                    "history": history,
                    "best": best,
                    "stale": stale,
                    "finished": finished,
                    "stopped_early": stopped_early,
                },
                RunFolder(run).last,
            )
        cluster.barrier()
        console.print(
            f"epoch {epoch + 1:>3}: train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
            f"macro-F1 {metrics['macro_f1']:.3f}  acc {metrics['accuracy']:.3f}  AUC {metrics['auc']:.3f}  "
            f"NCMI {metrics['ncmi']:.3f}{'  *' if selected else ''}"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
        if stopped_early:
            console.print(f"early stop: no improvement by {config.select} in {config.patience} epochs")
            break
    return TrainResult(pd.DataFrame(history, columns=HISTORY_COLUMNS), int(best["epoch"]), dict(best), stopped_early)


class _Step(torch.nn.Module):
    """Model and head as one module (so DistributedDataParallel reduces both): a step's bags in, one loss and their
    embeddings (B, m) out.

    The bags are pooled one by one (each as long as it is; max_tiles bounds the memory), their embeddings pass the
    neck together and the head's loss is taken once over the stack. A model's own loss term (CLAM's instance
    loss) is added per bag and averaged: with one bag this is exactly combine_loss, and as the bag loss enters it
    linearly, the mean over bags is combine_loss of the batch loss with the bags' mean instance loss."""

    def __init__(self, model: MILModel, head: Head, device: torch.device):
        super().__init__()
        self.model, self.head, self.device = model, head, device

    def forward(self, xs: list[torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(self.device):
            outputs = self.model.forward_bags(xs)
        h = torch.stack([output.h for output in outputs]).float()
        bag_loss = self.head.loss(h, y)
        losses = [self.model.combine_loss(bag_loss, output, y[i : i + 1]) for i, output in enumerate(outputs)]
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        return loss, h.detach()


def _epoch_pass(
    model: MILModel, head: Head, bags: BagSet, index: np.ndarray, device: torch.device, cluster: Cluster
) -> None:
    """The closed-form Q-step on all training bags: each rank embeds its part, the head sees all of them."""
    part = cluster.part(index)
    h, _ = embed_bags(model, _subset(bags, part), device)
    y = torch.from_numpy(bags.labels[part]).to(device)
    head.epoch_pass(cluster.gather(h), cluster.gather(y))


def _subset(bags: BagSet, index: np.ndarray) -> BagSet:
    return BagSet(
        [bags.slide_ids[i] for i in index],
        bags.labels[index],
        [bags.paths[i] for i in index],
        bags.dim,
        bags.cache,
        bags.empty,
    )


@torch.no_grad()
def _validate(
    model: MILModel,
    head: Head,
    bags: BagSet,
    prior: np.ndarray,
    n_classes: int,
    device: torch.device,
    cluster: Cluster = SINGLE,
) -> tuple[dict[str, float], float]:
    """Calibrate the head on the validation bags, then their core metrics and mean loss (all ranks' bags)."""
    part = cluster.part(np.arange(len(bags)))
    h, keep = embed_bags(model, _subset(bags, part), device)
    h = cluster.gather(h)
    keep = cluster.gather(torch.from_numpy(keep)).numpy()
    labels = cluster.gather(torch.from_numpy(bags.labels[part])).numpy()
    val_loss = math.nan
    if keep.any():
        y = torch.from_numpy(labels[keep]).to(device)
        head.calibrate(h, y)
        val_loss = float(head.loss(h, y))
    probs, preds = outputs(head, prior, h, keep)
    return core_metrics(labels, preds, probs, n_classes), val_loss
