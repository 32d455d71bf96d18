"""HTML reports: offline files that parse, reference only images they wrote, list every predicted slide, and run
their script in a real headless browser (Debian's chromium) without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.evaluation.compare import METRICS, paired_statistics
from wsi_ncmi.evaluation.predictions import read_predictions
from wsi_ncmi.evaluation.report import _paired_cell, digits_to_differ, tile_montage
from wsi_ncmi.evaluation.report_sections import reliability

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IMAGE_ATTRS = ("src", "href", "data-thumb", "data-heat", "data-tiles")


class Page(HTMLParser):
    """Collects every tag, the attributes that point at files, and the rows of the per-slide table."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.rows: list[dict[str, str]] = []
        self._in_slides = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = {k: v or "" for k, v in attrs}
        self.links += [values[k] for k in IMAGE_ATTRS if values.get(k)]
        if tag == "table":
            self._in_slides = values.get("id") == "slides"
        if tag == "tr" and self._in_slides and "data-slide" in values:
            self.rows.append(values)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


@pytest.fixture(scope="module")
def report(results_job: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    job, run = results_job
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = runner.invoke(app, ["report", "--run", str(run), "--job", str(job), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_run_report_is_offline_and_complete(report: Path, results_job: tuple[Path, Path]) -> None:
    _, run = results_job
    text = report.read_text(encoding="utf-8")
    page = parse(report)
    assert page.tags.count("html") == 1 and "script" in page.tags and "svg" in page.tags
    assert not re.search(r"(https?:|ftp:|//[a-z0-9])", text, re.IGNORECASE), "the report must not point outside"
    assert "<link" not in text and "@import" not in text
    for link in page.links:
        assert not link.startswith(("/", "file:", "data:")) and (report.parent / unquote(link)).is_file(), link
    predictions = read_predictions(run / "predictions_test.csv")
    assert [r["data-slide"] for r in page.rows] == predictions["slide_id"].tolist()
    rows = {r["data-slide"]: r for r in page.rows}
    for slide_id, flag, truth, predicted in predictions[["slide_id", "flag", "y_true", "y_pred"]].itertuples(
        index=False
    ):
        flags = rows[slide_id].get("data-flags", "").split()
        assert ("no_tiles" in flags) == (flag == "no_tiles")
        assert ("wrong" in flags) == (truth != predicted)
        if flag == "no_tiles":
            assert "data-heat" not in rows[slide_id] and "no tiles" in rows[slide_id]["data-note"]
        else:
            heat = Image.open(report.parent / unquote(rows[slide_id]["data-heat"])).convert("RGB")
            thumb = Image.open(report.parent / unquote(rows[slide_id]["data-thumb"])).convert("RGB")
            tiles = Image.open(report.parent / unquote(rows[slide_id]["data-tiles"]))
            assert max(heat.size) <= 640 and max(thumb.size) <= 640 and max(tiles.size) <= 640
            colour = np.asarray(heat).astype(int)
            assert (np.ptp(colour, axis=2) > 80).mean() > 0.01, "the heatmap shows coloured tiles"
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert f"{metrics['macro_f1']:.3f}" in text and "95% CI" in text


def test_report_refuses_to_overwrite(report: Path, results_job: tuple[Path, Path]) -> None:
    _, run = results_job
    before = report.read_bytes()
    result = runner.invoke(app, ["report", "--run", str(run), "--out", str(report)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert report.read_bytes() == before
    result = runner.invoke(app, ["report", "--run", str(run / "missing"), "--out", str(report.with_name("x.html"))])
    assert result.exit_code == 2 and "config.yaml" in result.output
    other = report.with_name("y.html")
    result = runner.invoke(app, ["report", "--run", str(run), "--job", str(report.parent), "--out", str(other)])
    assert result.exit_code == 2 and "no tiles/ folder" in result.output and not other.exists()


def _chromium(args: list[str], url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt)")
def test_report_in_a_headless_browser(report: Path, results_job: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = results_job
    predictions = read_predictions(run / "predictions_test.csv")
    # one click on a numeric header sorts descending, a second ascending; then the chosen slide opens
    url = report.resolve().as_uri() + "#click=p_pos,p_pos&slide=r3"
    done = _chromium(["--dump-dom"], url, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _console_errors(done.stderr) == []
    dom = parse_dom(done.stdout)
    assert dom.body.get("data-ready") == "1" and "data-errors" not in dom.body
    expected = predictions.sort_values("p_pos", kind="stable")["slide_id"].tolist()
    assert dom.order == expected
    assert dom.sorted == ("p_pos", "ascending")
    assert dom.detail_slide == "r3" and any(src.endswith("r3.heat.jpg") for src in dom.images)
    shot = tmp_path / "shot.png"
    done = _chromium(["--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}"], url, tmp_path)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100, "a blank screenshot"
    assert _console_errors(done.stderr) == []


class Dom(HTMLParser):
    """What the browser's DOM holds after the script ran: body attributes, row order, sorted header, detail."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.order: list[str] = []
        self.sorted: tuple[str, str] | None = None
        self.detail_slide = ""
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = values
        elif tag == "tr" and "data-slide" in values:
            self.order.append(values["data-slide"])
        elif tag == "th" and "aria-sort" in values:
            self.sorted = (values["data-key"], values["aria-sort"])
        elif values.get("id") == "detail":
            self.detail_slide = values.get("data-slide", "")
        elif tag == "img":
            self.images.append(values["src"])


def parse_dom(text: str) -> Dom:
    dom = Dom()
    dom.feed(text)
    return dom


def test_experiment_report_pairs_seeds(tmp_path: Path, fake_run: Callable) -> None:
    scores = [("ce", 1, 0.5), ("ce", 2, 0.6), ("ce", 3, 0.7), ("ncmi", 1, 0.6), ("ncmi", 2, 0.8), ("ncmi", 3, 0.7)]
    runs = [fake_run(tmp_path / f"{loss}{seed}", loss, seed, f1) for loss, seed, f1 in scores]
    (runs[0] / "report.html").write_text("<html></html>")
    out = tmp_path / "experiment.html"
    result = runner.invoke(app, ["report", "--runs", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    page = parse(out)
    assert "0.600 ± 0.100" in text and "0.700 ± 0.100" in text
    # ncmi - ce per seed: +0.1, +0.2, 0.0 -> mean +0.100; the bootstrap CI lies within the pairs' range
    ci = re.search(r"\+0\.100 \[([+-]\d\.\d+), ([+-]\d\.\d+)\]", text)
    assert ci and 0.0 <= float(ci.group(1)) <= 0.1 <= float(ci.group(2)) <= 0.2
    assert text.count("<circle") == 3 * len(runs), "one point per run in each of the three per-seed plots"
    assert page.links == ["ce1/report.html"]
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "--run RUN" in result.output


def test_reliability_bins_by_hand() -> None:
    probs = np.array([[0.95, 0.05], [0.92, 0.08], [0.28, 0.72], [0.35, 0.65], [0.62, 0.38]])
    y_true = np.array([0, 1, 1, 0, 0])
    confidence, accuracy, counts, ece = reliability(y_true, probs, bins=10)
    assert counts == [2, 1, 2]
    assert confidence == pytest.approx([0.635, 0.72, 0.935])
    assert accuracy == pytest.approx([0.5, 1.0, 0.5])
    assert ece == pytest.approx((2 * 0.135 + 0.28 + 2 * 0.435) / 5)


def test_paired_cells_of_constant_differences() -> None:
    import pandas as pd

    def stats_of(deltas: list[float]) -> pd.Series:
        columns = {f"delta_{m}": deltas for m in METRICS}
        differences = pd.DataFrame({"model": "abmil", "loss": "ncmi", "baseline": "ce", **columns})
        return paired_statistics(differences).set_index("metric").loc["auc"]

    summary = stats_of([0.05, 0.05, 0.05])
    assert summary["pairs"] == 3 and summary["mean_difference"] == pytest.approx(0.05)
    assert [summary["ci_low"], summary["ci_high"]] == pytest.approx([0.05, 0.05])
    assert _paired_cell(summary) == "+0.050 [+0.050, +0.050]"
    assert _paired_cell(stats_of([0.05])) == "+0.050", "one pair has no CI"
    assert _paired_cell(stats_of([float("nan")] * 2)) == "n/a"


@pytest.mark.parametrize("neck", ["none", "mlp"])
@pytest.mark.parametrize("model", ["abmil", "abmil_plain", "clam_sb", "transmil", "mean", "max"])
def test_tile_scores_of_every_aggregator(model: str, neck: str) -> None:
    import torch

    from wsi_ncmi.evaluation.heatmap import tile_scores
    from wsi_ncmi.mil.heads import build_head
    from wsi_ncmi.mil.models import build_model
    from wsi_ncmi.mil.train import Trained

    torch.manual_seed(0)
    net = build_model(model, 24, dim=16, neck=neck).eval()
    trained = Trained(net, build_head("ce", net.dim, 3).eval(), ["a", "b", "c"], np.full(3, 1 / 3), {"model": model})
    features = np.random.default_rng(1).normal(size=(37, 24)).astype(np.float32)
    scores = tile_scores(trained, features)
    assert scores.probabilities.sum() == pytest.approx(1.0) and scores.predicted == "abc"[scores.probabilities.argmax()]
    if model in ("mean", "max"):
        assert scores.attention is None and scores.tile_probabilities is None
        return
    assert scores.attention.shape == (37,) and scores.attention.sum() == pytest.approx(1.0, abs=1e-5)
    if model == "transmil":
        assert scores.tile_probabilities is None, "transmil's slide embedding is not a mean of its tile embeddings"
    else:
        assert scores.tile_probabilities.shape == (37, 3)
        np.testing.assert_allclose(scores.tile_probabilities.sum(1), 1.0, atol=1e-6)
        for i in (0, 17, 36):
            alone = tile_scores(trained, features[i : i + 1]).probabilities
            np.testing.assert_allclose(scores.tile_probabilities[i], alone, atol=1e-5, err_msg="a bag of that tile")


def test_report_refuses_a_model_from_another_run(results_job: tuple[Path, Path], tmp_path: Path) -> None:
    import yaml

    _, run = results_job
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    assert config.get("run_id"), "train writes the run id the model is checked against"
    config["run_id"] = "another-run"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", "--run", str(copy), "--out", str(out)])
    assert result.exit_code == 2 and "not the model of this run folder" in result.output, result.output
    assert not out.exists()


LAYOUT_CHECK = r"""
(function () {
  function box(e) { var r = e.getBoundingClientRect(); return {l: r.left, t: r.top, r: r.right, b: r.bottom}; }
  function overlap(a, b) { return a.l < b.r - 0.5 && b.l < a.r - 0.5 && a.t < b.b - 0.5 && b.t < a.b - 0.5; }
  function check() {
    var problems = [];
    document.querySelectorAll('svg.chart').forEach(function (svg) {
      var name = svg.getAttribute('aria-label'), frame = svg.querySelector('.frame');
      var texts = Array.prototype.slice.call(svg.querySelectorAll('text'));
      svg.querySelectorAll('g.legend, text.lg').forEach(function (g) {
        if (overlap(box(g), box(frame))) problems.push(name + ': legend over the plot: ' + g.textContent);
      });
      texts.forEach(function (one, i) {
        texts.slice(i + 1).forEach(function (other) {
          if (overlap(box(one), box(other))) {
            problems.push(name + ': "' + one.textContent + '" overlaps "' + other.textContent + '"');
          }
        });
      });
      if (box(svg).r > window.innerWidth) problems.push(name + ': chart beyond the window');
    });
    var holder = document.querySelector('.tablebox');
    if (holder && holder.scrollWidth > holder.clientWidth + 1) {
      problems.push('slide table needs ' + holder.scrollWidth + ' px, shows ' + holder.clientWidth);
    }
    if (holder && box(holder).r > window.innerWidth) problems.push('slide table ends beyond the window');
    var parts = Array.prototype.slice.call(document.querySelectorAll('#detail figure, #detail img, #detail .head'));
    parts.forEach(function (one, i) {
      parts.slice(i + 1).forEach(function (other) {
        if (!one.contains(other) && !other.contains(one) && overlap(box(one), box(other))) {
          problems.push('slide panel: ' + one.tagName + ' overlaps ' + other.tagName);
        }
      });
      if (box(one).r > window.innerWidth) problems.push('slide panel: ' + one.tagName + ' beyond the window');
    });
    var images = Array.prototype.slice.call(document.querySelectorAll('#detail img'));
    images.forEach(function (img) {
      if (!img.complete || img.naturalWidth === 0) problems.push('image not loaded: ' + img.getAttribute('src'));
      if (img.naturalWidth > 640) problems.push('image wider than 640 px: ' + img.getAttribute('src'));
    });
    var charts = document.querySelectorAll('svg.chart').length;
    document.body.setAttribute('data-layout', JSON.stringify({problems: problems, images: images.length,
      charts: charts}));
  }
  window.addEventListener('load', function () { setTimeout(check, 500); });
})();
"""


def layout_problems(page: Path, tmp_path: Path, width: int = 1280, fragment: str = "") -> dict[str, Any]:
    """Open a copy of `page` with LAYOUT_CHECK added at `width` px in chromium: boxes that overlap (legend on a
    plot, text on text, images on each other), a slide table that needs horizontal scrolling, images over 640 px."""
    probe = page.with_name(f"{page.stem}.layout.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", f"<script>{LAYOUT_CHECK}</script></body>"))
    done = _chromium(["--dump-dom", f"--window-size={width},1200"], probe.resolve().as_uri() + fragment, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-layout="([^"]*)"', done.stdout)
    assert found, "the layout check did not run"
    return json.loads(unescape(found.group(1)))


def four_class_run(folder: Path) -> Path:
    """A run folder as `evaluate` leaves it, with the CAMELYON-17 classes and ids, for the table's width; two
    probabilities of one slide differ only in the fourth decimal."""
    import pandas as pd
    import yaml

    classes = ["negative", "itc", "micro", "macro"]
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=24)
    probs[0] = [0.473857, 0.474174, 0.051969, 0.0]
    ids = [f"patient_{100 + i:03d}_node_{i % 5}" for i in range(24)]
    truth = [classes[i % 4] for i in range(24)]
    table = pd.DataFrame(
        {
            "slide_id": ids,
            "case_id": [s[:11] for s in ids],
            "center": [str(3 + i % 2) for i in range(24)],
            "split": "test",
            "y_true": truth,
            "y_pred": [classes[int(p.argmax())] for p in probs],
            **{f"p_{c}": probs[:, k] for k, c in enumerate(classes)},
            "flag": "",
        }
    )
    folder.mkdir()
    table.to_csv(folder / "predictions_test.csv", index=False)
    matrix = np.zeros((4, 4), int)
    for t, p in zip(truth, table["y_pred"], strict=True):
        matrix[classes.index(t), classes.index(p)] += 1
    metrics = {"classes": classes, "macro_f1": 0.3, "accuracy": 0.4, "n_slides": 24,
               "confusion_matrix": {"matrix": matrix.tolist()}}  # fmt: skip
    (folder / "metrics_test.json").write_text(json.dumps(metrics))
    config = {"training": {"model": "abmil", "loss": "ncmi", "seed": 1}, "inputs": {}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt)")
def test_run_report_layout_at_1280_px(report: Path, tmp_path: Path) -> None:
    found = layout_problems(report, tmp_path, fragment="#slide=r3")
    assert found["problems"] == [] and found["images"] == 3 and found["charts"] >= 5
    wide = layout_problems(report, tmp_path, width=1920, fragment="#slide=r3")
    assert wide["problems"] == []


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt)")
def test_four_class_slide_table_fits_at_1280_px(tmp_path: Path) -> None:
    run = four_class_run(tmp_path / "run")
    out = tmp_path / "four.html"
    result = runner.invoke(app, ["report", "--run", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "<td data-v='0.473857'>0.4739</td><td data-v='0.474174'>0.4742</td>" in out.read_text()
    found = layout_problems(out, tmp_path)
    assert found["problems"] == [] and found["charts"] == 2


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt)")
def test_experiment_report_layout(tmp_path: Path, fake_run: Callable) -> None:
    scores = [("ce", 1, 0.5), ("ce", 2, 0.6), ("ncmi", 1, 0.6), ("ncmi", 2, 0.8)]
    runs = [fake_run(tmp_path / f"{loss}{seed}", loss, seed, f1) for loss, seed, f1 in scores]
    out = tmp_path / "experiment.html"
    assert runner.invoke(app, ["report", "--runs", *map(str, runs), "--out", str(out)]).exit_code == 0
    found = layout_problems(out, tmp_path)
    assert found["problems"] == [] and found["charts"] == 3


@pytest.mark.parametrize(
    ("values", "digits"),
    [([0.473857, 0.474174, 0.051969, 0.0], 4), ([0.2, 0.3, 0.5], 3), ([0.5, 0.5], 3), ([0.000003, 0.000002, 1.0], 3),
     ([0.1234561, 0.1234564], 6)],
)  # fmt: skip
def test_probabilities_read_differently_when_they_differ(values: list[float], digits: int) -> None:
    assert digits_to_differ(np.asarray(values)) == digits


@pytest.mark.parametrize("count", [1, 5, 8, 16])
def test_top_tile_montage_fits_the_image_side(count: int) -> None:
    tiles = [np.full((256, 256, 3), 40 * k % 255, np.uint8) for k in range(count)]
    montage = tile_montage(tiles)
    assert max(montage.size) <= 640
    columns = min(count, 5)
    assert montage.size == (columns * 116 - 4, -(-count // columns) * 116 - 4)


@pytest.mark.parametrize("width", [600, 1024, 2048])
def test_thumbnail_legend_is_readable_at_640_px_and_keeps_every_entry(width: int) -> None:
    from wsi_ncmi.tiling.overlay import CONTOUR, REMOVED, TILES, _legend

    entries = [(CONTOUR, "tissue"), (TILES, "tiles (48123)")]
    entries += [(REMOVED[k], f"{name} (removed)") for k, name in enumerate(("pen", "dark", "blur", "fold"))]
    entries.append((REMOVED[4], "blurry tiles (removed: 120)"))
    band = _legend(width, entries)
    assert band.shape[1] == width
    colours = {tuple(c) for c in band.reshape(-1, 3).tolist()}
    assert {tuple(colour) for colour, _ in entries} <= colours, "no entry is cut off"
    shown = np.asarray(Image.fromarray(band).resize((640, round(band.shape[0] * 640 / width)), Image.BILINEAR))
    dark_rows = (shown.min(axis=(1, 2)) < 100).astype(int)
    runs = [len(r) for r in "".join(map(str, dark_rows)).split("0") if r]
    assert runs and min(runs) >= 8, f"text lines {runs} px high at 640 px"


@pytest.mark.parametrize("count", [4, 16])
def test_heatmap_montage_leaves_the_colour_bar_clear(count: int) -> None:
    import matplotlib.pyplot as plt

    from wsi_ncmi.evaluation.heatmap import heatmap_figure

    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(count)]
    fig = heatmap_figure(rng.random((300, 400, 3)), tiles, "slide: class")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    bar = next(ax for ax in fig.get_axes() if ax.get_label() == "<colorbar>")
    montage = [ax for ax in fig.get_axes() if ax.get_title().startswith("#")]
    assert len(montage) == count
    bar_box = bar.get_tightbbox(renderer)
    for ax in montage:
        assert not bar_box.overlaps(ax.get_tightbbox(renderer)), ax.get_title()
    plt.close(fig)


@pytest.mark.parametrize("loss", ["ncmi", "ce"])
def test_learning_curves_png_keeps_legends_off_the_data_and_says_what_each_curve_is(
    loss: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt
    import pandas as pd

    from wsi_ncmi.evaluation import plots

    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [1.2, 0.9, 0.8], "val_loss": [0.2, 0.18, 0.17],
         "val_macro_f1": [0.3, 0.4, 0.5], "val_ncmi": [1e-8, -2e-8, 3e-9]}
    )  # fmt: skip
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plots.curves_figure(history, tmp_path / "curves.png", loss)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        for ax in fig.get_axes():
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    words = " ".join(" ".join(t.get_text() for t in fig.texts).split())
    assert "training mode" in words and "evaluation mode" in words and "says nothing" in words
    assert ("not comparable with a cross-entropy" in words) == (loss == "ncmi")
    plt.close(fig)
