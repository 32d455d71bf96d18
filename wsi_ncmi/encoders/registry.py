"""The encoder registry: each entry says how to build a model and what its inputs and outputs are.

Adding an encoder is one decorated function returning an EncoderSpec. Any timm model is also available as
`timm:<name>` (for example `timm:hf-hub:MahmoodLab/uni`), with its input size and normalisation from timm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder needs and gives.

    build(pretrained) returns the torch module: pretrained=True loads the encoder's published weights from the
    local cache (never downloading unless allowed by the caller's environment), False leaves it random.
    `weights_name` names the published weights for the bag's attributes; `cache_files` lists the files
    `build(pretrained=True)` expects in the cache, for a clear error when they are missing.
    """

    name: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[bool], Any] = field(repr=False, compare=False)
    precision: str = "bf16"
    weights_name: str = "imagenet"
    cache_files: Callable[[], list[str]] = field(default=lambda: [], repr=False, compare=False)

    @property
    def normalization(self) -> str:
        return f"mean={list(self.mean)},std={list(self.std)}"


_REGISTRY: dict[str, Callable[[], EncoderSpec]] = {}


def register(name: str) -> Callable[[Callable[[], EncoderSpec]], Callable[[], EncoderSpec]]:
    """Decorator: register a zero-argument function that returns the EncoderSpec for `name`."""

    def wrap(func: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is registered twice")
        _REGISTRY[name] = func
        return func

    return wrap


def list_encoders() -> list[str]:
    return [*sorted(_REGISTRY), "timm:<name>"]


def get_encoder(name: str) -> EncoderSpec:
    """The spec of a registered encoder or of `timm:<model name>`; unknown names list the known ones."""
    if name.startswith("timm:"):
        return _timm_spec(name[len("timm:") :])
    if name not in _REGISTRY:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(list_encoders())}")
    return _REGISTRY[name]()


def encoder_folder(name: str) -> str:
    """A file-system-safe folder name for an encoder ('timm:hf-hub:MahmoodLab/uni' -> 'timm-hf-hub-MahmoodLab-uni')."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def _torchvision_resnet(name: str, arch: str, last_layer: int, dim: int) -> EncoderSpec:
    """A torchvision ImageNet ResNet (IMAGENET1K_V1 weights) cut after `last_layer` and average-pooled."""

    def build(pretrained: bool) -> Any:
        from wsi_ncmi.encoders.models import ResNetTrunk

        return ResNetTrunk(arch, pretrained, last_layer)

    def cache_files() -> list[str]:
        import os

        import torch
        import torchvision

        url = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
        return [os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))]

    return EncoderSpec(
        name,
        dim,
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        build,
        weights_name="imagenet:IMAGENET1K_V1",
        cache_files=cache_files,
    )


@register("resnet50_trunc")
def resnet50_trunc() -> EncoderSpec:
    """ImageNet ResNet-50 through layer3 and a global average pool: 1024-d, the CLAM standard."""
    return _torchvision_resnet("resnet50_trunc", "resnet50", last_layer=3, dim=1024)


@register("resnet18")
def resnet18() -> EncoderSpec:
    """ImageNet ResNet-18 without its classifier: 512-d."""
    return _torchvision_resnet("resnet18", "resnet18", last_layer=4, dim=512)


@register("resnet50")
def resnet50() -> EncoderSpec:
    """ImageNet ResNet-50 without its classifier: 2048-d."""
    return _torchvision_resnet("resnet50", "resnet50", last_layer=4, dim=2048)


TIMM_KWARGS: dict[str, dict[str, Any]] = {
    "hf-hub:MahmoodLab/uni": {"init_values": 1e-5, "dynamic_img_size": True},
    "hf-hub:MahmoodLab/UNI2-h": {
        "img_size": 224,
        "patch_size": 14,
        "depth": 24,
        "num_heads": 24,
        "init_values": 1e-5,
        "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2,
        "num_classes": 0,
        "no_embed_class": True,
        "reg_tokens": 8,
        "dynamic_img_size": True,
    },
}
"""Published creation arguments of pathology foundation models served through timm."""


def _timm_spec(model_name: str) -> EncoderSpec:
    import timm

    kwargs = TIMM_KWARGS.get(model_name, {})

    def build(pretrained: bool) -> Any:
        return timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)

    import os

    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        probe = build(False)
    except Exception as exc:
        raise ValueError(
            f"timm:{model_name}: cannot build the model offline ({type(exc).__name__}: {exc}); check "
            "the name (timm.list_models) or put its Hugging Face files under HF_HOME"
        ) from exc
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
    config = timm.data.resolve_data_config({}, model=probe)
    size = int(config["input_size"][-1])
    return EncoderSpec(
        f"timm:{model_name}",
        int(probe.num_features),
        size,
        tuple(config["mean"]),
        tuple(config["std"]),
        build,
        weights_name=f"timm:{model_name}",
    )
