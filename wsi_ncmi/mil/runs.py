"""A trained run folder as later commands use it: its model loaded (one way, with the ownership and integrity
checks), the bags it may score, and whether its metrics are current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.mil.runfolder import RunError


def checkpoint_problems(checkpoint: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Where a loaded checkpoint disagrees with its run folder's config.yaml (a model.pt copied from another run)."""
    problems = []
    if config.get("run_id") and checkpoint.get("run_id") != config["run_id"]:
        problems.append(f"run id {checkpoint.get('run_id')!r} is not this folder's {config['run_id']!r}")
    if config.get("classes") is not None and list(checkpoint.get("classes", [])) != list(config["classes"]):
        problems.append(f"classes {checkpoint.get('classes')} are not the folder's {config['classes']}")
    training = config.get("training", {})
    for key in ("model", "loss"):
        if key in training and checkpoint.get(key) != training[key]:
            problems.append(f"{key} {checkpoint.get(key)!r} is not the folder's {training[key]!r}")
    if config.get("feature_dim") and checkpoint.get("in_dim") != config["feature_dim"]:
        problems.append(f"feature size {checkpoint.get('in_dim')} is not the folder's {config['feature_dim']}")
    return problems


def check_training_device(device: str) -> None:
    """Refuse a training device this machine does not have (CUDA asked for and absent, a misspelt name) before
    `train` changes anything, naming the setting (wsi_ncmi.core.device.check_device's message)."""
    from wsi_ncmi.core.device import DeviceError, check_device

    try:
        check_device(device)
    except DeviceError as exc:
        raise RunError(f"training settings: {exc}") from exc


def load_run_model(run: Path, device: str = "cpu", name: str = "model.pt") -> Any:
    """The run's trained model (wsi_ncmi.mil.checkpoint.Trained), refused when it was not trained in this folder, when
    `train` is still writing the folder, or when the checkpoint is damaged (the message names the file and the fix)."""
    from wsi_ncmi.core.config import load_yaml
    from wsi_ncmi.core.device import check_device
    from wsi_ncmi.core.faults import one_line
    from wsi_ncmi.mil.checkpoint import load_trained
    from wsi_ncmi.mil.runfolder import check_run_idle

    run = Path(run)
    check_run_idle(run)
    check_device(device)
    try:
        trained = load_trained(run / name, device)
    except RunError as exc:
        raise RunError(one_line(str(exc))) from exc
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError, IndexError) as exc:
        detail = one_line(str(exc), 200)
        raise RunError(
            f"{run / name}: damaged or incomplete checkpoint ({type(exc).__name__}: {detail}); "
            "train the run again (wsi-ncmi train --overwrite)"
        ) from exc
    config_path = run / "config.yaml"
    config = load_yaml(config_path) if config_path.exists() else {}
    problems = checkpoint_problems(trained.checkpoint, config)
    if problems:
        raise RunError(
            f"{run / name}: not the model of this run folder ({'; '.join(problems)}); "
            "copy the whole run folder, never model.pt alone"
        )
    return trained


UNSTAINED = {"stain_norm": "none"}
"""Bag settings a bag (or a model's record of its training bags) written before they were recorded had."""


def settings_differ(expected: dict[str, Any], found: dict[str, Any]) -> str | None:
    """How a bag's settings (`found`) differ from the model's training bags' (`expected`), in one phrase; None when
    they agree. Stain normalisation missing on either side means none."""
    expected, found = {**UNSTAINED, **expected}, {**UNSTAINED, **found}
    differing = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    if not differing:
        return None
    return "; ".join(f"{k}: model {a!r}, bag {b!r}" for k, (a, b) in differing.items())


def bag_encoder_problems(features: Path, slide_ids: list[str], expected: dict[str, Any]) -> str | None:
    """The first bag in `features` made with other encoder settings than `expected` (the model's training bags),
    described in one line; None when all agree."""
    from wsi_ncmi.mil.data import bag_encoder_attrs, find_bag

    for slide_id in slide_ids:
        path = find_bag(Path(features), slide_id)
        if path is None:
            continue
        listed = settings_differ(expected, bag_encoder_attrs(path))
        if listed:
            return f"{path}: bag made differently from the model's training bags ({listed})"
    return None


