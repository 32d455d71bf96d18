"""Commands that draw: `heatmap` (one slide's attention) and `report` (an HTML page of a run or of runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import DeviceOption, fail, reported


def heatmap(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `train`.")],
    job: Annotated[Path, typer.Option("--job", help="Job folder with tiles/ and features/.")],
    slide: Annotated[str, typer.Option("--slide", help="slide_id to draw.")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write [RUN/heatmap_{slide}.png].")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Top attended tiles in the montage.")] = 16,
    device: DeviceOption = "cpu",
) -> None:
    """Draw the model's attention over the slide thumbnail, with a montage of the top-k attended tiles."""
    from wsi_ncmi.cohort.manifest import unsafe_id_reason
    from wsi_ncmi.evaluation.heatmap import draw_slide_heatmap

    reason = unsafe_id_reason(slide)
    if reason is not None:
        raise fail(f"--slide {slide!r}: {reason}; give a slide_id of the job's tiles/ folder")
    with reported(ValueError):
        path = draw_slide_heatmap(run, job, slide, out or run / f"heatmap_{slide}.png", top_k, device)
    typer.echo(f"wrote {path}")


def report(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write (images go to OUT_STEM_files/ beside it).")],
    run: Annotated[Path | None, typer.Option("--run", help="One run folder: its report on --split.")] = None,
    compare_runs: Annotated[
        bool, typer.Option("--runs", help="Compare the run folders given as arguments (seeds, losses, models).")
    ] = False,
    folders: Annotated[list[Path] | None, typer.Argument(help="Run folders, with --runs.", show_default=False)] = None,
    job: Annotated[
        Path | None, typer.Option("--job", help="Job folder: adds each slide's thumbnail, heatmap and top tiles.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Which predictions/metrics_{split} to show.")] = "test",
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline loss of the paired differences (--runs).")] = (
        "ce"
    ),
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Top attended tiles shown per slide.")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing report.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N (attention for --job).")] = "cpu",
) -> None:
    """One self-contained HTML page to look at results offline: a run (--run) or a comparison of runs (--runs)."""
    from wsi_ncmi.evaluation.report import experiment_report, run_report

    if (run is None) == (not compare_runs):
        raise fail("give either --run RUN, or --runs RUN [RUN ...]")
    if compare_runs and not folders:
        raise fail("--runs needs the run folders as arguments: --runs runs/ncmi_seed1 runs/ce_seed1 ...")
    if folders and not compare_runs:
        raise fail(f"unexpected argument(s) {', '.join(map(str, folders))}; use --runs to compare run folders")
    with reported(KeyError, ValueError):
        if run is not None:
            path = run_report(run, out, split, job, top_k, overwrite, device)
        else:
            path = experiment_report(list(folders or []), out, split, baseline, overwrite)
    typer.echo(f"wrote {path}")
