"""Attention heatmaps: a model's tile attention drawn over the slide at the tile positions, and the top tiles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.formats.layout import JobFolder

if TYPE_CHECKING:
    from wsi_ncmi.mil.train import Trained


def attention_scores(
    run: Path, bag_path: Path, device: str = "cpu", coords_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(attention (N,), coords (N, 2), predicted class) of one bag under the run's model; the bag must match the
    run (and, given `coords_path`, the slide's current tiles)."""
    from wsi_ncmi.mil.runs import load_run_model, run_bag

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
    """One bag under a loaded model: tile attention (None for models without), each tile's class probabilities
    (the model's prediction for a bag holding that tile alone: its embedding through the model's neck and head;
    only where the slide embedding is the attention-weighted mean of the tile embeddings, as in abmil, abmil_plain
    and clam_sb with any neck, so tiles and slide are read alike), the slide's class probabilities and prediction."""

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
        neck = trained.model.neck
        if pooled and torch.allclose(neck(output.attention @ output.tiles), output.h, rtol=1e-3, atol=1e-4):
            tiles = trained.head.probabilities(neck(output.tiles).float()).double().cpu().numpy()
    return TileScores(attention, tiles, probabilities, predicted)


def check_slide_known(job: Path, slide_id: str, manifest: Path | str | None) -> None:
    """Refuse a slide id that is neither tiled in JOB nor in the run's manifest (a case id, a typo) as unknown,
    naming close matches; a known slide without tiles is left to the coords reader, which says to tile it."""
    import difflib

    folder = JobFolder(job)
    tiles = folder.tiles
    if not tiles.is_dir():
        raise ValueError(f"{job}: no tiles/ folder; give the job folder `wsi-ncmi tile --out` wrote")
    if folder.coords(slide_id).exists():
        return
    known = folder.tiled()
    if manifest is not None and Path(manifest).is_file():
        from wsi_ncmi.cohort.manifest import ManifestError, read_manifest

        try:
            if slide_id in set(read_manifest(manifest)["slide_id"]):
                return
        except ManifestError:
            pass
    close = difflib.get_close_matches(slide_id, known, n=3, cutoff=0.5) or known[:3]
    hint = f"; slides here include {', '.join(close)}" if close else ""
    raise ValueError(f"unknown slide {slide_id!r}: not tiled in {tiles} and not in the run's manifest{hint}")


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
    import matplotlib.pyplot as plt

    from wsi_ncmi.slides.backend import open_slide
    from wsi_ncmi.slides.lowres import read_lowres

    top = np.argsort(-attention)[:top_k]
    with open_slide(slide_path, backend) as slide:
        low = read_lowres(slide, mpp0, thumbnail_mpp)
        tiles = [slide.read_region(tuple(coords[i]), read_level, (read_size, read_size)) for i in top]
    blended = attention_overlay(low.image, low.scale, coords, attention, size0)
    fig = heatmap_figure(blended, tiles, title)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def heatmap_figure(blended: np.ndarray, tiles: list[np.ndarray], title: str) -> Any:
    """The heatmap figure: the overlay with its colour bar in one panel and the top tiles in another beside it,
    so the montage never covers the colour bar's ticks or label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = int(np.ceil(np.sqrt(max(len(tiles), 1))))
    fig = plt.figure(figsize=(14, 6.5))
    left, right = fig.subfigures(1, 2, width_ratios=[1.45, 1.0], wspace=0.02)
    ax = left.subplots()
    ax.imshow(blended, vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    bar = left.colorbar(plt.cm.ScalarMappable(cmap=plt.get_cmap("turbo")), ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("attention (percentile within slide)")
    right.suptitle(f"top {len(tiles)} attended tiles", fontsize=10)
    grid = right.add_gridspec(columns, columns)
    for k, tile in enumerate(tiles):
        sub = right.add_subplot(grid[k // columns, k % columns])
        sub.imshow(tile)
        sub.set_title(f"#{k + 1}", fontsize=7)
        sub.axis("off")
    return fig


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
