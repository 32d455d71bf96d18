"""Torch modules for the registered encoders (imported only when an encoder is built)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


class ResNetTrunk(nn.Module):
    """A torchvision ResNet cut after `last_layer`, then global-average-pooled.

    Parameter names are those of the full torchvision model, so its state dicts load as they are (the cut
    layers' weights are reported as unexpected and ignored).
    """

    def __init__(self, arch: str, pretrained: bool, last_layer: int = 4):
        super().__init__()
        weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1 if pretrained else None
        model = torchvision.models.get_model(arch, weights=weights)
        self.conv1, self.bn1, self.relu, self.maxpool = model.conv1, model.bn1, model.relu, model.maxpool
        self.layers = [f"layer{i}" for i in range(1, last_layer + 1)]
        for name in self.layers:
            setattr(self, name, getattr(model, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.layers:
            x = getattr(self, name)(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
