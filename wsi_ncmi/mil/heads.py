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

from wsi_ncmi.core.registry import Registry
from wsi_ncmi.mil import ncmi as N
from wsi_ncmi.mil.settings import resolved_settings

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

    @classmethod
    def training_problems(cls, training: Any) -> list[str]:
        """What this loss refuses in the other training settings (`training`, a TrainConfig), one phrase each;
        checked with the generic settings, so a config lists every problem at once. None by default."""
        return []

    @classmethod
    def upgrade_state(cls, loss_args: dict[str, Any], head_state: dict[str, Any]) -> None:
        """Bring the head settings and state of a checkpoint written by an older version to today's layout, in
        place, so the head predicts as it did; nothing to do by default."""

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

    State (buffers, saved with the model): mu (the centre), centroids Q (C, m), tau (probability calibration).

    centroids, what the loss pulls towards: 'anchor' (the authors' form, the default) fixed sigmax(10 e_c) anchors,
    while prediction uses the class means of the latest pass over the training bags (`class_centroids`); 'epoch'
    the class means themselves; 'ema' those plus per-step moving averages. Training against class means lets
    classes share a centroid: a separation averaged over the other classes barely notices a merge with one or two
    of them (KL between merged centroids ~1e-4), so the loss falls while training accuracy stalls with a
    block-shaped confusion matrix. `separation: softmin` (see wsi_ncmi.mil.ncmi.SEPARATIONS) penalises a merge.

    centre, how mu is set: 'frozen' (the authors' form, the default) takes the mean of the train-mode embeddings of
    the first training step, then moves mu only by the per-step moving average with `decay` (0.999999: all but
    fixed); no epoch pass touches it (with batch statistics in the model, eval-mode embeddings are centred
    differently, and every re-estimate shifts every centred vector). The authors' first step holds 128 samples; the
    mean of one bag is that bag, with no direction, so a smaller first step is averaged with the next ones until
    `centre_samples` embeddings were seen or the first epoch ended (a bag equal to the centre adds no gradient).
    'epoch' re-estimates mu from all training embeddings at every epoch pass (eval mode), plus the moving average.

    The head has no parameters: whatever sits between pooling and h (the model's neck) is shared with every loss.
    """

    needs_epoch_pass = True
    CENTROID_MODES = ("epoch", "ema", "anchor")
    CENTRE_MODES = ("frozen", "epoch")
    TAU_SPAN = 1e6
    """tau is searched in [s / TAU_SPAN, s * TAU_SPAN], s the median spread of a validation bag's scores."""

    def __init__(
        self,
        dim: int,
        n_classes: int,
        class_weights: list[float] | None = None,
        temperature: float = 0.2,
        decay: float = 0.999999,
        centroids: str = "anchor",
        ema_alpha: float = 0.99,
        centre: str = "frozen",
        centre_samples: int = 128,
        separation: str = "mean_all",
        tau_smoothing: float | None = None,
    ):
        super().__init__(dim, n_classes, class_weights)
        if dim < n_classes:
            raise ValueError(f"the embedding size ({dim}) must be at least the number of classes ({n_classes})")
        for name, value, known in (
            ("centroids", centroids, self.CENTROID_MODES),
            ("centre", centre, self.CENTRE_MODES),
            ("separation", separation, N.SEPARATIONS),
        ):
            if value not in known:
                raise ValueError(f"{name} must be one of {', '.join(known)}, got {value!r}")
        if temperature <= 0 or not 0 <= decay < 1 or not 0 <= ema_alpha < 1 or centre_samples < 1:
            raise ValueError("need temperature > 0, 0 <= decay < 1, 0 <= ema_alpha < 1 and centre_samples >= 1")
        if tau_smoothing is not None and not 0 < tau_smoothing < 1:
            raise ValueError(f"tau_smoothing must be in (0, 1) or null (1/(n + 2)), got {tau_smoothing}")
        self.temperature, self.decay, self.mode, self.ema_alpha = float(temperature), float(decay), centroids, ema_alpha
        self.centre, self.centre_samples, self.separation = centre, int(centre_samples), separation
        self.tau_smoothing = None if tau_smoothing is None else float(tau_smoothing)
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("centre_seen", torch.tensor(0))
        """How many train-mode embeddings the frozen centre's first estimate averages."""
        self.register_buffer("centre_ready", torch.tensor(False))
        """True once the frozen centre's first estimate is complete; from then on only the moving average moves it."""
        anchors = torch.zeros(n_classes, dim)
        anchors[torch.arange(n_classes), torch.arange(n_classes)] = 10.0
        self.register_buffer("centroids", N.log_sigmax(anchors).exp())
        if centroids == "anchor":
            self.register_buffer("class_centroids", self.centroids.clone())
        self.register_buffer("tau", torch.tensor(1.0))
        self.calibration: dict[str, Any] = {}
        """The last fit of tau: its value, the smoothing used, whether validation was separable or a bound was hit."""
        self._said: set[str] = set()

    @classmethod
    def training_problems(cls, training: Any) -> list[str]:
        if not training.grad_clip:
            return [
                "grad_clip must be set for loss ncmi (e.g. 1.0): its CMI/SEP ratio is heavy-tailed when SEP is small"
            ]
        return []

    @classmethod
    def upgrade_state(cls, loss_args: dict[str, Any], head_state: dict[str, Any]) -> None:
        """Anchor-mode checkpoints without class means predicted with the anchors, so those stand in for them."""
        if loss_args.get("centroids") == "anchor" and "class_centroids" not in head_state:
            head_state["class_centroids"] = head_state["centroids"].clone()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        """A state written before the centre setting keeps its behaviour: centre 'epoch', separation 'mean_other'."""
        if prefix + "mu" in state_dict and prefix + "centre_ready" not in state_dict:
            self.centre, self.separation = "epoch", "mean_other"
            self.settings.update(centre="epoch", separation="mean_other")
            state_dict[prefix + "centre_seen"] = torch.tensor(0)
            state_dict[prefix + "centre_ready"] = torch.tensor(False)
            if self.mode == "anchor" and prefix + "class_centroids" not in state_dict:
                state_dict[prefix + "class_centroids"] = state_dict[prefix + "centroids"].clone()
        super()._load_from_state_dict(state_dict, prefix, *args)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """The embedding NCMI acts on: h in float64, so near-identical distributions keep their (small) KL."""
        return h.double()

    def predict_centroids(self) -> torch.Tensor:
        """The centroids prediction uses: the class means (also in anchor mode, whose anchors only shape the loss)."""
        return self.class_centroids if self.mode == "anchor" else self.centroids

    def log_p(self, h: torch.Tensor) -> torch.Tensor:
        return N.log_p(self.embed(h), self.mu.double(), self.temperature)

    def training_centre(self, h: torch.Tensor) -> torch.Tensor:
        """mu for a loss: during the frozen centre's first estimate, a training step (h with gradient) is centred on
        the mean that includes its own embeddings, as the authors' first step is; otherwise the stored mu."""
        mu = self.mu.double()
        if self.centre == "frozen" and not bool(self.centre_ready) and torch.is_grad_enabled() and h.requires_grad:
            seen = int(self.centre_seen)
            mu = (mu * seen + self.embed(h).detach().sum(0)) / (seen + len(h))
        return mu

    def loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_p = N.log_p(self.embed(h), self.training_centre(h), self.temperature)
        return N.ncmi_loss(log_p, N.safe_log(self.centroids), y, self.class_weights, self.separation)

    def kl_to_centroids(self, h: torch.Tensor) -> torch.Tensor:
        return N.kl_rows_to_centroids(self.log_p(h), N.safe_log(self.predict_centroids().double()))

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return -self.kl_to_centroids(h)

    def probabilities(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(h) / self.tau.double(), dim=-1)

    @torch.no_grad()
    def epoch_pass(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Class means of P over the training embeddings; mu too in centre 'epoch'. In centre 'frozen' a pass after
        training started only ends the centre's first estimate (the first epoch is over)."""
        e = self.embed(h)
        if self.centre == "epoch":
            self.mu.copy_(e.mean(0))
        elif int(self.centre_seen) > 0:
            self.centre_ready.fill_(True)
        q = N.class_means(N.log_p(e, self.mu.double(), self.temperature).exp(), y, self.n_classes)
        target = self.class_centroids if self.mode == "anchor" else self.centroids
        target.copy_(q / q.sum(1, keepdim=True))

    @torch.no_grad()
    def after_step(self, h: torch.Tensor, y: torch.Tensor) -> None:
        e = self.embed(h)
        if self.centre == "frozen" and not bool(self.centre_ready):
            seen = int(self.centre_seen)
            self.mu.copy_((self.mu.double() * seen + e.sum(0)) / (seen + len(e)))
            self.centre_seen.fill_(seen + len(e))
            self.centre_ready.fill_(seen + len(e) >= self.centre_samples)
        else:
            self.mu.mul_(self.decay).add_(e.mean(0).to(self.mu.dtype), alpha=1 - self.decay)
        if self.mode == "ema":
            p = N.log_p(e, self.mu.double(), self.temperature).exp().to(self.centroids.dtype)
            for row, label in zip(p, y.tolist(), strict=True):
                self.centroids[label].mul_(self.ema_alpha).add_(row, alpha=1 - self.ema_alpha)
                self.centroids[label].div_(self.centroids[label].sum())

    def calibrate(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """tau = argmin of the validation NLL of softmax(-KL / tau) against labels smoothed by `tau_smoothing`
        (default 1/(n + 2) for n validation bags, the rule of succession), on a log grid around the scores' spread,
        then refined. Without the smoothing a perfectly separated validation set drives tau to 0 and probabilities
        to exactly 0 and 1; with it tau stays finite. That case, and a bound of the grid, are said once per head and
        recorded in `calibration`."""
        if len(y) == 0:
            return
        with torch.no_grad():
            scores = self.scores(h)
            n, c = scores.shape
            smoothing = 1.0 / (n + 2) if self.tau_smoothing is None else self.tau_smoothing
            target = torch.full_like(scores, smoothing / (c - 1))
            target[torch.arange(n), y] = 1.0 - smoothing
            spread = float((scores.max(1).values - scores.min(1).values).median())
            scale = spread if math.isfinite(spread) and spread > 0 else 1.0

            def nll(log_tau: float) -> float:
                return float(-(target * torch.log_softmax(scores / math.exp(log_tau), -1)).sum(1).mean())

            low, high = math.log(scale / self.TAU_SPAN), math.log(scale * self.TAU_SPAN)
            grid = torch.linspace(high, low, 121).tolist()
            best = min(grid, key=nll)
            step = grid[0] - grid[1]
            log_tau = min(torch.linspace(min(high, best + step), max(low, best - step), 41).tolist(), key=nll)
            own = scores.gather(1, y[:, None]).squeeze(1)
            separable = bool((own > scores.scatter(1, y[:, None], -math.inf).max(1).values).all())
        tau = math.exp(log_tau)
        self.tau.fill_(tau)
        bound = "lower" if log_tau <= low + 1e-9 else "upper" if log_tau >= high - 1e-9 else None
        self.calibration = {"tau": tau, "at_bound": bound, "separable": separable, "smoothing": smoothing}
        if separable and "separable" not in self._said:
            self._said.add("separable")
            warnings.warn(
                f"NCMI calibration: the {n} validation bags are separated perfectly, so tau ({tau:.3g}) is set by "
                f"the label smoothing of its fit (tau_smoothing {smoothing:.3g}; unset means 1/(n + 2)), not by the "
                "data; calibration in the checkpoint records each fit",
                stacklevel=2,
            )
        if bound is not None and "bound" not in self._said:
            self._said.add("bound")
            warnings.warn(
                f"NCMI calibration: tau stopped at the {bound} bound of its search ({tau:.3g}); the validation scores "
                f"carry {'no usable' if bound == 'upper' else 'too little spread for'} information, so probabilities "
                f"are as {'flat' if bound == 'upper' else 'sharp'} as the search allows",
                stacklevel=2,
            )
