"""Manifest CSVs (one row per slide): loading, validation that names every offending row, and folder listings."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from wsi_ncmi.slides.formats import find_slides

KNOWN_COLUMNS = ("slide_id", "label", "case_id", "center", "path", "mpp")
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_ID_LENGTH = 200


class ManifestError(Exception):
    """A manifest that cannot be used; the message lists every problem with its row number."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: invalid manifest:\n  " + "\n  ".join(shown) + more)


def unsafe_id_reason(slide_id: str) -> str | None:
    """Why `slide_id` cannot be a file name (None when it can)."""
    if slide_id == "":
        return "is empty"
    if slide_id in (".", ".."):
        return "is a path component ('.' or '..')"
    if _UNSAFE.search(slide_id):
        return "contains a path separator or control character"
    if slide_id.startswith(".") or slide_id.startswith("-"):
        return "starts with '.' or '-'"
    if slide_id != slide_id.strip():
        return "has leading or trailing spaces"
    if len(slide_id) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    return None


def _row(index: int) -> str:
    return f"row {index + 2}"


def label_spelling_problems(labels: pd.Series) -> list[str]:
    """Labels that differ only in case or spaces ('ITC', 'itc', 'itc '): one mistyped row would add a class."""
    spellings: dict[str, dict[str, int]] = {}
    for index, label in labels.items():
        if label.strip():
            spellings.setdefault(" ".join(label.split()).casefold(), {}).setdefault(label.strip(), index)
    return [
        "labels " + ", ".join(f"{name!r} ({_row(row)})" for name, row in sorted(names.items()))
        + " differ only in case or spaces; use one spelling"
        for names in spellings.values()
        if len(names) > 1
    ]


def validate(frame: pd.DataFrame, path: Path | str, require: Iterable[str] = (), strict: bool = False) -> list[str]:
    """Every problem in a raw manifest table (row numbers as in the file, header = row 1)."""
    require = list(require)
    problems = [f"missing required column '{c}'" for c in ["slide_id", *require] if c not in frame.columns]
    if problems:
        return problems
    if strict:
        extra = [c for c in frame.columns if c not in KNOWN_COLUMNS]
        problems += [f"unknown column '{c}' (known: {', '.join(KNOWN_COLUMNS)})" for c in extra]
    seen: dict[str, int] = {}
    for index, slide_id in enumerate(frame["slide_id"]):
        reason = unsafe_id_reason(slide_id)
        if reason:
            problems.append(f"{_row(index)}: slide_id {slide_id!r} {reason}; slide ids become file names")
        elif slide_id in seen:
            problems.append(f"{_row(index)}: duplicate slide_id {slide_id!r} (first at {_row(seen[slide_id])})")
        else:
            seen[slide_id] = index
    for column in require:
        if column == "slide_id":
            continue
        for index in frame.index[frame[column].str.strip() == ""]:
            problems.append(f"{_row(index)}: empty {column} for slide {frame.at[index, 'slide_id']!r}")
    if "mpp" in frame.columns:
        for index, value in frame["mpp"].items():
            if value.strip() == "":
                continue
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not (math.isfinite(number) and number > 0):
                problems.append(f"{_row(index)}: mpp {value!r} is not a positive number of microns per pixel")
    if "label" in frame.columns:
        problems += label_spelling_problems(frame["label"])
    if "case_id" in frame.columns and "center" in frame.columns:
        cases = frame[(frame["case_id"] != "") & (frame["center"] != "")]
        for case, group in cases.groupby("case_id", sort=True):
            centers = sorted(set(group["center"]))
            if len(centers) > 1:
                rows = ", ".join(_row(i) for i in group.index)
                problems.append(f"case_id {case!r} appears in centers {centers} ({rows}); a patient has one center")
    return problems


def read_manifest(path: Path | str, require: Iterable[str] = (), strict: bool = False) -> pd.DataFrame:
    """Load and validate a manifest; raise ManifestError naming every bad row.

    The result has string columns slide_id, case_id (defaults to slide_id), center, label, path (resolved
    against the manifest's folder) and a float column mpp (NaN where absent), in file order.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=False)
    except FileNotFoundError as exc:
        raise ManifestError(path, ["file not found"]) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(path, [f"not a readable CSV ({exc})"]) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    problems = validate(frame, path, require, strict)
    if problems:
        raise ManifestError(path, problems)
    return _normalise(frame, path.parent)


def _normalise(frame: pd.DataFrame, base: Path) -> pd.DataFrame:
    out = frame.copy()
    for column in ("label", "case_id", "center", "path", "mpp"):
        if column not in out.columns:
            out[column] = ""
    out["label"] = [label.strip() for label in out["label"]]
    out["case_id"] = [c if c else s for c, s in zip(out["case_id"], out["slide_id"], strict=True)]
    out["path"] = [str((base / p).resolve()) if p else "" for p in out["path"]]
    out["mpp"] = [float(v) if v.strip() else math.nan for v in out["mpp"]]
    return out.reset_index(drop=True)


def list_slides(folder: Path | str) -> pd.DataFrame:
    """A manifest for every slide directly in `folder`, sorted by name: slide files (slide_id = file stem, without
    `.ome`) and DICOM series folders (slide_id = folder name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(folder, ["--slides folder does not exist or is not a folder"])
    slides = find_slides(folder)
    frame = pd.DataFrame({"slide_id": [i for i, _ in slides], "path": [str(p.resolve()) for _, p in slides]}, dtype=str)
    problems = validate(frame, folder, require=["path"])
    if problems:
        raise ManifestError(folder, problems)
    return _normalise(frame, folder)


def class_names(frame: pd.DataFrame, order: Iterable[str] | None = None) -> list[str]:
    """The classes of a labelled manifest: `order` when given (every label must be in it), else sorted."""
    labels = sorted(set(frame["label"]) - {""})
    if order is None:
        return labels
    order = list(order)
    unknown = sorted(set(labels) - set(order))
    if unknown:
        raise ManifestError("manifest", [f"label(s) {unknown} are not among the configured classes {order}"])
    return order


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    """Write a manifest CSV atomically, known columns first."""
    from wsi_ncmi.atomic import atomic_path

    columns = [c for c in KNOWN_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in KNOWN_COLUMNS]
    with atomic_path(path) as tmp:
        frame[columns].to_csv(tmp, index=False)
