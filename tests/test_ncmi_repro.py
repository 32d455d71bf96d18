"""The MNIST-1D reproduction benchmark: data generated offline, a run per arm, and README tables from its JSON."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from benchmarks.ncmi_repro import ARMS, Recipe, mnist1d_split, run_one, summarise, table

ROOT = Path(__file__).resolve().parents[1]
TINY = Recipe(epochs=1, n_train=200, n_test=100)


def test_mnist1d_is_generated_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    mnist1d_split.cache_clear()
    x, y, x_test, y_test = mnist1d_split(TINY)
    assert x.shape == (200, 1, 40) and x_test.shape == (100, 1, 40)
    assert set(y.tolist()) == set(range(10)) and len(y_test) == 100


@pytest.mark.parametrize("arm", ["ce", "ncmi anchor, frozen centre, softmin"])
def test_an_arm_trains_and_scores(arm: str) -> None:
    out = run_one(arm, 0, 64, TINY, "plain")
    assert 0 <= out["test_accuracy"] <= 1 and 0 <= out["train_accuracy"] <= 1
    assert ("min_centroid_kl" in out) == (arm != "ce")


def test_the_table_pairs_each_arm_with_ce_by_seed() -> None:
    runs = {
        "ce": [{"seed": s, "test_accuracy": 0.9, "train_accuracy": 1.0} for s in range(3)],
        "ncmi x": [{"seed": s, "test_accuracy": 0.9 + 0.01 * (s - 1), "train_accuracy": 1.0} for s in range(3)],
    }
    row = summarise(runs)["ncmi x"]
    assert row["difference"] == pytest.approx(0.0, abs=1e-12) and (row["better"], row["pairs"]) == (1, 3)
    payload = {"recipe": TINY.__dict__, "batch": 64, "network": "plain", "runs": runs}
    assert "| ncmi x | 3 | 0.900 ± 0.010 | 1.000 | +0.000 | 1/3 |" in table(payload)


RESULT_FILES = sorted((ROOT / "benchmarks" / "results").glob("ncmi_repro*.json"))


@pytest.mark.parametrize("path", RESULT_FILES, ids=[p.name for p in RESULT_FILES])
def test_readme_tables_are_the_result_files(path: Path) -> None:
    """Each result file's table, from its per-seed runs, appears in the README word for word, after its name."""
    payload = json.loads(path.read_text())
    assert set(payload["runs"]) <= set(ARMS)
    text = table(payload)
    readme = (ROOT / "README.md").read_text()
    assert text in readme, f"README's table of {path.name} differs; print it with --table {path}"
    assert path.name in readme[: readme.index(text)].rsplit("\n\n", 1)[-1]
