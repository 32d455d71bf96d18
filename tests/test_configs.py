"""The shipped configuration files load and match what the code expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_ncmi.core.config import load_yaml
from wsi_ncmi.mil.heads import build_head
from wsi_ncmi.mil.models import build_model
from wsi_ncmi.mil.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["camelyon17_ncmi.yaml", "camelyon17_ce.yaml"])
def test_training_configs_build(name: str) -> None:
    config = TrainConfig.from_dict(load_yaml(CONFIGS / name))
    assert config.classes == ["negative", "itc", "micro", "macro"]
    assert (config.lr, config.epochs, config.warmup_epochs) == (5e-4, 50, 5)
    model = build_model(config.model, 1024, **config.model_args)
    head = build_head(config.loss, model.dim, 4, **config.loss_args)
    assert head.name == name.split("_")[1].split(".")[0]


def test_every_training_key_is_documented() -> None:
    readme = (CONFIGS / "README.md").read_text()
    for key in TrainConfig.__dataclass_fields__:
        assert f"`{key}`" in readme, key
