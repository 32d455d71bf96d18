"""Loading encoder weights: published weights from the local cache, a local file, or seeded random ones.

Nothing downloads unless the caller allows it (the package sets HF_HUB_OFFLINE before any hub library is
imported); a missing file gets one error naming the file and where to put it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.embedding.registry import EncoderSpec

PUBLISHED = ("pretrained", "imagenet")
"""--weights values meaning the entry's published weights ('imagenet' is the older name)."""


class WeightsError(WsiNcmiError):
    """Weights that cannot be loaded; the message says what to do."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, cached by (path, size, mtime) so a large weights file is hashed once per process."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state(path: Path) -> dict[str, Any]:
    """A state dict from a .safetensors or torch file, unwrapped from training checkpoints ('state_dict', 'model',
    'teacher') and stripped of a prefix every key shares ('module.', 'model.', 'backbone.')."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a loadable state_dict ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state_dict (a mapping of parameter names to tensors)")
    for prefix in ("module.", "model.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def weights_label(weights: str, spec: EncoderSpec, seed: int) -> str:
    """What a bag records about its weights, known without building the model: the published weights' name,
    'random:seed=S', or 'sha256:<hex>:<file name>' (an unknown path is returned as given)."""
    if weights == "random":
        return f"random:seed={seed}"
    if weights in PUBLISHED:
        return spec.weights_name
    path = Path(weights)
    return f"sha256:{sha256_file(path)}:{path.name}" if path.is_file() else weights


def weights_present(spec: EncoderSpec) -> bool | None:
    """Whether the entry's published weights are in the local cache (None: timm decides, not known here)."""
    return None if spec.checkpoint is None else spec.checkpoint.local() is not None


@contextlib.contextmanager
def hub_online() -> Iterator[None]:
    """Let huggingface_hub reach the network for the duration (it reads HF_HUB_OFFLINE once, at import)."""
    import huggingface_hub.constants as constants

    previous, env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE = False
    os.environ["HF_HUB_OFFLINE"] = "0"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def _not_cached(spec: EncoderSpec) -> WeightsError:
    """The error for published weights missing from the local cache: where to put them, or what to pass."""
    assert spec.checkpoint is not None
    source = spec.checkpoint.repo or spec.checkpoint.url
    return WeightsError(
        f"{spec.name}: weights file {spec.checkpoint.filename} (from {source}) not in the local cache; put it "
        f"at {spec.checkpoint.expected()} (HF_HOME / HF_HUB_CACHE / TORCH_HOME), pass --weights PATH, or pass "
        "--allow-download"
    )


def check_weights(encoder: str, weights: str, allow_download: bool = False) -> None:
    """Refuse, before any slide is touched, an unknown encoder, a --weights file that does not exist, or published
    weights missing from the local cache when downloads are not allowed (`timm:` names are built, and their cache
    read, by timm itself when embedding starts)."""
    from wsi_ncmi.core.registry import UnknownNameError
    from wsi_ncmi.embedding.registry import get_encoder

    if not encoder.startswith("timm:"):
        try:
            spec = get_encoder(encoder)
        except UnknownNameError as exc:
            raise WeightsError(str(exc)) from exc
        if weights in PUBLISHED and spec.checkpoint is not None and not allow_download and not spec.checkpoint.local():
            raise _not_cached(spec)
    if weights == "random" or weights in PUBLISHED:
        return
    if not Path(weights).is_file():
        raise WeightsError(f"--weights {weights!r}: not 'pretrained', 'random' or an existing file")


def _published_file(spec: EncoderSpec, allow_download: bool) -> Path:
    """The entry's checkpoint from the local cache, downloaded first only when allowed."""
    assert spec.checkpoint is not None
    found = spec.checkpoint.local()
    if found is not None:
        return found
    if not allow_download:
        raise _not_cached(spec)
    try:
        if spec.checkpoint.repo:
            from huggingface_hub import hf_hub_download

            with hub_online():
                return Path(hf_hub_download(spec.checkpoint.repo, spec.checkpoint.filename))
        import torch

        torch.hub.load_state_dict_from_url(spec.checkpoint.url, map_location="cpu")
        return spec.checkpoint.expected()
    except Exception as exc:
        raise WeightsError(f"{spec.name}: download failed ({type(exc).__name__}: {exc})") from exc


def load_state(spec: EncoderSpec, model: Any, state: dict[str, Any], source: str) -> Any:
    """Load a (published or user) state dict into the built model through the entry's key renames; every
    parameter must be filled, and keys the model lacks are an error unless the entry cuts layers off."""
    state = spec.adapt_state(state, model)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise WeightsError(
            f"{source}: does not fit {spec.name} ({first}); is it the right model's state_dict?"
        ) from exc
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise WeightsError(
            f"{source}: {len(result.missing_keys)} parameter(s) of {spec.name} missing from the file "
            f"({shown}...); is it the right model's state_dict?"
        )
    if result.unexpected_keys and not spec.ignore_unexpected:
        shown = ", ".join(result.unexpected_keys[:5])
        raise WeightsError(
            f"{source}: {len(result.unexpected_keys)} key(s) that {spec.name} does not have ({shown}...); is it "
            "the right model's state_dict?"
        )
    return model


def load_encoder(spec: EncoderSpec, weights: str, seed: int = 0, allow_download: bool = False) -> tuple[Any, str]:
    """Build the encoder with `weights` ('pretrained'/'imagenet', 'random' or a file path); return (model in eval
    mode, label). The label (`weights_label`) goes into every bag."""
    import torch

    if weights == "random":
        warnings.warn(
            f"{spec.name}: random-initialised weights (seed {seed}); features are for tests and demos only",
            stacklevel=2,
        )
        torch.manual_seed(seed)
        return spec.build().eval(), weights_label(weights, spec, seed)
    if weights in PUBLISHED and spec.checkpoint is None:
        return _timm_pretrained(spec, allow_download), weights_label(weights, spec, seed)
    if weights in PUBLISHED:
        path = _published_file(spec, allow_download)
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"--weights {weights!r}: not 'pretrained', 'random' or an existing file")
    model = load_state(spec, spec.build(), read_state(path), str(path))
    return model.eval(), weights_label(weights, spec, seed)


def _timm_pretrained(spec: EncoderSpec, allow_download: bool) -> Any:
    """A `timm:` entry with timm's own pretrained loading (its hub cache; offline unless allowed)."""
    context = hub_online() if allow_download else contextlib.nullcontext()
    try:
        with context:
            return spec.build(pretrained=True).eval()
    except Exception as exc:
        raise WeightsError(
            f"{spec.name}: pretrained weights not in the local cache ({type(exc).__name__}: {exc}); put them in "
            "the HF_HOME/TORCH_HOME cache, pass --weights PATH, or pass --allow-download"
        ) from exc
