"""Training speed: intra-op threads sized to the work of a step, a fused optimiser, and a running loss that stays
on the device until it is shown.

A step on a small bag is a few hundred tiny operations; splitting each over several threads costs more than it
saves, and when anything else runs on the machine the threads wait on each other (a 1-3 ms step becomes 30-300 ms).
So steps below SERIAL_FLOPS run on one thread, larger ones on the cores the machine leaves free. The setting
`threads` (training config), then the environment variables WSI_NCMI_THREADS and OMP_NUM_THREADS, override it.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from wsi_ncmi.core.cores import usable_cores

if TYPE_CHECKING:
    from wsi_ncmi.mil.data import BagSet

Result = TypeVar("Result")

THREADS_ENV = "WSI_NCMI_THREADS"
SERIAL_FLOPS = 1e9
"""Estimated floating-point operations of a step below which one intra-op thread is fastest."""


def step_flops(model: torch.nn.Module, tiles: int) -> float:
    """Rough work of one training step on a bag of `tiles`: forward and backward, about 6 x parameters x tiles."""
    return 6.0 * max(tiles, 1) * sum(p.numel() for p in model.parameters())


def _positive(value: str, source: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{source}={value!r}: threads must be a whole number >= 1")
    return number


def choose_threads(flops: float, setting: int | None = None) -> int:
    """Intra-op threads for training steps of `flops` work: the setting, else WSI_NCMI_THREADS, else
    OMP_NUM_THREADS, else one below SERIAL_FLOPS and this process's share of the idle cores above."""
    if setting is not None:
        return _positive(str(setting), "threads")
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        if os.environ.get(name, "").strip():
            return _positive(os.environ[name].strip(), name)
    return 1 if flops < SERIAL_FLOPS else usable_cores()


def typical_tiles(bags: BagSet, max_tiles: int | None, sample: int = 16) -> int:
    """Median tiles per step over (up to) the first `sample` non-empty bags, capped at max_tiles."""
    lengths = [n for n in (len(bags.features(i)) for i in range(min(len(bags), sample))) if n]
    tiles = int(np.median(lengths)) if lengths else 1
    return min(tiles, max_tiles) if max_tiles else tiles


def training_threads(
    model_name: str,
    model_args: dict[str, Any],
    bags: BagSet,
    max_tiles: int | None,
    setting: int | None,
    bags_per_step: int = 1,
) -> int:
    """Threads for training `model_name` on `bags`, `bags_per_step` bags a step; the model is built on the meta
    device to count its parameters."""
    from wsi_ncmi.mil.models import build_model

    with torch.device("meta"):
        model = build_model(model_name, max(bags.dim, 1), **model_args)
    return choose_threads(step_flops(model, typical_tiles(bags, max_tiles) * max(1, bags_per_step)), setting)


def sized_threads(train: Callable[..., Result]) -> Callable[..., Result]:
    """Run `train(train_bags, val_bags, classes, config, ...)` with the intra-op threads its config and bags call
    for (training_threads), restoring the previous count afterwards."""

    @functools.wraps(train)
    def wrapper(train_bags: BagSet, *args: Any, **kwargs: Any) -> Result:
        config = kwargs["config"] if "config" in kwargs else args[2]
        threads = training_threads(
            config.model,
            config.model_args,
            train_bags,
            config.max_tiles,
            getattr(config, "threads", None),
            getattr(config, "bags_per_step", 1),
        )
        with intra_op_threads(threads):
            return train(train_bags, *args, **kwargs)

    return wrapper


@contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


OPTIMIZERS = ("adamw", "adam", "sgd")
"""adamw: decoupled weight decay (Loshchilov & Hutter); adam: L2 added to the gradient (torch.optim.Adam), as Ilse et
al. 2018 trained; sgd: momentum SGD without Nesterov, L2 added to the gradient, as the NCMI authors' image recipe."""


def optimizer(
    name: str,
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    device: torch.device,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """AdamW, Adam (coupled L2 weight decay) or SGD with `momentum` (nesterov off) on the fused kernel (one pass
    over all parameters; CPU and CUDA), else the multi-tensor one.

    On CPU the fused step of a 1024 -> 512 abmil takes about 0.7 ms against 11 ms for the per-parameter loop.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    parameters = list(parameters)
    if name == "sgd":
        kind: Any = functools.partial(torch.optim.SGD, momentum=momentum, nesterov=False)
    else:
        kind = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    if device.type in ("cpu", "cuda"):
        try:
            return kind(parameters, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return kind(parameters, lr=lr, weight_decay=weight_decay, foreach=True)


class EpochLosses:
    """An epoch's step losses kept on the device, so no step waits for the device to report its loss.

    The host reads them back only when the progress bar is due for a new running mean (every `every` seconds)
    and at the end of the epoch; each read also checks that every loss so far was finite.
    """

    def __init__(self, slide_ids: list[str], device: torch.device, every: float = 0.5):
        """`slide_ids`: per step, the slide (or comma-separated slides) it trained on."""
        self.slide_ids, self.every = slide_ids, every
        self.values = torch.zeros(max(len(slide_ids), 1), device=device)
        self.count = 0
        self._shown = time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.values[self.count] = loss.detach().float()
        self.count += 1

    def shown(self) -> dict[str, str]:
        """The progress bar's loss field when due ({} otherwise); raises on a non-finite loss."""
        now = time.perf_counter()
        if now - self._shown < self.every and self.count < len(self.slide_ids):
            return {}
        self._shown = now
        return {"loss": f"loss {self.mean():.4f}"}

    def mean(self) -> float:
        """The mean loss so far (NaN before the first step); FloatingPointError naming the slide of the first
        non-finite loss."""
        if not self.count:
            return math.nan
        seen = self.values[: self.count]
        bad = (~torch.isfinite(seen)).nonzero()
        if len(bad):
            raise FloatingPointError(f"non-finite loss on slide {self.slide_ids[int(bad[0, 0])]}")
        return float(seen.mean())
