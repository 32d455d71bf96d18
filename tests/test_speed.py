"""Threads, optimiser and loss bookkeeping of training steps; reader processes of an embedding run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wsi_ncmi.core import cores
from wsi_ncmi.core.cores import auto_workers, parse_workers
from wsi_ncmi.mil import speed
from wsi_ncmi.mil.data import BagSet
from wsi_ncmi.mil.models import build_model
from wsi_ncmi.mil.run import train_run
from wsi_ncmi.mil.speed import (
    EpochLosses,
    choose_threads,
    intra_op_threads,
    optimizer,
    step_flops,
    training_threads,
)
from wsi_ncmi.mil.train import TrainConfig
from wsi_ncmi.synthetic import write_synthetic_bags

FAST = TrainConfig(model="abmil", loss="ce", epochs=1, warmup_epochs=0, device="cpu", model_args={"dim": 32})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("bags")
    manifest, split = write_synthetic_bags(out, slides=40, dim=16)
    return manifest, out / "features", split


@pytest.fixture
def no_thread_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(speed.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    return monkeypatch


def _bags(n: int, tiles: int, dim: int) -> BagSet:
    ids = [f"b{i}" for i in range(n)]
    cache = {s: np.zeros((tiles, dim), np.float32) for s in ids}
    return BagSet(ids, np.arange(n) % 2, [Path("-")] * n, dim, cache)


def test_small_steps_get_one_thread_large_ones_the_idle_cores(no_thread_env: pytest.MonkeyPatch) -> None:
    no_thread_env.setattr(cores, "cpu_cores", lambda: 8)
    no_thread_env.setattr(cores.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert training_threads("abmil", {"dim": 64}, _bags(3, 180, 32), None, None) == 1
    assert training_threads("abmil", {"dim": 512}, _bags(2, 10_000, 1024), None, None) == 8
    assert training_threads("abmil", {"dim": 512}, _bags(2, 10_000, 1024), 100, None) == 1
    no_thread_env.setattr(cores.os, "getloadavg", lambda: (5.4, 0.0, 0.0))
    assert choose_threads(1e12) == 3
    no_thread_env.setenv("LOCAL_WORLD_SIZE", "2")
    assert choose_threads(1e12) == 1
    no_thread_env.setattr(cores.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert choose_threads(1e12) == 4
    no_thread_env.setattr(cores.os, "getloadavg", lambda: (11.0, 0.0, 0.0))
    assert choose_threads(1e12) == 1


def test_step_work_grows_with_tiles_and_parameters() -> None:
    small, large = build_model("abmil", 32, dim=64), build_model("abmil", 1024, dim=512)
    assert step_flops(small, 200) < speed.SERIAL_FLOPS < step_flops(large, 10_000)
    assert step_flops(large, 2000) == pytest.approx(2 * step_flops(large, 1000))


def test_the_setting_then_the_environment_override_the_choice(no_thread_env: pytest.MonkeyPatch) -> None:
    no_thread_env.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(1.0) == 3
    no_thread_env.setenv(speed.THREADS_ENV, "5")
    assert choose_threads(1.0) == 5
    assert choose_threads(1.0, setting=2) == 2
    no_thread_env.setenv(speed.THREADS_ENV, "zero")
    with pytest.raises(ValueError, match="WSI_NCMI_THREADS='zero': threads must be a whole number >= 1"):
        choose_threads(1.0)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        TrainConfig(threads=0)


def test_intra_op_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("threads", "expected"), [(None, 1), (2, 2)])
def test_training_runs_on_the_chosen_threads_and_restores_them(
    cohort: tuple[Path, Path, Path],
    tmp_path: Path,
    no_thread_env: pytest.MonkeyPatch,
    threads: int | None,
    expected: int,
) -> None:
    seen: list[int] = []
    before = torch.get_num_threads()
    train_run(
        *cohort,
        tmp_path / "run",
        replace(FAST, threads=threads),
        progress=False,
        on_epoch_end=lambda _: seen.append(torch.get_num_threads()),
    )
    assert seen == [expected]
    assert torch.get_num_threads() == before


def test_epoch_losses_average_on_the_device_and_name_the_first_bad_slide() -> None:
    values = [0.5, 1.5, 2.0]
    losses = EpochLosses(["a", "b", "c", "d"], torch.device("cpu"), every=3600.0)
    for v in values:
        losses.add(torch.tensor(v, requires_grad=True) * 1.0)
    assert losses.shown() == {}
    assert losses.mean() == pytest.approx(np.mean(values))
    losses.add(torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError, match="non-finite loss on slide d"):
        losses.shown()
    assert np.isnan(EpochLosses([], torch.device("cpu")).mean())


@pytest.mark.parametrize(
    ("name", "reference_kind", "options"),
    [("adamw", torch.optim.AdamW, {}), ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": False})],
)
def test_fused_optimisers_step_like_the_reference(name: str, reference_kind: type, options: dict) -> None:
    """Every parameter has an informative gradient here (attention's output bias, whose gradient is zero up to
    rounding as softmax ignores a shift, would compare rounding noise that Adam scales up)."""
    torch.manual_seed(0)
    a = build_model("mean", 16, dim=8, dropout=0.0, neck="mlp")
    b = build_model("mean", 16, dim=8, dropout=0.0, neck="mlp")
    b.load_state_dict(a.state_dict())
    fused = optimizer(name, a.parameters(), 1e-2, 1e-4, torch.device("cpu"))
    reference = reference_kind(b.parameters(), lr=1e-2, weight_decay=1e-4, foreach=False, **options)
    assert fused.defaults["fused"]
    x = torch.randn(40, 16)
    for _ in range(5):
        for model, opt in ((a, fused), (b, reference)):
            opt.zero_grad()
            model(x).h.square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_auto_workers_follow_the_cores() -> None:
    assert [auto_workers("cuda:0", cores) for cores in (1, 2, 8, 64)] == [1, 1, 7, 16]
    assert [auto_workers("cpu", cores) for cores in (1, 2, 16, 64, 256)] == [1, 1, 1, 4, 4]
    assert parse_workers("auto", "cpu") == auto_workers("cpu")


@given(st.integers(min_value=0, max_value=10_000))
def test_workers_accept_whole_numbers(n: int) -> None:
    assert parse_workers(str(n), "cpu") == n


@given(
    st.integers(max_value=-1).map(str)
    | st.text(st.characters(categories=["L", "P", "Z"]), min_size=1).filter(lambda s: s.strip().lower() != "auto")
)
def test_workers_refuse_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match=r"--workers .*whole number >= 0 or auto"):
        parse_workers(value, "cpu")
