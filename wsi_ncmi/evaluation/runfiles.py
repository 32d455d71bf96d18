"""Typed readers of the files `train` and `evaluate` write into a run folder (metrics JSON, history.csv; prediction
CSVs are read beside their writer, wsi_ncmi.evaluation.predictions): what is read is what was written, or a
RunFileError names the file, what is wrong and what to run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.core.errors import WsiNcmiError

if TYPE_CHECKING:
    import pandas as pd

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_macro_f1")
"""Columns of history.csv that the curves and reports read."""
METRIC_NUMBERS = ("macro_f1", "accuracy")
"""Numbers every metrics JSON holds (null where undefined)."""


class RunFileError(WsiNcmiError):
    """A run folder's file is damaged or not what `train`/`evaluate` write; the message names it and the fix."""


def read_csv(path: Path, dtype: Any, fix: str) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=dtype, keep_default_na=False)
    except FileNotFoundError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise RunFileError(f"{path}: empty file; {fix}") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise RunFileError(f"{path}: not a CSV this project wrote ({_short(exc)}); {fix}") from exc


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def read_metrics(path: Path, fix: str = "evaluate the run again") -> dict[str, Any]:
    """metrics_{split}.json as `evaluate` writes it: a JSON object with macro_f1 and accuracy (numbers or null)."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not a text file ({_short(exc)}); {fix}") from exc
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc}); {fix}") from exc
    if not isinstance(metrics, dict):
        raise RunFileError(f"{path}: holds a JSON {type(metrics).__name__}, not the metrics object; {fix}")
    for key in METRIC_NUMBERS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RunFileError(f"{path}: {key} is {_short(repr(value), 60)}, not a number; {fix}")
    missing = [key for key in METRIC_NUMBERS if key not in metrics]
    if missing:
        raise RunFileError(f"{path}: no {', '.join(missing)}; {fix}")
    return metrics


def read_history(path: Path, fix: str = "train the run again (wsi-ncmi train --overwrite)") -> pd.DataFrame:
    """history.csv as `train` writes it: one row per epoch with the loss and validation columns as numbers."""
    import pandas as pd

    path = Path(path)
    table = read_csv(path, None, fix)
    missing = [c for c in HISTORY_COLUMNS if c not in table.columns]
    if missing:
        raise RunFileError(f"{path}: no column(s) {', '.join(missing)}; {fix}")
    for column in table.columns:
        values = pd.to_numeric(table[column].replace("", float("nan")), errors="coerce")
        bad = values.isna() & (table[column].astype(str) != "") & (table[column].astype(str).str.lower() != "nan")
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise RunFileError(f"{path}: row {row + 2}, {column} is not a number; {fix}")
        table[column] = values
    return table
