"""The quality-control table JOB/status/qc.csv (one row per tiled slide, from its coords file's attributes), the
reason a slide ended with no tiles, and the warning on a slide that QC took much of. Fold columns are blank for
slides tiled without fold detection."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.formats.layout import QC_TABLE, JobFolder

if TYPE_CHECKING:
    from wsi_ncmi.formats.status import StatusRow

THRESHOLDS = (
    "pen_colors",
    "pen_min_saturation",
    "dark_max_value",
    "min_width_um",
    "margin_um",
    "max_artifact",
    "blur",
    "focus_mpp",
    "min_sharpness",
    "blur_mad",
    "blur_ratio",
    "warn_removed",
    "fold_min_density",
    "fold_max_angle",
)
COLUMNS = (
    "slide_id",
    "qc",
    "tissue_before_qc_mm2",
    "tissue_mm2",
    "pen_mm2",
    "dark_mm2",
    "fold_mm2",
    "tiles_before_qc",
    "tiles_after_qc",
    "tiles_dropped_artifact",
    "tiles_dropped_blurry",
    "focus_median",
    "warning",
    *THRESHOLDS,
)
QC_WARNING = "quality control removed"
"""How every QC warning in a status row begins (a large removal, or all of a slide's tiles), for counting them."""


def no_tiles_reason(attrs: dict[str, Any]) -> str:
    """Why a slide has no tiles, for its status row and the terminal: no tissue, or quality control removed it all."""
    before = int(attrs.get("qc_tiles_before", 0))
    if before == 0:
        return (
            "no tissue found: empty coords file written (check the thumbnail; lower --min-tissue or "
            "tissue.threshold if tissue was missed)"
        )
    blurry = int(attrs.get("qc_tiles_blurry", 0))
    kinds, fold = (
        ("pen/dark/fold", f", fold {float(attrs['qc_fold_mm2']):.2f} mm^2")
        if "qc_fold_mm2" in attrs
        else ("pen/dark", "")
    )
    return (
        f"{QC_WARNING} all {before} tiles ({before - blurry} {kinds}, {blurry} blurry; "
        f"pen {float(attrs.get('qc_pen_mm2', 0)):.2f} mm^2, dark {float(attrs.get('qc_dark_mm2', 0)):.2f} mm^2{fold}): "
        "empty coords file written (check the thumbnail; --qc off or the qc settings in the config keep them)"
    )


def removal_warning(attrs: dict[str, Any], n_tiles: int) -> str:
    """The warning for a slide whose QC removed more than `warn_removed` of its tissue (against the tissue mask
    with QC off, blurry tiles' tissue included) or of its tiles, naming what and how much; '' otherwise."""
    settings = str(attrs.get("qc_params", "off"))
    if settings == "off" or "qc_tissue_before_mm2" not in attrs:
        return ""
    limit = float(json.loads(settings).get("warn_removed", 0.25))
    before_mm2 = float(attrs["qc_tissue_before_mm2"])
    kept_mm2 = max(float(attrs["qc_tissue_mm2"]) - float(attrs.get("qc_blurry_mm2", 0.0)), 0.0)
    tissue_share = 1.0 - kept_mm2 / before_mm2 if before_mm2 > 0 else 0.0
    tiles, blurry = int(attrs["qc_tiles_before"]), int(attrs["qc_tiles_blurry"])
    tile_share = (tiles - n_tiles) / tiles if tiles else 0.0
    if max(tissue_share, tile_share) <= limit:
        return ""
    fold = f", fold {float(attrs['qc_fold_mm2']):.2f} mm^2" if "qc_fold_mm2" in attrs else ""
    return (
        f"{QC_WARNING} {tissue_share:.0%} of the tissue ({before_mm2 - kept_mm2:.2f} of {before_mm2:.2f} mm^2) and "
        f"{tile_share:.0%} of the tiles ({tiles - n_tiles} of {tiles}: {tiles - n_tiles - blurry} pen/dark"
        f"{'/fold' if fold else ''}, {blurry} blurry; pen {float(attrs['qc_pen_mm2']):.2f} mm^2, dark "
        f"{float(attrs['qc_dark_mm2']):.2f} mm^2{fold}), more than qc.warn_removed ({limit:.0%}): check the thumbnail"
    )


def qc_row(slide_id: str, attrs: dict[str, Any], n_tiles: int) -> dict[str, str]:
    """One qc.csv row from a coords file's attributes and its number of tiles."""
    row = dict.fromkeys(COLUMNS, "")
    row["slide_id"] = slide_id
    settings = attrs.get("qc_params", "off")
    row["qc"] = "off" if settings == "off" else "on"
    if "qc_tiles_before" not in attrs:
        return row
    before, blurry = int(attrs["qc_tiles_before"]), int(attrs["qc_tiles_blurry"])
    before_mm2 = attrs.get("qc_tissue_before_mm2")
    row.update(
        tissue_before_qc_mm2="" if before_mm2 is None else f"{float(before_mm2):.4f}",
        focus_median=f"{float(attrs['qc_focus_median']):.2f}" if "qc_focus_median" in attrs else "",
        warning=no_tiles_reason(attrs) if n_tiles == 0 else removal_warning(attrs, n_tiles),
        tissue_mm2=f"{float(attrs['qc_tissue_mm2']):.4f}",
        pen_mm2=f"{float(attrs['qc_pen_mm2']):.4f}",
        dark_mm2=f"{float(attrs['qc_dark_mm2']):.4f}",
        fold_mm2=f"{float(attrs['qc_fold_mm2']):.4f}" if "qc_fold_mm2" in attrs else "",
        tiles_before_qc=str(before),
        tiles_after_qc=str(n_tiles),
        tiles_dropped_artifact=str(before - blurry - n_tiles),
        tiles_dropped_blurry=str(blurry),
    )
    if settings != "off":
        values = json.loads(settings)
        row.update(
            {
                key: (" ".join(values[key]) if key == "pen_colors" else str(values[key]))
                for key in THRESHOLDS
                if key in values
            }
        )
    return row


def _read_rows(path: Path) -> dict[str, dict[str, str]]:
    """The rows of a QC table by slide_id (only its known columns); empty when the file does not exist."""
    from wsi_ncmi.formats.status import StatusFileError

    if not Path(path).exists():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {r["slide_id"]: {k: r.get(k) or "" for k in COLUMNS} for r in csv.DictReader(handle)}
    except (UnicodeDecodeError, csv.Error, KeyError) as exc:
        raise StatusFileError(
            f"{path}: not a QC table this project wrote ({type(exc).__name__}); delete it and run `wsi-ncmi tile` "
            "again (finished slides are skipped)"
        ) from exc


def _write_rows(path: Path, rows: dict[str, dict[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows))


def write_qc_table(path: Path, job: Path, slide_ids: list[str]) -> None:
    """Merge the rows of `slide_ids` that have a coords file into the CSV at `path` (a slide's new row replaces its
    old one), atomically."""
    from wsi_ncmi.formats.bags import BagFormatError, read_coords

    rows = _read_rows(path)
    for slide_id in slide_ids:
        try:
            coords = read_coords(JobFolder(job).coords(slide_id))
        except BagFormatError:
            continue
        rows[slide_id] = qc_row(slide_id, coords.attrs, len(coords.coords))
    _write_rows(Path(path), rows)


def merge_qc_tables(job: Path) -> None:
    """Merge JOB/status/qc.csv and every shard's qc.shard-I-of-N.csv into qc.csv (the newest file's row wins), as
    the stage status files are merged; nothing is read from the coords files."""
    files = JobFolder(job).status_files(QC_TABLE)
    if not files:
        return
    rows: dict[str, dict[str, str]] = {}
    for path in sorted(files, key=lambda f: f.stat().st_mtime_ns):
        rows.update(_read_rows(path))
    _write_rows(JobFolder(job).qc_table(), rows)


def qc_warned(rows: list[StatusRow]) -> list[str]:
    """The slides (sorted) whose row warns that quality control removed more than its share of their tissue or
    tiles, or all of their tiles."""
    return sorted(row.slide_id for row in rows if QC_WARNING in row.warning and not row.failed)
