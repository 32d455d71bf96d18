"""The built-in demo: a synthetic CAMELYON-style cohort through the whole pipeline, NCMI against CE."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from wsi_ncmi.synthetic import CohortSpec, write_cohort

if TYPE_CHECKING:
    from wsi_ncmi.pipeline.run import PipelineConfig


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo; the defaults finish in minutes on a 2-core CPU."""

    slides_per_center: int = 8
    centers: int = 5
    width: int = 4096
    height: int = 3072
    mpp: float = 0.5
    seed: int = 0
    workers: int = 2
    epochs: int = 20
    seeds: tuple[int, ...] = (1, 2, 3)
    weights: str = "random"
    encoder: str = "resnet18"
    allow_download: bool = False
    bootstrap: int = 1000
    losses: tuple[str, ...] = field(default=("ncmi", "ce"))


def demo_pipeline(out: Path, settings: DemoSettings, manifest: Path) -> PipelineConfig:
    """The pipeline settings of the demo: the CAMELYON-17 protocol, scaled to a small CPU-only cohort."""
    from wsi_ncmi.pipeline.run import PipelineConfig

    return PipelineConfig(
        manifest=manifest,
        job=out / "job",
        runs=out / "runs",
        workers=settings.workers,
        tiling={"mpp": 0.5, "tile_size": 256},
        embedding={
            "encoder": settings.encoder,
            "weights": settings.weights,
            "allow_download": settings.allow_download,
            "batch_size": 64,
            "workers": max(0, settings.workers - 1),
            "device": "auto",
            "seed": settings.seed,
        },
        splits={"scheme": "holdout-center", "test_centers": ["3", "4"], "val_frac": 0.2, "seed": 1},
        training={
            "model": "abmil",
            "model_args": {"dim": 128, "dropout": 0.25, "neck": "mlp"},
            "classes": ["negative", "itc", "micro", "macro"],
            "epochs": settings.epochs,
            "warmup_epochs": min(2, settings.epochs),
            "lr": 1e-3,
            "device": "auto",
        },
        losses=list(settings.losses),
        seeds=list(settings.seeds),
        evaluate={"split": "test", "bootstrap": settings.bootstrap},
    )


def run_demo(out: Path, settings: DemoSettings = DemoSettings(), console: Console | None = None) -> int:
    """Synthesise the cohort into OUT/cohort and run every stage into OUT/job and OUT/runs; return the exit code.
    The encoder's weights are checked first, so missing weights fail in a second, not after the tiling."""
    from rich.markdown import Markdown

    from wsi_ncmi.embedding.weights import check_weights
    from wsi_ncmi.pipeline.run import run_pipeline

    check_weights(settings.encoder, settings.weights, settings.allow_download)
    console = console or Console(highlight=False)
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
    console.print(
        f"[bold]wsi-ncmi demo[/]: {cohort.slides} synthetic lymph-node slides in {cohort.centers} centers "
        f"(own stain shifts); train on centers 0-2, test on 3-4; abmil with {' and '.join(settings.losses)}, "
        f"seeds {', '.join(map(str, settings.seeds))}",
        markup=True,
    )
    if settings.weights == "random":
        console.print(
            f"[yellow]The encoder ({settings.encoder}) is random-initialised (seeded): no weights can be "
            "downloaded here. The figures below are real for this setting, not for ImageNet features; "
            "see the README to run the demo with real weights.[/]",
            markup=True,
        )
    manifest = write_cohort(cohort, out / "cohort", progress=True)
    result = run_pipeline(demo_pipeline(out, settings, manifest), console)
    console.print("\n[bold]Test macro-F1 and more, mean ± std over seeds[/]", markup=True)
    console.print(Markdown(result["markdown"].read_text()))
    first = result["runs"][0]
    console.print("\n[bold]What to open next[/]", markup=True)
    for path, what in [
        (result["comparison"], "the comparison table (also comparison.md)"),
        (first / "predictions_test.csv", "per-slide predictions and class probabilities"),
        (first / "metrics_test.json", "every metric with bootstrap 95% CIs and the NCMI diagnostic"),
        (first / "confusion_test.png", "confusion matrices"),
        (first / "curves.png", "learning curves"),
        (out / "job" / "thumbnails", "tissue and tile-grid overlays"),
        (out / "job" / "status", "per-slide status of tiling and embedding"),
    ]:
        console.print(f"  {path}  [dim]{what}[/]", markup=True)
    console.print(
        f"  wsi-ncmi heatmap --run {first} --job {out / 'job'} --slide <slide_id>  [dim]attention over a slide[/]",
        markup=True,
    )
    console.print("\n[bold]Reports (open in a browser; they work offline)[/]", markup=True)
    console.print(f"  experiment report: {result['report']}", soft_wrap=True)
    for path in result["run_reports"]:
        console.print(f"  run report: {path}", soft_wrap=True)
    return 0
