"""Shipped configurations that compare losses change the loss and nothing else: one neck, one schedule."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from wsi_ncmi.core.config import load_yaml
from wsi_ncmi.mil.models import build_model
from wsi_ncmi.mil.train import TrainConfig
from wsi_ncmi.pipeline.demo import DemoSettings, demo_pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_camelyon17_configs_differ_only_in_the_loss() -> None:
    ce, ncmi = load_yaml(CONFIGS / "camelyon17_ce.yaml"), load_yaml(CONFIGS / "camelyon17_ncmi.yaml")
    assert "neck" in ce["model_args"]
    differing = {key for key in ce.keys() | ncmi.keys() if ce.get(key) != ncmi.get(key)}
    assert differing == {"loss", "loss_args"}


def test_pipeline_and_demo_give_every_loss_the_same_neck(tmp_path: Path) -> None:
    pipeline = load_yaml(CONFIGS / "pipeline_camelyon17.yaml")
    assert "neck" in pipeline["training"]["model_args"]
    assert all("projector" not in args for args in pipeline["loss_args"].values())
    demo = demo_pipeline(tmp_path, DemoSettings(), tmp_path / "m.csv")
    assert "neck" in demo.training["model_args"] and "ncmi" in demo.losses and "ce" in demo.losses


@pytest.mark.parametrize("name", ["camelyon17_ce.yaml", "camelyon17_ncmi.yaml"])
def test_training_without_a_config_uses_the_shipped_configs_settings(name: str) -> None:
    """`wsi-ncmi train` without --config trains as the comparison configs do: only the loss and classes differ."""
    shipped = TrainConfig.from_dict(load_yaml(CONFIGS / name))
    default = TrainConfig()
    differing = {f.name for f in fields(TrainConfig) if getattr(shipped, f.name) != getattr(default, f.name)} - {
        "model_args"
    }
    assert differing <= {"loss", "loss_args", "classes"}
    assert (default.lr, default.epochs, default.warmup_epochs, default.select) == (5e-4, 50, 5, "best_f1")
    resolved = [build_model(c.model, 1024, **c.model_args).settings for c in (shipped, default)]
    assert resolved[0] == resolved[1] and resolved[1]["neck"] == "mlp"


def test_a_neck_left_out_of_model_args_is_the_default_one() -> None:
    assert TrainConfig(model_args={"dim": 64}).model_args == {"dim": 64, "neck": "mlp"}
    assert TrainConfig(model_args={"neck": "none"}).model_args == {"neck": "none"}
