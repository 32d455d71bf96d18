"""MIL aggregators: a bag of tile features (N, D) -> a slide embedding h (m,) and, where defined, attention (N,).

Registered by name with their hyperparameters: `abmil` (gated attention, Ilse et al. 2018), `abmil_plain`,
`mean`, `max`, `transmil` (Shao et al. 2021) and `clam_sb` (Lu et al. 2021, with its instance-clustering loss).
Every aggregator ends in the same optional neck (`neck: none|mlp|bn|mlp_bn`), so h is the same whatever loss reads
it. The neck acts on the stacked embeddings of a step's bags, so its BatchNorm variants see a batch of slides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsi_ncmi.core.registry import Registry
from wsi_ncmi.mil.settings import resolved_settings

MODELS: Registry[type[MILModel]] = Registry("model")
register_model = MODELS.register


def build_model(name: str, in_dim: int, **kwargs: Any) -> MILModel:
    """A registered aggregator by name; unknown names or settings are errors naming the known ones."""
    model = MODELS.build(name, in_dim, **kwargs)
    model.settings = resolved_settings(type(model), ("in_dim",), **kwargs)
    return model


@dataclass
class MILOutput:
    """What an aggregator returns for one bag."""

    h: torch.Tensor
    attention: torch.Tensor | None = None
    tiles: torch.Tensor | None = None


NECKS = ("none", "mlp", "bn", "mlp_bn")
BATCH_NECKS = ("bn", "mlp_bn")
"""Necks with BatchNorm: in training they normalise over the bags of a step, so a step needs at least two bags."""


def build_neck(neck: str, dim: int) -> nn.Module:
    """The step between pooling and h (dim -> dim, on a (B, dim) batch): `none` (the pooled embedding), `mlp`
    (Linear-ReLU-Linear), `bn` (BatchNorm1d, affine) or `mlp_bn` (Linear-BatchNorm1d-ReLU-Linear)."""
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {', '.join(NECKS)}, got {neck!r}")
    if neck == "mlp":
        return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
    if neck == "bn":
        return nn.BatchNorm1d(dim)
    if neck == "mlp_bn":
        return nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, dim))
    return nn.Identity()


class MILModel(nn.Module):
    """Tile projection (Linear + ReLU + dropout to `dim`), a pooling defined by each subclass, then the neck.

    dim=None keeps the tile features as they are (dropout only; the embedding size is the feature size), as
    torchmil's ABMIL does; it suits strong pathology encoders and halves the parameters. The neck belongs to the
    model, not to a loss, so a comparison of losses compares losses on one architecture.
    """

    name = "mil"
    takes_class_count = False
    """Whether the model has an `n_classes` setting that training fills in from the run's classes when unset."""

    def __init__(self, in_dim: int, dim: int | None = 512, dropout: float = 0.25, neck: str = "none"):
        super().__init__()
        self.in_dim, self.dim = in_dim, in_dim if dim is None else dim
        self.settings: dict[str, Any] = {}
        """Every constructor setting with the value it took (defaults included); checkpoints record it."""
        if dim is None:
            self.project: nn.Module = nn.Dropout(dropout)
        else:
            self.project = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.neck = build_neck(neck, self.dim)

    def pool(self, x: torch.Tensor) -> MILOutput:
        """The pooled slide embedding (before the neck) and, where defined, attention and projected tiles."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> MILOutput:
        """One bag (N, D) -> its output, h of shape (m,)."""
        return self.forward_bags([x])[0]

    def forward_bags(self, bags: list[torch.Tensor]) -> list[MILOutput]:
        """Several bags pooled one by one, then the neck on their stacked embeddings (B, m): a BatchNorm neck
        normalises over the bags of the call. Each output's h is its row of the neck's output."""
        outputs = [self.pool(x) for x in bags]
        h = self.neck(torch.stack([output.h for output in outputs]))
        for output, row in zip(outputs, h, strict=True):
            output.h = row
        return outputs

    def combine_loss(self, bag_loss: torch.Tensor, output: MILOutput, y: torch.Tensor) -> torch.Tensor:
        """The training loss from the head's bag loss; models with auxiliary losses (CLAM) add theirs here."""
        return bag_loss


class GatedAttention(nn.Module):
    """a_i = w^T (tanh(V x_i) * sigmoid(U x_i)) (gated) or w^T tanh(V x_i) (plain)."""

    def __init__(self, dim: int, hidden: int, dropout: float, gated: bool):
        super().__init__()
        self.v = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout)) if gated else None
        self.w = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.v(x)
        if self.u is not None:
            a = a * self.u(x)
        return self.w(a).squeeze(-1)


@register_model("abmil")
class ABMIL(MILModel):
    """Gated attention MIL: h = sum_i softmax(a)_i x_i over the projected tiles."""

    gated = True

    def __init__(
        self, in_dim: int, dim: int | None = 512, dropout: float = 0.25, attention_dim: int = 256, neck: str = "none"
    ):
        super().__init__(in_dim, dim, dropout, neck)
        self.attention = GatedAttention(self.dim, attention_dim, dropout, self.gated)

    def pool(self, x: torch.Tensor) -> MILOutput:
        tiles = self.project(x)
        weights = torch.softmax(self.attention(tiles), dim=0)
        return MILOutput(weights @ tiles, weights, tiles)


