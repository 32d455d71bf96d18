"""The quality-control table JOB/status/qc.csv (one row per tiled slide, from its coords file's attributes) and the
reason a slide ended with no tiles. Fold columns are blank for slides tiled without fold detection."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from wsi_ncmi.atomic import atomic_path

THRESHOLDS = (
    "pen_colors",
    "pen_min_saturation",
    "dark_max_value",
    "min_width_um",
    "margin_um",
    "max_artifact",
    "min_sharpness",
    "fold_min_density",
    "fold_max_angle",
)
COLUMNS = (
    "slide_id",
    "qc",
    "tissue_mm2",
    "pen_mm2",
    "dark_mm2",
    "fold_mm2",
    "tiles_before_qc",
    "tiles_after_qc",
    "tiles_dropped_artifact",
    "tiles_dropped_blurry",
    *THRESHOLDS,
)


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
        f"quality control removed all {before} tiles ({before - blurry} {kinds}, {blurry} blurry; "
        f"pen {float(attrs.get('qc_pen_mm2', 0)):.2f} mm^2, dark {float(attrs.get('qc_dark_mm2', 0)):.2f} mm^2{fold}): "
        "empty coords file written (check the thumbnail; --qc off or the qc settings in the config keep them)"
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
    row.update(
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
    from wsi_ncmi.status import StatusFileError

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
    from wsi_ncmi.bags import BagFormatError, read_coords

    rows = _read_rows(path)
    for slide_id in slide_ids:
        try:
            coords = read_coords(Path(job) / "tiles" / f"{slide_id}.h5")
        except BagFormatError:
            continue
        rows[slide_id] = qc_row(slide_id, coords.attrs, len(coords.coords))
    _write_rows(Path(path), rows)


def merge_qc_tables(job: Path) -> None:
    """Merge JOB/status/qc.csv and every shard's qc.shard-I-of-N.csv into qc.csv (the newest file's row wins), as
    the stage status files are merged; nothing is read from the coords files."""
    folder = Path(job) / "status"
    files = [f for f in (folder / "qc.csv", *folder.glob("qc.shard-*-of-*.csv")) if f.exists()]
    if not files:
        return
    rows: dict[str, dict[str, str]] = {}
    for path in sorted(files, key=lambda f: f.stat().st_mtime_ns):
        rows.update(_read_rows(path))
    _write_rows(folder / "qc.csv", rows)
