"""A training run end to end: manifest + split + bags -> RUN/{config.yaml, model.pt, last.pt, history.csv}."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from wsi_ncmi.mil.data import BagDataError, bag_encoder_attrs, join_split, load_bagset
from wsi_ncmi.mil.distributed import Cluster
from wsi_ncmi.mil.train import SINGLE, RunError, TrainConfig, TrainResult, train


def prepare_run(run: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an existing run folder unless resuming or overwriting; resuming needs RUN/last.pt."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other; choose one")
    if resume:
        if not (run / "last.pt").exists():
            raise RunError(f"{run}: nothing to resume (no last.pt); start the run without --resume")
        return
    if run.exists() and any(run.iterdir()) and not overwrite:
        raise RunError(f"{run}: run folder exists; pass --resume to continue it or --overwrite to start again")
    if not run.parent.is_dir():
        raise RunError(f"{run}: parent folder {run.parent} does not exist; create it first")
    run.mkdir(exist_ok=True)
    for stale in ("model.pt", "last.pt", "history.csv"):
        (run / stale).unlink(missing_ok=True)


def write_config(run: Path, record: dict[str, Any]) -> None:
    import yaml

    from wsi_ncmi.atomic import atomic_path

    with atomic_path(run / "config.yaml") as tmp:
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
    """Validate every input, then train; the resolved settings go to RUN/config.yaml before the first step.

    Under torchrun every rank validates the inputs; rank 0 alone prepares the run folder and writes.
    """
    import wsi_ncmi
    from wsi_ncmi.cohort.manifest import class_names, read_manifest
    from wsi_ncmi.cohort.splits import read_split

    run = Path(run)
    if cluster.main:
        prepare_run(run, resume, overwrite)
    cluster.barrier()
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
    encoder = bag_encoder_attrs(train_bags.paths[0])
    record = {
        "code_version": wsi_ncmi.__version__,
        "inputs": {
            "manifest": str(Path(manifest).resolve()),
            "features": str(Path(features).resolve()),
            "split": str(Path(split_file).resolve()),
        },
        "classes": classes,
        "encoder": encoder,
        "feature_dim": train_bags.dim,
        "n_slides": {name: len(part) for name, part in parts.items()},
        "training": asdict(config),
    }
    if not resume and cluster.main:
        write_config(run, record)
    extra = {"encoder_attrs": encoder, "inputs": record["inputs"]}
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
