"""The built-in demo: a synthetic CAMELYON-style cohort run through every stage that exists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from wsi_ncmi.synthetic import CohortSpec, write_cohort


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo cohort; the defaults finish in minutes on a 2-core CPU."""

    slides_per_center: int = 8
    centers: int = 5
    width: int = 6144
    height: int = 4608
    mpp: float = 0.5
    seed: int = 0
    workers: int = 2


def run_demo(out: Path, settings: DemoSettings = DemoSettings(), console: Console | None = None) -> int:
    """Synthesise the cohort into OUT/cohort, tile it into OUT/job; return the exit code."""
    from wsi_ncmi.cohort.manifest import read_manifest
    from wsi_ncmi.tiling import TilingParams, tile_slides

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = CohortSpec(
        slides=settings.slides_per_center * settings.centers,
        centers=settings.centers,
        width=settings.width,
        height=settings.height,
        mpp=settings.mpp,
        seed=settings.seed,
    )
    console.print(f"[bold]1/2 synthesising[/] {cohort.slides} slides in {cohort.centers} centers -> {out / 'cohort'}")
    manifest = write_cohort(cohort, out / "cohort", progress=True)
    console.print(f"[bold]2/2 tiling[/] at 0.5 um/px, 256 px -> {out / 'job'}")
    rows = tile_slides(read_manifest(manifest, require=["path"]), out / "job", TilingParams(), settings.workers)
    failed = [row for row in rows if row.failed]
    console.print(f"tiled {len(rows) - len(failed)}/{len(rows)} slides, {sum(r.n_tiles for r in rows)} tiles")
    console.print("The embedding, training and evaluation stages are not in this version yet; the demo stops here.")
    console.print(f"Open next: {manifest}, {out / 'job' / 'thumbnails'}, {out / 'job' / 'status' / 'tile.csv'}")
    return 1 if failed else 0
