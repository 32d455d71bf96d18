"""Bags for training and prediction: joined with the manifest and split, validated, cached when they fit."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.formats.bags import BagFormatError, read_bag, read_bag_attrs


class BagDataError(WsiNcmiError):
    """Inputs that cannot be trained or evaluated on; the message lists every offending slide."""


def find_bag(features: Path, slide_id: str) -> Path | None:
    """A slide's bag in a features folder: ours/TRIDENT (`{id}.h5`) or CLAM (`h5_files/{id}.h5`)."""
    for candidate in (features / f"{slide_id}.h5", features / "h5_files" / f"{slide_id}.h5"):
        if candidate.exists():
            return candidate
    return None


@dataclass
class BagSet:
    """The slides of one split: ids, labels (-1 when unknown), bag paths, and features when cached."""

    slide_ids: list[str]
    labels: np.ndarray
    paths: list[Path]
    dim: int
    cache: dict[str, np.ndarray] | None = None
    empty: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.slide_ids)

    @property
    def cached_bytes(self) -> int:
        """Memory held by the in-memory copy of the features (0 when bags are read per step)."""
        return sum(f.nbytes for f in self.cache.values()) if self.cache is not None else 0

    def features(self, index: int) -> np.ndarray:
        slide_id = self.slide_ids[index]
        if self.cache is not None:
            return self.cache[slide_id]
        return read_bag(self.paths[index], slide_id).features


def bag_encoder_attrs(path: Path) -> dict[str, Any]:
    """The encoder attributes of a bag that must match between training and prediction."""
    attrs = read_bag_attrs(path)
    keys = ("encoder", "weights", "input_size", "normalization", "stain_norm", "stain_params")
    return {k: attrs[k] for k in keys if k in attrs}


def load_bagset(
    slide_ids: list[str],
    labels: list[int],
    features: Path,
    skip_missing: bool = False,
    cache_bytes: float = 8e9,
    what: str = "training",
    check_encoders: bool = True,
) -> BagSet:
    """Resolve, check and (within `cache_bytes`) load the bags of `slide_ids`.

    Errors list every slide without a bag (unless skip_missing, which drops them with a warning), every bag whose
    feature size differs from the first, every bag with NaN or inf values (with the count of bad tiles), and
    (check_encoders) bags made by different encoders or weights.
    """
    paths, missing = {}, []
    for slide_id in slide_ids:
        path = find_bag(features, slide_id)
        if path is None:
            missing.append(slide_id)
        else:
            paths[slide_id] = path
    if missing and not skip_missing:
        raise BagDataError(
            f"{len(missing)} {what} slide(s) have no bag in {features}: {', '.join(missing[:20])}"
            f"{' ...' if len(missing) > 20 else ''}; embed them, or pass --skip-missing"
        )
    if missing:
        warnings.warn(f"skipping {len(missing)} {what} slide(s) without a bag: {', '.join(missing[:10])}", stacklevel=2)
    kept = [(s, y) for s, y in zip(slide_ids, labels, strict=True) if s in paths]
    problems, cache, dims, empty, encoders = [], {}, {}, set(), {}
    total = 0.0
    for slide_id, _ in kept:
        try:
            bag = read_bag(paths[slide_id], slide_id)
        except BagFormatError as exc:
            problems.append(str(exc))
            continue
        dims[slide_id] = bag.dim
        meta = bag.metadata
        made = (meta.get("encoder", ""), meta.get("weights", ""), meta.get("stain_norm", "none"))
        encoders.setdefault(made, []).append(slide_id)
        bad = int((~np.isfinite(bag.features)).any(axis=1).sum())
        if bad:
            problems.append(f"{paths[slide_id]}: {bad} tile(s) with NaN or inf features; embed this slide again")
        if len(bag) == 0:
            empty.add(slide_id)
        total += bag.features.nbytes
        if total <= cache_bytes:
            cache[slide_id] = bag.features
    if dims:
        reference = pd.Series(dims).mode().iloc[0]
        odd = [f"{s} ({d})" for s, d in dims.items() if d != reference]
        if odd:
            problems.append(
                f"feature size differs from {reference} for: {', '.join(odd[:20])}; all bags must come "
                "from the same encoder"
            )
    if check_encoders and len(encoders) > 1:
        listed = "; ".join(
            f"{e or 'unknown'} ({w or 'unknown weights'}, stain normalisation {n}): {', '.join(ids[:3])}"
            for (e, w, n), ids in encoders.items()
        )
        problems.append(
            f"bags come from different encoders or stain normalisations ({listed}); use bags embedded one way"
        )
    if problems:
        raise BagDataError("; ".join(problems))
    dim = int(next(iter(dims.values()))) if dims else 0
    return BagSet(
        [s for s, _ in kept],
        np.asarray([y for _, y in kept], dtype=np.int64),
        [paths[s] for s, _ in kept],
        dim,
        cache if total <= cache_bytes else None,
        empty,
    )


def join_split(manifest: pd.DataFrame, split: pd.Series, classes: list[str]) -> dict[str, pd.DataFrame]:
    """Manifest rows per split (train/val/test), with an integer `y` per row; errors name the slides at fault."""
    unknown = sorted(set(split.index) - set(manifest["slide_id"]))
    if unknown:
        raise BagDataError(
            f"{len(unknown)} slide(s) in the split file are not in the manifest: {', '.join(unknown[:20])}"
        )
    index = {c: i for i, c in enumerate(classes)}
    frame = manifest.set_index("slide_id").loc[list(split.index)].reset_index()
    frame["split"] = split.to_numpy()
    frame["y"] = [index.get(label, -1) for label in frame["label"]]
    out = {name: frame[frame["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
    train_counts = out["train"]["y"].value_counts()
    absent = [c for i, c in enumerate(classes) if train_counts.get(i, 0) == 0]
    if absent:
        raise BagDataError(f"class(es) {absent} have no training slides; check the split or the classes")
    return out


def class_weights(labels: np.ndarray, n_classes: int) -> list[float]:
    """Inverse-frequency weights normalised to mean 1 (classes absent get weight 0)."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return [float(w) for w in weights / max(weights[weights > 0].mean(), 1e-12)]


def epoch_order(labels: np.ndarray, seed: int, epoch: int, balanced: bool) -> np.ndarray:
    """The order of training bags in an epoch: a permutation, or (balanced) a class-balanced draw with
    replacement; seeded by (seed, epoch) so a resumed run sees exactly the same order."""
    rng = np.random.default_rng([seed, epoch])
    if not balanced:
        return rng.permutation(len(labels))
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), replace=True, p=weights / weights.sum())


def subsample(features: np.ndarray, max_tiles: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most `max_tiles` random tiles of a bag (training only)."""
    if max_tiles is None or len(features) <= max_tiles:
        return features
    return features[np.sort(rng.choice(len(features), size=max_tiles, replace=False))]


def step_groups(order: np.ndarray, bags_per_step: int) -> list[np.ndarray]:
    """An epoch's bags cut into optimiser steps: ceil(n / bags_per_step) consecutive groups of near-equal size, at
    most bags_per_step each. With bags_per_step >= 2 no group holds a single bag when n >= 2 (a BatchNorm neck
    needs two): where that would happen (bags_per_step 2 and n odd) there is one step fewer, and one group of 3."""
    n = len(order)
    if n == 0:
        return []
    steps = -(-n // bags_per_step)
    if bags_per_step >= 2 and steps > 1 and n < 2 * steps:
        steps -= 1
    return np.array_split(order, steps)