def check_bag_tiles(bag_path: Path, coords_path: Path, bag: Any = None) -> None:
    """Refuse a bag embedded from other tiles than the slide's current coords file (the slide was tiled again):
    its attention would be drawn at stale positions. Bags without a coords digest (or an empty one) are compared by
    coordinates (those of `bag`, when the caller has read it already)."""
    from wsi_ncmi.formats.bags import BagFormatError, coords_digest, read_bag, read_bag_attrs, read_coords

    current = read_coords(coords_path).coords
    digest = bag.metadata.get("coords_sha256") if bag is not None else read_bag_attrs(bag_path).get("coords_sha256")
    if digest:
        same = digest == coords_digest(current)
    else:
        same = np.array_equal((bag if bag is not None else read_bag(bag_path)).coords, current)
    if not same:
        raise BagFormatError(
            f"{bag_path}: embedded from other tiles than {coords_path} (the slide was tiled again); "
            "run `wsi-ncmi embed --overwrite` for this slide first"
        )


def run_bag(trained: Any, bag_path: Path, coords_path: Path | None = None) -> Any:
    """One slide's bag (formats.bags.Bag) for a run's model, refused (BagFormatError naming the bag and the fix)
    unless it matches the run: the encoder, weights and stain normalisation of the model's training bags and the
    model's feature size (BagMismatchError: the wrong bag folder), the tiles of the slide's current coords file, and
    finite values only."""
    from wsi_ncmi.formats.bags import BagFormatError, BagMismatchError, read_bag
    from wsi_ncmi.mil.data import bag_encoder_attrs

    bag_path = Path(bag_path)
    bag = read_bag(bag_path)
    listed = settings_differ(trained.checkpoint.get("encoder_attrs", {}), bag_encoder_attrs(bag_path))
    if listed:
        raise BagMismatchError(
            f"{bag_path}: bag made differently from the model's training bags ({listed}); embed the slide with the "
            "model's encoder, weights and stain normalisation"
        )
    expected = int(trained.checkpoint.get("in_dim", 0))
    if len(bag) and expected and bag.dim != expected:
        raise BagMismatchError(
            f"{bag_path}: {bag.dim} features per tile, the model takes {expected}; use bags of the model's encoder"
        )
    if coords_path is not None:
        check_bag_tiles(bag_path, Path(coords_path), bag)
    bad = int((~np.isfinite(bag.features)).any(axis=1).sum()) if len(bag) else 0
    if bad:
        raise BagFormatError(f"{bag_path}: {bad} tile(s) with NaN or inf features; embed this slide again")
    return bag


def check_feature_size(bags: Any, trained: Any, features: Path) -> None:
    """Refuse bags whose feature size is not the model's input size (another encoder), naming the folder."""
    from wsi_ncmi.mil.data import BagDataError

    expected = int(trained.checkpoint.get("in_dim", 0))
    if bags.dim and expected and bags.dim != expected:
        raise BagDataError(
            f"{features}: bags have {bags.dim} features per tile, the model takes {expected}; "
            "use bags embedded with the model's encoder"
        )


def model_epoch(run: Path) -> int | None:
    """The epoch RUN/model.pt was saved at, read without building the model; None when there is no readable one."""
    import torch

    path = Path(run) / "model.pt"
    if not path.exists():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        epoch = data.get("checkpoint", data).get("epoch")
    except Exception:
        return None
    return int(epoch) if isinstance(epoch, int) else None


def check_metrics_current(run: Path, split: str, metrics: dict[str, Any], epoch: int | None) -> None:
    """Refuse metrics_{split}.json measured on another epoch's model than model.pt (`epoch`) holds: `evaluate` ran
    before the run was trained further (or while it trained)."""
    measured = (metrics.get("selection") or {}).get("epoch")
    if epoch is not None and measured is not None and measured != epoch:
        raise RunError(
            f"{Path(run) / f'metrics_{split}.json'}: measured on epoch {measured}'s model, but model.pt holds epoch "
            f"{epoch}'s (the run was trained further); run `wsi-ncmi evaluate --run {run} --split {split}` again"
        )
