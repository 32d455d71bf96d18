"""The QC table's layout from the registered checks (their masks' area columns, their thresholds), and the
table's messages with it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from wsi_ncmi.formats import qc_table
from wsi_ncmi.formats.qc_table import QCArea, QCLayout
from wsi_ncmi.tiling.qc.base import mask_checks
from wsi_ncmi.tiling.qc.params import SHARED_THRESHOLDS, QCParams
from wsi_ncmi.tiling.qc.registry import CHECKS


def table_layout() -> QCLayout:
    """One area column per mask check, in registration order; the thresholds the checks and SHARED_THRESHOLDS
    name, in the order of QCParams' fields (the `qc:` section's order)."""
    shown = set(SHARED_THRESHOLDS).union(*(check.thresholds for check in CHECKS.values()))
    return QCLayout(
        tuple(QCArea(check.name, check.optional) for check in mask_checks()),
        tuple(field.name for field in fields(QCParams) if field.name in shown),
    )


def no_tiles_reason(attrs: dict[str, Any]) -> str:
    """Why a slide has no tiles: no tissue, or quality control removed it all (formats.qc_table.no_tiles_reason)."""
    return qc_table.no_tiles_reason(attrs, table_layout())


def removal_warning(attrs: dict[str, Any], n_tiles: int) -> str:
    """The warning for a slide whose QC removed more than `warn_removed` of it (formats.qc_table.removal_warning);
    '' otherwise."""
    return qc_table.removal_warning(attrs, n_tiles, table_layout())


def write_qc_table(path: Path, job: Path, slide_ids: list[str]) -> None:
    """Merge the rows of `slide_ids` into the QC table at `path`, laid out by the registered checks."""
    qc_table.write_qc_table(path, job, slide_ids, table_layout())
