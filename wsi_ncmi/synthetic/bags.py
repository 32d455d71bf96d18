"""Synthetic feature bags with a count-rule label, for learning tests without slides or encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.synthetic.spec import LESION_CLASSES

COUNT_RULE = {"negative": (0, 0), "itc": (10, 20), "micro": (40, 60), "macro": (100, 140)}
"""Positive instances per bag for each class of the synthetic bag cohort (a CAMELYON-like count rule)."""


def write_synthetic_bags(
    out: Path,
    slides: int = 400,
    dim: int = 32,
    tiles: tuple[int, int] = (160, 200),
    centers: int = 5,
    seed: int = 0,
    signal: float = 4.0,
) -> tuple[Path, Path]:
    """Feature bags whose 4-class label is the number of 'positive' instances they hold, for learning tests.

    Negative instances are N(0, I); positives are shifted by `signal` along a fixed random direction. Writes
    OUT/features/{slide_id}.h5 (our bag format, encoder 'synthetic'), OUT/manifest.csv and OUT/split.csv
    (centres 0-2 train/val by case, 3-4 test). Returns (manifest, split).
    """
    import h5py
    import pandas as pd

    from wsi_ncmi.formats.bags import FORMAT_VERSION

    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    features_dir = Path(out) / "features"
    features_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(slides):
        label = LESION_CLASSES[i % 4]
        low, high = COUNT_RULE[label]
        n_tiles = int(rng.integers(tiles[0], tiles[1] + 1))
        n_pos = int(rng.integers(low, high + 1))
        x = rng.normal(size=(n_tiles, dim)).astype(np.float32)
        x[rng.choice(n_tiles, n_pos, replace=False)] += (signal * direction).astype(np.float32)
        slide_id = f"bag_{i:04d}"
        with atomic_path(features_dir / f"{slide_id}.h5") as tmp, h5py.File(tmp, "w") as h5:
            h5["features"] = x
            h5["coords"] = np.stack([np.arange(n_tiles) * 256, np.zeros(n_tiles)], 1).astype(np.int64)
            h5["features"].attrs.update(
                {
                    "encoder": "synthetic",
                    "weights": f"seed={seed}",
                    "precision": "fp32",
                    "input_size": 0,
                    "normalization": "none",
                    "feature_dtype": "float32",
                    "coords_sha256": "",
                    "format_version": FORMAT_VERSION,
                }
            )
        center = i % centers
        rows.append({"slide_id": slide_id, "case_id": f"case_{i:04d}", "center": str(center), "label": label})
    manifest = pd.DataFrame(rows)
    split = np.where(manifest["center"].astype(int) >= 3, "test", "train").astype(object)
    train_rows = np.flatnonzero(split == "train")
    split[rng.choice(train_rows, max(4, len(train_rows) // 5), replace=False)] = "val"
    manifest_path, split_path = Path(out) / "manifest.csv", Path(out) / "split.csv"
    manifest.to_csv(manifest_path, index=False)
    pd.DataFrame({"slide_id": manifest["slide_id"], "split": split}).to_csv(split_path, index=False)
    return manifest_path, split_path
