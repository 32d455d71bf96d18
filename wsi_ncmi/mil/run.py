"""A training run end to end: manifest + split + bags -> RUN/{config.yaml, model.pt, last.pt, history.csv}."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wsi_ncmi.core.atomic import sweep_leftovers
from wsi_ncmi.core.config import load_yaml
from wsi_ncmi.formats.layout import CONFIG, RunFolder
from wsi_ncmi.mil.data import BagDataError, bag_encoder_attrs, join_split, load_bagset
from wsi_ncmi.mil.distributed import Cluster
from wsi_ncmi.mil.runfolder import RunError, clear_outputs, run_lock
from wsi_ncmi.mil.train import SINGLE, TrainConfig, TrainResult, train


def prepare_run(run: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an existing run unless resuming or overwriting; resuming needs RUN/last.pt. Deletes nothing: a folder
    holding only config.yaml (a run that stopped before its first epoch) may be started again as it is."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other; choose one")
    if resume:
        if not RunFolder(run).last.exists():
            raise RunError(f"{run}: nothing to resume (no last.pt); start the run without --resume")
        return
    if run.exists() and not run.is_dir():
        raise RunError(f"{run}: exists and is not a folder; choose another --out")
    started = [p for p in run.iterdir() if p.name != CONFIG] if run.is_dir() else []
    if started and not overwrite:
        raise RunError(f"{run}: run folder exists; pass --resume to continue it or --overwrite to start again")


def check_trainable(config: TrainConfig, dim: int, classes: list[str]) -> None:
    """Build the model and head once, so a bad model_args/loss_args setting is refused before the folder is written."""
    from wsi_ncmi.mil.heads import build_head
    from wsi_ncmi.mil.models import build_model

    try:
        model = build_model(config.model, dim or 1, **config.model_args)
        build_head(config.loss, model.dim, len(classes), **config.loss_args)
    except (TypeError, ValueError, KeyError) as exc:
        raise RunError(f"training settings: {exc}") from exc


def check_resume(run: Path, record: dict[str, Any]) -> None:
    """RUN/last.pt must load as data and belong to this run's settings, classes and bags (`record`, whose run_id is
    the one RUN/config.yaml holds)."""
    import torch

    from wsi_ncmi.mil.runs import checkpoint_problems

    path = RunFolder(run).last
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint = state["checkpoint"]
        missing = [k for k in ("optimizer", "scheduler", "epoch", "history", "best") if k not in state]
    except Exception as exc:
        raise RunError(
            f"{path}: not a loadable training state ({type(exc).__name__}); start again with --overwrite"
        ) from exc
    problems = checkpoint_problems(checkpoint, record)
    if missing or problems:
        listed = "; ".join(problems + ([f"missing {', '.join(missing)}"] if missing else []))
        raise RunError(f"{path}: does not belong to this run ({listed}); start again with --overwrite")


def warn_small_classes(train_rows: Any, explicit: bool, minimum: int = 3) -> None:
    """Without an explicit class list, say which classes have very few training slides (often a mistyped label)."""
    if explicit:
        return
    from rich.console import Console

    for label, count in train_rows["label"].value_counts().items():
        if count < minimum:
            Console(stderr=True, highlight=False).print(
                f"[yellow]warning:[/] class {label!r} has only {count} training slide(s); if it is a mistyped "
                "label, fix the manifest, or list the classes in the config (classes: [...])",
                markup=True,
            )


def write_config(run: Path, record: dict[str, Any]) -> None:
    import yaml

    from wsi_ncmi.core.atomic import atomic_path

    with atomic_path(RunFolder(run).config) as tmp:
        Path(tmp).write_text(yaml.safe_dump(record, sort_keys=False))


def train_run(
    manifest: Path,
    features: Path,
    split_file: Path,
    run: Path,
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: Any = None,
    cluster: Cluster = SINGLE,
) -> TrainResult:
    """Take the run folder's lock, validate every input, then (with --overwrite) clear the old run's outputs and
    train; the resolved settings go to RUN/config.yaml before the first step.

    Under torchrun every rank validates the inputs; rank 0 alone locks and prepares the run folder and writes.
    """
    run = Path(run)
    with run_lock(run) if cluster.main else nullcontext():
        if cluster.main:
            if run.is_dir():
                sweep_leftovers(run)
            prepare_run(run, resume, overwrite)
        cluster.barrier()
        record, train_bags, val_bags, classes = _validated_inputs(manifest, features, split_file, config)
        if resume:
            saved = load_yaml(RunFolder(run).config) if RunFolder(run).config.exists() else {}
            record["run_id"] = saved.get("run_id", "")
            check_resume(run, record)
        elif cluster.main:
            clear_outputs(run)
            run.mkdir(exist_ok=True)
            write_config(run, record)
        extra = {"encoder_attrs": record["encoder"], "inputs": record["inputs"], "run_id": record["run_id"]}
        return train(
            train_bags,
            val_bags,
            classes,
            config,
            run,
            resume=resume,
            extra=extra,
            progress=progress,
            on_epoch_end=on_epoch_end,
            cluster=cluster,
        )


def _validated_inputs(
    manifest: Path, features: Path, split_file: Path, config: TrainConfig
) -> tuple[dict[str, Any], Any, Any, list[str]]:
    """Read and check manifest, split, labels and bags; the run record for config.yaml, the bag sets, the classes."""
    import uuid

    import wsi_ncmi
    from wsi_ncmi.cohort.manifest import class_names, read_manifest
    from wsi_ncmi.cohort.splits import read_split
    from wsi_ncmi.mil.runs import bag_encoder_problems, check_training_device

    check_training_device(config.device)
    table = read_manifest(manifest)
    split = read_split(split_file)
    in_split = table[table["slide_id"].isin(split.index)]
    unlabelled = in_split.loc[in_split["label"] == "", "slide_id"].tolist()
    if unlabelled:
        raise BagDataError(
            f"{len(unlabelled)} slide(s) in the split have no label in {manifest}: {', '.join(unlabelled[:20])}"
        )
    classes = class_names(in_split, config.classes)
    parts = join_split(table, split, classes)
    warn_small_classes(parts["train"], config.classes is not None)
    budget = config.cache_gb * 1e9
    bagsets = {}
    for name, what in (("train", "training"), ("val", "validation")):
        bagsets[name] = load_bagset(
            parts[name]["slide_id"].tolist(), parts[name]["y"].tolist(), features, config.skip_missing, budget, what
        )
        budget -= bagsets[name].cached_bytes
    train_bags, val_bags = bagsets["train"], bagsets["val"]
    if len(val_bags) == 0:
        raise BagDataError(f"{split_file}: no validation slides; model selection needs a val split")
    if val_bags.dim and val_bags.dim != train_bags.dim:
        raise BagDataError(f"validation bags have {val_bags.dim} features, training bags {train_bags.dim}")
    made = bag_encoder_attrs(train_bags.paths[0]) if len(train_bags) else {}
    mismatch = bag_encoder_problems(Path(features), val_bags.slide_ids, made)
    if mismatch:
        raise BagDataError(f"{mismatch.replace('model', 'training')}; use bags embedded one way for every split")
    check_trainable(config, train_bags.dim, classes)
    record = {
        "code_version": wsi_ncmi.__version__,
        "run_id": uuid.uuid4().hex,
        "inputs": {
            "manifest": str(Path(manifest).resolve()),
            "features": str(Path(features).resolve()),
            "split": str(Path(split_file).resolve()),
        },
        "classes": classes,
        "encoder": bag_encoder_attrs(train_bags.paths[0]),
        "feature_dim": train_bags.dim,
        "n_slides": {name: len(part) for name, part in parts.items()},
        "training": asdict(config),
    }
    return record, train_bags, val_bags, classes
