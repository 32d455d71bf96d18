"""Per-stage status tables: JOB/status/{stage}.csv, one row per slide, merged across runs."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.core.errors import WsiNcmiError

OK, SKIPPED, FAILED, NO_TISSUE = "ok", "skipped", "failed", "no_tissue"
SUCCESS = (OK, SKIPPED, NO_TISSUE)
BUSY = "busy"
"""Another live process holds the slide's lock and is writing it: not done here, but not a failure either."""


@dataclass
class StatusRow:
    """What happened to one slide in one stage."""

    slide_id: str
    status: str
    n_tiles: int = 0
    mpp_level0: float | None = None
    mpp_source: str = ""
    seconds: float = 0.0
    error: str = ""
    warning: str = ""

    @property
    def failed(self) -> bool:
        return self.status not in SUCCESS and self.status != BUSY


COLUMNS = [f.name for f in fields(StatusRow)]



class StatusFileError(WsiNcmiError):
    """A status CSV that is not what this project writes; the message names the file, the row and the fix."""


def read_status(path: Path) -> list[StatusRow]:
    """Rows of a status CSV; empty when the file does not exist. A damaged file raises StatusFileError."""
    path = Path(path)
    if not path.exists():
        return []
    fix = "delete it and run the stage again (finished slides are skipped)"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("slide_id", "status", "n_tiles") if c not in (reader.fieldnames or [])]
            if missing:
                raise StatusFileError(f"{path}: not a status file (no column {', '.join(missing)}); {fix}")
            rows = []
            for number, record in enumerate(reader, start=2):
                try:
                    rows.append(
                        StatusRow(
                            slide_id=_text(record["slide_id"]),
                            status=_text(record["status"]),
                            n_tiles=int(record["n_tiles"] or 0),
                            mpp_level0=float(record["mpp_level0"]) if record.get("mpp_level0") else None,
                            mpp_source=record.get("mpp_source") or "",
                            seconds=float(record.get("seconds") or 0),
                            error=record.get("error") or "",
                            warning=record.get("warning") or "",
                        )
                    )
                except (TypeError, ValueError) as exc:
                    raise StatusFileError(f"{path}: row {number} is damaged ({exc}); {fix}") from exc
            return rows
    except UnicodeDecodeError as exc:
        raise StatusFileError(f"{path}: not a text file ({exc.reason}); {fix}") from exc
    except csv.Error as exc:
        raise StatusFileError(f"{path}: not a CSV file ({exc}); {fix}") from exc


def _text(value: str | None) -> str:
    if not value:
        raise ValueError("empty slide_id or status")
    return value


def write_status(path: Path, rows: list[StatusRow]) -> None:
    """Merge `rows` into the status CSV at `path` (a slide's new row replaces its old one), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with status_lock(path):
        try:
            merged = {row.slide_id: row for row in read_status(path)}
        except StatusFileError as exc:
            import warnings

            kept = path.with_name(f"{path.name}.damaged")
            os.replace(path, kept)
            warnings.warn(f"{exc.args[0].split(';')[0]}; moved to {kept.name} and written again", stacklevel=2)
            merged = {}
        merged.update({row.slide_id: row for row in rows if row.status != BUSY or row.slide_id not in merged})
        _write_rows(path, merged)


@contextmanager
def status_lock(path: Path, wait_s: float = 60.0) -> Iterator[None]:
    """Hold `{path}.lock` while a status file is read, merged and rewritten, so two processes never lose rows."""
    import time

    from wsi_ncmi.core.locks import LockedError, acquire_lock, release_lock

    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock = acquire_lock(path)
            break
        except LockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield
    finally:
        release_lock(lock)


def _write_rows(path: Path, merged: dict[str, StatusRow]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in sorted(merged.values(), key=lambda r: r.slide_id):
            record = asdict(row)
            record["seconds"] = f"{row.seconds:.3f}"
            record["mpp_level0"] = "" if row.mpp_level0 is None else f"{row.mpp_level0:.6g}"
            writer.writerow(record)
