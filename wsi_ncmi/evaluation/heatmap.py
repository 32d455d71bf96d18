"""Attention heatmaps: a model's tile attention drawn over the slide at the tile positions, and the top tiles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.atomic import atomic_path
from wsi_ncmi.validation import check_bag_tiles as check_bag_tiles

if TYPE_CHECKING:
    from wsi_ncmi.mil.train import Trained


def attention_scores(
    run: Path, bag_path: Path, device: str = "cpu", coords_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(attention (N,), coords (N, 2), predicted class) of one bag under the run's model; the bag must match the
    run (and, given `coords_path`, the slide's current tiles)."""
    from wsi_ncmi.validation import load_run_model, run_bag

    trained = load_run_model(Path(run), device)
    bag = run_bag(trained, bag_path, coords_path)
    if len(bag) == 0:
        raise ValueError(f"{bag_path}: empty bag (no tissue tiles); nothing to draw")
    scores = tile_scores(trained, bag.features)
    if scores.attention is None:
        raise ValueError(
            f"model {trained.checkpoint['model']!r} has no attention; heatmaps need abmil, "
            "abmil_plain, clam_sb or transmil"
        )
    return scores.attention, bag.coords, scores.predicted


@dataclass(frozen=True)
class TileScores:
    """One bag under a loaded model: tile attention (None for models without), the head's class probabilities of
    each tile embedding alone (only where the slide embedding is the attention-weighted mean of the tile embeddings,
    as in abmil, abmil_plain and clam_sb, so the head reads both alike), the slide's class probabilities and
    prediction."""

    attention: np.ndarray | None
    tile_probabilities: np.ndarray | None
    probabilities: np.ndarray
    predicted: str


def tile_scores(trained: Trained, features: np.ndarray) -> TileScores:
    """Attention and per-tile class probabilities of a non-empty bag; the model is loaded once by the caller."""
    import torch

    with torch.no_grad():
        output = trained.model(torch.from_numpy(np.asarray(features, dtype=np.float32)).to(trained.device))
        h = output.h.float()[None]
        predicted = trained.classes[int(trained.head.predict(h)[0])]
        probabilities = trained.head.probabilities(h).double().cpu().numpy()[0]
        attention = None if output.attention is None else output.attention.float().cpu().numpy()
        tiles = None
        pooled = output.attention is not None and output.tiles is not None
        if pooled and torch.allclose(output.attention @ output.tiles, output.h, rtol=1e-3, atol=1e-4):
            tiles = trained.head.probabilities(output.tiles.float()).double().cpu().numpy()
    return TileScores(attention, tiles, probabilities, predicted)


def draw_heatmap(
    slide_path: str,
    coords: np.ndarray,
    attention: np.ndarray,
    size0: int,
    read_level: int,
    read_size: int,
    out: Path,
    title: str,
    top_k: int = 16,
    thumbnail_mpp: float = 8.0,
    mpp0: float = 0.25,
    backend: str = "auto",
) -> None:
    """Thumbnail with attention (percentile-ranked, colour map + legend) over the tissue tiles, and a montage of
    the top-k attended tiles read from the slide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wsi_ncmi.slides.backend import open_slide
    from wsi_ncmi.slides.lowres import read_lowres

    top = np.argsort(-attention)[:top_k]
    with open_slide(slide_path, backend) as slide:
        low = read_lowres(slide, mpp0, thumbnail_mpp)
        tiles = [slide.read_region(tuple(coords[i]), read_level, (read_size, read_size)) for i in top]
    blended = attention_overlay(low.image, low.scale, coords, attention, size0)
    cmap = plt.get_cmap("turbo")
    columns = int(np.ceil(np.sqrt(max(len(tiles), 1))))
    fig = plt.figure(figsize=(14, 6.5))
    grid = fig.add_gridspec(columns, 2 * columns, width_ratios=[*([1.0] * columns), *([0.5] * columns)])
    ax = fig.add_subplot(grid[:, :columns])
    ax.imshow(blended, vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap), ax=ax, fraction=0.035, pad=0.01)
    bar.set_label("attention (percentile within slide)")
    for k, tile in enumerate(tiles):
        sub = fig.add_subplot(grid[k // columns, columns + k % columns])
        sub.imshow(tile)
        sub.set_title(f"#{k + 1}", fontsize=7)
        sub.axis("off")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def attention_overlay(
    image: np.ndarray, scale: float, coords: np.ndarray, attention: np.ndarray, size0: int
) -> np.ndarray:
    """RGB float image (0-1): `image` (pixels `scale` level-0 px wide) with each tile coloured by its attention
    percentile within the slide (turbo colour map, 65% opacity); background left as it is."""
    from matplotlib import colormaps

    ranks = np.argsort(np.argsort(attention)) / max(len(attention) - 1, 1)
    base = image.astype(np.float32) / 255.0
    overlay = np.full(base.shape[:2], np.nan, dtype=np.float32)
    side = max(1, round(size0 / scale))
    for (x, y), value in zip(coords, ranks, strict=True):
        left, upper = int(x / scale), int(y / scale)
        region = overlay[upper : upper + side, left : left + side]
        region[np.isnan(region) | (region < value)] = value
    coloured = colormaps["turbo"](np.nan_to_num(overlay))[..., :3]
    mask = ~np.isnan(overlay)
    base[mask] = 0.35 * base[mask] + 0.65 * coloured[mask]
    return base
