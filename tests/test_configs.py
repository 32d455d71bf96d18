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


def test_loss_args_in_either_shape_give_one_heads_settings() -> None:
    """Training configs give loss_args flat, pipeline and tuning files keyed by loss; one function reads both, so
    the shipped pipeline's ncmi settings are those of the shipped ncmi training config."""
    from wsi_ncmi.mil.settings import keyed_by_loss, loss_settings

    flat = load_yaml(CONFIGS / "camelyon17_ncmi.yaml")["loss_args"]
    keyed = load_yaml(CONFIGS / "pipeline_camelyon17.yaml")["loss_args"]
    assert keyed_by_loss(keyed) and not keyed_by_loss(flat) and keyed_by_loss({})
    assert loss_settings("ncmi", keyed) == {k: flat[k] for k in keyed["ncmi"]}
    assert loss_settings("ncmi", flat) == flat and loss_settings("focal", keyed) == {} == loss_settings("ce", None)
    assert loss_settings("ncmi", {"tau_smoothing": None}) == {"tau_smoothing": None}
    assert TrainConfig(loss="ce", loss_args=keyed).loss_args == {"label_smoothing": 0.0}
    settings = loss_settings("ncmi", keyed)
    settings["temperature"] = 9.0
    assert keyed["ncmi"]["temperature"] == 0.2


def test_a_losss_own_rules_come_from_its_registration() -> None:
    """The generic training settings know no loss by name: NCMI's need of gradient clipping is its head's rule."""
    from wsi_ncmi.mil.heads import HEADS

    assert HEADS["ncmi"].training_problems(TrainConfig(loss="ce", grad_clip=None)) == [
        "grad_clip must be set for loss ncmi (e.g. 1.0): its CMI/SEP ratio is heavy-tailed when SEP is small"
    ]
    assert all(not HEADS[name].training_problems(TrainConfig(loss="ce", grad_clip=None)) for name in ("ce", "focal"))
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0; grad_clip must be set for loss ncmi"):
        TrainConfig(loss="ncmi", grad_clip=None, epochs=0, warmup_epochs=0)
