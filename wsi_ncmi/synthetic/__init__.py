"""Synthetic H&E-like whole-slide images and cohorts, for tests, the demo and users' smoke tests.

Slides are tiled, pyramidal, JPEG-compressed TIFFs laid out like the CAMELYON-16/17 files (OpenSlide reads
them as generic-tiff) or, on request, like Aperio SVS files. Every tile is rendered from a small analytic
model (a smooth random tissue field plus circular lesions given in micrometres), so memory stays flat in the
slide size and the ground truth is known exactly.

Modules: spec (slide spec, artifacts, tissue model), truth (artifact truth, truth files), render (pixels), tiff
(TIFF/SVS writing), cohort (cohorts and manifests), bags (synthetic feature bags). Every public name is
re-exported here.
"""

from wsi_ncmi.synthetic.bags import COUNT_RULE, write_synthetic_bags
from wsi_ncmi.synthetic.cohort import (
    MAX_SIDE,
    MIN_SIDE,
    CohortSpec,
    case_id,
    center_stain_shift,
    cohort_specs,
    write_cohort,
)
from wsi_ncmi.synthetic.render import render_region, render_tile
from wsi_ncmi.synthetic.spec import (
    BACKGROUND,
    BLOB_UM,
    DARK,
    EOSIN,
    FIELD_MPP,
    HEMATOXYLIN,
    INK,
    LESION_CLASSES,
    LESION_RANGES_UM,
    NUCLEUS_UM,
    TILE,
    BlurRegion,
    Lesion,
    PenStroke,
    SlideSpec,
    TissueFold,
    TissueModel,
    label_for_lesions,
)
from wsi_ncmi.synthetic.tiff import write_slide
from wsi_ncmi.synthetic.truth import (
    artifact_truth,
    blur_truth,
    dark_truth,
    fold_bands,
    fold_truth,
    load_truth,
    pen_truth,
    write_truth,
)

__all__ = [
    "BACKGROUND",
    "BLOB_UM",
    "COUNT_RULE",
    "DARK",
    "EOSIN",
    "FIELD_MPP",
    "HEMATOXYLIN",
    "INK",
    "LESION_CLASSES",
    "LESION_RANGES_UM",
    "MAX_SIDE",
    "MIN_SIDE",
    "NUCLEUS_UM",
    "TILE",
    "BlurRegion",
    "CohortSpec",
    "Lesion",
    "PenStroke",
    "SlideSpec",
    "TissueFold",
    "TissueModel",
    "artifact_truth",
    "blur_truth",
    "case_id",
    "center_stain_shift",
    "cohort_specs",
    "dark_truth",
    "fold_bands",
    "fold_truth",
    "label_for_lesions",
    "load_truth",
    "pen_truth",
    "render_region",
    "render_tile",
    "write_cohort",
    "write_slide",
    "write_synthetic_bags",
    "write_truth",
]
