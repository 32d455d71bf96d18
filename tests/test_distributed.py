"""Multi-process training with torchrun and gloo on CPU: global NCMI state, rank-0-only writes, same results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from wsi_ncmi.cohort.manifest import read_manifest
from wsi_ncmi.cohort.splits import read_split
from wsi_ncmi.mil.checkpoint import load_trained
from wsi_ncmi.mil.data import join_split, load_bagset
from wsi_ncmi.mil.distributed import Cluster
from wsi_ncmi.mil.train import embed_bags
from wsi_ncmi.synthetic import write_synthetic_bags

CLASSES = ["itc", "macro", "micro", "negative"]


def test_shares_cover_each_bag_and_parts_are_disjoint() -> None:
    order = np.arange(11)
    shares = [Cluster(r, 3).share(order) for r in range(3)]
    assert {len(s) for s in shares} == {4} and set(np.concatenate(shares)) == set(order)
    parts = [Cluster(r, 3).part(order) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == order.tolist()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("ddp")
    manifest, split = write_synthetic_bags(out, slides=80)
    return manifest, out / "features", split


def _train(cohort: tuple[Path, Path, Path], run: Path, processes: int, settings: str = "") -> str:
    manifest, features, split = cohort
    args = [
        "train",
        "--manifest",
        str(manifest),
        "--features",
        str(features),
        "--split",
        str(split),
        "--out",
        str(run),
        "--epochs",
        "3",
        "--lr",
        "2e-3",
        "--device",
        "cpu",
        "--loss",
        "ncmi",
        "--seed",
        "3",
    ]
    config = run.parent / f"{run.name}.yaml"
    config.write_text("model_args: {dim: 32, dropout: 0.0, neck: none}\nwarmup_epochs: 0\n" + settings)
    args += ["--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if processes == 1:
        command = [sys.executable, "-m", "wsi_ncmi", *args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "wsi_ncmi",
            *args,
        ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_two_gloo_processes_train_one_run(cohort: tuple[Path, Path, Path], tmp_path: Path) -> None:
    output = _train(cohort, tmp_path / "ddp", 2)
    assert output.count("selected epoch") == 1
    assert torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["rng_states"]["torch"].shape[0] == 2
    _train(cohort, tmp_path / "single", 1)
    history = pd.read_csv(tmp_path / "ddp" / "history.csv")
    assert len(history) == 3 and history["val_macro_f1"].notna().all()
    trained = load_trained(tmp_path / "ddp" / "last.pt")
    manifest, features, split = cohort
    parts = join_split(read_manifest(manifest), read_split(split), CLASSES)
    bags = load_bagset(parts["train"]["slide_id"].tolist(), parts["train"]["y"].tolist(), features)
    head = trained.head
    saved = head.predict_centroids().clone()
    h, _ = embed_bags(trained.model, bags, torch.device("cpu"))
    head.epoch_pass(h, torch.from_numpy(bags.labels))
    torch.testing.assert_close(head.predict_centroids(), saved, rtol=1e-4, atol=1e-6)
    single = pd.read_csv(tmp_path / "single" / "history.csv")
    assert abs(single["val_macro_f1"].max() - history["val_macro_f1"].max()) <= 0.3
    assert not list((tmp_path / "ddp").glob(".*tmp*"))


def test_two_gloo_processes_step_on_batches_of_bags_with_a_batchnorm_neck(
    cohort: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Each rank takes 4 of its bags a step; the BatchNorm statistics are averaged over the ranks after each epoch,
    so every rank embeds with rank 0's saved model: the centroids gathered from both ranks are those the saved
    model gives."""
    settings = "bags_per_step: 4\nmodel_args: {dim: 32, dropout: 0.0, neck: bn}\nloss_args: {centroids: epoch}\n"
    output = _train(cohort, tmp_path / "ddp", 2, settings)
    assert output.count("selected epoch") == 1
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    manifest, features, split = cohort
    parts = join_split(read_manifest(manifest), read_split(split), CLASSES)
    share = -(-len(parts["train"]) // 2)
    assert state["scheduler"]["last_epoch"] == 3 * -(-share // 4)
    assert state["checkpoint"]["bags_per_step"] == 4
    trained = load_trained(tmp_path / "ddp" / "last.pt")
    assert float(trained.model.neck.running_var.sub(1).abs().sum()) > 0
    bags = load_bagset(parts["train"]["slide_id"].tolist(), parts["train"]["y"].tolist(), features)
    saved = trained.head.centroids.clone()
    h, _ = embed_bags(trained.model, bags, torch.device("cpu"))
    trained.head.epoch_pass(h, torch.from_numpy(bags.labels))
    torch.testing.assert_close(trained.head.centroids, saved, rtol=1e-4, atol=1e-6)
