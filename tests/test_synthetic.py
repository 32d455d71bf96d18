"""Synthetic slides: readable by both backends, with the geometry, resolution and labels they claim."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.synthetic import (
    CohortSpec,
    Lesion,
    SlideSpec,
    TissueModel,
    cohort_specs,
    label_for_lesions,
    load_truth,
    render_region,
    write_cohort,
)


@pytest.mark.parametrize(
    ("diameters", "label"),
    [
        ([], "negative"),
        ([150.0], "itc"),
        ([199.9], "itc"),
        ([200.0], "micro"),
        ([2000.0], "micro"),
        ([2000.1], "macro"),
        ([100.0, 2500.0], "macro"),
    ],
)
def test_label_follows_largest_lesion(diameters: list[float], label: str) -> None:
    assert label_for_lesions(diameters) == label


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_both_backends_read_the_pyramid(tiff_slide: Path, backend: str) -> None:
    with open_slide(tiff_slide, backend) as slide:
        assert slide.backend == backend
        assert slide.dimensions == (8192, 6144)
        assert slide.level_downsamples[:3] == [1.0, 2.0, 4.0]
        region = slide.read_region((2048, 2048), 1, (128, 128))
    assert region.shape == (128, 128, 3) and region.dtype == np.uint8


def test_backends_decode_identical_pixels(tiff_slide: Path) -> None:
    with open_slide(tiff_slide, "openslide") as a, open_slide(tiff_slide, "tiffslide") as b:
        assert np.array_equal(a.read_region((1000, 1500), 0, (300, 200)), b.read_region((1000, 1500), 0, (300, 200)))


def test_svs_variant_carries_aperio_metadata(slide_dir: Path) -> None:
    with open_slide(slide_dir / "svs_025.svs", "openslide") as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties["aperio.MPP"]) == 0.25
        assert float(slide.properties["aperio.AppMag"]) == 40
        assert slide.level_count >= 2
    with open_slide(slide_dir / "svs_025.svs", "tiffslide") as slide:
        assert slide.level_count >= 2


def test_rendered_lesion_is_darker_than_tissue() -> None:
    spec = SlideSpec("s", 2048, 2048, 0.5, seed=1, tissue_fraction=0.95, lesions=(Lesion(512, 512, 300),))
    image = render_region(spec, 1).astype(float)
    model = TissueModel.from_spec(spec)
    ys, xs = np.mgrid[0:2048, 0:2048]
    lesion = model.lesion_mask((xs + 0.5) * 0.5, (ys + 0.5) * 0.5)
    tissue = model.tissue((xs + 0.5) * 0.5, (ys + 0.5) * 0.5) & ~lesion
    assert image[lesion].mean() < image[tissue].mean() - 20


def test_cohort_is_balanced_reproducible_and_labelled_by_lesions(tmp_path: Path) -> None:
    cohort = CohortSpec(slides=8, centers=2, nodes_per_case=2, width=1024, height=1024, mpp=2.0, seed=4)
    specs = cohort_specs(cohort)
    assert [s.slide_id for s in specs] == [s.slide_id for s in cohort_specs(cohort)]
    assert sorted(s.label for s in specs) == sorted(["negative", "itc", "micro", "macro"] * 2)
    assert {s.center for s in specs} == {0, 1}
    assert specs[0].stain_shift != specs[-1].stain_shift
    manifest = write_cohort(cohort, tmp_path)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 8 and all(Path(r["path"]).exists() for r in rows)
    for row in rows:
        spec, _ = load_truth(tmp_path / "truth" / f"{row['slide_id']}.truth.json")
        assert spec.label == row["label"]
        assert row["case_id"] == row["slide_id"].rsplit("_node_", 1)[0]
    cases = {}
    for row in rows:
        cases.setdefault(row["case_id"], set()).add(row["center"])
    assert all(len(centers) == 1 for centers in cases.values())
