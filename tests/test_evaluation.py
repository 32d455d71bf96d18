"""Evaluation: metrics equal scikit-learn's, files are stable, and predict/heatmap/compare keep their promises."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.evaluation.compare import collect, paired, summarise
from wsi_ncmi.evaluation.evaluate import evaluate_run, pn_stage_metrics
from wsi_ncmi.evaluation.predictions import read_predictions
from wsi_ncmi.mil.data import BagDataError
from wsi_ncmi.mil.metrics import bootstrap_ci, full_metrics
from wsi_ncmi.mil.run import train_run
from wsi_ncmi.mil.runfolder import RunError
from wsi_ncmi.mil.train import TrainConfig
from wsi_ncmi.synthetic import write_synthetic_bags

runner = CliRunner()
CLASSES = ["a", "b", "c"]


def test_metrics_equal_sklearn_with_an_absent_class() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 0])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]]
    )
    out = full_metrics(y_true, y_pred, probs, CLASSES, bootstrap=0)
    assert out["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0)
    )
    assert out["accuracy"] == pytest.approx(4 / 6) and out["accuracy"] == accuracy_score(y_true, y_pred)
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    expected_auc = np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in (0, 1)])
    assert out["auc"] == pytest.approx(expected_auc) and out["auc_classes"] == ["a", "b"]
    assert out["per_class"]["c"]["support"] == 0 and any("'c'" in n for n in out["notes"])
    assert out["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 2, 1], [0, 0, 0]]


def test_single_class_split() -> None:
    out = full_metrics(np.array([1, 1, 1]), np.array([1, 0, 1]), np.full((3, 3), 1 / 3), CLASSES, bootstrap=50)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(out["auc"]) and np.isnan(out["ncmi"])


def test_bootstrap_is_seeded_and_resamples_cases() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 3, 60))
    probs = rng.dirichlet(np.ones(3), 60)
    cases = np.repeat(np.arange(20), 3)
    a = bootstrap_ci(y, pred, probs, 3, cases, 200, seed=5)
    assert a == bootstrap_ci(y, pred, probs, 3, cases, 200, seed=5)
    assert a != bootstrap_ci(y, pred, probs, 3, cases, 200, seed=6)
    assert a["macro_f1"][0] < f1_score(y, pred, average="macro") < a["macro_f1"][1]


def test_pn_stage_on_hand_written_patients() -> None:
    manifest = pd.DataFrame(
        {
            "slide_id": [f"patient_00{p}_node_{n}" for p in range(3) for n in range(2)],
            "case_id": [f"patient_00{p}" for p in range(3) for _ in range(2)],
        }
    )
    table = pd.DataFrame(
        {
            "slide_id": manifest["slide_id"][:5],
            "case_id": manifest["case_id"][:5],
            "y_true": ["negative", "negative", "macro", "micro", "itc"],
            "y_pred": ["negative", "itc", "macro", "negative", "itc"],
        }
    )
    out = pn_stage_metrics(manifest, table)
    assert out["patients"] == 2 and out["patients_skipped"] == 1
    assert [(s["true"], s["predicted"]) for s in out["stages"]] == [("pN0", "pN0(i+)"), ("pN1", "pN1")]
    assert out["accuracy"] == 0.5


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    manifest, split = write_synthetic_bags(out / "data", slides=60)
    config = TrainConfig(
        model="abmil",
        loss="ncmi",
        epochs=2,
        warmup_epochs=0,
        lr=2e-3,
        device="cpu",
        model_args={"dim": 32, "dropout": 0.0},
    )
    train_run(manifest, out / "data" / "features", split, out / "run", config, progress=False)
    return out / "run"


def test_evaluate_writes_consistent_stable_files(trained_run: Path) -> None:
    results = evaluate_run(trained_run, "test", bootstrap=100)
    csv_path = trained_run / "predictions_test.csv"
    first = csv_path.read_bytes()
    table = read_predictions(csv_path)
    classes = ["itc", "macro", "micro", "negative"]
    assert list(table.columns) == [
        "slide_id",
        "case_id",
        "center",
        "split",
        "y_true",
        "y_pred",
        *[f"p_{c}" for c in classes],
        "flag",
    ]
    np.testing.assert_allclose(table[[f"p_{c}" for c in classes]].sum(axis=1), 1.0, atol=1e-6)
    f1 = f1_score(table["y_true"], table["y_pred"], labels=classes, average="macro", zero_division=0)
    saved = json.loads((trained_run / "metrics_test.json").read_text())
    assert saved["macro_f1"] == pytest.approx(f1) == pytest.approx(results["test"]["macro_f1"])
    assert saved["n_slides"] == len(table) and set(saved["bootstrap"]) >= {"macro_f1", "accuracy", "auc"}
    assert {"cmi", "gamma", "ncmi"} <= set(saved)
    evaluate_run(trained_run, "test", bootstrap=100)
    assert csv_path.read_bytes() == first
    assert (trained_run / "confusion_test.png").exists() and (trained_run / "curves.png").exists()


def test_evaluate_bad_inputs(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"config\.yaml"):
        evaluate_run(tmp_path)
    (tmp_path / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    with pytest.raises(RunError, match="no checkpoint"):
        evaluate_run(tmp_path)
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    manifest = pd.read_csv(config["inputs"]["manifest"], dtype=str)
    manifest.loc[0, "label"] = "isolated"
    manifest.to_csv(tmp_path / "m.csv", index=False)
    split = pd.read_csv(config["inputs"]["split"])
    split.loc[0, "split"] = "test"
    split.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(BagDataError, match="'isolated'"):
        evaluate_run(trained_run, "test", manifest=tmp_path / "m.csv", split_file=tmp_path / "s.csv", bootstrap=0)
    split["split"] = "train"
    split.to_csv(tmp_path / "s2.csv", index=False)
    with pytest.raises(BagDataError, match="no test slides"):
        evaluate_run(trained_run, "test", split_file=tmp_path / "s2.csv", bootstrap=0)


def test_predict_refuses_other_encoders(trained_run: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    features = Path(config["inputs"]["features"])
    out = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", "--run", str(trained_run), "--features", str(features), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = read_predictions(out)
    assert "y_true" not in table.columns and len(table) == 60
    import shutil

    other = tmp_path / "other"
    shutil.copytree(features, other)
    with h5py.File(next(other.glob("*.h5")), "a") as h5:
        h5["features"].attrs["encoder"] = "resnet18"
    refused = runner.invoke(app, ["predict", "--run", str(trained_run), "--features", str(other), "--out", str(out)])
    assert refused.exit_code == 2 and "model 'synthetic', bag 'resnet18'" in refused.output
    forced = runner.invoke(
        app, ["predict", "--run", str(trained_run), "--features", str(other), "--out", str(out), "--force"]
    )
    assert forced.exit_code == 0


def test_compare_aggregates_known_numbers(tmp_path: Path, fake_run: Callable) -> None:
    runs = [
        fake_run(tmp_path / f"{loss}{seed}", loss, seed, f1)
        for loss, seed, f1 in [
            ("ce", 1, 0.5),
            ("ce", 2, 0.6),
            ("ce", 3, 0.7),
            ("ncmi", 1, 0.6),
            ("ncmi", 2, 0.8),
            ("ncmi", 3, 0.7),
        ]
    ]
    frame = collect(runs)
    table = summarise(frame).set_index("loss")
    assert table.loc["ce", "macro_f1_mean"] == pytest.approx(0.6)
    assert table.loc["ce", "macro_f1_std"] == pytest.approx(0.1)
    assert table.loc["ncmi", "runs"] == 3 and table.loc["ncmi", "accuracy_mean"] == pytest.approx(0.8)
    differences = paired(frame, "ce")
    assert differences["delta_macro_f1"].round(6).tolist() == [0.1, 0.2, 0.0]
    result = runner.invoke(
        app,
        [
            "compare",
            *map(str, runs),
            "--out",
            str(tmp_path / "t.csv"),
            "--markdown",
            str(tmp_path / "t.md"),
            "--paired",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "0.600 ± 0.100" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t_paired.csv").exists()


def test_heatmap_colours_tissue_not_background(tmp_path: Path) -> None:
    from wsi_ncmi.embedding.embed import EmbedSettings, embed_slides
    from wsi_ncmi.synthetic import SlideSpec, write_slide
    from wsi_ncmi.tiling.tile import TilingParams, tile_slides

    slides = {}
    for i in range(6):
        path = tmp_path / f"s{i}.tif"
        write_slide(SlideSpec(f"s{i}", 3072, 2048, 0.5, seed=40 + i, tissue_fraction=0.35), path)
        slides[f"s{i}"] = path
    job = tmp_path / "job"
    table = pd.DataFrame(
        {"slide_id": list(slides), "path": [str(p) for p in slides.values()], "mpp": [float("nan")] * 6}
    )
    tile_slides(table, job, TilingParams(mpp=2.0, tile_size=64), progress=False)
    embed_slides(
        [(s, None) for s in slides],
        job,
        EmbedSettings(encoder="resnet18", weights="random", batch_size=32, workers=0),
        progress=False,
    )
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"slide_id": list(slides), "label": ["x", "y"] * 3}).to_csv(manifest, index=False)
    split = tmp_path / "split.csv"
    pd.DataFrame({"slide_id": list(slides), "split": ["train"] * 4 + ["val", "test"]}).to_csv(split, index=False)
    config = replace(
        TrainConfig(), model="abmil", loss="ce", epochs=1, warmup_epochs=0, device="cpu", model_args={"dim": 32}
    )
    train_run(manifest, job / "features" / "resnet18", split, tmp_path / "run", config, progress=False)
    out = tmp_path / "heat.png"
    result = runner.invoke(
        app,
        [
            "heatmap",
            "--run",
            str(tmp_path / "run"),
            "--job",
            str(job),
            "--slide",
            "s0",
            "--out",
            str(out),
            "--top-k",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape[0] > 200
    from wsi_ncmi.evaluation.heatmap import attention_scores
    from wsi_ncmi.slides.backend import open_slide
    from wsi_ncmi.slides.lowres import read_lowres

    attention, coords, _ = attention_scores(tmp_path / "run", job / "features" / "resnet18" / "s0.h5")
    assert len(attention) == len(coords) > 0
    with open_slide(slides["s0"]) as slide:
        thumb = read_lowres(slide, 0.5, 8.0).image.astype(int)
    spread = np.abs(thumb - thumb.mean(2, keepdims=True)).sum(2)
    assert spread.max() > 60
    colourful = (np.abs(image - image.mean(2, keepdims=True)).sum(2) > 60).mean()
    assert 0.02 < colourful < 0.9
