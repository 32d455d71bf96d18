"""The encoder registry: each entry says how to build a model, how to preprocess its tiles and what it returns.

Adding an encoder is one decorated function returning an EncoderSpec. Every pathology entry states the published
preprocessing (resize, interpolation, centre crop, mean/std), the pooling of its tokens, its output dimension,
recommended precision, licence and the checkpoint file it loads, with the source of those facts beside it. Any
timm model is also available as `timm:<name>`, with its input size and normalisation from timm.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.core.registry import Registry
from wsi_ncmi.formats.layout import encoder_folder as encoder_folder

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Published with H-optimus-0/1 (bioptimus model cards; TRIDENT patch_encoder_models/load.py).
BIOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
BIOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
# Published with Hibou (histai/hibou-b preprocessor_config.json; TRIDENT utils/constants.py HIBOU_MEAN/STD).
HIBOU_MEAN = (0.7068, 0.5755, 0.722)
HIBOU_STD = (0.195, 0.2316, 0.1816)


@dataclass(frozen=True)
class Preprocess:
    """An encoder's geometric preprocessing of a decoded uint8 tile, as torchvision applies it to a PIL image:
    resize the (square) tile to `resize` with `interpolation`, then centre-crop `size`."""

    size: int
    resize: int
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic, got {self.interpolation!r}")
        if self.resize < self.size:
            raise ValueError(f"resize {self.resize} is smaller than the crop {self.size}")

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        from PIL import Image

        if tile.shape[0] != self.resize or tile.shape[1] != self.resize:
            resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
            tile = np.array(Image.fromarray(tile).resize((self.resize, self.resize), resample))
        if self.resize != self.size:
            top = round((self.resize - self.size) / 2.0)
            tile = tile[top : top + self.size, top : top + self.size]
        return np.ascontiguousarray(tile)

    def tensor(self, tiles: torch.Tensor) -> torch.Tensor:
        """The same on a batch of uint8 (n, 3, h, w) tiles on any device, with the same pixels as __call__."""
        from wsi_ncmi.embedding.resize import resize

        tiles = resize(tiles, self.resize, self.interpolation)
        if self.resize != self.size:
            top = round((self.resize - self.size) / 2.0)
            tiles = tiles[..., top : top + self.size, top : top + self.size]
        return tiles

    def describe(self) -> str:
        return f"resize={self.resize},{self.interpolation},crop={self.size}"


def hub_cache() -> Path:
    """The Hugging Face hub cache folder: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


@dataclass(frozen=True)
class Checkpoint:
    """A published weights file: `filename` in Hugging Face repo `repo`, or (repo empty) a torch hub `url`."""

    filename: str
    repo: str = ""
    url: str = ""

    def _repo_folder(self) -> Path:
        """The hub cache folder of the repo."""
        return hub_cache() / f"models--{self.repo.replace('/', '--')}"

    def expected(self) -> Path:
        """Where the file is looked for (for a hub repo: its snapshot folder, revision `main` or any)."""
        if not self.repo:
            import torch

            return Path(torch.hub.get_dir()) / "checkpoints" / self.filename
        return self._repo_folder() / "snapshots" / "<revision>" / self.filename

    def local(self) -> Path | None:
        """The file in the local cache, or None; never touches the network."""
        if not self.repo:
            path = self.expected()
            return path if path.is_file() else None
        folder = self._repo_folder()
        ref = folder / "refs" / "main"
        revisions = [ref.read_text().strip()] if ref.is_file() else []
        snapshots = folder / "snapshots"
        revisions += sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
        for revision in revisions:
            path = snapshots / revision / self.filename
            if path.is_file():
                return path
        return None

    def label(self) -> str:
        return f"hf:{self.repo}/{self.filename}" if self.repo else f"torch-hub:{self.filename}"


