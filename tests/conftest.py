"""Shared fixtures: small synthetic slides written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_ncmi.synthetic import Lesion, SlideSpec, write_slide, write_truth


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a few small synthetic slides of different kinds, plus their ground truth."""
    folder = tmp_path_factory.mktemp("slides")
    specs = {
        "tiff_025": (
            SlideSpec("tiff_025", 8192, 6144, 0.25, seed=11, lesions=(Lesion(900, 700, 400),)),
            "tiff",
        ),
        "svs_025": (SlideSpec("svs_025", 4096, 3072, 0.25, seed=12), "svs"),
        "tiff_050": (SlideSpec("tiff_050", 4096, 3072, 0.5, seed=13), "tiff"),
    }
    for name, (spec, fmt) in specs.items():
        write_slide(spec, folder / f"{name}.{'svs' if fmt == 'svs' else 'tif'}", fmt=fmt)
        write_truth(spec, folder)
    return folder


@pytest.fixture(scope="session")
def tiff_slide(slide_dir: Path) -> Path:
    return slide_dir / "tiff_025.tif"


@pytest.fixture(scope="session")
def results_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiled job (six small slides, the last without tissue), bags of seeded synthetic features, and an abmil run
    trained and evaluated on them: (job, run). The bags are written directly so no encoder has to run."""
    from dataclasses import replace

    import numpy as np
    import pandas as pd

    from wsi_ncmi.embedding.embed import bag_path
    from wsi_ncmi.evaluation.evaluate import evaluate_run
    from wsi_ncmi.formats.bags import BagWriter, read_coords
    from wsi_ncmi.mil.run import train_run
    from wsi_ncmi.mil.train import TrainConfig
    from wsi_ncmi.tiling.tile import TilingParams, coords_path, tile_slides

    root = tmp_path_factory.mktemp("results")
    specs = [
        SlideSpec(f"r{i}", 2048, 1536, 0.5, seed=70 + i, tissue_fraction=0.0 if i == 5 else 0.35) for i in range(6)
    ]
    for spec in specs:
        write_slide(spec, root / f"{spec.slide_id}.tif")
    ids = [s.slide_id for s in specs]
    table = pd.DataFrame({"slide_id": ids, "path": [str(root / f"{i}.tif") for i in ids], "mpp": [np.nan] * 6})
    job = root / "job"
    tile_slides(table, job, TilingParams(mpp=2.0, tile_size=64), progress=False)
    rng = np.random.default_rng(0)
    labels = ["neg", "pos", "neg", "pos", "neg", "pos"]
    attrs = {
        "encoder": "synthetic",
        "weights": "seed=0",
        "precision": "fp32",
        "input_size": 0,
        "normalization": "none",
        "feature_dtype": "float32",
        "coords_sha256": "",
    }
    for slide_id, label in zip(ids, labels, strict=True):
        tiles = read_coords(coords_path(job, slide_id))
        features = rng.normal(size=(len(tiles.coords), 16)).astype(np.float32) + (label == "pos")
        path = bag_path(job, "synthetic", slide_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = BagWriter(path, len(features), 16)
        writer.write(0, features)
        writer.finish(tiles, attrs, np.zeros(0, np.int64))
    manifest, split = root / "manifest.csv", root / "split.csv"
    centers = ["0", "0", "1", "1", "2", "2"]
    pd.DataFrame({"slide_id": ids, "label": labels, "center": centers}).to_csv(manifest, index=False)
    parts = ["train", "train", "val", "test", "test", "test"]
    pd.DataFrame({"slide_id": ids, "split": parts}).to_csv(split, index=False)
    config = replace(
        TrainConfig(),
        model="abmil",
        loss="ce",
        epochs=2,
        warmup_epochs=0,
        device="cpu",
        model_args={"dim": 16, "neck": "none"},
    )
    run = root / "run"
    train_run(manifest, job / "features" / "synthetic", split, run, config, progress=False)
    evaluate_run(run, "test", bootstrap=20)
    return job, run


def write_fake_run(folder: Path, loss: str, seed: int, f1: float) -> Path:
    """A run folder with only config.yaml and metrics_test.json (known numbers), for comparison tests."""
    import json

    import yaml

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        yaml.safe_dump({"training": {"model": "abmil", "loss": loss, "seed": seed}, "inputs": {"split": "s.csv"}})
    )
    (folder / "metrics_test.json").write_text(
        json.dumps({"macro_f1": f1, "accuracy": f1 + 0.1, "balanced_accuracy": f1, "auc": 0.9, "ncmi": None})
    )
    return folder


@pytest.fixture
def fake_run() -> object:
    """`write_fake_run` for tests that compare runs."""
    return write_fake_run


@pytest.fixture
def results_copy(results_job: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of `results_job`'s (job, run), with the run's manifest and split beside it, safe to damage
    (the slide files are linked, not copied)."""
    import shutil

    _, run = results_job
    root = tmp_path / "results"
    shutil.copytree(run.parent, root, ignore=shutil.ignore_patterns("*.tif"))
    for slide in run.parent.glob("*.tif"):
        (root / slide.name).symlink_to(slide)
    return root / "job", root / "run"
