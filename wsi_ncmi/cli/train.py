"""The `train` command (one MIL run) and `tune` (a hyper-parameter search per loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import fail, reported

EPILOG = (
    "Distributed: torchrun --nproc-per-node G -m wsi_ncmi train ... trains one run on G GPUs (NCCL) or "
    "processes (gloo on CPU) with DistributedDataParallel; only rank 0 writes."
)
"""The epilog of `train --help`."""


def train(
    manifest: Annotated[Path, typer.Option("--manifest", help="Labelled manifest CSV.")],
    features: Annotated[Path, typer.Option("--features", help="Bag folder (ours, CLAM h5_files/ or TRIDENT).")],
    split: Annotated[Path, typer.Option("--split", help="Split file (slide_id,split).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML settings (configs/camelyon17_ncmi.yaml); flags override it.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="abmil, abmil_plain, mean, max, transmil, clam_sb [abmil].")
    ] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="ncmi, ce, focal or cmic [ncmi].")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs [50].")] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Learning rate of the optimiser (config optimizer: adamw, adam or sgd) [5e-4]."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of weights, order and subsampling [1].")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [auto].")] = None,
    max_tiles: Annotated[
        int | None, typer.Option("--max-tiles", help="Random tiles per bag per step (training only).")
    ] = None,
    cache_gb: Annotated[float | None, typer.Option("--cache-gb", help="Keep bags in memory up to this size [8].")] = (
        None
    ),
    skip_missing: Annotated[
        bool,
        typer.Option("--skip-missing", help="Drop split slides without a bag (with a warning) instead of failing."),
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue RUN from last.pt exactly.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start RUN again from scratch.")] = False,
    select: Annotated[
        str | None,
        typer.Option(
            "--select",
            help="Which epoch model.pt keeps: best_f1 (validation, mean over select_window epochs), best_loss or "
            "last [best_f1].",
        ),
    ] = None,
) -> None:
    """Train a MIL aggregator on feature bags with NCMI or a baseline loss; keep the epoch chosen by --select."""
    import signal

    from wsi_ncmi.core.config import load_yaml, override
    from wsi_ncmi.formats.layout import RunFolder
    from wsi_ncmi.mil.run import train_run
    from wsi_ncmi.mil.schedule import fit_warmup
    from wsi_ncmi.mil.train import TrainConfig

    with reported(ValueError, TypeError, KeyError, prefix="training settings: "):
        settings = (
            load_yaml(out / "config.yaml")["training"]
            if resume and (out / "config.yaml").exists()
            else (load_yaml(config))
        )
        settings = override(
            settings,
            model=model,
            loss=loss,
            epochs=epochs,
            lr=lr,
            seed=seed,
            device=device,
            max_tiles=max_tiles,
            cache_gb=cache_gb,
            skip_missing=skip_missing or None,
            select=select,
        )
        note = fit_warmup(settings, TrainConfig.warmup_epochs) if epochs is not None else None
        train_config = TrainConfig.from_dict(settings)
    if note:
        typer.secho(f"note: {note}", fg="yellow", err=True)
    try:
        from wsi_ncmi.mil.distributed import Cluster

        with reported(ValueError):
            cluster = Cluster.from_env()
            result = train_run(
                manifest, features, split, out, train_config, resume=resume, overwrite=overwrite, cluster=cluster
            )
            cluster.close()
    except KeyboardInterrupt as stop:
        from wsi_ncmi.core.faults import signal_of

        signum = signal_of(stop)
        again = (
            "run the same command with --resume to continue from the last finished epoch"
            if RunFolder(out).last.exists()
            else "no epoch finished; run the same command again to start the run"
        )
        raise fail(f"interrupted by {signal.Signals(signum).name}: {out}: {again}", 128 + signum) from stop
    if cluster.main:
        typer.echo(
            f"selected epoch {result.best_epoch} ({train_config.select}): validation macro-F1 "
            f"{result.best_metrics['macro_f1']:.3f}; checkpoint {RunFolder(out).model}"
        )


def tune(
    manifest: Annotated[Path, typer.Option("--manifest", help="Labelled manifest CSV.")],
    features: Annotated[Path, typer.Option("--features", help="Bag folder (ours, CLAM h5_files/ or TRIDENT).")],
    split: Annotated[
        list[Path], typer.Option("--split", help="Split file; repeat once per fold to score the mean over folds.")
    ],
    config: Annotated[
        Path, typer.Option("--config", help="Tuning YAML: losses, trials, seed, metric, training, space.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for trials.csv, best_{loss}.yaml and the trial runs.")],
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="Trials per loss (default: the file's).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Seed of the TPE sampler (default: the file's).")
    ] = None,
    losses: Annotated[
        str | None, typer.Option("--losses", help="Comma-separated losses to tune (default: the file's).")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", min=1, help="Training runs at once, one thread each (default: the idle cores)."),
    ] = None,
    dask_scheduler: Annotated[
        str | None, typer.Option("--dask-scheduler", help="tcp://HOST:8786: train the runs on that Dask cluster.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the search again from scratch.")] = False,
) -> None:
    """Tune each loss with the same number of trials (Optuna TPE) on validation; write the best as training configs."""
    from wsi_ncmi.core.config import load_yaml, override
    from wsi_ncmi.mil.space import parse_tune
    from wsi_ncmi.mil.tune import TuneInputs, best_trials
    from wsi_ncmi.mil.tune import tune as run_tune

    with reported(ValueError):
        data = override(
            load_yaml(config),
            trials=trials,
            seed=seed,
            losses=[x.strip() for x in losses.split(",")] if losses else None,
        )
        settings = parse_tune(data, str(config))
        found, paths = run_tune(
            settings, TuneInputs(manifest, features, tuple(split)), out, jobs, dask_scheduler, overwrite
        )
    best = best_trials(found, settings)
    for loss in settings.losses:
        if loss in best:
            trial = best[loss]
            typer.echo(f"{loss}: best {trial.name} {settings.metric} {trial.value:.4f} {trial.params} -> {paths[loss]}")
        else:
            typer.echo(f"{loss}: no completed trial")
    typer.echo(f"trials: {out / 'trials.csv'}")
    failed = [t for t in found if t.failed]
    for trial in failed:
        typer.secho(f"failed {trial.name}: {' | '.join(trial.errors)}", fg="red", err=True)
    if failed:
        raise typer.Exit(1)
