"""Per-stage status tables: JOB/status/{stage}.csv, one row per slide, merged across runs."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from wsi_ncmi.atomic import atomic_path

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


def qc_warned(rows: list[StatusRow]) -> list[str]:
    """The slides (sorted) whose row warns that quality control removed more than its share of their tissue or
    tiles, or all of their tiles."""
    from wsi_ncmi.qc_report import QC_WARNING

    return sorted(row.slide_id for row in rows if QC_WARNING in row.warning and not row.failed)


def read_status(path: Path) -> list[StatusRow]:
    """Rows of a status CSV; empty when the file does not exist."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as handle:
        rows = []
        for record in csv.DictReader(handle):
            rows.append(
                StatusRow(
                    slide_id=record["slide_id"],
                    status=record["status"],
                    n_tiles=int(record["n_tiles"] or 0),
                    mpp_level0=float(record["mpp_level0"]) if record.get("mpp_level0") else None,
                    mpp_source=record.get("mpp_source", ""),
                    seconds=float(record.get("seconds") or 0),
                    error=record.get("error", ""),
                    warning=record.get("warning", ""),
                )
            )
        return rows


def write_status(path: Path, rows: list[StatusRow]) -> None:
    """Merge `rows` into the status CSV at `path` (a slide's new row replaces its old one), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with status_lock(path):
        merged = {row.slide_id: row for row in read_status(path)}
        merged.update({row.slide_id: row for row in rows if row.status != BUSY or row.slide_id not in merged})
        _write_rows(path, merged)


@contextmanager
def status_lock(path: Path, wait_s: float = 60.0) -> Iterator[None]:
    """Hold `{path}.lock` while a status file is read, merged and rewritten, so two processes never lose rows."""
    import time

    from wsi_ncmi.locks import LockedError, acquire_lock, release_lock

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