@register_model("abmil_plain")
class ABMILPlain(ABMIL):
    """Attention MIL without the sigmoid gate."""

    gated = False


@register_model("mean")
class MeanPool(MILModel):
    def pool(self, x: torch.Tensor) -> MILOutput:
        return MILOutput(self.project(x).mean(0))


@register_model("max")
class MaxPool(MILModel):
    def pool(self, x: torch.Tensor) -> MILOutput:
        return MILOutput(self.project(x).max(0).values)


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7/5/3 convolutions over the square-padded tile grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, tokens: torch.Tensor, side: int) -> torch.Tensor:
        grid = tokens.transpose(0, 1).reshape(1, tokens.shape[1], side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return grid.flatten(2).squeeze(0).transpose(0, 1)


class TransformerLayer(nn.Module):
    """Pre-norm multi-head self-attention with torch's scaled_dot_product_attention (memory-efficient kernels)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, dim = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, dim // self.heads).permute(1, 2, 0, 3)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        cls_attention = torch.softmax((q[:, :1] @ k.transpose(-1, -2)) / math.sqrt(dim // self.heads), -1)
        return x + self.out(attended.transpose(0, 1).reshape(n, dim)), cls_attention.mean(0)[0]


@register_model("transmil")
class TransMIL(MILModel):
    """Class token + two transformer layers with a PPEG position module between them (Shao et al. 2021)."""

    def __init__(
        self, in_dim: int, dim: int | None = 512, dropout: float = 0.25, heads: int = 8, neck: str = "none"
    ):
        super().__init__(in_dim, dim, dropout, neck)
        dim = self.dim
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.cls = nn.Parameter(torch.zeros(1, dim))
        nn.init.normal_(self.cls, std=1e-6)
        self.layer1 = TransformerLayer(dim, heads, 0.0)
        self.ppeg = PPEG(dim)
        self.layer2 = TransformerLayer(dim, heads, 0.0)
        self.norm = nn.LayerNorm(dim)

    def pool(self, x: torch.Tensor) -> MILOutput:
        tiles = self.project(x)
        n = len(tiles)
        side = max(1, math.ceil(math.sqrt(n)))
        padded = tiles[torch.arange(side * side, device=tiles.device) % n]
        tokens = torch.cat([self.cls, padded])
        tokens, _ = self.layer1(tokens)
        tokens = torch.cat([tokens[:1], self.ppeg(tokens[1:], side)])
        tokens, attention = self.layer2(tokens)
        tile_attention = attention[1 : n + 1]
        return MILOutput(self.norm(tokens[0]), tile_attention / tile_attention.sum().clamp_min(1e-12), tiles)


@register_model("clam_sb")
class CLAMSingleBranch(ABMIL):
    """CLAM-SB: gated attention plus per-class instance classifiers trained on the top-k / bottom-k attended
    tiles (in-class: top-k positive, bottom-k negative; other classes: top-k negative). The instance loss is
    weighted against the bag loss by bag_weight."""

    takes_class_count = True

    def __init__(
        self,
        in_dim: int,
        dim: int | None = 512,
        dropout: float = 0.25,
        attention_dim: int = 256,
        n_classes: int = 2,
        k_sample: int = 8,
        bag_weight: float = 0.7,
        instance_loss: str = "svm",
        subtyping: bool = True,
        neck: str = "none",
    ):
        super().__init__(in_dim, dim, dropout, attention_dim, neck)
        if instance_loss not in ("svm", "ce"):
            raise ValueError(f"instance_loss must be svm or ce, got {instance_loss!r}")
        self.instance_classifiers = nn.ModuleList(nn.Linear(self.dim, 2) for _ in range(n_classes))
        self.k_sample, self.bag_weight, self.instance_loss_name = k_sample, bag_weight, instance_loss
        self.subtyping = subtyping

    def _instance_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.instance_loss_name == "ce":
            return F.cross_entropy(logits, targets)
        margins = torch.ones_like(logits).scatter_(1, targets[:, None], 0.0)
        true = logits.gather(1, targets[:, None])
        return torch.logsumexp(margins + logits - true, dim=1).mean()

    def combine_loss(self, bag_loss: torch.Tensor, output: MILOutput, y: torch.Tensor) -> torch.Tensor:
        """bag_weight * bag loss + (1 - bag_weight) * instance loss (bag loss alone for bags under 2 tiles)."""
        attention, tiles = output.attention, output.tiles
        k = min(self.k_sample, len(attention) // 2)
        if k < 1:
            return bag_loss
        label = int(y.reshape(-1)[0])
        top = torch.topk(attention, k).indices
        bottom = torch.topk(-attention, k).indices
        losses = []
        for c, classifier in enumerate(self.instance_classifiers):
            if c == label:
                chosen = torch.cat([tiles[top], tiles[bottom]])
                targets = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(tiles.device)
            elif self.subtyping:
                chosen = tiles[top]
                targets = torch.zeros(k, dtype=torch.long, device=tiles.device)
            else:
                continue
            losses.append(self._instance_loss(classifier(chosen), targets))
        return self.bag_weight * bag_loss + (1 - self.bag_weight) * torch.stack(losses).mean()
