"""The `tile` command: tissue detection and tiling of every slide, done by wsi_ncmi.tiling.tile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import (
    ExecutorOption,
    SchedulerOption,
    ShardOption,
    fail,
    interrupted,
    reported,
    shard_part,
    slide_table,
    summary,
)


def tile(
    out: Annotated[Path, typer.Option("--out", help="Job folder; tiles/, thumbnails/ and status/ go inside.")],
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Manifest CSV with a path column.")] = None,
    slides: Annotated[Path | None, typer.Option("--slides", help="Folder of slide files (id = file stem).")] = None,
    mpp: Annotated[float | None, typer.Option("--mpp", help="Target microns per pixel [config: 0.5].")] = None,
    tile_size: Annotated[int | None, typer.Option("--tile-size", help="Tile side in px at --mpp [256].")] = None,
    overlap: Annotated[int | None, typer.Option("--overlap", help="Overlap in px at --mpp [0].")] = None,
    min_tissue: Annotated[
        float | None,
        typer.Option("--min-tissue", help="Keep tiles with at least this tissue fraction [0.1]."),
    ] = None,
    grid: Annotated[
        str | None,
        typer.Option("--grid", help="slide (one lattice, no overlaps) or tissue (one per region, as CLAM) [slide]."),
    ] = None,
    edges: Annotated[
        str | None,
        typer.Option(
            "--edges",
            help="At the right/bottom edge: inward (a last whole tile moved in), overhang (white beyond), "
            "none [inward].",
        ),
    ] = None,
    thumbnails: Annotated[
        bool | None,
        typer.Option("--thumbnails/--no-thumbnails", help="Write thumbnails and label/macro images [yes]."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", help="auto (each format's own reader), openslide, tiffslide, wsidicom or pylibczirw [auto]."
        ),
    ] = None,
    assume_mpp: Annotated[
        float | None,
        typer.Option("--assume-mpp", help="Level-0 um/px for slides whose metadata has none."),
    ] = None,
    qc: Annotated[
        str | None,
        typer.Option("--qc", help="on: remove pen ink, black borders and blurry tiles (qc: in the config); off [on]."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Slides tiled in parallel (processes).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo slides whose outputs exist.")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML settings (configs/tiling.yaml); flags override it."),
    ] = None,
    shard: ShardOption = None,
    executor: ExecutorOption = "local",
    dask_scheduler: SchedulerOption = None,
) -> None:
    """Find tissue and tile each slide at a physical resolution; write JOB/tiles/*.h5 and JOB/thumbnails/*.jpg."""
    from wsi_ncmi.core.config import load_yaml, override
    from wsi_ncmi.core.faults import Interrupted
    from wsi_ncmi.formats.shards import status_file
    from wsi_ncmi.tiling.tile import TilingParams, tile_slides

    if qc not in (None, "on", "off"):
        raise fail(f"--qc must be on or off, got {qc!r}")
    with reported(ValueError, TypeError, prefix="tiling settings: "):
        settings = override(
            load_yaml(config),
            **{"qc.enabled": None if qc is None else qc == "on"},
            mpp=mpp,
            tile_size=tile_size,
            overlap=overlap,
            min_tissue=min_tissue,
            grid=grid,
            edges=edges,
            thumbnails=thumbnails,
            backend=backend,
            assume_mpp=assume_mpp,
        )
        params = TilingParams.from_dict(settings)
    table = slide_table(manifest, slides)
    if not table["slide_id"]:
        raise fail("no slides to tile (empty manifest or no slide files in the folder)")
    part = shard_part(shard)
    try:
        with reported(RuntimeError, ValueError):
            rows = tile_slides(
                table, out, params, workers, overwrite, shard=part, executor=executor, scheduler=dask_scheduler
            )
    except Interrupted as stop:
        raise interrupted(stop, status_file(out, "tile", part)) from stop
    raise typer.Exit(summary(rows, "tile", status_file(out, "tile", part)))
