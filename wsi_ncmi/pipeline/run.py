"""The whole pipeline from one YAML file: tile -> embed -> splits -> train (losses x seeds) -> evaluate -> compare
-> HTML reports.

Every stage resumes: finished tiles, bags and runs are kept, an interrupted run continues from its last epoch,
and a re-run after an interruption picks up where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.formats.layout import JobFolder, RunsFolder


class PipelineError(WsiNcmiError):
    """A pipeline configuration or stage that cannot go on; the message names the stage."""


@dataclass
class PipelineConfig:
    """What `wsi-ncmi run --config pipeline.yaml` reads (configs/pipeline_camelyon17.yaml is a full example)."""

    manifest: Path
    job: Path
    runs: Path
    tiling: dict[str, Any] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Any] = field(
        default_factory=lambda: {"scheme": "holdout-center", "test_centers": ["3", "4"], "val_frac": 0.1, "seed": 1}
    )
    training: dict[str, Any] = field(default_factory=dict)
    losses: list[str] = field(default_factory=lambda: ["ncmi", "ce"])
    loss_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    evaluate: dict[str, Any] = field(default_factory=lambda: {"split": "test", "bootstrap": 1000})
    workers: int = 1
    jobs: int | None = None
    executor: str = "local"
    dask_scheduler: str | None = None

    @classmethod
    def from_yaml(cls, path: Path) -> PipelineConfig:
        from wsi_ncmi.core.config import load_yaml

        data = load_yaml(path)
        base = Path(path).resolve().parent
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [k for k in ("manifest", "job", "runs") if k not in data]
        if missing:
            raise PipelineError(f"{path}: missing required key(s) {', '.join(missing)}")
        for key in ("manifest", "job", "runs"):
            data[key] = (base / data[key]).resolve()
        jobs = data.get("jobs")
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
            raise PipelineError(f"{path}: jobs must be a whole number >= 1 or null (the idle cores), got {jobs!r}")
        training = data.get("training") or {}
        clash = sorted({"loss", "loss_args", "seed"} & set(training))
        if clash:
            raise PipelineError(
                f"{path}: training must not set {', '.join(clash)}; use the top-level losses, loss_args and seeds keys"
            )
        return cls(**data)


def _stage(console: Console, number: int, total: int, text: str) -> None:
    console.print(f"\n[bold]{number}/{total} {text}[/]", markup=True)


def run_pipeline(config: PipelineConfig, console: Console | None = None) -> dict[str, Any]:
    """Run every stage; returns paths of what was written. Failed slides are reported and left out downstream."""
    from wsi_ncmi.cohort.manifest import read_manifest
    from wsi_ncmi.cohort.splits import make_splits, write_splits
    from wsi_ncmi.embedding.embed import EmbedSettings, embed_slides
    from wsi_ncmi.embedding.weights import check_weights
    from wsi_ncmi.evaluation.compare import collect, summarise, to_markdown, write_table, write_text
    from wsi_ncmi.evaluation.evaluate import evaluate_run
    from wsi_ncmi.evaluation.report import pipeline_reports
    from wsi_ncmi.formats.status import write_status
    from wsi_ncmi.mil.settings import loss_settings
    from wsi_ncmi.mil.train import TrainConfig
    from wsi_ncmi.mil.trainjobs import TrainSpec, finished
    from wsi_ncmi.tiling.tile import TilingParams, tile_slides

    console = console or Console(highlight=False)
    total = 7
    job, runs_folder = JobFolder(config.job), RunsFolder(config.runs)
    table = read_manifest(config.manifest, require=["path", "label"])
    settings = EmbedSettings(**config.embedding)
    check_weights(settings.encoder, settings.weights, settings.allow_download)
    config.job.parent.mkdir(parents=True, exist_ok=True)
    config.runs.mkdir(parents=True, exist_ok=True)
    _stage(console, 1, total, f"tiling {len(table)} slides -> {config.job}")
    rows = tile_slides(
        table,
        config.job,
        TilingParams.from_dict(config.tiling),
        config.workers,
        executor=config.executor,
        scheduler=config.dask_scheduler,
    )
    failed = {r.slide_id for r in rows if r.failed}
    _stage(console, 2, total, "embedding tiles into feature bags")
    targets = [(s, p) for s, p in zip(table["slide_id"], table["path"], strict=True) if s not in failed]
    if config.executor == "dask":
        from wsi_ncmi.embedding.embed import embed_on_dask

        embed_rows = embed_on_dask(targets, config.job, settings, config.workers, config.dask_scheduler)
    else:
        embed_rows = embed_slides(targets, config.job, settings)
    write_status(job.status_file("embed"), embed_rows)
    failed |= {r.slide_id for r in embed_rows if r.failed}
    if failed:
        console.print(
            f"[yellow]left out {len(failed)} failed slide(s)[/]: {', '.join(sorted(failed)[:10])} "
            f"(see {job.status})",
            markup=True,
        )
    usable = table[~table["slide_id"].isin(failed)].reset_index(drop=True)
    _stage(console, 3, total, f"splitting ({config.splits.get('scheme', 'holdout-center')})")
    split_args = dict(config.splits)
    scheme = split_args.pop("scheme", "holdout-center")
    split_args["test_centers"] = [str(c) for c in split_args.get("test_centers", [])]
    folds = make_splits(usable, scheme, **split_args)
    split_files = write_splits(usable, folds, runs_folder.splits, f"pipeline scheme={scheme} {split_args}")
    for fold in folds:
        for warning in fold.warnings:
            console.print(f"[yellow]warning[/]: {warning}", markup=True)
    features = job.bags(settings.encoder)
    _stage(
        console,
        4,
        total,
        f"training {len(config.losses)} loss(es) x {len(config.seeds)} seed(s) x {len(split_files)} fold(s)",
    )
    runs = []
    specs = []
    for k, split_file in enumerate(split_files):
        for loss in config.losses:
            for seed in config.seeds:
                folder = runs_folder.run(config.training.get("model", "abmil"), loss, seed, k)
                run = folder.root
                runs.append(run)
                if folder.last.exists() and finished(run):
                    console.print(f"{run.name}: finished earlier, kept")
                    continue
                train_config = TrainConfig.from_dict(
                    {**config.training, "loss": loss, "seed": seed, "loss_args": loss_settings(loss, config.loss_args)}
                )
                console.print(f"{run.name}: {'resuming' if folder.last.exists() else 'training'}")
                specs.append(TrainSpec(config.manifest, features, split_file, run, train_config))
    _train_all(specs, config, console)
    _stage(console, 5, total, "evaluating")
    split_name = config.evaluate.get("split", "test")
    for run in runs:
        evaluate_run(run, split_name, bootstrap=int(config.evaluate.get("bootstrap", 1000)))
    _stage(console, 6, total, "comparing")
    summary = summarise(collect(runs, split_name))
    write_table(summary, runs_folder.comparison_csv)
    write_text(to_markdown(summary), runs_folder.comparison_md)
    _stage(console, 7, total, "writing the HTML reports")
    report, run_reports = pipeline_reports(runs, config.job, config.runs, split_name)
    return {
        "report": report,
        "run_reports": run_reports,
        "runs": runs,
        "comparison": runs_folder.comparison_csv,
        "markdown": runs_folder.comparison_md,
        "summary": summary,
        "splits": split_files,
    }


def _train_all(specs: list[Any], config: PipelineConfig, console: Console) -> None:
    """Train the runs as independent jobs, `config.jobs` at a time (default: the idle cores), on the Dask cluster
    when the executor is dask with a scheduler address; a PipelineError naming every run that failed."""
    from dataclasses import replace

    from wsi_ncmi.batch.jobs import Job, default_jobs, failed_names, run_jobs
    from wsi_ncmi.mil.trainjobs import train_or_resume

    if not specs:
        return
    n_jobs = config.jobs or default_jobs(len(specs))
    scheduler = config.dask_scheduler if config.executor == "dask" else None
    progress = n_jobs == 1 and scheduler is None
    jobs = [Job(spec.run.name, train_or_resume, (replace(spec, progress=progress),)) for spec in specs]
    outcomes = run_jobs(jobs, n_jobs, scheduler, "training runs")
    for outcome in outcomes:
        if outcome.failed:
            console.print(f"[red]failed[/] {outcome.name}: {outcome.error}", markup=True, soft_wrap=True)
    failed = failed_names(outcomes)
    if failed:
        raise PipelineError(
            f"training failed for {len(failed)} run(s): {', '.join(failed)}; fix the cause and run again "
            "(finished runs are kept)"
        )
