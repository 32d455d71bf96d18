"""Loading encoder weights: published weights from the local cache, a local file, or seeded random ones.

Nothing downloads unless the caller allows it; a missing file gets one error saying where to put it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from wsi_ncmi.encoders.registry import EncoderSpec


class WeightsError(Exception):
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


def _read_state(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
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
    if weights == "imagenet":
        return spec.weights_name
    path = Path(weights)
    return f"sha256:{sha256_file(path)}:{path.name}" if path.is_file() else weights


def load_encoder(spec: EncoderSpec, weights: str, seed: int = 0, allow_download: bool = False) -> tuple[Any, str]:
    """Build the encoder with `weights` ('imagenet', 'random' or a file path); return (model in eval mode, label).

    The label (`weights_label`) goes into every bag.
    """
    import torch

    if weights == "random":
        warnings.warn(
            f"{spec.name}: random-initialised weights (seed {seed}); features are for tests and demos only",
            stacklevel=2,
        )
        torch.manual_seed(seed)
        return spec.build(False).eval(), weights_label(weights, spec, seed)
    if weights == "imagenet":
        missing = [f for f in spec.cache_files() if not os.path.exists(f)]
        if missing and not allow_download:
            raise WeightsError(
                f"{spec.name}: pretrained weights not in the local cache (expected {', '.join(missing)}); "
                "copy them there from a machine with internet (they download on first use of torchvision/timm "
                "with pretrained weights), set TORCH_HOME/HF_HOME to where they are, pass --weights PATH, or "
                "pass --allow-download"
            )
        previous = os.environ.get("HF_HUB_OFFLINE")
        if not allow_download:
            os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            model = spec.build(True)
        except Exception as exc:
            raise WeightsError(
                f"{spec.name}: cannot load pretrained weights offline ({type(exc).__name__}: {exc}); put them in "
                "the TORCH_HOME/HF_HOME cache, pass --weights PATH, or pass --allow-download"
            ) from exc
        finally:
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
        return model.eval(), weights_label(weights, spec, seed)
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"--weights {weights!r}: not 'imagenet', 'random' or an existing file")
    state = _read_state(path)
    model = spec.build(False)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise WeightsError(f"{path}: does not fit {spec.name} ({first}); is it the right model's state_dict?") from exc
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise WeightsError(
            f"{path}: {len(result.missing_keys)} parameter(s) of {spec.name} missing from the file "
            f"({shown}...); is it the right model's state_dict?"
        )
    return model.eval(), weights_label(weights, spec, seed)
