"""The `embed` command (tiles into feature bags) and `encoders` (the registered tile encoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import (
    ExecutorOption,
    SchedulerOption,
    ShardOption,
    reported,
    shard_part,
    slide_table,
    summary,
)


def embed(
    job: Annotated[Path, typer.Option("--job", help="Job folder written by `tile`; bags go to JOB/features/ENCODER.")],
    encoder: Annotated[
        list[str],
        typer.Option(
            "--encoder",
            help="An entry of `wsi-ncmi encoders` or timm:<name>; repeat it to embed with several encoders in one "
            "pass (each tile read once).",
        ),
    ] = ["resnet50_trunc"],  # noqa: B006
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Embed these slides (path column).")] = None,
    slides: Annotated[Path | None, typer.Option("--slides", help="Embed the slide files in this folder.")] = None,
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="pretrained (the entry's published weights, from the local cache; 'imagenet' is the same), "
            "random (seeded; tests), or a state_dict/safetensors PATH.",
        ),
    ] = "pretrained",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Tiles per forward pass.")] = 256,
    workers: Annotated[
        str,
        typer.Option(
            "--workers",
            help="Processes reading tiles (0: the main process), or auto: every core but one on a GPU (at most "
            "16), one per 16 cores on a CPU (1 to 4).",
        ),
    ] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        str, typer.Option("--precision", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.")
    ] = "auto",
    decode: Annotated[
        str,
        typer.Option(
            "--decode",
            help="Where tiles that are whole JPEG tiles of the slide are decoded: device (torchvision on the "
            "encoder's device, nvJPEG on CUDA; other slides on the CPU), cpu, or auto (device on CUDA without "
            "--stain-norm, else cpu).",
        ),
    ] = "auto",
    feature_dtype: Annotated[
        str,
        typer.Option(
            "--feature-dtype", help="float32 or float16 on disk (readers upcast; a slide beyond float16 range fails)."
        ),
    ] = "float32",
    also_pt: Annotated[bool, typer.Option("--also-pt", help="Also write CLAM-style {slide_id}.pt tensors.")] = False,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Download missing weights (otherwise nothing is downloaded).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --weights random.")] = 0,
    stain_norm: Annotated[
        str,
        typer.Option(
            "--stain-norm", help="Stain normalisation of each tile before the encoder: none, macenko or reinhard."
        ),
    ] = "none",
    stain_target: Annotated[
        Path | None,
        typer.Option(
            "--stain-target",
            exists=True,
            dir_okay=False,
            help="H&E image (PNG, JPEG, TIFF) whose stains tiles are mapped to; default: a target fitted from a CC0 "
            "H&E scan (CMU-1-Small-Region).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo slides whose bags exist.")] = False,
    shard: ShardOption = None,
    executor: ExecutorOption = "local",
    dask_scheduler: SchedulerOption = None,
    dask_workers: Annotated[int, typer.Option("--dask-workers", min=1, help="LocalCluster processes.")] = 2,
) -> None:
    """Embed every tile of every tiled slide into JOB/features/ENCODER/{slide_id}.h5 (features N x D + coords).

    With several --encoder, each tile is read and decoded once and fed to every encoder (each with its own resize
    and normalisation); each encoder resumes on its own and writes its rows to status/embed-ENCODER.csv. With
    --executor dask and a scheduler address, each slide's task asks its worker for the resource GPU=1 unless
    --device cpu: start GPU workers with `dask worker ... --resources GPU=1`, one CUDA_VISIBLE_DEVICES each.
    """
    from wsi_ncmi.core.cores import parse_workers
    from wsi_ncmi.embedding.embed import EmbedSettings
    from wsi_ncmi.embedding.job import embed_job, embed_targets

    with reported(ValueError):
        encoders = list(dict.fromkeys(encoder))
        settings = EmbedSettings(
            encoders[0],
            weights,
            batch_size,
            parse_workers(workers, device),
            device,
            precision,
            feature_dtype,
            also_pt,
            overwrite,
            allow_download,
            seed,
            stain_norm=stain_norm,
            stain_target=None if stain_target is None else str(stain_target),
            decode=decode,
        )
    table = slide_table(manifest, slides) if manifest is not None or slides is not None else None
    part = shard_part(shard)
    with reported(ValueError):
        targets = embed_targets(job, settings, encoders, table, part)
    if weights == "random":
        typer.secho(
            f"warning: {', '.join(encoders)} with random-initialised weights (seed {seed}): features are for tests "
            "and demos, not for real models",
            fg="yellow",
            err=True,
        )
    with reported(KeyError, ValueError, RuntimeError):
        results = embed_job(targets, job, settings, encoders, part, executor, dask_workers, dask_scheduler)
    raise typer.Exit(max(summary(rows, stage, path) for stage, (rows, path) in results.items()))


def encoders(
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """List the registered encoders: output dim, input size, preprocessing, precision, licence, and whether the
    published weights are in the local cache (and where they are expected)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from wsi_ncmi.embedding.registry import get_encoder, registered
    from wsi_ncmi.embedding.weights import weights_present

    rows = []
    for name in registered():
        spec = get_encoder(name)
        found = spec.checkpoint.local() if spec.checkpoint else None
        rows.append(
            {
                "encoder": name,
                "dim": spec.dim,
                "input_size": spec.input_size,
                "preprocess": spec.preprocess.describe(),
                "mean": list(spec.mean),
                "std": list(spec.std),
                "pooling": spec.pooling,
                "precision": spec.precision,
                "licence": spec.licence,
                "weights": spec.weights_name,
                "present": bool(weights_present(spec)),
                "path": str(found or (spec.checkpoint.expected() if spec.checkpoint else "")),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="encoders (also timm:<name>)")
    for column in ("encoder", "dim", "input", "precision", "licence", "local weights"):
        table.add_column(column, justify="right" if column in ("dim", "input") else "left")
    for row in rows:
        table.add_row(
            row["encoder"],
            str(row["dim"]),
            str(row["input_size"]),
            row["precision"],
            row["licence"],
            "[green]yes[/]" if row["present"] else "[red]no[/]",
        )
    Console(highlight=False).print(table)
