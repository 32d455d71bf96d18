"""Whole-pipeline commands: `run` (from one YAML file) and `demo` (on a built-in synthetic cohort)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import SchedulerOption, reported


def run(
    config: Annotated[Path, typer.Option("--config", help="Pipeline YAML (configs/pipeline_camelyon17.yaml).")],
    executor: Annotated[
        str | None, typer.Option("--executor", help="local or dask for the per-slide stages [the file's].")
    ] = None,
    dask_scheduler: SchedulerOption = None,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Download missing encoder weights (otherwise nothing is).")
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", min=1, help="Training runs at once, one thread each (default: the file's, else the idle cores)."
        ),
    ] = None,
) -> None:
    """Run tile -> embed -> splits -> train (losses x seeds) -> evaluate -> compare -> reports from one YAML file."""
    from wsi_ncmi.pipeline.run import PipelineConfig, run_pipeline

    with reported(ValueError, TypeError):
        pipeline = PipelineConfig.from_yaml(config)
        pipeline.executor = executor or pipeline.executor
        pipeline.dask_scheduler = dask_scheduler or pipeline.dask_scheduler
        if allow_download:
            pipeline.embedding["allow_download"] = True
        pipeline.jobs = jobs or pipeline.jobs
        result = run_pipeline(pipeline)
    typer.echo(result["markdown"].read_text())
    typer.echo(f"wrote {result['comparison']}")
    for path in result["run_reports"]:
        typer.echo(f"run report: {path}")
    typer.echo(f"experiment report: {result['report']}")


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's cohort, job and runs.")] = Path("demo_out"),
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes for per-slide stages.")] = 2,
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="Encoder weights: random (default; nothing to download), imagenet (local cache) or a PATH.",
        ),
    ] = "random",
    encoder: Annotated[str, typer.Option("--encoder", help="Tile encoder.")] = "resnet18",
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Download missing encoder weights (otherwise nothing is).")
    ] = False,
) -> None:
    """Run the whole pipeline on a built-in synthetic CAMELYON-style cohort: NCMI against CE.

    Nothing is downloaded unless --allow-download; the encoder's weights are checked before any work."""
    from wsi_ncmi.pipeline.demo import DemoSettings, run_demo

    with reported():
        settings = DemoSettings(workers=workers, weights=weights, encoder=encoder, allow_download=allow_download)
        code = run_demo(out, settings)
    raise typer.Exit(code)