def _identity(state: dict[str, Any], model: Any) -> dict[str, Any]:
    return state


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder needs and gives.

    build(**overrides) returns the torch module with random weights; overrides change architecture sizes (tests
    build small variants with `tiny`). Published weights come from `checkpoint` (through `adapt_state`, which
    turns the published file's keys into the module's), except for `timm:` entries, whose `build(pretrained=True)`
    lets timm load them.
    """

    name: str
    dim: int
    preprocess: Preprocess
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[..., Any] = field(repr=False, compare=False)
    precision: str = "bf16"
    weights_name: str = "imagenet"
    checkpoint: Checkpoint | None = None
    adapt_state: Callable[[dict[str, Any], Any], dict[str, Any]] = field(default=_identity, repr=False, compare=False)
    pooling: str = "class token"
    licence: str = ""
    tiny: dict[str, Any] = field(default_factory=dict, compare=False)
    ignore_unexpected: bool = False

    @property
    def input_size(self) -> int:
        return self.preprocess.size

    @property
    def normalization(self) -> str:
        return f"mean={list(self.mean)},std={list(self.std)}"


ENCODERS: Registry[Callable[[], EncoderSpec]] = Registry("encoder", also=("timm:<name>",))
register = ENCODERS.register
"""Decorator: register a zero-argument function that returns the EncoderSpec for `name`."""


def registered() -> list[str]:
    """The names of the registry's own entries (without the `timm:<name>` family)."""
    return sorted(ENCODERS)


def list_encoders() -> list[str]:
    return ENCODERS.known()


def get_encoder(name: str) -> EncoderSpec:
    """The spec of a registered encoder or of `timm:<model name>`; an unknown name is an UnknownNameError (a
    KeyError) listing the known ones."""
    if name.startswith("timm:"):
        return _timm_spec(name[len("timm:") :])
    return ENCODERS.lookup(name)()


