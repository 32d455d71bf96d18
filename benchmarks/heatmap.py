"""Attention heatmap cost on a slide with over 10k tiles; writes results/heatmap.json.

Figures: median seconds of drawing one heatmap (low-resolution read, per-tile overlay, top-k montage read from
the slide, PNG) with every 32 um tile of the slide scored, and of the abmil forward pass that gives the attention.

    python benchmarks/heatmap.py            # 16k x 12k px slide at 0.25 um/px: 12,288 tiles
    python benchmarks/heatmap.py --full     # 32k x 24k px: 49,152 tiles
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from common import slide_size_args, summary, timed, write_result

from wsi_ncmi.evaluation.heatmap import draw_heatmap
from wsi_ncmi.synthetic import SlideSpec, write_slide
from wsi_ncmi.tiling.grid import grid_coords


def main() -> None:
    args, width, height = slide_size_args(__doc__)
    import torch

    from wsi_ncmi.mil.models import build_model

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "slide.tif"
        write_slide(SlideSpec("slide", width, height, 0.25, seed=3), slide)
        coords = grid_coords(width, height, 128, 128)
        attention = rng.random(len(coords)).astype(np.float32)
        draw = timed(
            lambda: draw_heatmap(str(slide), coords, attention, 128, 0, 128, Path(tmp) / "h.png", "bench"),
            args.repeats,
        )
        size_kib = (Path(tmp) / "h.png").stat().st_size / 1024
    model = build_model("abmil", 1024).eval()
    features = torch.randn(len(coords), 1024)
    with torch.no_grad():
        forward = timed(lambda: model(features), args.repeats)
    figures = {
        "slide_px": f"{width}x{height}",
        "tiles": len(coords),
        "draw_seconds": summary(draw),
        "abmil_forward_seconds": summary(forward),
        "png_kib": size_kib,
    }
    print(
        f"heatmap {len(coords)} tiles: draw {figures['draw_seconds']['median']:.2f} s, abmil attention "
        f"{figures['abmil_forward_seconds']['median']:.3f} s (1024-d features, CPU)"
    )
    print(f"wrote {write_result('heatmap', {'benchmark': 'heatmap', **figures})}")


if __name__ == "__main__":
    main()
