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
