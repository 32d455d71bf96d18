"""QuPath GeoJSON: one FeatureCollection per slide, in level-0 pixel coordinates, for drag-and-drop import.

Each tile is a detection (`properties.objectType = "detection"`) whose square is exactly the coords file's tile, with
`properties.measurements` holding its tissue fraction, every other per-tile float dataset of the coords file (QC
scores, for example) and, with a run, its attention and the run head's class probabilities of the tile alone.
The tissue is one annotation: the tiler's mask (QC's removals taken out) recomputed from the slide with the coords
file's settings (the mask itself is not stored), or the union of the tiles when the slide cannot be read. The
slide-level prediction is in the collection's `properties` and on the tissue annotation.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.core.errors import WsiNcmiError

if TYPE_CHECKING:
    from wsi_ncmi.mil.train import Trained

TISSUE_COLOR = [0, 170, 0]
NAMESPACE = uuid.UUID("6f1c9a52-3a43-4c1e-9a54-5b0d8f0f3b21")
"""Object ids are uuid5(NAMESPACE, slide/object), so the same export gives the same ids."""


class ExportError(WsiNcmiError):
    """A slide that cannot be exported; the message names the file and the fix."""


@dataclass(frozen=True)
class SlidePrediction:
    """A run's view of one slide: class probabilities, predicted class, tile attention and tile probabilities."""

    classes: list[str]
    probabilities: np.ndarray
    predicted: str
    attention: np.ndarray | None
    tile_probabilities: np.ndarray | None
    run: str


def tile_datasets(path: Path, n_tiles: int) -> dict[str, np.ndarray]:
    """Every 1-D float dataset of length n_tiles in a coords file (tissue_fraction, QC scores, ...), by name."""
    import h5py

    out = {}
    with h5py.File(path, "r") as h5:
        for name, item in h5.items():
            if isinstance(item, h5py.Dataset) and item.shape == (n_tiles,) and item.dtype.kind == "f":
                out[name] = np.asarray(item[:], dtype=np.float64)
    return out


def _square(x: int, y: int, size: int) -> list[list[int]]:
    """A tile's closed ring, counter-clockwise in (x, y) numbers (GeoJSON's right-hand rule)."""
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]


def _number(value: float) -> float | None:
    """A JSON number (6 significant digits) or None for NaN/inf, which JSON cannot hold."""
    return float(f"{value:.6g}") if np.isfinite(value) else None


