"""Ground truth of a synthetic slide: where its painted artifacts lie, and the truth files written beside it
(spec JSON, tissue and artifact masks as PNG) and read back."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.synthetic.spec import BlurRegion, Lesion, PenStroke, SlideSpec, TissueFold, TissueModel


def _segment_distance(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(x - (ax + t * dx), y - (ay + t * dy))


def _band(
    points: tuple[tuple[float, float], ...], width_um: float, x_um: np.ndarray, y_um: np.ndarray, out: np.ndarray
) -> None:
    """Set `out` where a position lies within width_um / 2 of the polyline through `points`, in place."""
    x_lo, x_hi, y_lo, y_hi = np.min(x_um), np.max(x_um), np.min(y_um), np.max(y_um)
    r = width_um / 2
    for a, b in pairwise(points):
        box = (min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r, max(a[1], b[1]) + r)
        if _near(box, x_lo, y_lo, x_hi, y_hi):
            out |= _segment_distance(x_um, y_um, a, b) <= r


def pen_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> dict[str, np.ndarray]:
    """Per ink colour, where that ink lies (broadcast arrays of level-0 micrometres)."""
    shape = np.broadcast_shapes(np.shape(x_um), np.shape(y_um))
    out: dict[str, np.ndarray] = {}
    for stroke in spec.pen_strokes:
        _band(stroke.points, stroke.width_um, x_um, y_um, out.setdefault(stroke.color, np.zeros(shape, dtype=bool)))
    return out


def fold_bands(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where the fold bands lie, tissue or not (broadcast arrays of level-0 micrometres)."""
    out = np.zeros(np.broadcast_shapes(np.shape(x_um), np.shape(y_um)), dtype=bool)
    for fold in spec.folds:
        _band(fold.points, fold.width_um, x_um, y_um, out)
    return out


def fold_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where tissue is folded: a fold band and tissue."""
    bands = fold_bands(spec, x_um, y_um)
    if not bands.any():
        return bands
    return bands & _model(spec).tissue(x_um, y_um)


def dark_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where the black border lies."""
    left, top, right, bottom = spec.dark_border_um
    width_um, height_um = spec.width * spec.mpp, spec.height * spec.mpp
    return (x_um < left) | (y_um < top) | (x_um >= width_um - right) | (y_um >= height_um - bottom)


def blur_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """Where the slide is out of focus."""
    inside = np.zeros(np.broadcast_shapes(np.shape(x_um), np.shape(y_um)), dtype=bool)
    for region in spec.blur_regions:
        inside |= (x_um - region.x_um) ** 2 + (y_um - region.y_um) ** 2 <= region.radius_um**2
    return inside


def artifact_truth(spec: SlideSpec, x_um: np.ndarray, y_um: np.ndarray) -> dict[str, np.ndarray]:
    """Ground truth of the painted artifacts: 'pen' (any ink), 'dark' (border), 'blur' and 'fold' masks."""
    shape = np.broadcast_shapes(np.shape(x_um), np.shape(y_um))
    pen = np.zeros(shape, dtype=bool)
    for inked in pen_truth(spec, x_um, y_um).values():
        pen |= inked
    return {
        "pen": pen,
        "dark": dark_truth(spec, x_um, y_um),
        "blur": blur_truth(spec, x_um, y_um),
        "fold": fold_truth(spec, x_um, y_um),
    }


@lru_cache(maxsize=8)
def _model(spec: SlideSpec) -> TissueModel:
    """The spec's tissue model, kept for the truth masks that repeat it tile by tile."""
    return TissueModel.from_spec(spec)


def _near(box: tuple[float, float, float, float], x0: float, y0: float, x1: float, y1: float) -> bool:
    """Whether the axis-aligned box (left, top, right, bottom) meets the rectangle [x0, x1] x [y0, y1]."""
    return box[0] <= x1 and box[2] >= x0 and box[1] <= y1 and box[3] >= y0


def write_truth(spec: SlideSpec, folder: Path) -> Path:
    """Ground truth beside the slide: the spec (lesions included) as JSON and the tissue mask as a PNG."""
    from PIL import Image

    model = TissueModel.from_spec(spec)
    mask_path = folder / f"{spec.slide_id}.tissue.png"
    ny, nx = model.field.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    mask = model.tissue((xx + 0.5) * model.field_mpp, (yy + 0.5) * model.field_mpp)
    with atomic_path(mask_path) as tmp:
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp, format="PNG")
    record = {k: v for k, v in asdict(spec).items() if k != "folds" or spec.folds} | {
        "label": spec.label,
        "tissue_mask": mask_path.name,
        "tissue_mask_mpp": model.field_mpp,
    }
    if spec.has_artifacts:
        truth = artifact_truth(spec, (xx + 0.5) * model.field_mpp, (yy + 0.5) * model.field_mpp)
        for kind, where in truth.items():
            if kind == "fold" and not spec.folds:
                continue
            with atomic_path(folder / f"{spec.slide_id}.{kind}.png") as tmp:
                Image.fromarray((where * 255).astype(np.uint8)).save(tmp, format="PNG")
            record[f"{kind}_mask"] = f"{spec.slide_id}.{kind}.png"
    path = folder / f"{spec.slide_id}.truth.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2))
    return path


def load_truth(path: Path) -> tuple[SlideSpec, TissueModel]:
    """Read a ground-truth JSON back into the spec and its tissue model."""
    record = json.loads(Path(path).read_text())
    fields = {k: v for k, v in record.items() if k in SlideSpec.__dataclass_fields__}
    fields["lesions"] = tuple(Lesion(**lesion) for lesion in record["lesions"])
    fields["stain_shift"] = tuple(record["stain_shift"])
    fields["pen_strokes"] = tuple(
        PenStroke(p["color"], tuple(tuple(pt) for pt in p["points"]), p["width_um"])
        for p in record.get("pen_strokes", ())
    )
    fields["blur_regions"] = tuple(BlurRegion(**b) for b in record.get("blur_regions", ()))
    fields["dark_border_um"] = tuple(record.get("dark_border_um", (0.0, 0.0, 0.0, 0.0)))
    fields["folds"] = tuple(
        TissueFold(tuple(tuple(pt) for pt in f["points"]), f["width_um"]) for f in record.get("folds", ())
    )
    spec = SlideSpec(**fields)
    return spec, TissueModel.from_spec(spec)
