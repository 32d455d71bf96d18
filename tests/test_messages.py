"""Error messages say what is wrong in the user's terms: a missing --slides folder is not a "manifest", a job
folder that does not exist is not "nothing has run", a case id given as --slide is an unknown slide."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from wsi_ncmi.cli import app

runner = CliRunner()


def test_tile_with_a_missing_slides_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tile", "--slides", str(tmp_path / "no_such_dir"), "--out", str(tmp_path / "job")])
    assert result.exit_code == 2
    assert "--slides folder does not exist" in result.output and "manifest" not in result.output
    assert not (tmp_path / "job").exists()


def test_status_of_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", str(tmp_path / "jobb")])
    assert result.exit_code == 2
    assert "no such job folder" in result.output and "nothing has run" not in result.output


def test_heatmap_of_an_unknown_slide_names_close_ones(results_job: tuple[Path, Path], tmp_path: Path) -> None:
    job, run = results_job
    out = tmp_path / "h.png"
    result = runner.invoke(app, ["heatmap", "--run", str(run), "--job", str(job), "--slide", "r33", "--out", str(out)])
    assert result.exit_code == 2
    assert "unknown slide 'r33'" in result.output and "r3" in result.output
    assert "wsi-ncmi tile" not in result.output and not out.exists()
