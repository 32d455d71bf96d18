"""The encoder registry: published architectures and preprocessing, offline weights, several encoders in one pass,
float16 storage. No weights are needed: full models are built on the meta device, loading runs on small variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.embedding.embed import Embedder, EmbedSettings, TileDataset, bag_path, embed_slides, storable
from wsi_ncmi.embedding.registry import get_encoder, registered
from wsi_ncmi.embedding.weights import WeightsError, load_encoder, load_state, read_state
from wsi_ncmi.formats.bags import read_bag

runner = CliRunner()
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BIOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
HIBOU = ((0.7068, 0.5755, 0.722), (0.195, 0.2316, 0.1816))

# Published facts, written down here independently of the registry: dim, crop, resize, interpolation, mean/std.
DOCUMENTED = {
    "uni": (1024, 224, 224, "bilinear", IMAGENET),
    "uni2-h": (1536, 224, 224, "bilinear", IMAGENET),
    "conch_v15": (768, 448, 448, "bilinear", IMAGENET),
    "virchow2": (2560, 224, 224, "bicubic", IMAGENET),
    "h-optimus-0": (1536, 224, 224, "bilinear", BIOPTIMUS),
    "h-optimus-1": (1536, 224, 224, "bilinear", BIOPTIMUS),
    "gigapath": (1536, 224, 256, "bicubic", IMAGENET),
    "phikon-v2": (1024, 224, 224, "bilinear", IMAGENET),
    "hibou-b": (768, 224, 224, "bicubic", HIBOU),
    "hibou-l": (1024, 224, 224, "bicubic", HIBOU),
    "resnet50_trunc": (1024, 224, 224, "bilinear", IMAGENET),
    "resnet18": (512, 224, 224, "bilinear", IMAGENET),
    "resnet50": (2048, 224, 224, "bilinear", IMAGENET),
}
TIMM_LAYOUT = ["uni", "uni2-h", "h-optimus-0", "h-optimus-1", "gigapath"]


def test_registry_holds_every_documented_entry() -> None:
    assert set(DOCUMENTED) <= set(registered())
    assert len([n for n in registered() if not n.startswith("resnet")]) >= 10


def test_every_registry_refuses_an_unknown_name_with_one_error() -> None:
    """Encoders, MIL models and losses share one registry: an unknown name is the same package error everywhere
    (a KeyError and a ValueError too, for callers catching either), its message listing the known names."""
    from wsi_ncmi.core.errors import WsiNcmiError
    from wsi_ncmi.core.faults import describe
    from wsi_ncmi.core.registry import UnknownNameError
    from wsi_ncmi.mil.heads import build_head
    from wsi_ncmi.mil.models import build_model

    cases = [
        (lambda: get_encoder("resnet-18"), "unknown encoder 'resnet-18'; known: "),
        (lambda: build_model("resnet", 8), "unknown model 'resnet'; known: abmil"),
        (lambda: build_head("hinge", 8, 2), "unknown loss 'hinge'; known: ce, cmic, focal, ncmi"),
    ]
    for make, message in cases:
        with pytest.raises(UnknownNameError) as caught:
            make()
        assert all(isinstance(caught.value, kind) for kind in (WsiNcmiError, KeyError, ValueError))
        assert str(caught.value).startswith(message) and describe(caught.value) == (str(caught.value), 2)
    assert str(caught.value) == "unknown loss 'hinge'; known: ce, cmic, focal, ncmi"
    with pytest.raises(ValueError, match="encoder 'resnet18' is registered twice"):
        from wsi_ncmi.embedding.registry import register

        register("resnet18")(lambda: None)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_entry_builds_at_full_size_on_meta_with_its_documented_output(name: str) -> None:
    dim, size, resize, interpolation, (mean, std) = DOCUMENTED[name]
    spec = get_encoder(name)
    assert (spec.dim, spec.input_size, spec.preprocess.resize, spec.preprocess.interpolation) == (
        dim,
        size,
        resize,
        interpolation,
    )
    assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std)
    with torch.device("meta"):
        model = spec.build()
        out = model(torch.zeros(2, 3, size, size))
    assert tuple(out.shape) == (2, dim)


@pytest.fixture(scope="module")
def tile(tiff_slide: Path) -> np.ndarray:
    from wsi_ncmi.slides.backend import open_slide

    with open_slide(tiff_slide) as slide:
        region = np.asarray(slide.read_region((3000, 2400), 0, (256, 256)))
    assert region.shape == (256, 256, 3) and region.std() > 5
    return region


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_preprocessing_matches_the_published_transform_on_a_real_tile(name: str, tile: np.ndarray) -> None:
    from PIL import Image
    from torchvision import transforms

    _, size, resize, interpolation, (mean, std) = DOCUMENTED[name]
    mode = transforms.InterpolationMode.BICUBIC if interpolation == "bicubic" else transforms.InterpolationMode.BILINEAR
    published = transforms.Compose(
        [
            transforms.Resize(resize, interpolation=mode),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )(Image.fromarray(tile))
    spec = get_encoder(name)
    ours = torch.from_numpy(spec.preprocess(tile)).permute(2, 0, 1)[None]
    normalised = Embedder(torch.nn.Identity(), spec, torch.device("cpu"), "fp32")(ours)
    assert normalised.shape == (1, 3, size, size)
    np.testing.assert_allclose(normalised[0], published.numpy(), atol=2e-5)


def _published_timm(state: dict[str, torch.Tensor]) -> dict[str, object]:
    """A training checkpoint as real ones come: nested under 'model', every key prefixed with 'module.'."""
    return {"model": {f"module.{k}": v for k, v in state.items()}}


def _published_hf_dinov2(state: dict[str, torch.Tensor], registers: bool) -> dict[str, torch.Tensor]:
    """The timm-layout state of a DINOv2 ViT written the way Hugging Face transformers stores Dinov2 models."""
    out: dict[str, torch.Tensor] = {}
    dim = state["cls_token"].shape[-1]
    cls_position = torch.randn(1, 1, dim)
    if registers:
        out["embeddings.cls_token"] = state["cls_token"] - cls_position
        out["embeddings.position_embeddings"] = torch.cat([cls_position, state["pos_embed"]], dim=1)
        out["embeddings.register_tokens"] = state["reg_token"]
    else:
        out["embeddings.cls_token"] = state["cls_token"]
        out["embeddings.position_embeddings"] = state["pos_embed"]
    out["embeddings.mask_token"] = torch.zeros(1, dim)
    out["embeddings.patch_embeddings.projection.weight"] = state["patch_embed.proj.weight"]
    out["embeddings.patch_embeddings.projection.bias"] = state["patch_embed.proj.bias"]
    out["layernorm.weight"], out["layernorm.bias"] = state["norm.weight"], state["norm.bias"]
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    mlp = ("weights_in", "weights_out") if registers else ("fc1", "fc2")
    for i in blocks:
        hf, ours = f"encoder.layer.{i}", f"blocks.{i}"
        for part in ("weight", "bias"):
            q, k, v = state[f"{ours}.attn.qkv.{part}"].chunk(3)
            out[f"{hf}.attention.attention.query.{part}"] = q
            out[f"{hf}.attention.attention.key.{part}"] = k
            out[f"{hf}.attention.attention.value.{part}"] = v
            out[f"{hf}.attention.output.dense.{part}"] = state[f"{ours}.attn.proj.{part}"]
            out[f"{hf}.norm1.{part}"] = state[f"{ours}.norm1.{part}"]
            out[f"{hf}.norm2.{part}"] = state[f"{ours}.norm2.{part}"]
            out[f"{hf}.mlp.{mlp[0]}.{part}"] = state[f"{ours}.mlp.fc1.{part}"]
            out[f"{hf}.mlp.{mlp[1]}.{part}"] = state[f"{ours}.mlp.fc2.{part}"]
        out[f"{hf}.layer_scale1.lambda1"] = state[f"{ours}.ls1.gamma"]
        out[f"{hf}.layer_scale2.lambda1"] = state[f"{ours}.ls2.gamma"]
    return out


@pytest.mark.parametrize("name", [*TIMM_LAYOUT, "virchow2", "phikon-v2", "hibou-b", "hibou-l"])
def test_published_checkpoint_layout_loads_into_the_entry(name: str, tmp_path: Path) -> None:
    spec = get_encoder(name)
    torch.manual_seed(0)
    reference = spec.build(**spec.tiny).eval()
    size = reference.trunk.patch_embed.img_size[0] if name == "virchow2" else reference.patch_embed.img_size[0]
    state = reference.state_dict()
    for key in state:
        state[key] = state[key] + torch.rand_like(state[key]) * 0.01  # no parameter equals its initial value
    reference.load_state_dict(state)
    if name == "virchow2":
        published = {"backbone." + k[len("trunk.") :]: v for k, v in state.items()}
    elif name in TIMM_LAYOUT:
        published = _published_timm(state)
    else:
        published = _published_hf_dinov2(state, registers=name.startswith("hibou"))
    path = tmp_path / ("model.safetensors" if name in ("phikon-v2", "hibou-b", "hibou-l") else "pytorch_model.bin")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in published.items()}, str(path))
    else:
        torch.save(published, path)
    torch.manual_seed(1)
    loaded = load_state(spec, spec.build(**spec.tiny), read_state(path), str(path)).eval()
    x = torch.rand(2, 3, size, size)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), reference(x).numpy(), atol=1e-4)
    extra = {**read_state(path), "head.weight": torch.zeros(3)}
    with pytest.raises(WeightsError, match="does not have"):
        load_state(spec, spec.build(**spec.tiny), extra, "extra.bin")


def test_conch_position_embedding_follows_its_published_interpolation(tmp_path: Path) -> None:
    spec = get_encoder("conch_v15")
    torch.manual_seed(0)
    model = spec.build(**spec.tiny)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    dim = model.trunk.pos_embed.shape[-1]
    trained = torch.randn(1, 1 + 14 * 14, dim)  # the 224 px grid the checkpoint keeps
    state["module.trunk.pos_embed"] = trained
    torch.save(state, tmp_path / "pytorch_model_vision.bin")
    loaded = load_state(spec, spec.build(**spec.tiny), read_state(tmp_path / "pytorch_model_vision.bin"), "x")
    grid = spec.tiny["img_size"] // 16
    patch = trained[:, 1:].reshape(1, 14, 14, dim).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(patch, scale_factor=((grid + 0.1) / 14,) * 2, mode="bicubic")
    expected = torch.cat([trained[:, :1], expected.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1)
    assert torch.allclose(loaded.trunk.pos_embed, expected)
    assert torch.equal(loaded.attn_pool_contrast.query, model.attn_pool_contrast.query)


def test_hub_is_offline_before_any_hub_library_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    code = "import wsi_ncmi.embedding.embed, huggingface_hub.constants as c, timm; print(c.HF_HUB_OFFLINE)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_weights_come_from_the_hub_cache_or_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = get_encoder("hibou-b")
    with pytest.raises(WeightsError, match=r"model.safetensors .*histai/hibou-b.*not in the local cache") as info:
        load_encoder(spec, "pretrained")
    assert "models--histai--hibou-b" in str(info.value) and "--allow-download" in str(info.value)
    snapshot = tmp_path / "hub" / "models--histai--hibou-b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--histai--hibou-b" / "refs").mkdir()
    (tmp_path / "hub" / "models--histai--hibou-b" / "refs" / "main").write_text("abc123")
    assert spec.checkpoint is not None and spec.checkpoint.local() is None
    (snapshot / "model.safetensors").write_bytes(b"not really")
    assert spec.checkpoint.local() == snapshot / "model.safetensors"
    with pytest.raises(WeightsError, match="not a loadable state_dict"):
        load_encoder(spec, "pretrained")
    result = runner.invoke(app, ["encoders", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["encoder"]: row for row in json.loads(result.output)}
    assert rows["hibou-b"]["present"] and not rows["uni"]["present"]
    assert rows["virchow2"]["dim"] == 2560 and rows["conch_v15"]["input_size"] == 448
    table = runner.invoke(app, ["encoders"])
    assert table.exit_code == 0 and "h-optimus-1" in table.output


def test_float16_storage_refuses_values_it_cannot_hold() -> None:
    fine = np.array([[1.5, -3.0], [60000.0, 0.0]], np.float32)
    stored, row, reason = storable(fine, "float16")
    assert stored.dtype == np.float16 and row == -1 and not reason and np.isfinite(stored).all()
    _, row, reason = storable(np.array([[0.0, 1.0], [7e4, 0.0]], np.float32), "float16")
    assert row == 1 and "float16" in reason and "--feature-dtype float32" in reason
    assert storable(np.array([[7e4]], np.float32), "float32")[1] == -1
    _, row, reason = storable(np.array([[0.0], [np.nan]], np.float32), "float32")
    assert row == 1 and "NaN/inf" in reason


@pytest.fixture(scope="module")
def job(slide_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd

    from wsi_ncmi.tiling.tile import TilingParams, tile_slides

    job = tmp_path_factory.mktemp("encoders_job")
    table = pd.DataFrame({"slide_id": ["s"], "path": [str(slide_dir / "tiff_050.tif")], "mpp": [float("nan")]})
    assert not tile_slides(table, job, TilingParams(mpp=4.0, tile_size=96), progress=False)[0].failed
    return job


def test_float16_overflow_fails_the_slide_with_a_clear_message(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = EmbedSettings(encoder="resnet18", weights="random", batch_size=8, workers=0, feature_dtype="float16")
    original = Embedder.__call__
    monkeypatch.setattr(Embedder, "__call__", lambda self, images: original(self, images) * 1e6)
    row = embed_slides([("s", None)], job, settings, progress=False)[0]
    assert row.status == "failed" and "beyond float16's range" in row.error and "tile " in row.error
    assert not bag_path(job, "resnet18", "s").exists()
    monkeypatch.setattr(Embedder, "__call__", original)
    assert embed_slides([("s", None)], job, settings, progress=False)[0].status == "ok"
    bag = read_bag(bag_path(job, "resnet18", "s"))
    assert bag.features.dtype == np.float32 and bag.metadata["feature_dtype"] == "float16"


def test_two_encoders_read_each_tile_once_and_match_separate_runs(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[int, int]] = []
    read = TileDataset.read

    def counting(self: TileDataset, slide_index: int, tile_index: int, fresh: bool = False) -> np.ndarray:
        reads.append((slide_index, tile_index))
        return read(self, slide_index, tile_index, fresh)

    monkeypatch.setattr(TileDataset, "read", counting)
    args = ["embed", "--job", str(job), "--weights", "random", "--workers", "0", "--batch-size", "8", "--overwrite"]
    result = runner.invoke(app, [*args, "--encoder", "resnet18", "--encoder", "timm:resnet10t"])
    assert result.exit_code == 0, result.output
    n_tiles = len(read_bag(bag_path(job, "resnet18", "s")).features)
    assert n_tiles >= 4 and sorted(reads) == [(0, t) for t in range(n_tiles)]
    for stage in ("embed-resnet18", "embed-timm-resnet10t"):
        assert (job / "status" / f"{stage}.csv").read_text().count(",ok,") == 1
    together = {e: read_bag(bag_path(job, e, "s")).features for e in ("resnet18", "timm:resnet10t")}
    assert together["timm:resnet10t"].shape[1] == get_encoder("timm:resnet10t").dim
    settings = EmbedSettings(weights="random", batch_size=8, workers=0)
    for encoder, features in together.items():
        from dataclasses import replace

        assert embed_slides([("s", None)], job, replace(settings, encoder=encoder), progress=False)[0].status == (
            "skipped"
        )
        alone = replace(settings, encoder=encoder, overwrite=True)
        assert embed_slides([("s", None)], job, alone, progress=False)[0].status == "ok"
        assert np.array_equal(read_bag(bag_path(job, encoder, "s")).features, features)


def test_resnet_checkpoints_are_torchvisions_imagenet_weights() -> None:
    import torchvision

    for name, arch in (("resnet18", "resnet18"), ("resnet50", "resnet50"), ("resnet50_trunc", "resnet50")):
        checkpoint = get_encoder(name).checkpoint
        assert checkpoint is not None
        assert checkpoint.url == torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
        assert checkpoint.expected().name == os.path.basename(checkpoint.url)


def test_downloads_are_let_through_only_inside_hub_online() -> None:
    import huggingface_hub.constants as constants

    from wsi_ncmi.embedding.weights import hub_online

    before = (constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    with hub_online():
        assert not constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "0"
    assert (constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")) == before
