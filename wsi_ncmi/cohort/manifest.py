"""Manifest CSVs (one row per slide): loading, validation that names every offending row, and folder listings.

The core reads and checks a manifest as plain columns (name -> list of values) with the csv module, so `tile`
starts without pandas; `read_manifest` and `list_slides` wrap the same columns in a DataFrame for the commands
that work on tables.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.slides.formats import find_slides

if TYPE_CHECKING:
    import pandas as pd

Columns = dict[str, list[Any]]
"""A manifest as plain columns in file order: every column a list of the same length."""

KNOWN_COLUMNS = ("slide_id", "label", "case_id", "center", "path", "mpp")
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_ID_LENGTH = 200


class ManifestError(WsiNcmiError):
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


def label_spelling_problems(labels: Sequence[str]) -> list[str]:
    """Labels that differ only in case or spaces ('ITC', 'itc', 'itc '): one mistyped row would add a class."""
    spellings: dict[str, dict[str, int]] = {}
    for index, label in enumerate(labels):
        if label.strip():
            spellings.setdefault(" ".join(label.split()).casefold(), {}).setdefault(label.strip(), index)
    return [
        "labels " + ", ".join(f"{name!r} ({_row(row)})" for name, row in sorted(names.items()))
        + " differ only in case or spaces; use one spelling"
        for names in spellings.values()
        if len(names) > 1
    ]


def validate(
    frame: Mapping[str, Sequence[str]], path: Path | str, require: Iterable[str] = (), strict: bool = False
) -> list[str]:
    """Every problem in a raw manifest table, given as columns of strings (a DataFrame of strings works too;
    row numbers as in the file, header = row 1)."""
    require = list(require)
    names = list(frame.keys())
    problems = [f"missing required column '{c}'" for c in ["slide_id", *require] if c not in names]
    if problems:
        return problems
    if strict:
        extra = [c for c in names if c not in KNOWN_COLUMNS]
        problems += [f"unknown column '{c}' (known: {', '.join(KNOWN_COLUMNS)})" for c in extra]
    ids = list(frame["slide_id"])
    seen: dict[str, int] = {}
    for index, slide_id in enumerate(ids):
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
        for index, value in enumerate(frame[column]):
            if value.strip() == "":
                problems.append(f"{_row(index)}: empty {column} for slide {ids[index]!r}")
    if "mpp" in names:
        for index, value in enumerate(frame["mpp"]):
            if value.strip() == "":
                continue
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not (math.isfinite(number) and number > 0):
                problems.append(f"{_row(index)}: mpp {value!r} is not a positive number of microns per pixel")
    if "label" in names:
        problems += label_spelling_problems(list(frame["label"]))
    if "case_id" in names and "center" in names:
        rows_of: dict[str, list[int]] = {}
        centers_of: dict[str, set[str]] = {}
        for index, (case, center) in enumerate(zip(frame["case_id"], frame["center"], strict=True)):
            if case != "" and center != "":
                rows_of.setdefault(case, []).append(index)
                centers_of.setdefault(case, set()).add(center)
        for case in sorted(rows_of):
            if len(centers_of[case]) > 1:
                rows = ", ".join(_row(i) for i in rows_of[case])
                problems.append(
                    f"case_id {case!r} appears in centers {sorted(centers_of[case])} ({rows}); a patient has one center"
                )
    return problems


def _read_csv(path: Path) -> Columns:
    """The CSV's columns as strings (header names stripped, blank lines skipped, short rows padded with '');
    raises ManifestError for a missing or unreadable file or a row with more fields than the header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = [row for row in csv.reader(handle) if row]
    except FileNotFoundError as exc:
        raise ManifestError(path, ["file not found"]) from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(path, [f"not a readable CSV ({exc})"]) from exc
    if not lines:
        raise ManifestError(path, ["not a readable CSV (no header row)"])
    header = [name.strip() for name in lines[0]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    problems = [f"column {name!r} appears more than once" for name in repeated]
    problems += [
        f"{_row(index)}: {len(row)} fields but the header has {len(header)}; quote values that contain commas"
        for index, row in enumerate(lines[1:])
        if len(row) > len(header)
    ]
    if problems:
        raise ManifestError(path, [f"not a readable CSV: {problem}" for problem in problems])
    rows = [row + [""] * (len(header) - len(row)) for row in lines[1:]]
    return {name: [row[i] for row in rows] for i, name in enumerate(header)}


def read_columns(path: Path | str, require: Iterable[str] = (), strict: bool = False) -> Columns:
    """Load and validate a manifest without pandas; raise ManifestError naming every bad row.

    The result has string columns slide_id, case_id (defaults to slide_id), center, label, path (resolved
    against the manifest's folder), a float column mpp (NaN where absent) and any other column as read, in
    file order.
    """
    path = Path(path)
    columns = _read_csv(path)
    problems = validate(columns, path, require, strict)
    if problems:
        raise ManifestError(path, problems)
    return _normalise(columns, path.parent)


def read_manifest(path: Path | str, require: Iterable[str] = (), strict: bool = False) -> pd.DataFrame:
    """`read_columns` as a DataFrame (the same columns and checks), for the commands that work on tables."""
    import pandas as pd

    return pd.DataFrame(read_columns(path, require, strict))


def _normalise(columns: Columns, base: Path) -> Columns:
    out = dict(columns)
    size = len(out["slide_id"])
    for column in ("label", "case_id", "center", "path", "mpp"):
        if column not in out:
            out[column] = [""] * size
    out["label"] = [label.strip() for label in out["label"]]
    out["case_id"] = [c if c else s for c, s in zip(out["case_id"], out["slide_id"], strict=True)]
    out["path"] = [str((base / p).resolve()) if p else "" for p in out["path"]]
    out["mpp"] = [float(v) if v.strip() else math.nan for v in out["mpp"]]
    return out


def slide_columns(folder: Path | str) -> Columns:
    """A manifest, as columns, for every slide directly in `folder`, sorted by name: slide files (slide_id = file
    stem, without `.ome`) and DICOM series folders (slide_id = folder name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(folder, ["--slides folder does not exist or is not a folder"])
    slides = find_slides(folder)
    columns: Columns = {"slide_id": [i for i, _ in slides], "path": [str(p.resolve()) for _, p in slides]}
    problems = validate(columns, folder, require=["path"])
    if problems:
        raise ManifestError(folder, problems)
    return _normalise(columns, folder)


def list_slides(folder: Path | str) -> pd.DataFrame:
    """`slide_columns` as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(slide_columns(folder))


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
    from wsi_ncmi.core.atomic import atomic_path

    columns = [c for c in KNOWN_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in KNOWN_COLUMNS]
    with atomic_path(path) as tmp:
        frame[columns].to_csv(tmp, index=False)
