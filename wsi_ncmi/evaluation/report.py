"""Self-contained HTML reports: one run on one split (`report --run`), and a comparison over seeds (`--runs`).

Everything is read from what `train`/`evaluate` wrote (metrics_{split}.json, predictions_{split}.csv, history.csv,
config.yaml) and, with a job folder, from the thumbnails, coords files and bags. Plots are inline SVG; slide
images (scaled-down JPEGs) go to a sibling folder `{report stem}_files/` and load only when a row is opened.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.core.folders import FolderError, make_parents
from wsi_ncmi.evaluation.report_page import page, section, table
from wsi_ncmi.evaluation.report_sections import (
    centre_table,
    confusion_html,
    curves_charts,
    headline,
    ncmi_section,
    number,
    per_class,
    reliability_chart,
    roc_chart,
)
from wsi_ncmi.evaluation.svg import Series, chart
from wsi_ncmi.formats.layout import JobFolder, RunFolder, RunsFolder, report_files

if TYPE_CHECKING:
    import pandas as pd

    from wsi_ncmi.mil.train import Trained

LOW_CONFIDENCE = 0.5
"""A slide whose largest class probability is below this is flagged low_confidence."""
IMAGE_SIDE = 640
"""Longest side, in pixels, of the heatmap and thumbnail images written beside a report."""
TILE_SIDE = 112
"""Side of each tile in the top-k montage."""
FLAGS = ("wrong", "low_confidence", "no_tiles")


class ReportError(WsiNcmiError):
    """A report cannot be written; the message names the file and the fix."""


@dataclass(frozen=True)
class SlideView:
    """Images of one slide, as paths relative to the report (None when not drawn), and why one is missing."""

    thumb: str | None = None
    heat: str | None = None
    tiles: str | None = None
    note: str = ""


def files_dir(out: Path) -> Path:
    """The folder written beside a report for its images."""
    return report_files(out)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ReportError(f"{out}: exists; pass --overwrite to replace it, or choose another --out")
    try:
        make_parents(out)
    except FolderError as exc:
        raise ReportError(str(exc)) from exc


def _write_html(text: str, out: Path) -> None:
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def read_run_outputs(run: Path, split: str) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """(metrics, predictions, config) of a run's split, through the project's readers; errors say what to run."""
    from wsi_ncmi.evaluation.evaluate import SPLIT_CHOICES, run_config
    from wsi_ncmi.evaluation.predictions import read_predictions
    from wsi_ncmi.evaluation.runfiles import read_metrics

    if split == "all":
        raise ReportError("--split all: a report shows one split; use --split test, val or train")
    if split not in SPLIT_CHOICES:
        raise ReportError(f"--split {split!r}: use test, val or train")
    config = run_config(run)
    metrics_path, table_path = RunFolder(run).metrics(split), RunFolder(run).predictions(split)
    for path in (metrics_path, table_path):
        if not path.exists():
            raise ReportError(f"{path}: missing; run `wsi-ncmi evaluate --run {run} --split {split}` first")
    fix = f"run `wsi-ncmi evaluate --run {run} --split {split}` again"
    return read_metrics(metrics_path, fix), read_predictions(table_path, fix), config


def _classes(metrics: dict[str, Any], predictions: pd.DataFrame) -> list[str]:
    return list(metrics.get("classes") or [c[2:] for c in predictions.columns if c.startswith("p_")])


def slide_flags(predictions: pd.DataFrame, classes: list[str]) -> list[list[str]]:
    """Per slide: wrong (predicted != true), low_confidence (top probability < LOW_CONFIDENCE), no_tiles."""
    probs = predictions[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    out = []
    for i, row in enumerate(predictions.itertuples(index=False)):
        flags = []
        if "y_true" in predictions and row.y_true and row.y_true != row.y_pred:
            flags.append("wrong")
        if probs[i].max() < LOW_CONFIDENCE:
            flags.append("low_confidence")
        if row.flag == "no_tiles":
            flags.append("no_tiles")
        out.append(flags)
    return out


def digits_to_differ(values: np.ndarray, least: int = 3, most: int = 6) -> int:
    """The fewest decimals (at least `least`, at most `most`) at which values that differ also read differently,
    so two class probabilities of a slide never show the same number unless they are the same (values that read
    0.000 may stay alike)."""
    distinct = np.unique(np.asarray(values, dtype=float))
    distinct = distinct[distinct >= 0.5 * 10.0**-least]
    for digits in range(least, most):
        if len(np.unique(np.round(distinct, digits))) == len(distinct):
            return digits
    return most


def slide_table(predictions: pd.DataFrame, classes: list[str], views: dict[str, SlideView]) -> str:
    """The per-slide table: sortable headers, one row per predicted slide carrying its image paths."""
    flags = slide_flags(predictions, classes)
    columns = [
        ("slide", "slide_id", "text"),
        ("case", "case_id", "text"),
        ("centre", "center", "text"),
        ("true", "y_true", "text"),
        ("predicted", "y_pred", "text"),
        *[(f"p({c})", f"p_{c}", "num") for c in classes],
        ("confidence", "confidence", "num"),
        ("flags", "flags", "text"),
    ]
    head = "".join(f"<th data-key='{escape(k)}' data-type='{t}'>{escape(n)}</th>" for n, k, t in columns)
    probs = predictions[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    rows = []
    for i, row in enumerate(predictions.to_dict("records")):
        view = views.get(row["slide_id"], SlideView())
        confidence = float(probs[i].max())
        digits = digits_to_differ(probs[i])
        truth = row.get("y_true", "")
        summary = (
            f"case {row['case_id']}, centre {row['center'] or '-'}: true {truth or '-'}, predicted {row['y_pred']}"
        )
        attrs = {
            "slide": row["slide_id"],
            "flags": " ".join(flags[i]),
            "text": f"{row['slide_id']} {row['case_id']} {row['center']} {truth} {row['y_pred']}".lower(),
            "summary": summary + f" ({confidence:.2f})",
            "thumb": view.thumb,
            "heat": view.heat,
            "tiles": view.tiles,
            "note": view.note,
        }
        data = " ".join(f"data-{k}='{escape(str(v))}'" for k, v in attrs.items() if v)
        cells = [
            f"<td class=t>{escape(row['slide_id'])}</td>",
            f"<td class=t>{escape(str(row['case_id']))}</td>",
            f"<td class=t>{escape(str(row['center']))}</td>",
            f"<td class=t>{escape(str(truth))}</td>",
            f"<td class='t pred'>{escape(row['y_pred'])}</td>",
            *[f"<td data-v='{p:.6f}'>{p:.{digits}f}</td>" for p in probs[i]],
            f"<td data-v='{confidence:.6f}'>{confidence:.{digits}f}</td>",
            "<td class='t fl'>"
            + "".join(f"<span class='flag {f}'>{f.replace('_', ' ')}</span>" for f in flags[i])
            + "</td>",
        ]
        cls = " class=wrong" if "wrong" in flags[i] else ""
        rows.append(f"<tr{cls} {data}>{''.join(cells)}</tr>")
    options = "".join(f"<option value='{f}'>{f.replace('_', ' ')}</option>" for f in FLAGS)
    tools = (
        "<div class=tools><input id=q type=search placeholder='filter: slide, case, centre, class' size=34>"
        f"<select id=flag><option value=''>all slides</option>{options}</select><span id=count class=muted></span>"
        "<span class=muted>Click a header to sort, a row to see the slide.</span></div>"
    )
    return (
        f"{tools}<div class=split><div class=tablebox><table id=slides><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div><div id=detail></div></div>"
    )


def qc_warnings(job: Path, slide_ids: list[str]) -> str | None:
    """A table of the slides among `slide_ids` whose tiling status warns that quality control removed more than
    its share of their tissue or tiles (None when none does), so a reviewer sees them without opening thumbnails."""
    from wsi_ncmi.formats.qc_table import qc_warned
    from wsi_ncmi.formats.shards import merged_status

    wanted = set(slide_ids)
    rows = {row.slide_id: row for row in merged_status(Path(job), "tile") if row.slide_id in wanted}
    warned = qc_warned(list(rows.values()))
    if not warned:
        return None
    intro = f"<p>{len(warned)} slide(s) lost more than qc.warn_removed of their tissue or tiles to quality control.</p>"
    return intro + table(["slide", "warning"], [[escape(s), escape(rows[s].warning)] for s in warned])


def _save_jpeg(image: Any, path: Path, side: int = IMAGE_SIDE) -> None:
    """Scale a PIL image so its longest side is at most `side`, and save it as a JPEG atomically."""
    from PIL import Image

    image = image.convert("RGB")
    scale = side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=82)


def slide_view(job: Path, slide_id: str, trained: Trained | None, encoder: str, folder: Path, top_k: int) -> SlideView:
    """Thumbnail, attention heatmap and top-k tile montage of one slide, written as JPEGs into `folder`."""
    from PIL import Image

    from wsi_ncmi.evaluation.heatmap import NoHeatmap, slide_attention
    from wsi_ncmi.formats.bags import BagFormatError, BagMismatchError

    rel = quote(folder.name)
    name = quote(slide_id)
    thumb = None
    source = JobFolder(job).thumbnail(slide_id)
    if source.exists():
        with Image.open(source) as image:
            _save_jpeg(image, folder / f"{slide_id}.thumb.jpg")
        thumb = f"{rel}/{name}.thumb.jpg"
    if trained is None:
        return SlideView(thumb, note="")
    try:
        view = slide_attention(trained, job, slide_id, encoder, top_k, IMAGE_SIDE)
    except BagMismatchError as exc:
        raise ReportError(f"{exc}; or give the job folder the run's bags were embedded from") from exc
    except BagFormatError as exc:
        warnings.warn(f"report: {slide_id} has no heatmap: {exc}", stacklevel=2)
        return SlideView(thumb, note=f"no heatmap: {exc}")
    except NoHeatmap as exc:
        return SlideView(thumb, note=exc.note)
    _save_jpeg(Image.fromarray((view.overlay * 255).round().astype(np.uint8)), folder / f"{slide_id}.heat.jpg")
    _save_jpeg(tile_montage(view.tiles), folder / f"{slide_id}.tiles.jpg")
    return SlideView(thumb, f"{rel}/{name}.heat.jpg", f"{rel}/{name}.tiles.jpg")


def tile_montage(tiles: list[np.ndarray], gap: int = 4) -> Any:
    """The top tiles, TILE_SIDE px each, in rows that wrap at IMAGE_SIDE, so the montage is never wider than the
    other images of a slide (a PIL image)."""
    from PIL import Image

    columns = max(1, min(len(tiles), (IMAGE_SIDE + gap) // (TILE_SIDE + gap)))
    rows = max(1, -(-len(tiles) // columns))
    step = TILE_SIDE + gap
    montage = Image.new("RGB", (columns * step - gap, rows * step - gap), "white")
    for k, tile in enumerate(tiles):
        corner = ((k % columns) * step, (k // columns) * step)
        montage.paste(Image.fromarray(tile).resize((TILE_SIDE, TILE_SIDE)), corner)
    return montage


def run_report(
    run: Path,
    out: Path,
    split: str = "test",
    job: Path | None = None,
    top_k: int = 8,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Write the HTML report of one run on one split (images of every slide when `job` is given); returns `out`."""
    from wsi_ncmi.evaluation.runfiles import read_history
    from wsi_ncmi.mil.runfolder import check_run_idle
    from wsi_ncmi.mil.runs import check_metrics_current, load_run_model

    run, out = Path(run), Path(out)
    check_run_idle(run)
    _check_out(out, overwrite)
    metrics, predictions, config = read_run_outputs(run, split)
    classes = _classes(metrics, predictions)
    index = {c: i for i, c in enumerate(classes)}
    probs = predictions[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    labelled = "y_true" in predictions and bool((predictions["y_true"] != "").all())
    trained = load_run_model(run, device) if RunFolder(run).model.exists() else None
    best_epoch = int(trained.checkpoint["epoch"]) if trained and "epoch" in trained.checkpoint else None
    check_metrics_current(run, split, metrics, best_epoch)
    views: dict[str, SlideView] = {}
    if job is not None and not JobFolder(job).tiles.is_dir():
        raise ReportError(f"{job}: no tiles/ folder; give the job folder the run's bags were embedded from")
    if job is not None:
        folder = files_dir(out)
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        encoder = str(config.get("encoder", {}).get("encoder", ""))
        views = _slide_views(job, predictions["slide_id"].tolist(), trained, encoder, folder, top_k, progress)
    sections = [section("Headline metrics", headline(metrics, config), "headline")]
    if labelled:
        y_true = np.asarray([index[c] for c in predictions["y_true"]])
        matrix = np.asarray((metrics.get("confusion_matrix") or {}).get("matrix", np.zeros((len(classes),) * 2)))
        sections += [
            section("Per class", per_class(metrics, classes), "per-class"),
            section("Confusion matrix", confusion_html(matrix, classes), "confusion"),
            section(
                "ROC and calibration",
                f"<div class=charts>{roc_chart(y_true, probs, classes)}{reliability_chart(y_true, probs)}</div>",
                "roc",
            ),
        ]
    if RunFolder(run).history.exists():
        sections.append(
            section(
                "Learning curves",
                curves_charts(read_history(RunFolder(run).history), best_epoch, config["training"].get("loss")),
                "curves",
            )
        )
    sections.append(section("NCMI diagnostic", ncmi_section(metrics), "ncmi"))
    if labelled:
        sections.append(section("Per centre", centre_table(predictions, classes), "centres"))
    sections.append(section(f"Slides ({len(predictions)})", slide_table(predictions, classes, views), "per-slide"))
    warned = None if job is None else qc_warnings(Path(job), predictions["slide_id"].tolist())
    if warned:
        sections.append(section("Quality control warnings", warned, "qc-warnings"))
    training = config["training"]
    title = f"{run.name}: {split} split"
    subtitle = (
        f"{training.get('model')} with {training.get('loss')} loss, seed {training.get('seed')}; "
        f"{len(predictions)} slides; run folder {run}"
    )
    _write_html(page(title, subtitle, sections, {"run": str(run), "split": split, "metrics": metrics}), out)
    return out


def _slide_views(
    job: Path,
    slide_ids: list[str],
    trained: Trained | None,
    encoder: str,
    folder: Path,
    top_k: int,
    progress: bool,
) -> dict[str, SlideView]:
    from rich.progress import Progress

    views = {}
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("slide images", total=len(slide_ids))
        for slide_id in slide_ids:
            views[slide_id] = slide_view(Path(job), slide_id, trained, encoder, folder, top_k)
            bar.advance(task)
    return views


def experiment_report(
    runs: list[Path],
    out: Path,
    split: str = "test",
    baseline: str = "ce",
    overwrite: bool = False,
) -> Path:
    """Write the comparison of runs (losses/models over seeds): mean ± std, paired differences, a per-seed plot."""
    from wsi_ncmi.evaluation.compare import METRICS, collect, paired, paired_statistics, summarise

    out = Path(out)
    _check_out(out, overwrite)
    frame = collect([Path(r) for r in runs], split)
    summary = summarise(frame)
    rows = [
        [escape(f"{r['model']} / {r['loss']}"), str(r["runs"])]
        + [f"{number(r[f'{m}_mean'])} ± {number(r[f'{m}_std'])}" for m in METRICS]
        for r in summary.to_dict("records")
    ]
    sections = [section("Mean ± std over runs", table(["model / loss", "runs", *METRICS], rows), "summary")]
    differences = paired(frame, baseline)
    if len(differences):
        sizes = differences.groupby(["model", "loss"]).size()
        paired_rows = []
        for (model, loss), group in paired_statistics(differences).groupby(["model", "loss"], sort=True):
            stats = group.set_index("metric")
            cells = [_paired_cell(stats.loc[metric]) for metric in METRICS]
            paired_rows.append([escape(f"{model}: {loss} − {baseline}"), str(sizes[model, loss]), *cells])
        per_seed = [
            [escape(f"{r['model']}: {r['loss']} − {baseline}"), escape(str(r["seed"]))]
            + [f"{r[f'delta_{m}']:+.3f}" if r[f"delta_{m}"] == r[f"delta_{m}"] else "n/a" for m in METRICS]
            for r in differences.to_dict("records")
        ]
        body = (
            table(["pair", "pairs", *METRICS], paired_rows)
            + "<p class=muted>Mean difference over runs paired by model, seed and split file, with a percentile "
            "bootstrap 95% CI over the pairs (10,000 resamples, seeded); a CI that excludes 0 is a consistent "
            "difference on these seeds, not a guarantee for new data.</p>" + table(["pair", "seed", *METRICS], per_seed)
        )
    else:
        body = (
            f"<p class=muted>No pairs: each (model, seed, split file) needs a {escape(baseline)} run beside the "
            "others.</p>"
        )
    sections.append(section(f"Paired differences against {baseline}", body, "paired"))
    sections.append(section("Per seed", _per_seed_charts(frame), "per-seed"))
    links = []
    for r in frame.to_dict("records"):
        report = RunFolder(r["run"]).report
        target = escape(os.path.relpath(report, out.parent)) if report.exists() else ""
        name = escape(Path(r["run"]).name)
        link = f"<a href='{target}'>{name}</a>" if target else name
        links.append(
            [link, escape(r["model"]), escape(r["loss"]), escape(str(r["seed"]))] + [number(r[m]) for m in METRICS]
        )
    sections.append(section("Runs", table(["run", "model", "loss", "seed", *METRICS], links), "runs"))
    subtitle = f"{len(frame)} runs on the {split} split; paired differences against {baseline}"
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    data = {"split": split, "baseline": baseline, "runs": json.loads(json.dumps(records, default=str))}
    _write_html(page("Experiment comparison", subtitle, sections, data), out)
    return out


def _paired_cell(stats: pd.Series) -> str:
    """'+mean [low, high]' of one metric's paired differences (no CI from a single pair), or n/a without pairs."""
    if not stats["pairs"]:
        return "n/a"
    ci = f" [{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}]" if stats["pairs"] > 1 else ""
    return f"{stats['mean_difference']:+.3f}{ci}"


def _per_seed_charts(frame: pd.DataFrame) -> str:
    seeds = sorted(frame["seed"].unique().tolist())
    position = {s: i for i, s in enumerate(seeds)}
    charts = []
    for metric in ("macro_f1", "accuracy", "auc"):
        series = []
        for (model, loss), group in frame.groupby(["model", "loss"], sort=True):
            group = group.sort_values("seed")
            series.append(
                Series(
                    f"{model} / {loss}",
                    [position[s] for s in group["seed"]],
                    group[metric].tolist(),
                    style="both",
                    labels=[f"seed {s}" for s in group["seed"]],
                )
            )
        ticks = [(i, f"seed {s}") for i, s in enumerate(seeds)]
        charts.append(chart(series, metric, "seed", metric, (-0.5, len(seeds) - 0.5), None, ticks))
    return f"<div class=charts>{''.join(charts)}</div>"


def pipeline_reports(runs: list[Path], job: Path, runs_dir: Path, split: str = "test") -> tuple[Path, list[Path]]:
    """What `run` and `demo` write: RUN/report.html (with slide images) for the first run of each (model, loss),
    then RUNS/report.html comparing every run and linking to those; both replaced on every pipeline run."""
    from wsi_ncmi.evaluation.evaluate import run_config

    firsts: dict[tuple[str, str], Path] = {}
    for run in runs:
        training = run_config(run)["training"]
        firsts.setdefault((str(training["model"]), str(training["loss"])), Path(run))
    written = [
        run_report(run, RunFolder(run).report, split, job, overwrite=True, progress=False) for run in firsts.values()
    ]
    return experiment_report(runs, RunsFolder(runs_dir).report, split, overwrite=True), written
