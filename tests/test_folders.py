"""Every command that writes a folder (or a file) creates the folders above it, as `mkdir -p` would."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.core.folders import FolderError, make_parents

runner = CliRunner()


def test_make_parents_creates_every_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c" / "run"
    assert make_parents(target) == target
    assert (tmp_path / "a" / "b" / "c").is_dir() and not target.exists()
    make_parents(target)


def test_make_parents_names_the_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    with pytest.raises(FolderError, match=f"{blocker} is a file, not a folder"):
        make_parents(blocker / "seed1" / "run")


def test_atomic_writes_create_their_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "table.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("a,b\n")
    assert target.read_text() == "a,b\n"


def test_train_report_and_compare_into_new_nested_folders(results_job: tuple[Path, Path], tmp_path: Path) -> None:
    job, _ = results_job
    root = job.parent
    run = tmp_path / "runs" / "ce" / "seed1"
    trained = runner.invoke(
        app,
        [
            "train",
            "--manifest", str(root / "manifest.csv"),
            "--features", str(job / "features" / "synthetic"),
            "--split", str(root / "split.csv"),
            "--out", str(run),
            "--model", "mean", "--loss", "ce", "--epochs", "1", "--device", "cpu",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert (run / "model.pt").is_file()
    assert runner.invoke(app, ["evaluate", "--run", str(run), "--bootstrap", "10"]).exit_code == 0
    page = tmp_path / "pages" / "today" / "run.html"
    reported = runner.invoke(app, ["report", "--run", str(run), "--out", str(page)])
    assert reported.exit_code == 0, reported.output
    assert page.is_file()
    table = tmp_path / "tables" / "comparison.csv"
    compared = runner.invoke(app, ["compare", str(run), "--out", str(table)])
    assert compared.exit_code == 0, compared.output
    assert table.is_file()
