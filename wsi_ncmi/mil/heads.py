"""Losses with their heads: a loss owns its head, its prediction rule and its class probabilities.

`ce`, `focal`: a linear head on the slide embedding. `cmic`: CE plus the conditional-mutual-information
constraint on the softmax outputs (lambda * CMI - beta * Gamma, class-mean centroids from the same Q-step as NCMI).
`ncmi`: no linear head; nearest centroid in KL in embedding space (see wsi_ncmi.mil.ncmi).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsi_ncmi.mil import ncmi as N
from wsi_ncmi.mil.settings import resolved_settings
from wsi_ncmi.registry import Registry

HEADS: Registry[type[Head]] = Registry("loss")
register_head = HEADS.register


def build_head(name: str, dim: int, n_classes: int, **kwargs: Any) -> Head:
    """A registered loss/head by name; unknown names and settings are errors naming the known ones."""
    head = HEADS.build(name, dim, n_classes, **kwargs)
    head.settings = resolved_settings(type(head), ("dim", "n_classes"), **kwargs)
    return head


class Head(nn.Module):
    """The contract every loss keeps. Scores are larger for likelier classes; probabilities sum to 1."""

    name = "head"
    needs_epoch_pass = False

    def __init__(self, dim: int, n_classes: int, class_weights: list[float] | None = None):
        super().__init__()
        if n_classes < 2:
            raise ValueError("at least two classes are needed")
        self.dim, self.n_classes = dim, n_classes
        self.settings: dict[str, Any] = {}
        """Every constructor setting with the value it took (defaults included); checkpoints record it."""
        weights = (
            torch.ones(n_classes) if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights)

    def weighted_mean(self, per_sample: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """mean_i w_{y_i} * loss_i: the class weight scales each bag's loss, also with one bag per step."""
        return (per_sample * self.class_weights[y]).mean()

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(h), dim=-1)

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        return self.scores(h).argmax(-1)

    def epoch_pass(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Closed-form step on all training embeddings (no grad, model in eval mode); a no-op by default."""

    def after_step(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Running updates after an optimiser step (detached embeddings); a no-op by default."""

    def calibrate(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Fit probability calibration on validation embeddings; a no-op by default."""


class LinearHead(Head):
    def __init__(self, dim: int, n_classes: int, class_weights: list[float] | None = None):
        super().__init__(dim, n_classes, class_weights)
        self.linear = nn.Linear(dim, n_classes)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


@register_head("ce")
class CrossEntropyHead(LinearHead):
    """Cross-entropy on a linear head, with optional class weights and label smoothing."""

    def __init__(
        self, dim: int, n_classes: int, class_weights: list[float] | None = None, label_smoothing: float = 0.0
    ):
        super().__init__(dim, n_classes, class_weights)
        self.label_smoothing = float(label_smoothing)

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per_sample = F.cross_entropy(self.scores(h).float(), y, reduction="none", label_smoothing=self.label_smoothing)
        return self.weighted_mean(per_sample, y)


@register_head("focal")
class FocalHead(LinearHead):
    """Focal loss (Lin et al. 2017): CE down-weighted by (1 - p_y)^gamma on easy examples."""

    def __init__(self, dim: int, n_classes: int, class_weights: list[float] | None = None, gamma: float = 2.0):
        super().__init__(dim, n_classes, class_weights)
        self.gamma = float(gamma)

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(self.scores(h).float(), -1).gather(1, y[:, None]).squeeze(1)
        focal = -((1 - log_probs.exp()) ** self.gamma) * log_probs
        return self.weighted_mean(focal, y)


@register_head("cmic")
class CMIConstrainedHead(LinearHead):
    """CE + lambda * CMI - beta * Gamma on softmax outputs, centroids = class means of the training softmax."""

    needs_epoch_pass = True

    def __init__(
        self, dim: int, n_classes: int, class_weights: list[float] | None = None, lam: float = 0.1, beta: float = 0.01
    ):
        super().__init__(dim, n_classes, class_weights)
        self.lam, self.beta = float(lam), float(beta)
        self.register_buffer("centroids", torch.full((n_classes, n_classes), 1.0 / n_classes))

    @torch.no_grad()
    def epoch_pass(self, h: torch.Tensor, y: torch.Tensor) -> None:
        probs = torch.softmax(self.scores(h).float(), -1)
        q = N.class_means(probs, y, self.n_classes)
        self.centroids.copy_(q / q.sum(1, keepdim=True))

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.scores(h).float()
        ce = self.weighted_mean(F.cross_entropy(logits, y, reduction="none"), y)
        cmi, gamma = N.ncmi_terms(F.log_softmax(logits, -1), N.safe_log(self.centroids), y)
        return ce + self.lam * cmi.mean() - self.beta * gamma.mean()


@register_head("ncmi")
class NCMIHead(Head):
    """NCMI: P(h) = sigmax(centred, L2-normalised h / T); loss CMI/SEP; prediction argmin_c D(P(h) || Q_c).

    State (buffers, saved with the model): mu (running centre), centroids Q (C, m), tau (probability calibration).
    centroids: 'epoch' (Q-step at every epoch boundary), 'ema' (plus per-step moving averages) or 'anchor'
    (fixed sigmax(10 e_c) anchors in the loss; prediction uses the class means of the Q-step, kept in
    `class_centroids`). The head has no parameters: whatever sits between pooling and h (the model's neck) is
    shared with every other loss.
    """

    needs_epoch_pass = True
    CENTROID_MODES = ("epoch", "ema", "anchor")
    TAU_GRID = (1e-4, 1e2)

    def __init__(
        self,
        dim: int,
        n_classes: int,
        class_weights: list[float] | None = None,
        temperature: float = 0.2,
        decay: float = 0.999,
        centroids: str = "epoch",
        ema_alpha: float = 0.99,
    ):
        super().__init__(dim, n_classes, class_weights)
        if dim < n_classes:
            raise ValueError(f"the embedding size ({dim}) must be at least the number of classes ({n_classes})")
        if centroids not in self.CENTROID_MODES:
            raise ValueError(f"centroids must be one of {', '.join(self.CENTROID_MODES)}, got {centroids!r}")
        if temperature <= 0 or not 0 <= decay < 1 or not 0 <= ema_alpha < 1:
            raise ValueError("need temperature > 0, 0 <= decay < 1 and 0 <= ema_alpha < 1")
        self.temperature, self.decay, self.mode, self.ema_alpha = float(temperature), float(decay), centroids, ema_alpha
        self.register_buffer("mu", torch.zeros(dim))
        anchors = torch.zeros(n_classes, dim)
        anchors[torch.arange(n_classes), torch.arange(n_classes)] = 10.0
        self.register_buffer("centroids", N.log_sigmax(anchors).exp())
        if centroids == "anchor":
            self.register_buffer("class_centroids", self.centroids.clone())
        self.register_buffer("tau", torch.tensor(1.0))
        self.calibration: dict[str, Any] = {}
        """The last fit of tau: its value and whether it sits at a bound of the search grid."""

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """The embedding NCMI acts on: h in the centre's precision."""
        return h.to(self.mu.dtype)

    def predict_centroids(self) -> torch.Tensor:
        """The centroids prediction uses: the class means (also in anchor mode, whose anchors only shape the loss)."""
        return self.class_centroids if self.mode == "anchor" else self.centroids

    def log_p(self, h: torch.Tensor) -> torch.Tensor:
        return N.log_p(self.embed(h), self.mu, self.temperature)

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return N.ncmi_loss(self.log_p(h), N.safe_log(self.centroids), y, self.class_weights)

    def kl_to_centroids(self, h: torch.Tensor) -> torch.Tensor:
        return N.kl_rows_to_centroids(self.log_p(h), N.safe_log(self.predict_centroids()))

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return -self.kl_to_centroids(h)

    def probabilities(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(h) / self.tau, dim=-1)

    @torch.no_grad()
    def epoch_pass(self, h: torch.Tensor, y: torch.Tensor) -> None:
        e = self.embed(h)
        self.mu.copy_(e.mean(0))
        q = N.class_means(N.log_p(e, self.mu, self.temperature).exp(), y, self.n_classes)
        (self.class_centroids if self.mode == "anchor" else self.centroids).copy_(q / q.sum(1, keepdim=True))

    @torch.no_grad()
    def after_step(self, h: torch.Tensor, y: torch.Tensor) -> None:
        e = self.embed(h.float())
        if self.mode == "ema":
            p = N.log_p(e, self.mu, self.temperature).exp()
            for row, label in zip(p, y.tolist(), strict=True):
                self.centroids[label].mul_(self.ema_alpha).add_(row, alpha=1 - self.ema_alpha)
                self.centroids[label].div_(self.centroids[label].sum())
        self.mu.mul_(self.decay).add_(e.mean(0), alpha=1 - self.decay)

    @torch.no_grad()
    def calibrate(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """tau = argmin over a log grid (then refined) of the validation NLL of softmax(-KL / tau).

        A minimum at a bound of the grid (validation separable, or scores carrying no information) is warned about
        and recorded in `calibration`: probabilities are then as sharp or as flat as the grid allows, no more.
        """
        if len(y) == 0:
            return
        scores = self.scores(h)

        def nll(log_tau: float) -> float:
            return float(F.cross_entropy(scores / math.exp(log_tau), y))

        low, high = (math.log(b) for b in self.TAU_GRID)
        grid = torch.linspace(low, high, 121).tolist()
        best = min(grid, key=nll)
        step = grid[1] - grid[0]
        fine = torch.linspace(max(low, best - step), min(high, best + step), 41).tolist()
        log_tau = min(fine, key=nll)
        self.tau.fill_(math.exp(log_tau))
        bound = "lower" if log_tau <= low + 1e-9 else "upper" if log_tau >= high - 1e-9 else None
        self.calibration = {"tau": math.exp(log_tau), "at_bound": bound}
        if bound is not None:
            warnings.warn(
                f"NCMI probability calibration: tau stopped at the {bound} bound of its search grid "
                f"({self.TAU_GRID[0]:g}..{self.TAU_GRID[1]:g}); validation probabilities are as "
                f"{'sharp' if bound == 'lower' else 'flat'} as the grid allows",
                stacklevel=2,
            )
