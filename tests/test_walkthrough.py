"""README, "Bring your own slides": its manifest columns, the generic pipeline file and its commands, run as written
on a small synthetic cohort. Only sizes are scaled down (24 slides, coarse tiles, a random-initialised resnet18,
2 epochs, 2 folds, 20 bootstrap resamples), since no weights can be downloaded here; every scaled key must exist
in the file."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.synthetic import CohortSpec, write_cohort

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SMALL = {
    "workers": 1,
    "tiling": {"mpp": 4.0, "tile_size": 96},
    "embedding": {"encoder": "resnet18", "weights": "random", "batch_size": 64, "workers": 0},
    "splits": {"folds": 2},
    "training": {"epochs": 2, "warmup_epochs": 0},
    "evaluate": {"bootstrap": 20},
}


def section(title: str) -> list[str]:
    """The indented code lines of one README section."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in body.splitlines() if line.startswith("    ")]


def scaled(config: dict[str, Any]) -> dict[str, Any]:
    for key, value in SMALL.items():
        assert key in config, f"configs/pipeline_generic.yaml has no {key}"
        if isinstance(value, dict):
            for inner in value:
                assert inner in config[key], f"configs/pipeline_generic.yaml has no {key}.{inner}"
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def test_bring_your_own_slides_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = section("Bring your own slides")
    header = next(line for line in lines if line.startswith("slide_id,"))
    commands = [line for line in lines if line.startswith(("cp ", "wsi-ncmi "))]
    assert len(commands) == 3 and header == "slide_id,label,path"
    cohort = write_cohort(CohortSpec(slides=24, centers=3, width=2048, height=1536, mpp=0.5, seed=0), tmp_path / "c")
    full = pd.read_csv(cohort, dtype=str)
    full["path"] = [str((cohort.parent / p).resolve()) for p in full["path"]]
    full[header.split(",")].to_csv(tmp_path / "my_cohort.csv", index=False)
    monkeypatch.chdir(tmp_path)
    for line in commands:
        words = shlex.split(line)
        if words[0] == "cp":
            assert words[1].endswith("configs/pipeline_generic.yaml")
            shutil.copy(ROOT / "configs" / "pipeline_generic.yaml", words[2])
            config = yaml.safe_load(Path(words[2]).read_text())
            assert "classes" not in config["training"], "the classes come from the manifest"
            Path(words[2]).write_text(yaml.safe_dump(scaled(config)))
            continue
        result = runner.invoke(app, words[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
    runs = tmp_path / "work" / "runs"
    assert (runs / "report.html").is_file()
    comparison = pd.read_csv(runs / "comparison.csv")
    assert sorted(comparison["loss"]) == ["ce", "ncmi"] and (comparison["runs"] == 2).all()
    run = yaml.safe_load((runs / "abmil_ncmi_seed1_fold0" / "config.yaml").read_text())
    assert run["classes"] == sorted(set(full["label"]))
