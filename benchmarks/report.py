"""What a report and a QuPath export cost per slide; writes results/report.json.

Figures, on one tiled synthetic slide with a bag of 1024-d features and an abmil model: median seconds to draw the
report's images of the slide (thumbnail, attention heatmap, top-8 tiles read from the slide) and their size, and
median seconds and size of the slide's QuPath GeoJSON (tiles with attention and class probabilities, tissue
contour recomputed from the slide).

    python benchmarks/report.py            # 16k x 12k px slide at 0.25 um/px, 0.5 um/px 256 px tiles
    python benchmarks/report.py --full     # 32k x 24k px
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from common import slide_size_args, summary, timed, write_result

from wsi_ncmi.synthetic import Lesion, SlideSpec, write_slide


def main() -> None:
    args, width, height = slide_size_args(__doc__)
    import pandas as pd

    from wsi_ncmi.embedding.embed import bag_path
    from wsi_ncmi.evaluation.report import slide_view
    from wsi_ncmi.export.qupath import predict_slide, slide_collection, write_collection
    from wsi_ncmi.formats.bags import BagWriter, read_coords
    from wsi_ncmi.mil.heads import build_head
    from wsi_ncmi.mil.models import build_model
    from wsi_ncmi.mil.train import Trained
    from wsi_ncmi.tiling.tile import TilingParams, coords_path, tile_slides

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_slide(SlideSpec("slide", width, height, 0.25, seed=3, lesions=(Lesion(6000, 5000, 800),)), root / "s.tif")
        job = root / "job"
        table = pd.DataFrame({"slide_id": ["slide"], "path": [str(root / "s.tif")], "mpp": [np.nan]})
        tile_slides(table, job, TilingParams(), progress=False)
        tiles = read_coords(coords_path(job, "slide"))
        features = np.random.default_rng(0).normal(size=(len(tiles.coords), 1024)).astype(np.float32)
        path = bag_path(job, "synthetic", "slide")
        path.parent.mkdir(parents=True)
        writer = BagWriter(path, len(features), 1024)
        writer.write(0, features)
        writer.finish(tiles, {"encoder": "synthetic"}, np.zeros(0, np.int64))
        model = build_model("abmil", 1024).eval()
        head = build_head("ce", model.dim, 4).eval()
        trained = Trained(model, head, ["a", "b", "c", "d"], np.full(4, 0.25), {"model": "abmil"})
        folder = root / "report_files"
        folder.mkdir()
        draw = timed(lambda: slide_view(job, "slide", trained, "synthetic", folder, 8), args.repeats)
        images_kib = sum(p.stat().st_size for p in folder.iterdir()) / 1024

        def export() -> None:
            prediction = predict_slide(trained, path, tiles.coords, root)
            write_collection(slide_collection(coords_path(job, "slide"), prediction), root / "slide.geojson")

        geojson = timed(export, args.repeats)
        geojson_kib = (root / "slide.geojson").stat().st_size / 1024
    figures = {
        "slide_px": f"{width}x{height}",
        "tiles": len(tiles.coords),
        "report_slide_seconds": summary(draw),
        "report_images_kib": images_kib,
        "qupath_seconds": summary(geojson),
        "qupath_kib": geojson_kib,
    }
    print(
        f"report images of a {width}x{height} slide ({len(tiles.coords)} tiles): "
        f"{figures['report_slide_seconds']['median']:.2f} s, {images_kib:.0f} KiB; QuPath GeoJSON "
        f"{figures['qupath_seconds']['median']:.2f} s, {geojson_kib:.0f} KiB"
    )
    print(f"wrote {write_result('report', {'benchmark': 'report', **figures})}")


if __name__ == "__main__":
    main()
