"""Commands that read trained runs: `evaluate` a split, `predict` unlabelled slides, `compare` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import DeviceOption, reported


def _metrics_table(results: dict) -> None:
    """Print the metrics of each split with their bootstrap CIs, then its notes and pN-stage figures."""
    from rich.console import Console
    from rich.table import Table

    def cell(metrics: dict, key: str) -> str:
        value = metrics.get(key)
        if value is None or value != value:
            return "n/a"
        ci = metrics.get("bootstrap", {}).get(key)
        return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    table = Table(title="evaluation (95% CIs: bootstrap over cases)")
    for column in ("split", "slides", "macro-F1", "accuracy", "balanced acc.", "AUC", "NCMI"):
        table.add_column(column)
    for name, metrics in results.items():
        ncmi = metrics.get("ncmi")
        table.add_row(
            name,
            str(metrics["n_slides"]),
            cell(metrics, "macro_f1"),
            cell(metrics, "accuracy"),
            f"{metrics['balanced_accuracy']:.3f}",
            cell(metrics, "auc"),
            "n/a" if ncmi is None or ncmi != ncmi else f"{ncmi:.3f}",
        )
    console = Console(highlight=False)
    console.print(table)
    for name, metrics in results.items():
        for note in metrics.get("notes", []):
            console.print(f"[yellow]note[/] ({name}): {note}", markup=True)
        if "pn_stage" in metrics:
            stage = metrics["pn_stage"]
            console.print(
                f"pN-stage ({name}): {stage['patients']} patients with all nodes in the split; accuracy "
                f"{stage['accuracy']:.3f}, quadratic kappa {stage['kappa_quadratic']:.3f}"
            )


def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `train`.")],
    split: Annotated[str, typer.Option("--split", help="test, val, train or all.")] = "test",
    features: Annotated[Path | None, typer.Option("--features", help="Bag folder [the run's].")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Manifest [the run's].")] = None,
    split_file: Annotated[Path | None, typer.Option("--split-file", help="Split file [the run's].")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples (cases) for CIs.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    pn_stage: Annotated[
        bool | None,
        typer.Option("--pn-stage/--no-pn-stage", help="Patient pN-stage metrics [auto: CAMELYON-17 manifests]."),
    ] = None,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Leave out slides without a bag.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Predict a split with the run's selected model (and its last epoch's, for comparison); write
    predictions_{split}.csv, metrics_{split}.json and plots."""
    from wsi_ncmi.evaluation.evaluate import evaluate_run

    with reported(ValueError):
        results = evaluate_run(
            run, split, features, manifest, split_file, bootstrap, seed, pn_stage, skip_missing, device
        )
    _metrics_table(results)
    for name, metrics in results.items():
        last, chosen = metrics.get("last_epoch"), metrics["selection"]
        if last is not None:
            typer.echo(
                f"{name}: selected epoch {chosen['epoch']} ({chosen['rule']}) macro-F1 {metrics['macro_f1']:.3f}, "
                f"accuracy {metrics['accuracy']:.3f}; last epoch {last['epoch']} macro-F1 {last['macro_f1']:.3f}, "
                f"accuracy {last['accuracy']:.3f}"
            )
    typer.echo(f"wrote {', '.join(f'predictions_{n}.csv, metrics_{n}.json' for n in results)} in {run}")


def predict(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `train`.")],
    features: Annotated[Path, typer.Option("--features", help="Bag folder.")],
    out: Annotated[Path, typer.Option("--out", help="Prediction CSV to write.")],
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Only these slides [all bags].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Accept bags from another encoder than the model's.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Predict unlabelled slides: slide_id, case_id, center, split, y_pred, p_<class>..., flag."""
    from wsi_ncmi.evaluation.evaluate import predict_slides

    with reported(ValueError):
        table = predict_slides(run, features, manifest, out, force, device)
    flagged = int((table["flag"] != "").sum())
    typer.echo(
        f"wrote {out}: {len(table)} slide(s)"
        + (f", {flagged} without tiles (predicted from the prior)" if flagged else "")
    )


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (seeds, folds, losses).")],
    out: Annotated[Path, typer.Option("--out", help="CSV: one row per (model, loss), mean and std.")],
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write a markdown table.")] = None,
    split: Annotated[str, typer.Option("--split", help="Which metrics_{split}.json to read.")] = "test",
    paired_view: Annotated[
        bool,
        typer.Option(
            "--paired",
            help="Also write per-seed/fold differences against --baseline (OUT with _paired) and their mean, "
            "bootstrap 95% CI and Wilcoxon signed-rank p-value (OUT with _paired_stats).",
        ),
    ] = False,
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline loss for --paired.")] = "ce",
) -> None:
    """Does NCMI beat CE on my data? Mean +- std over runs of test macro-F1, accuracy, AUC and NCMI."""
    from rich.console import Console
    from rich.markdown import Markdown

    from wsi_ncmi.evaluation.compare import (
        collect,
        paired,
        paired_markdown,
        paired_statistics,
        summarise,
        to_markdown,
        write_table,
        write_text,
    )

    with reported(KeyError):
        frame = collect(runs, split)
    table = summarise(frame)
    write_table(table, out)
    text = to_markdown(table)
    if markdown is not None:
        write_text(text, markdown)
    Console().print(Markdown(text))
    if paired_view:
        differences = paired(frame, baseline)
        path = out.with_name(f"{out.stem}_paired{out.suffix}")
        write_table(differences, path)
        typer.echo(f"paired differences against {baseline}: {path} ({len(differences)} pair(s))")
        if len(differences):
            stats = paired_statistics(differences)
            write_table(stats, out.with_name(f"{out.stem}_paired_stats{out.suffix}"))
            if markdown is not None:
                write_text(paired_markdown(stats), markdown.with_name(f"{markdown.stem}_paired{markdown.suffix}"))
            for _, row in stats[stats["pairs"] > 0].iterrows():
                typer.echo(
                    f"{row['model']} {row['metric']}: {row['loss']} - {row['baseline']} = "
                    f"{row['mean_difference']:+.3f} [95% CI {row['ci_low']:+.3f}, {row['ci_high']:+.3f}]; "
                    f"{row['verdict']}"
                )
    typer.echo(f"wrote {out}")
