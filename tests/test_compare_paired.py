"""Paired statistics of a loss against a baseline over seeds/folds: mean, bootstrap CI, Wilcoxon p, in words."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.evaluation.compare import METRICS, paired_statistics


def _differences(deltas: list[float]) -> pd.DataFrame:
    rows = []
    for seed, delta in enumerate(deltas, start=1):
        rows.append(
            {"model": "abmil", "seed": seed, "split_file": "s.csv", "loss": "ncmi", "baseline": "ce"}
            | {f"delta_{m}": delta for m in METRICS}
        )
    return pd.DataFrame(rows)


def test_seven_positive_pairs_are_significant() -> None:
    """All 7 differences positive: the exact two-sided signed-rank p is 2 / 2**7 = 0.015625."""
    stats = paired_statistics(_differences([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])).set_index("metric")
    row = stats.loc["macro_f1"]
    assert row["pairs"] == 7 and row["mean_difference"] == pytest.approx(0.4)
    assert row["p_value"] == pytest.approx(2 / 2**7)
    assert 0.1 <= row["ci_low"] < 0.4 < row["ci_high"] <= 0.7
    assert row["verdict"].startswith("ncmi higher than ce")


def test_mixed_pairs_are_called_not_significant() -> None:
    stats = paired_statistics(_differences([0.1, -0.1, 0.2, -0.05, 0.0])).set_index("metric")
    row = stats.loc["accuracy"]
    assert row["p_value"] > 0.05 and row["ci_low"] < 0 < row["ci_high"]
    assert "not significant" in row["verdict"] and "fewer than 6 pairs" in row["verdict"]


def test_compare_paired_prints_and_writes_the_statistics(tmp_path: Path) -> None:
    runs = []
    for loss, seed, f1 in [("ce", 1, 0.5), ("ce", 2, 0.6), ("ce", 3, 0.7), ("ncmi", 1, 0.6), ("ncmi", 2, 0.5)]:
        folder = tmp_path / f"{loss}{seed}"
        folder.mkdir()
        training = {"model": "abmil", "loss": loss, "seed": seed}
        (folder / "config.yaml").write_text(yaml.safe_dump({"training": training, "inputs": {"split": "s.csv"}}))
        (folder / "metrics_test.json").write_text(json.dumps({"macro_f1": f1, "accuracy": f1, "auc": 0.9}))
        runs.append(str(folder))
    result = CliRunner().invoke(app, ["compare", *runs, "--out", str(tmp_path / "t.csv"), "--paired"])
    assert result.exit_code == 0, result.output
    assert "not significant" in result.output
    stats = pd.read_csv(tmp_path / "t_paired_stats.csv").set_index("metric")
    assert stats.loc["macro_f1", "pairs"] == 2 and stats.loc["macro_f1", "mean_difference"] == pytest.approx(0.0)
