"""The quality-control table JOB/status/qc.csv (one row per tiled slide, from its coords file's attributes), the
reason a slide ended with no tiles, and the warning on a slide that QC took much of. Its layout (each removal mask's
area column, the settings shown) is given by the tiler's QC checks (tiling/qc), which this layer cannot import.
Fold columns are blank for slides tiled without fold detection."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.formats.layout import QC_TABLE, JobFolder

if TYPE_CHECKING:
    from wsi_ncmi.formats.status import StatusRow


@dataclass(frozen=True)
class QCArea:
    """A removal mask's area: named `name` in messages, read from the coords attribute qc_{name}_mm2 into the
    column {name}_mm2. An optional one is missing from slides tiled without it (blank, left out of messages)."""

    name: str
    optional: bool = False

    @property
    def attr(self) -> str:
        return f"qc_{self.name}_mm2"

    @property
    def column(self) -> str:
        return f"{self.name}_mm2"


@dataclass(frozen=True)
class QCLayout:
    """The QC table's variable parts: the removal masks' areas and the settings (qc_params keys) shown, in order."""

    areas: tuple[QCArea, ...]
    thresholds: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (
            "slide_id",
            "qc",
            "tissue_before_qc_mm2",
            "tissue_mm2",
            *(area.column for area in self.areas),
            "tiles_before_qc",
            "tiles_after_qc",
            "tiles_dropped_artifact",
            "tiles_dropped_blurry",
            "focus_median",
            "warning",
            *self.thresholds,
        )

    def found(self, attrs: dict[str, Any]) -> tuple[str, str]:
        """What QC removed of a slide, for messages: the kinds ('pen/dark/fold') and their areas ('pen 1.00 mm^2,
        dark 0.20 mm^2, fold 0.50 mm^2'); an optional kind only when the slide was checked for it."""
        areas = [area for area in self.areas if not area.optional or area.attr in attrs]
        kinds = "/".join(area.name for area in areas)
        return kinds, ", ".join(f"{area.name} {float(attrs.get(area.attr, 0)):.2f} mm^2" for area in areas)


QC_WARNING = "quality control removed"
"""How every QC warning in a status row begins (a large removal, or all of a slide's tiles), for counting them."""


def no_tiles_reason(attrs: dict[str, Any], layout: QCLayout) -> str:
    """Why a slide has no tiles, for its status row and the terminal: no tissue, or quality control removed it all."""
    before = int(attrs.get("qc_tiles_before", 0))
    if before == 0:
        return (
            "no tissue found: empty coords file written (check the thumbnail; lower --min-tissue or "
            "tissue.threshold if tissue was missed)"
        )
    blurry = int(attrs.get("qc_tiles_blurry", 0))
    kinds, areas = layout.found(attrs)
    return (
        f"{QC_WARNING} all {before} tiles ({before - blurry} {kinds}, {blurry} blurry; {areas}): "
        "empty coords file written (check the thumbnail; --qc off or the qc settings in the config keep them)"
    )


def removal_warning(attrs: dict[str, Any], n_tiles: int, layout: QCLayout) -> str:
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
    kinds, areas = layout.found(attrs)
    return (
        f"{QC_WARNING} {tissue_share:.0%} of the tissue ({before_mm2 - kept_mm2:.2f} of {before_mm2:.2f} mm^2) and "
        f"{tile_share:.0%} of the tiles ({tiles - n_tiles} of {tiles}: {tiles - n_tiles - blurry} {kinds}, "
        f"{blurry} blurry; {areas}), more than qc.warn_removed ({limit:.0%}): check the thumbnail"
    )


def qc_row(slide_id: str, attrs: dict[str, Any], n_tiles: int, layout: QCLayout) -> dict[str, str]:
    """One qc.csv row from a coords file's attributes and its number of tiles."""
    row = dict.fromkeys(layout.columns, "")
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
        warning=no_tiles_reason(attrs, layout) if n_tiles == 0 else removal_warning(attrs, n_tiles, layout),
        tissue_mm2=f"{float(attrs['qc_tissue_mm2']):.4f}",
        tiles_before_qc=str(before),
        tiles_after_qc=str(n_tiles),
        tiles_dropped_artifact=str(before - blurry - n_tiles),
        tiles_dropped_blurry=str(blurry),
    )
    for area in layout.areas:
        if not area.optional or area.attr in attrs:
            row[area.column] = f"{float(attrs[area.attr]):.4f}"
    if settings != "off":
        values = json.loads(settings)
        row.update(
            {
                key: (" ".join(values[key]) if key == "pen_colors" else str(values[key]))
                for key in layout.thresholds
                if key in values
            }
        )
    return row


def _read_rows(path: Path, columns: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], dict[str, dict[str, str]]]:
    """The columns and the rows by slide_id of a QC table (only `columns`, blank where missing; without them, the
    file's own); no columns and no rows when the file does not exist."""
    from wsi_ncmi.formats.status import StatusFileError

    if not Path(path).exists():
        return columns or (), {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            keep = tuple(reader.fieldnames or ()) if columns is None else columns
            return keep, {r["slide_id"]: {k: r.get(k) or "" for k in keep} for r in reader}
    except (UnicodeDecodeError, csv.Error, KeyError) as exc:
        raise StatusFileError(
            f"{path}: not a QC table this project wrote ({type(exc).__name__}); delete it and run `wsi-ncmi tile` "
            "again (finished slides are skipped)"
        ) from exc


def _write_rows(path: Path, rows: dict[str, dict[str, str]], columns: tuple[str, ...]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({c: rows[k].get(c, "") for c in columns} for k in sorted(rows))


def write_qc_table(path: Path, job: Path, slide_ids: list[str], layout: QCLayout) -> None:
    """Merge the rows of `slide_ids` that have a coords file into the CSV at `path` (a slide's new row replaces its
    old one), atomically."""
    from wsi_ncmi.formats.bags import BagFormatError, read_coords

    _, rows = _read_rows(path, layout.columns)
    for slide_id in slide_ids:
        try:
            coords = read_coords(JobFolder(job).coords(slide_id))
        except BagFormatError:
            continue
        rows[slide_id] = qc_row(slide_id, coords.attrs, len(coords.coords), layout)
    _write_rows(Path(path), rows, layout.columns)


def merge_qc_tables(job: Path) -> None:
    """Merge JOB/status/qc.csv and every shard's qc.shard-I-of-N.csv into qc.csv (the newest file's row wins, in the
    newest file's columns, which the tiler wrote with its QC layout), as the stage status files are merged; nothing
    is read from the coords files."""
    files = JobFolder(job).status_files(QC_TABLE)
    if not files:
        return
    columns: tuple[str, ...] = ()
    rows: dict[str, dict[str, str]] = {}
    for path in sorted(files, key=lambda f: f.stat().st_mtime_ns):
        header, found = _read_rows(path)
        columns = header or columns
        rows.update(found)
    _write_rows(JobFolder(job).qc_table(), rows, columns)


def qc_warned(rows: list[StatusRow]) -> list[str]:
    """The slides (sorted) whose row warns that quality control removed more than its share of their tissue or
    tiles, or all of their tiles."""
    return sorted(row.slide_id for row in rows if QC_WARNING in row.warning and not row.failed)
