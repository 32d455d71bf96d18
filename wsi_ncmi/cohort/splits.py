"""Patient-grouped, label-stratified splits: hold out centres, leave one centre out, or k folds.

No case_id is ever in two splits of a fold. Each fold is written as `split_{k}.csv` (slide_id,split) plus the
CLAM-style `splits_{k}.csv`, `splits_{k}_bool.csv` and `splits_{k}_descriptor.csv`, so CLAM's loaders read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.core.errors import WsiNcmiError

SPLITS = ("train", "val", "test")
SCHEMES = ("holdout-center", "leave-one-center-out", "kfold")
PROTOCOLS = {"camelyon17": {"scheme": "holdout-center", "test_centers": ("3", "4"), "val_frac": 0.1}}


class SplitError(WsiNcmiError):
    """A split that cannot be made from this manifest; the message says why."""


@dataclass
class Fold:
    """One fold: the split of every slide, and warnings about classes too small to stratify."""

    assignment: pd.Series
    warnings: list[str] = field(default_factory=list)


def _grouped_holdout(frame: pd.DataFrame, fraction: float, seed: int, what: str) -> tuple[np.ndarray, list[str]]:
    """Boolean mask of about `fraction` of the rows, whole cases only, stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold

    if fraction <= 0 or len(frame) == 0:
        return np.zeros(len(frame), dtype=bool), []
    cases = frame["case_id"].nunique()
    largest = int(frame.groupby("label")["case_id"].nunique().max())
    if cases < 2 or largest < 2:
        raise SplitError(f"cannot draw a {what} split: every class has a single case")
    wanted = round(1 / fraction)
    n_splits = max(2, min(wanted, cases, largest))
    warnings = _small_class_warnings(frame, n_splits, what)
    if n_splits < wanted:
        warnings.append(f"too few cases for a {fraction:.0%} {what} split; holding out about 1/{n_splits} instead")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = _folds(splitter, frame)[0]
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    return mask, warnings


