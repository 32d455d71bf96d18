"""The tiling stage: one slide -> tissue mask -> tile coordinates in physical units -> coords file + thumbnail."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.core.config import check_settings
from wsi_ncmi.core.locks import LockedError, slide_lock
from wsi_ncmi.formats.bags import BagFormatError, read_coords, write_coords
from wsi_ncmi.formats.layout import STATUS, THUMBNAILS, TILES, JobFolder, coords_path, thumbnail_path
from wsi_ncmi.formats.status import BUSY, FAILED, NO_TISSUE, OK, SKIPPED, StatusRow
from wsi_ncmi.slides.backend import BACKENDS, SlideError, open_slide
from wsi_ncmi.slides.lowres import LowRes, read_lowres, read_mask_and_thumbnail
from wsi_ncmi.slides.mpp import MppError, resolve_mpp
from wsi_ncmi.tiling.detect import tissue_after_qc
from wsi_ncmi.tiling.grid import (
    EDGES,
    GRIDS,
    TileGeometry,
    added_starts,
    grid_coords,
    tissue_fractions,
    tissue_grid_coords,
)
from wsi_ncmi.tiling.overlay import draw_thumbnail, save_image
from wsi_ncmi.tiling.qc import (
    QCParams,
    QCResult,
    SlideTiles,
    judge_tiles,
    no_tiles_reason,
    removal_warning,
    select_tiles,
    write_qc_table,
)
from wsi_ncmi.tiling.tissue import TissueParams


@dataclass(frozen=True)
class TilingParams:
    """Settings of a tiling run (configs/tiling.yaml); tiles are defined in physical units, never by level."""

    mpp: float = 0.5
    tile_size: int = 256
    overlap: int = 0
    min_tissue: float = 0.1
    grid: str = "slide"
    edges: str = "inward"
    backend: str = "auto"
    assume_mpp: float | None = None
    thumbnails: bool = True
    thumbnail_px: int = 1024
    associated_images: bool = True
    tissue: TissueParams = field(default_factory=TissueParams)
    qc: QCParams = field(default_factory=QCParams)

    def __post_init__(self) -> None:
        problems = []
        if not (self.mpp > 0 and math.isfinite(self.mpp)):
            problems.append(f"mpp must be a positive number of microns per pixel, got {self.mpp}")
        if self.tile_size < 8:
            problems.append(f"tile_size must be at least 8 px, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            problems.append(f"overlap must be in [0, tile_size), got {self.overlap}")
        if not 0.0 <= self.min_tissue <= 1.0:
            problems.append(f"min_tissue must be a fraction in [0, 1], got {self.min_tissue}")
        if self.grid not in GRIDS:
            problems.append(f"grid must be one of {', '.join(GRIDS)}, got {self.grid!r}")
        if self.edges not in EDGES:
            problems.append(f"edges must be one of {', '.join(EDGES)}, got {self.edges!r}")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not isinstance(self.thumbnails, bool) or not isinstance(self.associated_images, bool):
            problems.append("thumbnails and associated_images must be true or false")
        if not (isinstance(self.thumbnail_px, int) and self.thumbnail_px >= 64):
            problems.append(f"thumbnail_px must be an integer of at least 64, got {self.thumbnail_px!r}")
        if self.assume_mpp is not None and not self.assume_mpp > 0:
            problems.append(f"assume_mpp must be positive, got {self.assume_mpp}")
        threshold = self.tissue.threshold
        if threshold != "otsu" and not (isinstance(threshold, int) and 0 <= threshold <= 255):
            problems.append(f"tissue.threshold must be 'otsu' or an integer 0-255, got {threshold!r}")
        if not self.tissue.mask_mpp > 0:
            problems.append(f"tissue.mask_mpp must be positive, got {self.tissue.mask_mpp}")
        problems += self.qc.problems()
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TilingParams:
        """Build from a nested mapping (YAML config); unknown keys are an error naming them."""
        values = dict(values)
        tissue = values.pop("tissue", {}) or {}
        qc = values.pop("qc", {}) or {}
        unknown = sorted(
            set(values) - set(cls.__dataclass_fields__)
            | set(tissue) - set(TissueParams.__dataclass_fields__)
            | {f"qc.{key}" for key in set(qc) - set(QCParams.__dataclass_fields__)}
        )
        if unknown:
            raise ValueError(f"unknown tiling setting(s): {', '.join(unknown)}")
        check_settings(values, cls, "tiling")
        check_settings(tissue, TissueParams, "tiling.tissue")
        check_settings(qc, QCParams, "tiling.qc")
        return cls(**values, tissue=TissueParams(**tissue), qc=QCParams(**qc))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change a slide's output; a finished output is reused only when they match."""
        return {
            "mpp_target": self.mpp,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "min_tissue": self.min_tissue,
            "grid": self.grid,
            "edges": self.edges,
            "tissue_params": json.dumps(self.tissue.to_dict(), sort_keys=True),
            "qc_params": self.qc.fingerprint(),
        }