def _ident(slide_id: str, what: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{slide_id}/{what}"))


def tissue_polygons(attrs: dict[str, Any], coords: np.ndarray) -> tuple[list[list[list[list[float]]]], str]:
    """Tissue polygons in level-0 pixels and their source: the tiler's mask (QC's removals taken out) recomputed
    from the slide, or, when the slide cannot be read, the union of the tiles."""
    from wsi_ncmi.export.contours import mask_polygons, union_polygons
    from wsi_ncmi.formats.bags import CoordsGeometry
    from wsi_ncmi.slides.backend import SlideError, open_slide
    from wsi_ncmi.slides.lowres import read_lowres
    from wsi_ncmi.tiling.detect import tissue_after_qc
    from wsi_ncmi.tiling.qc import QCParams
    from wsi_ncmi.tiling.tissue import TissueParams

    geometry = CoordsGeometry(attrs)
    try:
        params = TissueParams(**json.loads(str(attrs["tissue_params"])))
        qc = QCParams.from_fingerprint(str(attrs.get("qc_params", "off")))
        mpp0 = geometry.mpp_level0
        with open_slide(geometry.slide_path, geometry.backend) as slide:
            low = read_lowres(slide, mpp0, params.mask_mpp)
        mask, _ = tissue_after_qc(low.image, mpp0 * low.scale, params, qc)
        polygons = [[[[x * low.scale, y * low.scale] for x, y in ring] for ring in p] for p in mask_polygons(mask)]
        return polygons, "tissue mask"
    except (SlideError, OSError, KeyError, TypeError, ValueError):
        size = geometry.size_level0
        return [[[list(v) for v in ring] for ring in p] for p in union_polygons(coords, size)], "tile union"


def slide_collection(
    coords_file: Path, prediction: SlidePrediction | None = None, with_tissue: bool = True
) -> dict[str, Any]:
    """The GeoJSON FeatureCollection of one slide (empty features when the slide has no tiles)."""
    from wsi_ncmi.formats.bags import read_coords

    tiles = read_coords(coords_file)
    attrs, coords = tiles.attrs, tiles.coords
    slide_id = str(attrs.get("name") or Path(coords_file).stem)
    size = tiles.geometry.size_level0
    measures = tile_datasets(coords_file, len(coords))
    if prediction is not None and len(coords):
        if prediction.attention is not None:
            attention = prediction.attention
            measures["attention"] = attention
            measures["attention_percentile"] = np.argsort(np.argsort(attention)) / max(len(attention) - 1, 1)
        if prediction.tile_probabilities is not None:
            for k, name in enumerate(prediction.classes):
                measures[f"p_{name}"] = prediction.tile_probabilities[:, k]
    properties: dict[str, Any] = {
        "slide_id": slide_id,
        "coordinates": "level-0 pixels, origin top-left",
        "tile_size_level0": size,
        "mpp_level0": tiles.geometry.mpp_level0,
        "n_tiles": len(coords),
    }
    if prediction is not None:
        properties["prediction"] = {
            "run": prediction.run,
            "predicted": prediction.predicted,
            **{f"p_{c}": _number(p) for c, p in zip(prediction.classes, prediction.probabilities, strict=True)},
        }
    features: list[dict[str, Any]] = []
    if len(coords):
        names = sorted(measures)
        for i, (x, y) in enumerate(coords.tolist()):
            features.append(
                {
                    "type": "Feature",
                    "id": _ident(slide_id, f"tile/{i}"),
                    "geometry": {"type": "Polygon", "coordinates": [_square(x, y, size)]},
                    "properties": {
                        "objectType": "detection",
                        "name": f"tile {i}",
                        "measurements": {n: _number(measures[n][i]) for n in names},
                    },
                }
            )
        if with_tissue:
            polygons, source = tissue_polygons(attrs, coords)
            properties["tissue_source"] = source
            if polygons:
                features.insert(0, _tissue_feature(slide_id, polygons, source, prediction))
    return {"type": "FeatureCollection", "properties": properties, "features": features}


def _tissue_feature(
    slide_id: str, polygons: list[Any], source: str, prediction: SlidePrediction | None
) -> dict[str, Any]:
    geometry = (
        {"type": "Polygon", "coordinates": polygons[0]}
        if len(polygons) == 1
        else {"type": "MultiPolygon", "coordinates": polygons}
    )
    properties: dict[str, Any] = {
        "objectType": "annotation",
        "name": f"Tissue ({source})",
        "classification": {"name": "Tissue", "color": TISSUE_COLOR},
        "isLocked": True,
    }
    if prediction is not None:
        properties["name"] = f"Tissue: predicted {prediction.predicted} ({source})"
        properties["measurements"] = {
            f"slide p_{c}": _number(p) for c, p in zip(prediction.classes, prediction.probabilities, strict=True)
        }
    return {"type": "Feature", "id": _ident(slide_id, "tissue"), "geometry": geometry, "properties": properties}


def predict_slide(
    trained: Trained, bag_path: Path, coords: np.ndarray, run: Path, coords_file: Path | None = None
) -> SlidePrediction:
    """The run's prediction for one slide's bag, which must match the run (encoder, weights, stain normalisation,
    finite values) and whose coordinates must equal the coords file's."""
    from wsi_ncmi.evaluation.heatmap import tile_scores
    from wsi_ncmi.formats.bags import BagFormatError
    from wsi_ncmi.mil.runs import run_bag

    try:
        bag = run_bag(trained, bag_path, coords_file)
    except BagFormatError as exc:
        raise ExportError(str(exc)) from exc
    if not np.array_equal(bag.coords, coords):
        raise ExportError(f"{bag_path}: its tiles differ from the coords file's; embed the slide again")
    if len(bag) == 0:
        return SlidePrediction(
            trained.classes, trained.prior, trained.classes[int(np.argmax(trained.prior))], None, None, str(run)
        )
    scores = tile_scores(trained, bag.features)
    return SlidePrediction(
        trained.classes, scores.probabilities, scores.predicted, scores.attention, scores.tile_probabilities, str(run)
    )


def write_collection(collection: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(collection, separators=(",", ":")) + "\n")


@dataclass(frozen=True)
class Exported:
    """One slide's outcome: ok, skipped (file exists) or failed, with the file or the error."""

    slide_id: str
    status: str
    detail: str


def export_job(
    job: Path,
    out: Path,
    run: Path | None = None,
    slides: list[str] | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> list[Exported]:
    """Write OUT/{slide_id}.geojson for every tiled slide of JOB (or `slides`); one bad slide never stops the rest."""
    from rich.progress import Progress

    from wsi_ncmi.cohort.manifest import unsafe_id_reason
    from wsi_ncmi.evaluation.evaluate import run_config
    from wsi_ncmi.formats.bags import BagFormatError, read_coords
    from wsi_ncmi.formats.layout import JobFolder
    from wsi_ncmi.mil.runs import load_run_model

    folder, out = JobFolder(job), Path(out)
    if not folder.tiles.is_dir():
        raise ExportError(f"{folder.root}: no tiles/ folder; run `wsi-ncmi tile --out {folder.root}` first")
    for slide_id in slides or []:
        reason = unsafe_id_reason(slide_id)
        if reason is not None:
            raise ExportError(f"--slide {slide_id!r}: {reason}; give a slide_id of the job's tiles/ folder")
    ids = slides or folder.tiled()
    if not ids:
        raise ExportError(f"{folder.tiles}: no coords files to export")
    trained, encoder = None, ""
    if run is not None:
        trained = load_run_model(Path(run), device)
        encoder = str(run_config(Path(run)).get("encoder", {}).get("encoder", ""))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("QuPath GeoJSON", total=len(ids))
        for slide_id in ids:
            target = out / f"{slide_id}.geojson"
            try:
                if target.exists() and not overwrite:
                    results.append(Exported(slide_id, "skipped", str(target)))
                    continue
                prediction = None
                if trained is not None:
                    coords = read_coords(folder.coords(slide_id)).coords
                    prediction = predict_slide(
                        trained, folder.bag(encoder, slide_id), coords, Path(run), folder.coords(slide_id)
                    )
                write_collection(slide_collection(folder.coords(slide_id), prediction), target)
                results.append(Exported(slide_id, "ok", str(target)))
            except (ExportError, BagFormatError, OSError, KeyError, ValueError) as exc:
                results.append(Exported(slide_id, "failed", str(exc)))
            finally:
                bar.advance(task)
    return results