def _folds(splitter: object, frame: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """The splitter's folds over cases, stratified by label; scikit-learn's small-class warning is replaced by
    ours, which names the class."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(frame, frame["label"], frame["case_id"]))


def _small_class_warnings(frame: pd.DataFrame, n_splits: int, what: str) -> list[str]:
    counts = frame.groupby("label")["case_id"].nunique()
    return [
        f"class {label!r} has {n} case(s), fewer than the {n_splits} groups needed to stratify the {what} "
        "split; its proportion there will be off"
        for label, n in counts.items()
        if n < n_splits
    ]


def holdout_center(frame: pd.DataFrame, test_centers: Sequence[str], val_frac: float, seed: int) -> Fold:
    """Test = the given centres; the rest split into train/val by `val_frac`."""
    centers = {str(c) for c in test_centers}
    unknown = sorted(centers - set(frame["center"]))
    if unknown:
        raise SplitError(f"test center(s) {unknown} not in the manifest (centers: {sorted(set(frame['center']))})")
    is_test = frame["center"].isin(centers).to_numpy()
    rest = frame[~is_test]
    if rest.empty:
        raise SplitError("every slide is in a test center; nothing is left to train on")
    val, warnings = _grouped_holdout(rest, val_frac, seed, "validation")
    split = np.where(is_test, "test", "train").astype(object)
    split[np.flatnonzero(~is_test)[val]] = "val"
    return Fold(pd.Series(split, index=frame["slide_id"].to_numpy(), name="split"), warnings)


def leave_one_center_out(frame: pd.DataFrame, val_frac: float, seed: int) -> list[Fold]:
    centers = sorted(set(frame["center"]), key=_natural)
    if len(centers) < 2:
        raise SplitError("leave-one-center-out needs at least two centers in the manifest's center column")
    return [holdout_center(frame, [c], val_frac, seed) for c in centers]


def kfold(frame: pd.DataFrame, folds: int, val_frac: float, seed: int) -> list[Fold]:
    """k grouped, stratified folds as test sets; validation drawn from each fold's training part."""
    from sklearn.model_selection import StratifiedGroupKFold

    cases = frame["case_id"].nunique()
    if folds < 2 or folds > cases:
        raise SplitError(f"--folds {folds} must be between 2 and the number of cases ({cases})")
    warnings = _small_class_warnings(frame, folds, "test")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for train_index, test_index in _folds(splitter, frame):
        rest = frame.iloc[train_index]
        val, val_warnings = _grouped_holdout(rest, val_frac, seed, "validation")
        split = np.full(len(frame), "train", dtype=object)
        split[test_index] = "test"
        split[train_index[val]] = "val"
        out.append(Fold(pd.Series(split, index=frame["slide_id"].to_numpy(), name="split"), warnings + val_warnings))
    return out


def _natural(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def make_splits(
    frame: pd.DataFrame,
    scheme: str,
    test_centers: Sequence[str] = (),
    val_frac: float = 0.1,
    folds: int = 5,
    seed: int = 1,
) -> list[Fold]:
    """Folds for a validated, labelled manifest table (see `read_manifest`)."""
    if scheme not in SCHEMES:
        raise SplitError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not 0 <= val_frac < 1:
        raise SplitError(f"--val-frac must be in [0, 1), got {val_frac}")
    if (frame["label"] == "").any():
        raise SplitError("every slide needs a label to be split (stratification)")
    if scheme != "kfold" and (frame["center"] == "").any():
        rows = ", ".join(frame.loc[frame["center"] == "", "slide_id"].head(5))
        raise SplitError(f"{scheme} needs a center for every slide; missing for {rows}")
    if scheme == "holdout-center":
        if not test_centers:
            raise SplitError("holdout-center needs --test-centers, e.g. --test-centers 3,4")
        return [holdout_center(frame, test_centers, val_frac, seed)]
    if scheme == "leave-one-center-out":
        return leave_one_center_out(frame, val_frac, seed)
    return kfold(frame, folds, val_frac, seed)


def _write_csv(frame: pd.DataFrame, path: Path, index: bool) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


def write_splits(frame: pd.DataFrame, folds: list[Fold], out: Path, description: str) -> list[Path]:
    """Write every fold's files and summary.txt into `out`; returns the split_{k}.csv paths."""
    out.mkdir(parents=True, exist_ok=True)
    labels = frame.set_index("slide_id")["label"]
    classes = sorted(set(labels))
    paths, lines = [], [description, ""]
    for k, fold in enumerate(folds):
        split = fold.assignment
        path = out / f"split_{k}.csv"
        _write_csv(pd.DataFrame({"slide_id": split.index, "split": split.to_numpy()}), path, index=False)
        paths.append(path)
        columns = {name: pd.Series(split.index[split.to_numpy() == name]) for name in SPLITS}
        _write_csv(pd.DataFrame(columns), out / f"splits_{k}.csv", index=True)
        boolean = pd.DataFrame({name: split.to_numpy() == name for name in SPLITS}, index=split.index)
        _write_csv(boolean, out / f"splits_{k}_bool.csv", index=True)
        descriptor = pd.DataFrame(
            {name: [int(((split == name) & (labels[split.index] == c)).sum()) for c in classes] for name in SPLITS},
            index=classes,
        )
        _write_csv(descriptor, out / f"splits_{k}_descriptor.csv", index=True)
        counts = ", ".join(f"{name} {int((split == name).sum())}" for name in SPLITS)
        lines.append(f"fold {k}: {counts}")
        lines += [f"  warning: {w}" for w in fold.warnings]
    with atomic_path(out / "summary.txt") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return paths


def read_split(path: Path | str) -> pd.Series:
    """A split file (slide_id,split) as a Series indexed by slide_id; errors name the file and rows."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise SplitError(f"{path}: split file not found") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SplitError(f"{path}: not a readable split file ({exc}); write it with `wsi-ncmi splits`") from exc
    except IsADirectoryError as exc:
        raise SplitError(f"{path}: is a folder; give a split_K.csv file inside it") from exc
    if list(frame.columns[:2]) != ["slide_id", "split"]:
        raise SplitError(f"{path}: expected columns slide_id,split, got {', '.join(frame.columns)}")
    bad = frame.index[~frame["split"].isin(SPLITS)]
    if len(bad):
        rows = ", ".join(f"row {i + 2} ({frame.at[i, 'split']!r})" for i in bad[:10])
        raise SplitError(f"{path}: split must be train, val or test: {rows}")
    dupes = frame["slide_id"][frame["slide_id"].duplicated()]
    if len(dupes):
        raise SplitError(f"{path}: slide(s) listed twice: {', '.join(dupes.head(10))}")
    if frame.empty:
        raise SplitError(f"{path}: split file lists no slides; write it with `wsi-ncmi splits`")
    return frame.set_index("slide_id")["split"]
