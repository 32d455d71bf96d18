"""The pipeline end to end on a tiny synthetic cohort: demo, resume after an interruption, and the YAML file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.formats.bags import read_bag
from wsi_ncmi.pipeline.demo import DemoSettings, demo_pipeline, run_demo
from wsi_ncmi.pipeline.run import PipelineConfig, PipelineError, run_pipeline
from wsi_ncmi.synthetic import CohortSpec, write_cohort

runner = CliRunner()
TINY = DemoSettings(slides_per_center=4, width=2048, height=1536, epochs=2, seeds=(1,), bootstrap=50, workers=1)


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    cohort = CohortSpec(slides=20, centers=5, width=2048, height=1536, mpp=0.5, seed=0)
    return write_cohort(cohort, out)


def _config(out: Path, manifest: Path) -> PipelineConfig:
    config = demo_pipeline(out, TINY, manifest)
    return replace(config, tiling={"mpp": 2.0, "tile_size": 64}, embedding={**config.embedding, "workers": 0})


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    code = run_demo(tmp_path / "demo", TINY)
    assert code == 0
    runs = tmp_path / "demo" / "runs"
    comparison = pd.read_csv(runs / "comparison.csv")
    assert sorted(comparison["loss"]) == ["ce", "ncmi"] and (comparison["runs"] == 1).all()
    assert comparison["macro_f1_mean"].between(0, 1).all()
    for loss in ("ncmi", "ce"):
        run = runs / f"abmil_{loss}_seed1_fold0"
        table = pd.read_csv(run / "predictions_test.csv")
        assert set(table["center"].astype(str)) == {"3", "4"}
        assert (run / "metrics_test.json").exists() and (run / "curves.png").exists()
        report = (run / "report.html").read_text()
        for slide_id, flag in zip(table["slide_id"], table["flag"].fillna(""), strict=True):
            assert f"data-slide='{slide_id}'" in report
            assert (f"{slide_id}.heat.jpg" in report) == (flag != "no_tiles"), "a heatmap for every slide with tiles"
    assert "report.html" in (runs / "report.html").read_text()


def test_interrupted_pipeline_resumes_to_the_same_outputs(
    tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = run_pipeline(_config(tmp_path / "reference", tiny_cohort))
    from wsi_ncmi.embedding import embed

    original = embed.Embedder.__call__
    calls = {"n": 0}

    def interrupt(self: embed.Embedder, images: object) -> object:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, images)

    monkeypatch.setattr(embed.Embedder, "__call__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_config(tmp_path / "resumed", tiny_cohort))
    features = tmp_path / "resumed" / "job" / "features" / "resnet18"
    done = sorted(p.name for p in features.glob("*.h5"))
    assert 0 < len(done) < 20 and not list(features.glob(".*tmp*"))
    monkeypatch.setattr(embed.Embedder, "__call__", original)
    resumed = run_pipeline(_config(tmp_path / "resumed", tiny_cohort))
    status = pd.read_csv(tmp_path / "resumed" / "job" / "status" / "embed.csv")
    assert (status["status"] == "skipped").sum() == len(done)
    for path in (tmp_path / "reference" / "job" / "features" / "resnet18").glob("*.h5"):
        assert np.array_equal(read_bag(path).features, read_bag(features / path.name).features), path.name
    pd.testing.assert_frame_equal(pd.read_csv(reference["comparison"]), pd.read_csv(resumed["comparison"]))
    checkpoints = sorted((tmp_path / "reference").glob("runs/*/model.pt"))
    stamps = [path.stat().st_mtime_ns for path in checkpoints]
    capsys.readouterr()
    run_pipeline(_config(tmp_path / "reference", tiny_cohort))
    assert checkpoints and [path.stat().st_mtime_ns for path in checkpoints] == stamps
    assert capsys.readouterr().out.count("finished earlier, kept") == len(checkpoints)


def test_pipeline_yaml_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("manifest: m.csv\njob: job\nruns: runs\ntraining: {loss: ce}\n")
    with pytest.raises(PipelineError, match="must not set loss"):
        PipelineConfig.from_yaml(path)
    path.write_text("manifest: m.csv\njob: job\n")
    with pytest.raises(PipelineError, match="missing required key"):
        PipelineConfig.from_yaml(path)
    path.write_text("manifest: m.csv\njob: job\nruns: runs\nlosess: [ce]\n")
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2 and "losess" in result.output


def test_shipped_pipeline_config_parses() -> None:
    config = PipelineConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "pipeline_camelyon17.yaml")
    assert config.embedding["encoder"] == "resnet50_trunc" and config.losses == ["ncmi", "ce"]
    assert config.seeds == [1, 2, 3] and config.splits["test_centers"] == [3, 4]
