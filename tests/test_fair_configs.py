"""Shipped configurations that compare losses change the loss and nothing else: one neck, one schedule."""

from __future__ import annotations

from pathlib import Path

from wsi_ncmi.config import load_yaml
from wsi_ncmi.demo import DemoSettings, demo_pipeline

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
