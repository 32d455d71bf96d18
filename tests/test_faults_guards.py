"""Fault cases for the guards every command that reads a run or a bag shares: this run's model, bags that match
this run, settings checked before anything is deleted, a run that `train` is still writing.

Each test works on a copy of the session's small trained run (conftest `results_job`), damaged the way a user or a
crash would damage it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_run import run_main as _main
from typer.testing import CliRunner

from wsi_ncmi.cli import app

runner = CliRunner()
SLIDE = "r0"
"""A slide of `results_job` with tissue (in the training split)."""




def _bags(job: Path) -> list[Path]:
    return sorted((job / "features" / "synthetic").glob("*.h5"))


def _set_attr(paths: list[Path], key: str, value: str) -> None:
    for path in paths:
        with h5py.File(path, "r+") as h5:
            h5["features"].attrs[key] = value


def _train_args(run: Path, *extra: str) -> list[str]:
    root = run.parent
    return [
        "train",
        *("--manifest", str(root / "manifest.csv"), "--split", str(root / "split.csv")),
        *("--features", str(root / "job" / "features" / "synthetic"), "--out", str(run)),
        *("--loss", "ce", "--model", "abmil", "--epochs", "2", *extra),
    ]


def _heatmap(job: Path, run: Path) -> object:
    return runner.invoke(app, ["heatmap", "--run", str(run), "--job", str(job), "--slide", SLIDE])


def _report(job: Path, run: Path, out: Path) -> object:
    return runner.invoke(app, ["report", "--run", str(run), "--job", str(job), "--out", str(out)])


def _export(job: Path, run: Path, out: Path, *slides: str) -> object:
    chosen = [arg for slide in slides for arg in ("--slide", slide)]
    return runner.invoke(app, ["export", "qupath", "--job", str(job), "--run", str(run), "--out", str(out), *chosen])


# --- settings before anything is deleted ------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "tpu:0"])
def test_overwrite_with_a_device_this_machine_lacks_keeps_the_old_run(
    results_copy: tuple[Path, Path], device: str
) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    _, run = results_copy
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = runner.invoke(app, _train_args(run, "--overwrite", "--device", device))
    assert result.exit_code == 2 and device in result.output, result.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept


def test_overwrite_removes_the_old_report(results_copy: tuple[Path, Path]) -> None:
    from wsi_ncmi.evaluation.report import files_dir, run_report

    job, run = results_copy
    report = run_report(run, run / "report.html", job=job, progress=False)
    assert files_dir(report).is_dir()
    result = runner.invoke(app, _train_args(run, "--overwrite", "--device", "cpu"))
    assert result.exit_code == 0, result.output
    assert not (run / "report.html").exists() and not files_dir(report).exists()


# --- this run's model -------------------------------------------------------------------------------------------


def test_export_refuses_a_model_copied_from_another_run(results_copy: tuple[Path, Path], tmp_path: Path) -> None:
    job, run = results_copy
    other = run.parent / "other"
    assert runner.invoke(app, _train_args(other, "--seed", "7", "--device", "cpu")).exit_code == 0
    shutil.copy(other / "model.pt", run / "model.pt")
    result = _export(job, run, tmp_path / "geo")
    assert result.exit_code == 2 and "not the model of this run folder" in result.output, result.output
    assert not list((tmp_path / "geo").glob("*.geojson")) if (tmp_path / "geo").exists() else True


@pytest.mark.parametrize(
    "damage",
    ["wrong shape", "extra class", "no head_state"],
)
def test_a_damaged_checkpoint_names_the_file(
    results_copy: tuple[Path, Path], damage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    import torch

    _, run = results_copy
    state = torch.load(run / "model.pt", weights_only=True)
    checkpoint = state.get("checkpoint", state)
    if damage == "wrong shape":
        name = next(iter(checkpoint["state_dict"]))
        checkpoint["state_dict"][name] = torch.zeros(3, 5, 7)
    elif damage == "extra class":
        name = next(k for k, v in checkpoint["head_state"].items() if v.ndim and v.shape[0] == 2)
        checkpoint["head_state"][name] = torch.zeros(3, *checkpoint["head_state"][name].shape[1:])
    else:
        del checkpoint["head_state"]
    torch.save(state, run / "model.pt")
    result = _main(capfd, "evaluate", "--run", str(run), "--bootstrap", "0")
    assert result.returncode == 2, result.stderr
    assert "unexpected" not in result.stderr and "model.pt" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- bags that match this run -----------------------------------------------------------------------------------


def test_report_does_not_draw_bags_of_an_earlier_tiling(results_copy: tuple[Path, Path], tmp_path: Path) -> None:
    import pandas as pd

    from wsi_ncmi.evaluation.report import files_dir, run_report
    from wsi_ncmi.tiling.tile import TilingParams, tile_slides

    job, run = results_copy
    predictions = pd.read_csv(run / "predictions_test.csv", dtype=str)
    slide = str(predictions["slide_id"].iloc[0])
    table = pd.DataFrame({"slide_id": [slide], "path": [str(run.parent / f"{slide}.tif")], "mpp": [np.nan]})
    tile_slides(table, job, TilingParams(mpp=2.0, tile_size=96), overwrite=True, progress=False)
    out = tmp_path / "report.html"
    with pytest.warns(UserWarning, match="tiled again"):
        run_report(run, out, job=job, progress=False)
    assert not (files_dir(out) / f"{slide}.heat.jpg").exists()
    assert "tiled again" in out.read_text()


@pytest.mark.parametrize("command", ["heatmap", "report", "export"])
def test_bags_embedded_with_other_weights_are_refused(
    results_copy: tuple[Path, Path], tmp_path: Path, command: str
) -> None:
    job, run = results_copy
    _set_attr(_bags(job), "weights", "another-checkpoint")
    if command == "heatmap":
        result = _heatmap(job, run)
    elif command == "report":
        result = _report(job, run, tmp_path / "r.html")
    else:
        result = _export(job, run, tmp_path / "geo", SLIDE)
    assert result.exit_code in (1, 2) and "another-checkpoint" in result.output, result.output
    assert not (run / f"heatmap_{SLIDE}.png").exists() and not (tmp_path / "r.html").exists()
    assert not (tmp_path / "geo" / f"{SLIDE}.geojson").exists()


@pytest.mark.parametrize("command", ["heatmap", "report", "export"])
def test_a_bag_holding_inf_is_refused(results_copy: tuple[Path, Path], tmp_path: Path, command: str) -> None:
    import pandas as pd

    job, run = results_copy
    slide = SLIDE
    if command == "report":
        slide = str(pd.read_csv(run / "predictions_test.csv", dtype=str)["slide_id"].iloc[0])
    with h5py.File(job / "features" / "synthetic" / f"{slide}.h5", "r+") as h5:
        h5["features"][0, 0] = np.inf
    if command == "heatmap":
        result = _heatmap(job, run)
        assert result.exit_code == 2 and "NaN or inf" in result.output, result.output
    elif command == "report":
        with pytest.warns(UserWarning, match="NaN or inf"):
            result = _report(job, run, tmp_path / "r.html")
        assert result.exit_code == 0, result.output
        assert not (tmp_path / "r_files" / f"{slide}.heat.jpg").exists()
    else:
        result = _export(job, run, tmp_path / "geo", slide)
        assert result.exit_code == 1 and "NaN or inf" in result.output, result.output
        assert not (tmp_path / "geo" / f"{slide}.geojson").exists()


def _stain(paths: list[Path]) -> None:
    _set_attr(paths, "stain_norm", "macenko")
    _set_attr(paths, "stain_params", '{"max_concentrations": [1.9, 1.0], "stain_matrix": [[0.6, 0.7, 0.2]]}')


def test_predict_refuses_stain_normalised_bags_for_a_model_trained_on_plain_ones(
    results_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    job, run = results_copy
    _stain(_bags(job))
    out = tmp_path / "p.csv"
    result = runner.invoke(
        app, ["predict", "--run", str(run), "--features", str(job / "features" / "synthetic"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "stain_norm" in result.output, result.output
    assert not out.exists()
    for command in ("heatmap", "export"):
        refused = _heatmap(job, run) if command == "heatmap" else _export(job, run, tmp_path / "geo", SLIDE)
        assert refused.exit_code in (1, 2) and "stain_norm" in refused.output, (command, refused.output)


@pytest.mark.parametrize("stained", [["r0"], ["r0", "r1"]], ids=["within training", "training against validation"])
def test_train_refuses_a_folder_mixing_plain_and_stain_normalised_bags(
    results_copy: tuple[Path, Path], stained: list[str]
) -> None:
    job, run = results_copy
    _stain([job / "features" / "synthetic" / f"{slide}.h5" for slide in stained])
    result = runner.invoke(app, _train_args(run.parent / "mixed", "--device", "cpu"))
    assert result.exit_code == 2 and "stain" in result.output, result.output
    assert not (run.parent / "mixed").exists()


# --- a run that `train` is still writing ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "report", "export", "heatmap"])
def test_a_run_being_trained_is_not_read(results_copy: tuple[Path, Path], tmp_path: Path, command: str) -> None:
    from wsi_ncmi.mil.runfolder import run_lock

    job, run = results_copy
    before = (run / "metrics_test.json").read_bytes()
    with run_lock(run):
        if command == "evaluate":
            result = runner.invoke(app, ["evaluate", "--run", str(run), "--bootstrap", "0"])
        elif command == "report":
            result = runner.invoke(app, ["report", "--run", str(run), "--out", str(tmp_path / "r.html")])
        elif command == "export":
            result = _export(job, run, tmp_path / "geo")
        else:
            result = _heatmap(job, run)
    assert result.exit_code == 2 and "still writing this run" in result.output, result.output
    assert (run / "metrics_test.json").read_bytes() == before
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "geo").exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_metrics_of_another_epoch_than_the_model_are_refused(
    results_copy: tuple[Path, Path], tmp_path: Path, command: str
) -> None:
    import json

    _, run = results_copy
    path = run / "metrics_test.json"
    metrics = json.loads(path.read_text())
    metrics["selection"]["epoch"] = int(metrics["selection"]["epoch"]) + 5
    path.write_text(json.dumps(metrics))
    out = tmp_path / ("r.html" if command == "report" else "c.csv")
    args = ["report", "--run", str(run), "--out", str(out)] if command == "report" else ["compare", str(run)]
    result = runner.invoke(app, [*args, "--out", str(out)] if command == "compare" else args)
    assert result.exit_code == 2 and "evaluate --run" in result.output and "epoch" in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("command", ["evaluate", "report", "export"])
def test_a_device_this_machine_lacks_is_named_not_taken_for_a_damaged_checkpoint(
    results_copy: tuple[Path, Path], tmp_path: Path, command: str
) -> None:
    job, run = results_copy
    args = {
        "evaluate": ["evaluate", "--run", str(run), "--bootstrap", "0"],
        "report": ["report", "--run", str(run), "--out", str(tmp_path / "r.html")],
        "export": ["export", "qupath", "--job", str(job), "--run", str(run), "--out", str(tmp_path / "geo")],
    }[command]
    result = runner.invoke(app, [*args, "--device", "tpu:0"])
    assert result.exit_code == 2 and "--device" in result.output, result.output
    assert "damaged" not in result.output, result.output
