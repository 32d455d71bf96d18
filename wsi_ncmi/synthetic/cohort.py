"""CAMELYON-style synthetic cohorts: slide specs spread over centres and patients, written with their ground truth
and a manifest."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.synthetic.spec import LESION_CLASSES, LESION_RANGES_UM, Lesion, SlideSpec, TissueModel
from wsi_ncmi.synthetic.tiff import write_slide
from wsi_ncmi.synthetic.truth import write_truth


def center_stain_shift(center: int, seed: int = 0) -> tuple[float, float, float]:
    """A reproducible per-centre colour shift (stain and scanner differences between hospitals)."""
    if center == 0:
        return (0.0, 0.0, 0.0)
    rng = np.random.default_rng([seed, 1000 + center])
    return tuple(float(v) for v in rng.uniform(-22.0, 22.0, size=3))


def _place_lesions(spec: SlideSpec, label: str, rng: np.random.Generator) -> tuple[Lesion, ...]:
    if label == "negative":
        return ()
    model = TissueModel.from_spec(spec)
    ys, xs = np.nonzero(model.field > 0)
    if len(xs) == 0:
        ys, xs = np.array([model.field.shape[0] // 2]), np.array([model.field.shape[1] // 2])
    low, high = LESION_RANGES_UM[label]
    count = int(rng.integers(1, 3))
    primary = float(rng.uniform(low, high))
    diameters = [primary] + [primary * float(rng.uniform(0.3, 0.9)) for _ in range(count - 1)]
    picks = rng.integers(len(xs), size=count)
    return tuple(
        Lesion(float(xs[p] * model.field_mpp), float(ys[p] * model.field_mpp), d)
        for p, d in zip(picks, diameters, strict=True)
    )


MIN_SIDE, MAX_SIDE = 256, 200_000
"""Slide sides `synth` makes, in level-0 px: at least one 256 px tile, at most a large scan's size."""


@dataclass(frozen=True)
class CohortSpec:
    """A CAMELYON-style cohort: patients in centres, several lymph-node slides per patient."""

    slides: int = 20
    centers: int = 5
    nodes_per_case: int = 1
    width: int = 8192
    height: int = 6144
    mpp: float = 0.25
    seed: int = 0
    fmt: str = "tiff"
    labels: tuple[str, ...] = LESION_CLASSES

    def __post_init__(self) -> None:
        problems = [f"{name} must be at least 1, got {getattr(self, name)}" for name in ("slides", "centers",
                    "nodes_per_case") if getattr(self, name) < 1]  # fmt: skip
        for name in ("width", "height"):
            value = getattr(self, name)
            if not MIN_SIDE <= value <= MAX_SIDE:
                problems.append(f"{name} must be {MIN_SIDE} to {MAX_SIDE:,} px, got {value:,}")
        if not self.mpp > 0:
            problems.append(f"mpp must be positive, got {self.mpp}")
        if problems:
            raise ValueError("; ".join(problems))


def cohort_specs(cohort: CohortSpec) -> list[SlideSpec]:
    """Slide specs for a cohort: slides spread evenly over centres, labels balanced within each centre."""
    if cohort.slides < 1 or cohort.centers < 1 or cohort.nodes_per_case < 1:
        raise ValueError("slides, centers and nodes_per_case must all be at least 1")
    rng = np.random.default_rng([cohort.seed, 99])
    per_center = [cohort.slides // cohort.centers + (c < cohort.slides % cohort.centers) for c in range(cohort.centers)]
    specs: list[SlideSpec] = []
    patient = 0
    offset = 0
    for center, n in enumerate(per_center):
        labels = [cohort.labels[(offset + i) % len(cohort.labels)] for i in range(n)]
        offset += n
        rng.shuffle(labels)
        for i, label in enumerate(labels):
            if i % cohort.nodes_per_case == 0 and i:
                patient += 1
            node = i % cohort.nodes_per_case
            slide_seed = int(rng.integers(2**31))
            slide_id = f"patient_{patient:03d}_node_{node}"
            base = SlideSpec(
                slide_id,
                cohort.width,
                cohort.height,
                cohort.mpp,
                slide_seed,
                center,
                stain_shift=center_stain_shift(center, cohort.seed),
            )
            lesions = _place_lesions(base, label, np.random.default_rng([slide_seed, 3]))
            specs.append(SlideSpec(**{**asdict(base), "lesions": lesions}))
        patient += 1
    return specs


def case_id(slide_id: str) -> str:
    """Patient of a synthetic slide id ('patient_007_node_2' -> 'patient_007')."""
    return slide_id.rsplit("_node_", 1)[0]


def write_cohort(cohort: CohortSpec, out: Path, progress: bool = False) -> Path:
    """Write every slide, its ground truth and a manifest (slide_id,case_id,center,label,path); returns the manifest.

    Slides already present are kept, so an interrupted run continues where it stopped.
    """
    from rich.progress import track

    out = Path(out)
    slides_dir = out / "slides"
    truth_dir = out / "truth"
    slides_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".svs" if cohort.fmt == "svs" else ".tif"
    rows = []
    specs = cohort_specs(cohort)
    for spec in track(specs, description="synthesising slides", disable=not progress):
        path = slides_dir / f"{spec.slide_id}{suffix}"
        if not path.exists():
            write_slide(spec, path, fmt=cohort.fmt)
        write_truth(spec, truth_dir)
        rows.append(
            {
                "slide_id": spec.slide_id,
                "case_id": case_id(spec.slide_id),
                "center": spec.center,
                "label": spec.label,
                "path": str(path.resolve()),
            }
        )
    manifest = out / "manifest.csv"
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide_id", "case_id", "center", "label", "path"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