@dataclass(frozen=True)
class TileTask:
    """One slide to tile: everything a worker process needs, and nothing it must share."""

    slide_id: str
    path: str
    job: str
    params: TilingParams
    manifest_mpp: float | None = None
    overwrite: bool = False


def _differences(attrs: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    out = []
    for key, value in expected.items():
        old = attrs.get(key)
        same = (
            math.isclose(float(old), float(value), rel_tol=1e-9)
            if isinstance(value, float | int) and isinstance(old, float | int)
            else old == value
        )
        if not same:
            out.append(f"{key} was {old!r}, now {value!r}")
    return out


def _existing(task: TileTask) -> StatusRow | None:
    """A row for a slide whose outputs already exist (skipped, or failed on a parameter change); None to (re)do it."""
    path = coords_path(Path(task.job), task.slide_id)
    if task.overwrite or not path.exists():
        return None
    try:
        existing = read_coords(path)
    except BagFormatError:
        return None
    attrs = {"grid": "slide", "qc_params": "off", **existing.attrs}
    attrs.setdefault("edges", "overhang" if attrs.get("edge_tiles") else "none")
    expected = task.params.fingerprint()
    if task.manifest_mpp is not None and not math.isnan(task.manifest_mpp):
        expected["mpp_level0"] = float(task.manifest_mpp)
    changed = _differences(attrs, expected)
    if changed:
        return StatusRow(
            task.slide_id,
            FAILED,
            error=f"outputs exist with other settings ({'; '.join(changed)}); "
            "pass --overwrite to redo this slide or use another --out",
        )
    if task.params.thumbnails and not thumbnail_path(Path(task.job), task.slide_id).exists():
        return None
    return StatusRow(
        task.slide_id,
        SKIPPED,
        n_tiles=len(existing.coords),
        mpp_level0=float(attrs["mpp_level0"]),
        mpp_source=str(attrs["mpp_source"]),
        warning=_qc_warning(attrs, len(existing.coords)),
    )


def tile_slide(task: TileTask) -> StatusRow:
    """Tile one slide and write its coords file and thumbnail; never raises for a bad slide, returns its row."""
    start = time.perf_counter()
    try:
        row = _existing(task)
        if row is None:
            job = JobFolder(task.job)
            for folder in (job.tiles, job.thumbnails):
                folder.mkdir(exist_ok=True)
            with slide_lock(coords_path(Path(task.job), task.slide_id)):
                row = _tile(task)
    except LockedError as exc:
        row = StatusRow(task.slide_id, BUSY, warning=str(exc))
    except (SlideError, MppError) as exc:
        row = StatusRow(task.slide_id, FAILED, error=str(exc).replace("\n", " "))
    except Exception as exc:
        row = StatusRow(task.slide_id, FAILED, error=f"{task.path}: {type(exc).__name__}: {exc}".replace("\n", " "))
    return replace(row, seconds=time.perf_counter() - start)


@dataclass
class TilingResult:
    """What tiling found on one slide, before it is written."""

    coords: np.ndarray
    tissue_fraction: np.ndarray
    mask: np.ndarray
    lowres_image: np.ndarray
    lowres_scale: float
    geometry: TileGeometry
    attrs: dict[str, Any]
    warning: str
    qc: QCResult | None = None
    sharpness: np.ndarray | None = None
    thumbnail: LowRes | None = None
    associated: dict[str, np.ndarray] = field(default_factory=dict)
    blurry_coords: np.ndarray | None = None
    """Level-0 corners of the tiles QC dropped as out of focus (for the thumbnail); None without QC."""


def _adds_tissue(
    grid: np.ndarray, mask: np.ndarray, scale: float, width: int, height: int, size0: int, step0: int, minimum: float
) -> np.ndarray:
    """Which tiles of an 'inward' slide grid to consider: every lattice tile, and a tile moved in to end at the
    slide's edge only when the strip it adds beyond the lattice holds at least `minimum` tissue (else it would
    repeat its neighbour). Decided before quality control, so QC's counts never include such repeats."""
    starts = added_starts(grid, width, height, size0, step0)
    moved = (starts != grid).any(axis=1)
    eligible = np.ones(len(grid), dtype=bool)
    if moved.any():
        added = tissue_fractions(mask, scale, grid[moved], size0, starts[moved])
        eligible[moved] = (added >= minimum) & (added > 0)
    return eligible




def tile_geometry(task: TileTask) -> TilingResult:
    """Open the slide, resolve its resolution, find the tissue and the tiles; writes nothing."""
    params = task.params
    with open_slide(task.path, params.backend) as slide:
        mpp = resolve_mpp(slide.properties, task.manifest_mpp, params.assume_mpp)
        geometry = TileGeometry.build(params.tile_size, params.mpp, params.overlap, mpp.value, slide.level_downsamples)
        thumbnail = None
        if params.thumbnails:
            lowres, thumbnail = read_mask_and_thumbnail(slide, mpp.value, params.tissue.mask_mpp, params.thumbnail_px)
        else:
            lowres = read_lowres(slide, mpp.value, params.tissue.mask_mpp)
        associated = slide.associated_images() if params.thumbnails and params.associated_images else {}
        width, height = slide.dimensions
        backend = slide.backend
        mask_mpp = mpp.value * lowres.scale
        mask, qc = tissue_after_qc(lowres.image, mask_mpp, params.tissue, params.qc)
        size0, step0 = geometry.size_level0, geometry.step_level0
        if params.grid == "tissue":
            grid = tissue_grid_coords(mask, lowres.scale, width, height, size0, step0, params.edges)
        else:
            grid = grid_coords(width, height, size0, step0, params.edges)
        if params.grid == "slide" and params.edges == "inward":
            grid = grid[_adds_tissue(grid, mask, lowres.scale, width, height, size0, step0, params.min_tissue)]
        chosen = select_tiles(mask, qc, params.qc, lowres.scale, mask_mpp, grid, size0, params.min_tissue)
        if qc is not None:
            tiles = SlideTiles(slide, grid, size0, mpp.value, mask, lowres.scale)
            chosen = judge_tiles(params.qc, chosen, tiles)
    keep = chosen.keep
    attrs = {
        **params.fingerprint(),
        "edge_tiles": params.edges == "overhang",
        "patch_size": geometry.read_size,
        "patch_level": geometry.read_level,
        "patch_size_level0": geometry.size_level0,
        "level0_magnification": 10.0 / mpp.value,
        "target_magnification": 10.0 / params.mpp,
        "level0_width": width,
        "level0_height": height,
        "name": task.slide_id,
        "step_level0": geometry.step_level0,
        "mpp_level0": mpp.value,
        "mpp_source": mpp.source,
        "read_level": geometry.read_level,
        "read_downsample": geometry.size_level0 / geometry.read_size,
        "slide_path": str(task.path),
        "backend": backend,
        **chosen.summary,
    }
    sharpness = None if chosen.sharpness is None else chosen.sharpness[keep]
    fractions = chosen.tissue_fraction[keep]
    return TilingResult(
        grid[keep],
        fractions,
        mask,
        lowres.image,
        lowres.scale,
        geometry,
        attrs,
        mpp.warning,
        qc,
        sharpness,
        thumbnail=thumbnail,
        associated=associated,
        blurry_coords=None if chosen.blurry is None else grid[chosen.blurry],
    )


def write_thumbnails(
    job: Path, slide_id: str, result: TilingResult, removals: dict[str, np.ndarray] | None = None
) -> None:
    """Save the slide's thumbnail (tissue contour, tiles, `removals` shaded: name -> mask at the tissue mask's
    resolution, tiles dropped as blurry outlined) as JOB/thumbnails/{slide_id}.jpg, and its label and macro
    images beside it."""
    if result.thumbnail is not None:
        dropped = None if result.blurry_coords is None else {"blurry": result.blurry_coords}
        pixels = draw_thumbnail(
            result.thumbnail.image,
            result.thumbnail.scale,
            result.mask,
            result.lowres_scale,
            result.coords,
            result.geometry.size_level0,
            removals,
            dropped,
        )
        save_image(pixels, thumbnail_path(job, slide_id))
    for name, image in result.associated.items():
        save_image(image, JobFolder(job).associated(slide_id, name))


def _qc_warning(attrs: dict[str, Any], n_tiles: int) -> str:
    """What a slide's status row says of QC: why it has no tiles, or that QC removed more than its share."""
    return no_tiles_reason(attrs) if not n_tiles else removal_warning(attrs, n_tiles)


def _tile(task: TileTask) -> StatusRow:
    result = tile_geometry(task)
    job = Path(task.job)
    extra = {} if result.sharpness is None else {"qc_sharpness": result.sharpness}
    write_coords(coords_path(job, task.slide_id), result.coords, result.tissue_fraction, result.attrs, extra)
    if task.params.thumbnails:
        removals = None if result.qc is None else dict(result.qc.masks)
        write_thumbnails(job, task.slide_id, result, removals)
    n = len(result.coords)
    status = OK if n else NO_TISSUE
    warning = "; ".join(filter(None, [result.warning, _qc_warning(result.attrs, n)]))
    return StatusRow(
        task.slide_id,
        status,
        n_tiles=n,
        mpp_level0=result.attrs["mpp_level0"],
        mpp_source=result.attrs["mpp_source"],
        warning=warning,
    )


def tile_slides(
    slides: Any,
    job: Path,
    params: TilingParams,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    scheduler: str | None = None,
) -> list[StatusRow]:
    """Tile every slide of a validated manifest (its columns, or a DataFrame; or of one shard of it) into JOB; write
    the status CSV (JOB/status/tile.csv, or tile.shard-I-of-N.csv) and the QC table (qc.csv likewise); return the
    rows."""
    from wsi_ncmi.batch.runner import run_slides
    from wsi_ncmi.core.faults import Interrupted
    from wsi_ncmi.formats.jobdir import prepare_job
    from wsi_ncmi.formats.shards import shard_of
    from wsi_ncmi.formats.status import write_status

    folder = JobFolder(prepare_job(job, (TILES, THUMBNAILS, STATUS)))
    job = folder.root
    tasks = [
        TileTask(str(slide_id), str(path), str(job), params, None if math.isnan(mpp) else float(mpp), overwrite)
        for slide_id, path, mpp in zip(slides["slide_id"], slides["path"], slides["mpp"], strict=True)
        if shard is None or shard_of(slide_id, shard[1]) == shard[0]
    ]
    ids = [t.slide_id for t in tasks]
    try:
        rows = run_slides(tile_slide, tasks, ids, workers, "tiling", progress, executor, scheduler)
    except Interrupted as stop:
        write_status(folder.status_file("tile", shard), stop.rows)
        raise
    write_status(folder.status_file("tile", shard), rows)
    write_qc_table(folder.qc_table(shard), job, [row.slide_id for row in rows if not row.failed])
    return rows
