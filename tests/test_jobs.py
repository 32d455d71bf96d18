"""Concurrent training jobs: the same checkpoints one at a time, in a process pool and on Dask; failures named;
Ctrl-C stops the workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from wsi_ncmi.batch.jobs import Job, failed_names, run_jobs
from wsi_ncmi.mil.train import TrainConfig
from wsi_ncmi.mil.trainjobs import TrainSpec, train_or_resume
from wsi_ncmi.synthetic import write_synthetic_bags

TINY = TrainConfig(
    model="abmil", loss="ce", epochs=2, warmup_epochs=1, lr=2e-3, device="cpu", model_args={"dim": 16, "dropout": 0.0}
)


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("job_bags")
    manifest, split = write_synthetic_bags(out, slides=24, tiles=(140, 160))
    return manifest, out / "features", split


def _jobs(bags: tuple[Path, Path, Path], root: Path) -> list[Job]:
    manifest, features, split = bags
    root.mkdir(exist_ok=True)
    configs = {"ce_seed1": TINY, "ncmi_seed2": TrainConfig(**{**TINY.__dict__, "loss": "ncmi", "seed": 2})}
    return [
        Job(name, train_or_resume, (TrainSpec(manifest, features, split, root / name, config),))
        for name, config in configs.items()
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    return {**checkpoint["state_dict"], **{f"head.{k}": v for k, v in checkpoint["head_state"].items()}}


def _assert_same_checkpoints(first: Path, second: Path, names: list[str]) -> None:
    for name in names:
        a, b = _weights(first / name), _weights(second / name)
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"


def test_two_at_once_gives_the_checkpoints_of_one_at_a_time(bags: tuple[Path, Path, Path], tmp_path: Path) -> None:
    one = run_jobs(_jobs(bags, tmp_path / "one"), n_jobs=1)
    two = run_jobs(_jobs(bags, tmp_path / "two"), n_jobs=2)
    assert failed_names(one) == failed_names(two) == []
    assert [o.value.state for o in two] == ["trained", "trained"]
    assert [o.value.best_epoch for o in one] == [o.value.best_epoch for o in two]
    _assert_same_checkpoints(tmp_path / "one", tmp_path / "two", ["ce_seed1", "ncmi_seed2"])
    stamp = (tmp_path / "two" / "ce_seed1" / "model.pt").stat().st_mtime_ns
    kept = run_jobs(_jobs(bags, tmp_path / "two"), n_jobs=2)
    assert [o.value.state for o in kept] == ["kept", "kept"]
    assert [o.value.selected() for o in kept] == [o.value.selected() for o in two]
    assert (tmp_path / "two" / "ce_seed1" / "model.pt").stat().st_mtime_ns == stamp


def test_dask_tasks_give_the_same_checkpoints(bags: tuple[Path, Path, Path], tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    run_jobs(_jobs(bags, tmp_path / "local"), n_jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        outcomes = run_jobs(_jobs(bags, tmp_path / "dask"), scheduler=cluster.scheduler_address)
    assert failed_names(outcomes) == []
    _assert_same_checkpoints(tmp_path / "local", tmp_path / "dask", ["ce_seed1", "ncmi_seed2"])


def test_a_failed_training_job_is_named_and_the_others_finish(bags: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, features, split = bags
    good, bad = _jobs(bags, tmp_path / "runs")
    broken = Job(
        "broken_run", train_or_resume, (TrainSpec(manifest, features / "missing", split, bad.args[0].run, TINY),)
    )
    outcomes = run_jobs([broken, good])
    assert failed_names(outcomes) == ["broken_run"]
    assert "missing" in outcomes[0].error and "Traceback" not in outcomes[0].error
    assert (good.args[0].run / "model.pt").exists() and not (bad.args[0].run / "model.pt").exists()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_failures_come_back_as_one_line_in_order(n_jobs: int) -> None:
    outcomes = run_jobs([Job("bad", int, ("x",)), Job("good", int, ("2",))], n_jobs=n_jobs)
    assert [o.value for o in outcomes] == [None, 2] and failed_names(outcomes) == ["bad"]
    assert outcomes[0].error == "ValueError: invalid literal for int() with base 10: 'x'"


def test_jobs_run_single_threaded_and_restore_the_setting() -> None:
    from wsi_ncmi.mil.speed import choose_threads

    before = os.environ.get("WSI_NCMI_THREADS")
    outcomes = run_jobs([Job("threads", choose_threads, (1e12,))])
    assert outcomes[0].value == 1 and os.environ.get("WSI_NCMI_THREADS") == before


def test_ctrl_c_stops_the_workers() -> None:
    import psutil

    def workers() -> set[int]:
        return {
            p.pid
            for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(p.cmdline())
        }

    before = workers()
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs([Job(f"sleep{i}", time.sleep, (60,)) for i in range(3)], n_jobs=2)
    assert time.monotonic() - started < 30
    assert not workers() - before


@pytest.mark.parametrize(("value", "ok"), [("2", True), ("null", True), ("0", False), ("two", False), ("true", False)])
def test_pipeline_jobs_setting_is_checked(tmp_path: Path, value: str, ok: bool) -> None:
    from wsi_ncmi.pipeline.run import PipelineConfig, PipelineError

    path = tmp_path / "p.yaml"
    path.write_text(f"manifest: m.csv\njob: job\nruns: runs\njobs: {value}\n")
    if ok:
        assert PipelineConfig.from_yaml(path).jobs == (None if value == "null" else int(value))
    else:
        with pytest.raises(PipelineError, match="jobs must be a whole number"):
            PipelineConfig.from_yaml(path)
