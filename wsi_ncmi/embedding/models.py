"""Torch modules for the registered encoders and the key renames their published checkpoints need (imported only
when an encoder is built)."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torchvision
from torch import nn


class ResNetTrunk(nn.Module):
    """A torchvision ResNet cut after `last_layer`, then global-average-pooled.

    Parameter names are those of the full torchvision model, so its state dicts load as they are (the cut
    layers' weights are reported as unexpected and ignored).
    """

    def __init__(self, arch: str, last_layer: int = 4):
        super().__init__()
        model = torchvision.models.get_model(arch, weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = model.conv1, model.bn1, model.relu, model.maxpool
        self.layers = [f"layer{i}" for i in range(1, last_layer + 1)]
        for name in self.layers:
            setattr(self, name, getattr(model, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.layers:
            x = getattr(self, name)(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def timm_vit(timm_name: str, **kwargs: Any) -> nn.Module:
    """A timm vision transformer without classifier; `mlp_layer='swiglu_packed'` and `act_layer='silu'` name the
    timm/torch classes (so registry entries stay plain data)."""
    import timm
    from timm.layers import SwiGLUPacked

    layers = {"swiglu_packed": SwiGLUPacked, "silu": nn.SiLU}
    kwargs = {k: layers.get(v, v) if isinstance(v, str) and k.endswith("_layer") else v for k, v in kwargs.items()}
    return timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)


class ClassAndMeanPool(nn.Module):
    """The class token concatenated with the mean of the patch tokens (registers excluded), as Virchow2 specifies."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        patches = tokens[:, self.trunk.num_prefix_tokens :]
        return torch.cat([tokens[:, 0], patches.mean(1)], dim=-1)


class AttentionalPooler(nn.Module):
    """Learned queries attending over the tokens (CoCa-style): normalised queries and keys, multi-head attention,
    an output projection. Parameter names follow the CONCH checkpoints."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.heads = n_head
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, d_model * 2, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)

        out = nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.to_out(out.transpose(1, 2).reshape(b, -1, q.shape[-1]))


class ConchVision(nn.Module):
    """CONCH v1.5's vision tower: a ViT-L/16 trunk at 448 px, an attentional pooler (one 768-d query over all
    tokens) and a LayerNorm. Parameter names follow the published pytorch_model_vision.bin."""

    def __init__(
        self,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        img_size: int = 448,
        pool_dim: int = 768,
        pool_heads: int = 8,
    ):
        super().__init__()
        self.trunk = timm_vit(
            "vit_large_patch16_224",
            img_size=img_size,
            patch_size=16,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            init_values=1.0,
            global_pool="",
        )
        self.attn_pool_contrast = AttentionalPooler(pool_dim, embed_dim, pool_heads, 1)
        self.ln_contrast = nn.LayerNorm(pool_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk.forward_features(x))[:, 0])


CONCH_TRAIN_GRID = 14
"""CONCH v1.5's trunk keeps a 224 px (14 x 14 patch) position embedding and interpolates it for larger inputs."""


def conch_state(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """CONCH v1.5's position embedding as its own loader and forward pass use it at the model's input size:
    resampled (bilinear) to the 14 x 14 grid if stored otherwise, then interpolated bicubically with DINO's +0.1
    offset to the input's grid, once at load time instead of on every forward pass."""
    from timm.layers import resample_abs_pos_embed

    key = "trunk.pos_embed"
    if key not in state:
        return state
    pos = state[key]
    grid = model.trunk.patch_embed.grid_size[0]
    if round(math.sqrt(pos.shape[1] - 1)) != CONCH_TRAIN_GRID:
        pos = resample_abs_pos_embed(
            pos, new_size=(CONCH_TRAIN_GRID,) * 2, num_prefix_tokens=1, interpolation="bilinear", antialias=False
        )
    if grid != CONCH_TRAIN_GRID:
        dim = pos.shape[-1]
        patch = pos[:, 1:].reshape(1, CONCH_TRAIN_GRID, CONCH_TRAIN_GRID, dim).permute(0, 3, 1, 2).float()
        scale = (grid + 0.1) / CONCH_TRAIN_GRID
        patch = nn.functional.interpolate(patch, scale_factor=(scale, scale), mode="bicubic")
        patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos.dtype)
        pos = torch.cat([pos[:, :1], patch], dim=1)
    return {**state, key: pos}


def into_trunk(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """A timm checkpoint's keys under the wrapper's `trunk.` (unless already there)."""
    if any(k.startswith("trunk.") for k in state):
        return state
    return {f"trunk.{k}": v for k, v in state.items()}


_HF_DINOV2 = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"^layernorm\.", "norm."),
]
"""Hugging Face transformers Dinov2 names -> DINOv2's own names (query/key/value are joined separately)."""

_DINOV2_TIMM = [
    (r"^register_tokens$", "reg_token"),
    (r"\.mlp\.w12\.", ".mlp.fc1."),
    (r"\.mlp\.w3\.", ".mlp.fc2."),
]
"""DINOv2's own names -> timm's."""


def _rename(state: dict[str, Any], rules: list[tuple[str, str]]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


def dinov2_state(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """A DINOv2 checkpoint (Hugging Face transformers layout, or DINOv2's own) in timm's layout for `model`.

    Query/key/value projections are joined into qkv; the mask token is dropped; where the timm model keeps no
    position for the class token (register models), the class token's position is added to the class token,
    which is what DINOv2 computes before inserting the registers.
    """
    state = _rename(state, _HF_DINOV2)
    for prefix in sorted({k.rsplit(".attention.attention.", 1)[0] for k in state if ".attention.attention." in k}):
        for part in ("weight", "bias"):
            names = [f"{prefix}.attention.attention.{p}.{part}" for p in ("query", "key", "value")]
            if all(n in state for n in names):
                state[f"{prefix}.attn.qkv.{part}"] = torch.cat([state.pop(n) for n in names])
    state = _rename(state, _DINOV2_TIMM)
    state.pop("mask_token", None)
    pos = state.get("pos_embed")
    expected = getattr(model, "pos_embed", None)
    folds = getattr(model, "no_embed_class", False) and "cls_token" in state
    if pos is not None and expected is not None and folds and pos.shape[1] == expected.shape[1] + 1:
        state["cls_token"] = state["cls_token"] + pos[:, :1]
        pos = pos[:, 1:]
    if pos is not None and expected is not None and pos.shape[1] != expected.shape[1]:
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(model, "no_embed_class", False) else 1
        pos = resample_abs_pos_embed(pos, new_size=model.patch_embed.grid_size, num_prefix_tokens=prefix)
    if pos is not None:
        state["pos_embed"] = pos
    return state
