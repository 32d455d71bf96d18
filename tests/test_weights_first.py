"""Encoder weights are checked before any work: `demo`, `run` and `embed` refuse missing weights or an unknown
encoder in a second, before a slide is synthesised or tiled, and `demo` and `run` accept --allow-download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.embedding.weights import WeightsError, check_weights

runner = CliRunner()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "empty_cache"
    monkeypatch.setenv("TORCH_HOME", str(cache))
    return cache


def test_check_weights_cases(empty_cache: Path, tmp_path: Path) -> None:
    check_weights("resnet18", "random")
    check_weights("resnet18", "imagenet", allow_download=True)
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth .*not in the local cache.*--allow-download"):
        check_weights("resnet18", "imagenet")
    with pytest.raises(WeightsError, match="unknown encoder 'resnet-18'"):
        check_weights("resnet-18", "random")
    with pytest.raises(WeightsError, match=r"absent\.pth"):
        check_weights("resnet18", str(tmp_path / "absent.pth"))
    cached = empty_cache / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"only its presence is checked here")
    check_weights("resnet18", "imagenet")


def test_demo_without_cached_weights_fails_before_any_slide(empty_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo_imagenet"
    result = runner.invoke(app, ["demo", "--out", str(out), "--weights", "imagenet"])
    assert result.exit_code == 2
    assert "not in the local cache" in result.output and "--allow-download" in result.output
    assert not (out / "cohort").exists() and not (out / "job").exists()


def test_demo_and_run_pass_allow_download_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_demo(out: Path, settings: Any) -> int:
        seen["demo"] = settings
        return 0

    def fake_pipeline(config: Any) -> dict[str, Any]:
        seen["run"] = config
        raise WeightsError("stopped here by the test")

    monkeypatch.setattr("wsi_ncmi.pipeline.demo.run_demo", fake_demo)
    monkeypatch.setattr("wsi_ncmi.pipeline.run.run_pipeline", fake_pipeline)
    assert runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--allow-download"]).exit_code == 0
    assert seen["demo"].allow_download is True
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"manifest": "m.csv", "job": "job", "runs": "runs"}))
    result = runner.invoke(app, ["run", "--config", str(config), "--allow-download"])
    assert result.exit_code == 2 and "stopped here by the test" in result.output
    assert seen["run"].embedding["allow_download"] is True


def test_run_without_cached_weights_fails_before_tiling(
    empty_cache: Path, tmp_path: Path, tiff_slide: Path
) -> None:
    manifest = tmp_path / "cohort.csv"
    pd.DataFrame({"slide_id": ["s1"], "path": [str(tiff_slide)], "label": ["neg"]}).to_csv(manifest, index=False)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "manifest": "cohort.csv",
                "job": "work/job",
                "runs": "work/runs",
                "embedding": {"encoder": "resnet18", "weights": "pretrained"},
            }
        )
    )
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "not in the local cache" in result.output and "--allow-download" in result.output
    assert not (tmp_path / "work").exists()


def test_embed_says_unknown_encoder_before_anything_else(tmp_path: Path) -> None:
    result = runner.invoke(app, ["embed", "--job", str(tmp_path), "--encoder", "resnet-18", "--weights", "random"])
    assert result.exit_code == 2
    assert "unknown encoder 'resnet-18'" in result.output
    assert "random-initialised" not in result.output
