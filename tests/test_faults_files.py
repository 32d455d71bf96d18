"""Fault cases for files the project writes and reads back, and for what killed or stopped runs leave: every
damaged file gets one line naming it and the fix (never `unexpected ...`), nothing is written outside --out, and
leftovers are swept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from cli_run import run_main as _main
from typer.testing import CliRunner

from wsi_ncmi.cli import app

runner = CliRunner()




def _clear(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """One clear error line: non-zero exit, no catch-all `unexpected`, no traceback, every needle named."""
    text = result.stderr + result.stdout
    assert result.returncode not in (0, 3), (result.returncode, text)
    assert "unexpected" not in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)


# --- damaged files in a run folder ------------------------------------------------------------------------------

DAMAGES = {
    "metrics not JSON": ("metrics_test.json", b"{\"macro_f1\": 0.5,"),
    "metrics a list": ("metrics_test.json", b"[1, 2, 3]\n"),
    "metrics binary": ("metrics_test.json", b"\xff\xfe\x00garbage"),
    "metrics with text for a number": ("metrics_test.json", b'{"macro_f1": "high", "accuracy": 0.5}'),
    "predictions empty": ("predictions_test.csv", b""),
    "predictions without columns": ("predictions_test.csv", b"a,b\n1,2\n"),
    "predictions with text for a probability": (
        "predictions_test.csv",
        b"slide_id,case_id,center,split,y_true,y_pred,p_neg,p_pos,flag\nr3,r3,1,test,pos,pos,high,0.5,\n",
    ),
    "history damaged": ("history.csv", b"epoch,train_loss\n1,0.5\n"),
    "history with text": (
        "history.csv",
        b"epoch,train_loss,val_loss,val_macro_f1\n1,0.5,oops,0.3\n",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_report_names_a_damaged_run_file(
    results_copy: tuple[Path, Path], tmp_path: Path, damage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    _, run = results_copy
    name, content = DAMAGES[damage]
    (run / name).write_bytes(content)
    result = _main(capfd, "report", "--run", str(run), "--out", str(tmp_path / "r.html"))
    _clear(result, name)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("damage", [d for d in DAMAGES if d.startswith("metrics")])
def test_compare_names_a_damaged_metrics_file(
    results_copy: tuple[Path, Path], tmp_path: Path, damage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    _, run = results_copy
    name, content = DAMAGES[damage]
    (run / name).write_bytes(content)
    _clear(_main(capfd, "compare", str(run), "--out", str(tmp_path / "c.csv")), name)


@pytest.mark.parametrize("name", ["model.pt", "last.pt"])
def test_a_checkpoint_that_is_not_one_is_one_line(
    results_copy: tuple[Path, Path], name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    _, run = results_copy
    (run / name).write_bytes(b"garbage, not a checkpoint")
    result = _main(capfd, "evaluate", "--run", str(run), "--bootstrap", "0")
    _clear(result, name)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_evaluate_names_a_damaged_history(
    results_copy: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    _, run = results_copy
    (run / "history.csv").write_bytes(b"\x00\x01garbage\n")
    _clear(_main(capfd, "evaluate", "--run", str(run), "--bootstrap", "0"), "history.csv")


@pytest.mark.parametrize("content", ["- a list\n", "training: 3\ninputs: {}\n", "inputs: {}\nencoder: x\n"])
@pytest.mark.parametrize("command", ["evaluate", "report", "heatmap", "compare"])
def test_a_damaged_run_config_is_named(
    results_copy: tuple[Path, Path], tmp_path: Path, content: str, command: str, capfd: pytest.CaptureFixture[str]
) -> None:
    job, run = results_copy
    (run / "config.yaml").write_text(content)
    args = {
        "evaluate": ["evaluate", "--run", str(run), "--bootstrap", "0"],
        "report": ["report", "--run", str(run), "--out", str(tmp_path / "r.html")],
        "heatmap": ["heatmap", "--run", str(run), "--job", str(job), "--slide", "r0"],
        "compare": ["compare", str(run), "--out", str(tmp_path / "c.csv")],
    }[command]
    _clear(_main(capfd, *args), "config.yaml")


def test_report_split_all_says_to_choose_one_split(
    results_copy: tuple[Path, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _, run = results_copy
    result = _main(capfd, "report", "--run", str(run), "--out", str(tmp_path / "r.html"), "--split", "all")
    _clear(result, "--split test")
    assert "evaluate" not in result.stderr, result.stderr


# --- comparing runs -----------------------------------------------------------------------------------------------


def test_compare_and_report_refuse_a_run_given_twice(fake_run: object, tmp_path: Path) -> None:
    run = fake_run(tmp_path / "a", "ce", 1, 0.5)
    for args in (
        ["compare", str(run), str(tmp_path / "." / "a"), "--out", str(tmp_path / "c.csv")],
        ["report", "--runs", str(run), str(run), "--out", str(tmp_path / "r.html")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "given twice" in result.output, result.output
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("key", ["classes", "manifest"])
def test_compare_refuses_runs_of_different_cohorts_or_classes(fake_run: object, tmp_path: Path, key: str) -> None:
    import yaml

    runs = [fake_run(tmp_path / name, "ce", seed, 0.5) for name, seed in (("a", 1), ("b", 2))]
    for run, value in zip(runs, ("one", "two"), strict=True):
        config = yaml.safe_load((run / "config.yaml").read_text())
        if key == "classes":
            config["classes"] = ["neg", "pos"] if value == "one" else ["neg", "pos", "itc"]
        else:
            config["inputs"]["manifest"] = f"/data/{value}.csv"
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["compare", *map(str, runs), "--out", str(tmp_path / "c.csv")])
    assert result.exit_code == 2 and "different" in result.output, result.output
    assert not (tmp_path / "c.csv").exists()


# --- export outside --out -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("slide", ["../evil", "..", "a/b", ".hidden"])
def test_export_and_heatmap_refuse_slide_ids_that_are_paths(
    results_copy: tuple[Path, Path], tmp_path: Path, slide: str
) -> None:
    job, run = results_copy
    out = tmp_path / "geo" / "inner"
    result = runner.invoke(app, ["export", "qupath", "--job", str(job), "--out", str(out), "--slide", slide])
    assert result.exit_code == 2 and "--slide" in result.output, result.output
    heat = runner.invoke(app, ["heatmap", "--run", str(run), "--job", str(job), "--slide", slide])
    assert heat.exit_code == 2 and "--slide" in heat.output, heat.output
    assert not list(tmp_path.rglob("*.geojson")) and not list(run.parent.rglob("*evil*"))


# --- settings: synth sizes, YAML bombs ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["0x0", "0x100", "100x-5", "5000000x10"])
def test_synth_refuses_impossible_sizes_before_writing(tmp_path: Path, size: str) -> None:
    out = tmp_path / "cohort"
    result = runner.invoke(app, ["synth", "--out", str(out), "--slides", "1", "--size", size])
    assert result.exit_code == 2 and "--size" in result.output, result.output
    assert not out.exists()


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    from wsi_ncmi.core.config import ConfigError, load_yaml

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nepochs: *a9\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml"):
        load_yaml(path)


def test_a_few_levels_of_aliases_expanding_past_the_bound_are_refused(tmp_path: Path) -> None:
    from wsi_ncmi.core.config import ConfigError, load_yaml

    lines = ["a0: &a0 [" + ", ".join(["x"] * 100) + "]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 40)}]" for i in range(1, 3)]
    path = tmp_path / "wide.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expanded"):
        load_yaml(path)


def test_a_huge_setting_value_is_cut_in_the_message(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("tile_size: '" + "9" * 200_000 + "'\n")
    result = _main(capfd, "tile", "--slides", str(tmp_path), "--out", str(tmp_path / "job"), "--config", str(config))
    _clear(result, "tile_size")
    assert len(result.stderr) < 2000, len(result.stderr)


# --- status files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("tile.csv", b"\xff\xfe\x00\x01 not text"),
        ("tile.csv", b"slide_id,status,n_tiles\ns1,ok,many\n"),
        ("tile.shard-0-of-2.csv", b"whatever,columns\n1,2\n"),
        ("embed.csv", b"slide_id,status,n_tiles\n,ok,3\n"),
        ("qc.shard-0-of-2.csv", b"\xff\xfe garbage"),
        ("qc.csv", b"no,slide,column\n1,2,3\n"),
    ],
)
def test_status_names_a_damaged_status_file(
    tmp_path: Path, name: str, content: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job"
    (job / "status").mkdir(parents=True)
    (job / "status" / "tile.csv").write_text("slide_id,status,n_tiles\ns0,ok,4\n")
    (job / "status" / name).write_bytes(content)
    _clear(_main(capfd, "status", str(job)), name)


def test_status_after_a_killed_tile_run_points_at_the_coords_files(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job"
    (job / "tiles").mkdir(parents=True)
    (job / "tiles" / "s0.h5").write_bytes(b"")
    result = _main(capfd, "status", str(job))
    _clear(result, "1 coords file(s)", "tile")
    assert "nothing has run" not in result.stderr


# --- leftovers of killed processes; interrupted training; warnings ------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_tile_sweeps_temporary_files_and_locks_of_killed_processes(tmp_path: Path) -> None:
    import socket

    from wsi_ncmi.formats.jobdir import prepare_job

    job = tmp_path / "job"
    (job / "tiles").mkdir(parents=True)
    dead = _dead_pid()
    old = time.time() - 3600
    leftovers = [job / "tiles" / f".s0.h5.tmp-{dead}", job / "tiles" / "s0.h5.lock"]
    leftovers[0].write_bytes(b"half")
    leftovers[1].write_text(json.dumps({"host": socket.gethostname(), "pid": dead, "time": old}))
    live = job / "tiles" / f".s1.h5.tmp-{os.getpid()}"
    live.write_bytes(b"being written")
    recent = job / "tiles" / f".s2.h5.tmp-{dead}"
    recent.write_bytes(b"maybe another host")
    for path in (*leftovers, live):
        os.utime(path, (old, old))
    with pytest.warns(UserWarning, match="removed 2 temporary or lock file"):
        prepare_job(job, ("tiles",))
    assert not any(p.exists() for p in leftovers)
    assert live.exists() and recent.exists()


def test_train_sweeps_its_run_folder(results_copy: tuple[Path, Path]) -> None:
    _, run = results_copy
    leftover = run / f".model.pt.tmp-{_dead_pid()}"
    leftover.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    root = run.parent
    args = ["train", "--manifest", str(root / "manifest.csv"), "--split", str(root / "split.csv")]
    args += ["--features", str(root / "job" / "features" / "synthetic"), "--out", str(run), "--overwrite"]
    result = runner.invoke(app, [*args, "--loss", "ce", "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert not leftover.exists()


@pytest.mark.parametrize("finished_epoch", [True, False])
def test_an_interrupted_train_says_how_to_continue(
    results_copy: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, finished_epoch: bool
) -> None:
    import wsi_ncmi.mil.run

    _, run = results_copy
    if not finished_epoch:
        (run / "last.pt").unlink()

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(wsi_ncmi.mil.run, "train_run", stopped)
    root = run.parent
    args = ["train", "--manifest", str(root / "manifest.csv"), "--split", str(root / "split.csv")]
    args += ["--features", str(root / "job" / "features" / "synthetic"), "--out", str(run)]
    result = runner.invoke(app, [*args, "--resume" if finished_epoch else "--overwrite", "--device", "cpu"])
    assert result.exit_code == 130, result.output
    assert ("--resume" in result.output) == finished_epoch, result.output


def test_warnings_print_as_one_line_without_source_paths(capfd: pytest.CaptureFixture[str]) -> None:
    from wsi_ncmi.core.faults import install_warnings

    shown = warnings.showwarning
    try:
        install_warnings()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("job/tiles/s0.h5.lock: removing a stale lock\n(its process is gone)", stacklevel=1)
            warnings.warn_explicit(
                "y_pred contains classes not in y_true", UserWarning, "/x/site-packages/sklearn/metrics/_ranking.py", 1
            )
    finally:
        warnings.showwarning = shown
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines == [
        "warning: job/tiles/s0.h5.lock: removing a stale lock (its process is gone)",
        "warning: y_pred contains classes not in y_true (scikit-learn)",
    ], lines
