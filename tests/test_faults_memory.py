"""Reading a whole slide level at low resolution stays within its strip budget whatever the reduction factors:
memory is flat in slide size (benchmarks/lowres_memory.py measures the peak RSS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.synthetic import SlideSpec, write_slide


@pytest.fixture(scope="module")
def single_level(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("single_level") / "flat.tif"
    write_slide(SlideSpec("flat", 2000, 1500, 0.25, seed=5), path, pyramid=False)
    return path


@pytest.mark.parametrize("factors", [[7, 9], [32, 39], [5], [1, 6, 4]])
def test_strips_stay_within_the_budget_and_equal_one_whole_read(single_level: Path, factors: list[int]) -> None:
    from wsi_ncmi.slides.lowres import read_reduced

    budget = 2000 * 8
    with open_slide(single_level) as slide:
        whole = read_reduced(slide, 0, factors)
        reads: list[tuple[int, int]] = []
        original = slide.read_region

        def recorded(location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
            reads.append(size)
            return original(location, level, size)

        slide.read_region = recorded  # type: ignore[method-assign]
        strips = read_reduced(slide, 0, factors, max_read_pixels=budget)
    assert reads and max(w * h for w, h in reads) <= budget, max(reads, key=lambda s: s[0] * s[1])
    for one, other in zip(whole, strips, strict=True):
        assert one.shape == other.shape and np.array_equal(one, other)
