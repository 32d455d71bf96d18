"""The `heatmap` command and the run report's slide images draw a slide's attention the same way: one function
checks the bag against the run and the slide's current tiles and reads the slide with the backend it was tiled with;
`heatmap --device` picks where the model runs, and a bad one is refused before anything is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from wsi_ncmi.cli import app

runner = CliRunner()
SLIDE = "r0"
"""A slide of `results_job` with tissue."""


def _heatmap(job: Path, run: Path, *extra: str) -> Any:
    return runner.invoke(app, ["heatmap", "--run", str(run), "--job", str(job), "--slide", SLIDE, *extra])


def test_heatmap_refuses_a_bag_embedded_from_other_tiles(results_copy: tuple[Path, Path]) -> None:
    import numpy as np
    import pandas as pd

    from wsi_ncmi.tiling.tile import TilingParams, tile_slides

    job, run = results_copy
    table = pd.DataFrame({"slide_id": [SLIDE], "path": [str(run.parent / f"{SLIDE}.tif")], "mpp": [np.nan]})
    tile_slides(table, job, TilingParams(mpp=2.0, tile_size=96), overwrite=True, progress=False)
    result = _heatmap(job, run)
    assert result.exit_code == 2 and "tiled again" in result.output, result.output
    assert "embed --overwrite" in result.output
    assert not (run / f"heatmap_{SLIDE}.png").exists()


def _record_backends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import wsi_ncmi.slides.backend as backend

    seen: list[str] = []
    opened = backend.open_slide

    def open_slide(path: Any, name: str = "auto") -> Any:
        seen.append(name)
        return opened(path, name)

    monkeypatch.setattr(backend, "open_slide", open_slide)
    return seen


def test_heatmap_and_report_read_the_slide_with_its_tiling_backend(
    results_copy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_ncmi.evaluation.report import slide_view
    from wsi_ncmi.formats.bags import read_coords_attrs
    from wsi_ncmi.mil.runs import load_run_model
    from wsi_ncmi.tiling.tile import coords_path

    job, run = results_copy
    tiled_with = str(read_coords_attrs(coords_path(job, SLIDE))["backend"])
    assert tiled_with != "auto"
    seen = _record_backends(monkeypatch)
    result = _heatmap(job, run, "--out", str(tmp_path / "h.png"))
    assert result.exit_code == 0, result.output
    assert seen == [tiled_with]
    seen.clear()
    (tmp_path / "files").mkdir()
    view = slide_view(job, SLIDE, load_run_model(run), "synthetic", tmp_path / "files", 4)
    assert view.heat is not None, view.note
    assert seen == [tiled_with]


def test_heatmap_refuses_a_bad_device_before_reading_anything(tmp_path: Path) -> None:
    result = _heatmap(tmp_path / "no_job", tmp_path / "no_run", "--device", "nonsense")
    assert result.exit_code == 2 and "--device 'nonsense': not a device" in result.output, result.output


def test_heatmap_runs_the_model_on_the_device_given(
    results_copy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import wsi_ncmi.mil.runs as runs

    job, run = results_copy
    devices: list[str] = []
    loader = runs.load_run_model

    def load_run_model(folder: Path, device: str = "cpu", name: str = "model.pt") -> Any:
        devices.append(device)
        return loader(folder, device, name)

    monkeypatch.setattr(runs, "load_run_model", load_run_model)
    out = tmp_path / "h.png"
    assert _heatmap(job, run, "--out", str(out)).exit_code == 0 and devices == ["cpu"]
    result = _heatmap(job, run, "--out", str(out), "--device", "cuda")
    if torch.cuda.is_available():
        assert result.exit_code == 0 and devices == ["cpu", "cuda"], result.output
    else:
        assert result.exit_code == 2 and "CUDA is not available" in result.output, result.output
        assert devices == ["cpu"]