def _torchvision_resnet(name: str, arch: str, last_layer: int, dim: int) -> EncoderSpec:
    """A torchvision ImageNet ResNet (IMAGENET1K_V1 weights) cut after `last_layer` and average-pooled."""
    from wsi_ncmi.embedding import models

    urls = {
        "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    }
    return EncoderSpec(
        name,
        dim,
        Preprocess(224, 224, "bilinear"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        lambda **kw: models.ResNetTrunk(arch, last_layer, **kw),
        weights_name="imagenet:IMAGENET1K_V1",
        checkpoint=Checkpoint(os.path.basename(urls[arch]), url=urls[arch]),
        pooling="global average pool",
        licence="BSD-3-Clause (torchvision)",
        ignore_unexpected=True,
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


def _vit(timm_name: str, **kwargs: Any) -> Callable[..., Any]:
    """A builder of a timm ViT from published creation arguments; overrides (tests) replace any of them."""
    from wsi_ncmi.embedding import models

    return lambda **overrides: models.timm_vit(timm_name, **{**kwargs, **overrides})


def _published(repo: str, filename: str) -> dict[str, Any]:
    """The checkpoint arguments of an entry whose weights are `filename` in Hugging Face repo `repo`."""
    checkpoint = Checkpoint(filename, repo=repo)
    return {"checkpoint": checkpoint, "weights_name": checkpoint.label()}


TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 4}
"""Architecture overrides for tests: the entry's layer types and key names at a size a CI machine can hold."""


@register("uni")
def uni() -> EncoderSpec:
    """UNI (ViT-L/16, DINOv2 on Mass-100K): class token, 1024-d.

    Sources: MahmoodLab/UNI model card (timm `hf-hub:MahmoodLab/uni`, init_values=1e-5, dynamic_img_size=True;
    Resize(224) + CenterCrop(224), ImageNet mean/std); TRIDENT load.py UNIInferenceEncoder (vit_large_patch16_224,
    img_size 224, patch 16, fp16; checkpoint pytorch_model.bin).
    """
    return EncoderSpec(
        "uni",
        1024,
        Preprocess(224, 224, "bilinear"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        _vit("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5, dynamic_img_size=True),
        precision="fp16",
        **_published("MahmoodLab/UNI", "pytorch_model.bin"),
        licence="CC-BY-NC-ND-4.0, gated",
        tiny=TINY_VIT,
    )


@register("uni2-h")
def uni2_h() -> EncoderSpec:
    """UNI2-h (ViT-H/14 with 8 registers, SwiGLU): class token, 1536-d.

    Sources: MahmoodLab/UNI2-h model card and TRIDENT load.py UNIv2InferenceEncoder (vit_giant_patch14_224,
    depth 24, 24 heads, embed 1536, mlp_ratio 2.66667*2, SwiGLUPacked + SiLU, reg_tokens 8, no_embed_class,
    init_values 1e-5; Resize(224) + CenterCrop(224), ImageNet mean/std; bf16; pytorch_model.bin).
    """
    return EncoderSpec(
        "uni2-h",
        1536,
        Preprocess(224, 224, "bilinear"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        _vit(
            "vit_giant_patch14_224",
            img_size=224,
            patch_size=14,
            depth=24,
            num_heads=24,
            init_values=1e-5,
            embed_dim=1536,
            mlp_ratio=2.66667 * 2,
            no_embed_class=True,
            mlp_layer="swiglu_packed",
            act_layer="silu",
            reg_tokens=8,
            dynamic_img_size=True,
        ),
        precision="bf16",
        **_published("MahmoodLab/UNI2-h", "pytorch_model.bin"),
        licence="CC-BY-NC-ND-4.0, gated",
        tiny=TINY_VIT,
    )


@register("conch_v15")
def conch_v15() -> EncoderSpec:
    """CONCH v1.5 vision tower (ViT-L/16 at 448 px, attentional pooler, LayerNorm): 768-d.

    Sources: TRIDENT model_zoo/conchv1_5/conchv1_5.py (CONCHVisionTower: vit_large init_values=1.0, trunk
    position embedding of 224 px interpolated bicubically to the 448 px grid with DINO's +0.1 offset,
    AttentionalPooler d_model 768, context 1024, 8 heads, 1 query, then LayerNorm(768); Resize(448, bilinear) +
    CenterCrop(448), ImageNet mean/std; checkpoint pytorch_model_vision.bin) and load.py (fp16).
    """
    from wsi_ncmi.embedding import models

    return EncoderSpec(
        "conch_v15",
        768,
        Preprocess(448, 448, "bilinear"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        lambda **kw: models.ConchVision(**kw),
        precision="fp16",
        **_published("MahmoodLab/conchv1_5", "pytorch_model_vision.bin"),
        adapt_state=models.conch_state,
        pooling="attentional pooler + LayerNorm",
        licence="CC-BY-NC-ND-4.0, gated",
        tiny={"embed_dim": 64, "depth": 2, "num_heads": 4, "pool_dim": 48, "pool_heads": 4, "img_size": 64},
    )


@register("virchow2")
def virchow2() -> EncoderSpec:
    """Virchow2 (ViT-H/14, 4 registers, SwiGLU): class token concatenated with the mean of the patch tokens, 2560-d.

    Sources: paige-ai/Virchow2 model card (timm `hf-hub:paige-ai/Virchow2` with mlp_layer=SwiGLUPacked,
    act_layer=SiLU; embedding = concat(class token, mean of tokens after the 1 + 4 register prefix); Resize(224,
    bicubic), ImageNet mean/std; fp16) and TRIDENT load.py Virchow2InferenceEncoder (vit_huge_patch14_224,
    img_size 224, init_values 1e-5, reg_tokens 4, mlp_ratio 5.3375, global_pool ''; pytorch_model.bin).
    """
    from wsi_ncmi.embedding import models

    vit = _vit(
        "vit_huge_patch14_224",
        img_size=224,
        init_values=1e-5,
        reg_tokens=4,
        mlp_ratio=5.3375,
        global_pool="",
        dynamic_img_size=True,
        mlp_layer="swiglu_packed",
        act_layer="silu",
    )
    return EncoderSpec(
        "virchow2",
        2560,
        Preprocess(224, 224, "bicubic"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        lambda **kw: models.ClassAndMeanPool(vit(**kw)),
        precision="fp16",
        **_published("paige-ai/Virchow2", "pytorch_model.bin"),
        adapt_state=models.into_trunk,
        pooling="class token ++ mean of patch tokens",
        licence="CC-BY-NC-ND-4.0, gated",
        tiny=TINY_VIT,
    )


def _hoptimus(name: str, repo: str, licence: str) -> EncoderSpec:
    """H-optimus-0/1 (ViT-g/14, 4 registers, SwiGLU): class token, 1536-d.

    Sources: bioptimus/H-optimus-0 model card (timm `hf-hub:bioptimus/H-optimus-0`, init_values=1e-5,
    dynamic_img_size=False; mean (0.707223, 0.578729, 0.703617), std (0.211883, 0.230117, 0.177517); fp16) and
    TRIDENT load.py HOptimus0/1InferenceEncoder (vit_giant_patch14_reg4_dinov2, img_size 224, global_pool token;
    Resize(224); pytorch_model.bin).
    """
    return EncoderSpec(
        name,
        1536,
        Preprocess(224, 224, "bilinear"),
        BIOPTIMUS_MEAN,
        BIOPTIMUS_STD,
        _vit("vit_giant_patch14_reg4_dinov2", img_size=224, init_values=1e-5, global_pool="token"),
        precision="fp16",
        **_published(repo, "pytorch_model.bin"),
        licence=licence,
        tiny=TINY_VIT,
    )


@register("h-optimus-0")
def h_optimus_0() -> EncoderSpec:
    """H-optimus-0; see _hoptimus."""
    return _hoptimus("h-optimus-0", "bioptimus/H-optimus-0", "Apache-2.0, gated")


@register("h-optimus-1")
def h_optimus_1() -> EncoderSpec:
    """H-optimus-1; see _hoptimus (same architecture and preprocessing, per its model card and TRIDENT)."""
    return _hoptimus("h-optimus-1", "bioptimus/H-optimus-1", "non-commercial terms of its model card, gated")


@register("gigapath")
def gigapath() -> EncoderSpec:
    """Prov-GigaPath tile encoder (ViT-g/16 DINOv2-style, SwiGLU): class token, 1536-d.

    Sources: prov-gigapath/prov-gigapath model card (timm `hf_hub:prov-gigapath/prov-gigapath`; Resize(256,
    bicubic) + CenterCrop(224), ImageNet mean/std) and TRIDENT load.py GigaPathInferenceEncoder
    (vit_giant_patch14_dinov2 with img_size 224, patch_size 16, embed 1536, depth 40, 24 heads, mlp_ratio 5.33334;
    fp32; pytorch_model.bin).
    """
    return EncoderSpec(
        "gigapath",
        1536,
        Preprocess(224, 256, "bicubic"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        _vit(
            "vit_giant_patch14_dinov2",
            img_size=224,
            patch_size=16,
            embed_dim=1536,
            depth=40,
            num_heads=24,
            mlp_ratio=5.33334,
        ),
        precision="fp32",
        **_published("prov-gigapath/prov-gigapath", "pytorch_model.bin"),
        licence="Prov-GigaPath licence (research use), gated",
        tiny=TINY_VIT,
    )


@register("phikon-v2")
def phikon_v2() -> EncoderSpec:
    """Phikon-v2 (ViT-L/16 DINOv2, no registers; Hugging Face Dinov2Model): class token of the last hidden state,
    1024-d. Built as the equivalent timm ViT; the transformers checkpoint's keys are renamed on load.

    Sources: owkin/phikon-v2 model card (AutoModel Dinov2, last_hidden_state[:, 0]; 224 px tiles at 20x, ImageNet
    mean/std; ViT-L/16 per arXiv 2409.09173) and TRIDENT load.py Phikonv2InferenceEncoder (Resize(224) +
    CenterCrop(224), fp32; model.safetensors + config.json).
    """
    from wsi_ncmi.embedding import models

    return EncoderSpec(
        "phikon-v2",
        1024,
        Preprocess(224, 224, "bilinear"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        _vit("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1.0),
        precision="fp32",
        **_published("owkin/phikon-v2", "model.safetensors"),
        adapt_state=models.dinov2_state,
        licence="Owkin non-commercial licence",
        tiny=TINY_VIT,
    )


def _hibou(name: str, repo: str, timm_name: str, dim: int, mlp_ratio: float) -> EncoderSpec:
    """Hibou-B/L (DINOv2 ViT/14 with 4 registers and fused SwiGLU, layer scale): pooler output (the normalised
    class token).

    Sources: HistAI/hibou hibou/models/__init__.py build_model (img_size 224, patch 14, layerscale 1e-5,
    ffn_layer swiglufused, num_register_tokens 4) and README (transformers AutoModel, trust_remote_code);
    TRIDENT load.py HibouLInferenceEncoder (pooler_output; Resize(224, bicubic); Hibou mean/std; fp32). The
    SwiGLU hidden width follows DINOv2's fused rule ((int(4d * 2/3) + 7) // 8 * 8), so mlp_ratio is that twice
    over d.
    """
    from wsi_ncmi.embedding import models

    return EncoderSpec(
        name,
        dim,
        Preprocess(224, 224, "bicubic"),
        HIBOU_MEAN,
        HIBOU_STD,
        _vit(
            timm_name,
            img_size=224,
            patch_size=14,
            init_values=1e-5,
            reg_tokens=4,
            no_embed_class=True,
            mlp_ratio=mlp_ratio,
            mlp_layer="swiglu_packed",
            act_layer="silu",
        ),
        precision="fp32",
        **_published(repo, "model.safetensors"),
        adapt_state=models.dinov2_state,
        licence="Apache-2.0, gated",
        tiny=TINY_VIT,
    )


@register("hibou-b")
def hibou_b() -> EncoderSpec:
    """Hibou-B: ViT-B/14, 768-d (SwiGLU hidden 2048, so fc1 is 4096 wide)."""
    return _hibou("hibou-b", "histai/hibou-b", "vit_base_patch14_reg4_dinov2", 768, 4096.5 / 768)


@register("hibou-l")
def hibou_l() -> EncoderSpec:
    """Hibou-L: ViT-L/14, 1024-d (SwiGLU hidden 2736, so fc1 is 5472 wide)."""
    return _hibou("hibou-l", "histai/hibou-L", "vit_large_patch14_reg4_dinov2", 1024, 5472.5 / 1024)


TIMM_KWARGS: dict[str, dict[str, Any]] = {
    "hf-hub:MahmoodLab/uni": {"init_values": 1e-5, "dynamic_img_size": True},
}
"""Creation arguments of models served through timm's hub loader that their hub config does not carry."""


def _timm_spec(model_name: str) -> EncoderSpec:
    import timm

    kwargs = TIMM_KWARGS.get(model_name, {})

    def build(pretrained: bool = False, **overrides: Any) -> Any:
        return timm.create_model(model_name, pretrained=pretrained, num_classes=0, **{**kwargs, **overrides})

    try:
        probe = build(False)
    except Exception as exc:
        raise ValueError(
            f"timm:{model_name}: cannot build the model offline ({type(exc).__name__}: {exc}); check "
            "the name (timm.list_models) or put its Hugging Face files under HF_HOME"
        ) from exc
    config = timm.data.resolve_data_config({}, model=probe)
    size = int(config["input_size"][-1])
    interpolation = "bicubic" if config.get("interpolation") == "bicubic" else "bilinear"
    return EncoderSpec(
        f"timm:{model_name}",
        int(probe.num_features),
        Preprocess(size, size, interpolation),
        tuple(config["mean"]),
        tuple(config["std"]),
        build,
        weights_name=f"timm:{model_name}",
        pooling="timm default",
        licence="see the model's card",
    )
