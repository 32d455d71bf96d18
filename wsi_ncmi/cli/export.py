"""The `export` group: results for other tools (QuPath GeoJSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import DeviceOption, reported

export_app = typer.Typer(help="Export results for other tools (QuPath).", no_args_is_help=True)


@export_app.command("qupath")
def export_qupath(
    job: Annotated[Path, typer.Option("--job", help="Job folder with tiles/ (and features/ with --run).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for one {slide_id}.geojson per slide.")],
    run: Annotated[
        Path | None, typer.Option("--run", help="Run folder: adds attention, class probabilities, the prediction.")
    ] = None,
    slide: Annotated[list[str] | None, typer.Option("--slide", help="Only these slide_ids (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rewrite files that exist.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """GeoJSON for QuPath (level-0 pixels): tiles as detections with measurements, the tissue as an annotation.

    Open a slide in QuPath and drag the slide's .geojson onto it.
    """
    from wsi_ncmi.export.qupath import export_job

    with reported(KeyError, ValueError):
        results = export_job(job, out, run, slide, overwrite, device)
    failed = [r for r in results if r.status == "failed"]
    written = sum(r.status == "ok" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    for row in failed:
        typer.secho(f"failed {row.slide_id}: {row.detail}", fg="red", err=True)
    typer.echo(
        f"wrote {written} GeoJSON file(s) to {out}"
        + (f"; kept {skipped} existing (--overwrite rewrites them)" if skipped else "")
        + (f"; {len(failed)} failed" if failed else "")
    )
    raise typer.Exit(1 if failed else 0)
