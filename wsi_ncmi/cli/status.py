"""The `status` command: what every stage of a job folder has done and what is left."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import fail, slide_table


def status(
    job: Annotated[Path, typer.Argument(help="Job folder.")],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="List the manifest's slides not done yet.")
    ] = None,
) -> None:
    """Merge the status files of every stage (and shard) of JOB, write them as {stage}.csv (and the QC table as
    qc.csv), print what is left."""
    from rich.console import Console
    from rich.table import Table

    from wsi_ncmi.formats.qc_table import qc_warned
    from wsi_ncmi.formats.shards import merge_job_status, slides_left

    if not job.is_dir():
        raise fail(f"{job}: no such job folder; give the folder `wsi-ncmi tile --out` wrote")
    merged = merge_job_status(job)
    if not merged:
        coords = list((job / "tiles").glob("*.h5")) if (job / "tiles").is_dir() else []
        if coords:
            raise fail(
                f"{job}: no status files, but {len(coords)} coords file(s) in tiles/: a run was stopped before it "
                "wrote its status; run the same `wsi-ncmi tile` command again (finished slides are skipped and "
                "recorded)",
                1,
            )
        raise fail(f"{job}: no status files; nothing has run here yet")
    console = Console(highlight=False)
    table = Table(title=f"{job}")
    statuses = ("ok", "skipped", "no_tissue", "failed")
    for column in ("stage", *statuses, "tiles"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    failed = 0
    for stage, rows in merged.items():
        counts = [sum(r.status == k for r in rows) for k in statuses]
        failed += counts[-1]
        table.add_row(stage, *map(str, counts), str(sum(r.n_tiles for r in rows if not r.failed)))
    console.print(table)
    warned = qc_warned(merged.get("tile", []))
    if warned:
        console.print(
            f"quality control warnings: {len(warned)} slide(s) lost more than qc.warn_removed of their tissue or "
            f"tiles (warning column of tile.csv and qc.csv): {', '.join(warned[:20])}"
            + (f" and {len(warned) - 20} more" if len(warned) > 20 else ""),
            soft_wrap=True,
        )
    if manifest is not None:
        wanted = set(slide_table(manifest, None)["slide_id"])
        for stage, left in slides_left(merged, wanted).items():
            console.print(f"{stage}: {len(left)} slide(s) left" + (f": {', '.join(left[:20])}" if left else ""))
            failed += len(left)
    raise typer.Exit(1 if failed else 0)
