"""Attention heatmaps: a model's tile attention drawn over the slide at the tile positions, and the top tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_ncmi.atomic import atomic_path


def attention_scores(run: Path, bag_path: Path, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, str]:
    """(attention (N,), coords (N, 2), predicted class) of one bag under the run's model."""
    import torch

    from wsi_ncmi.bags import read_bag
    from wsi_ncmi.validation import load_run_model

    trained = load_run_model(Path(run), device)
    bag = read_bag(bag_path)
    if len(bag) == 0:
        raise ValueError(f"{bag_path}: empty bag (no tissue tiles); nothing to draw")
    with torch.no_grad():
        output = trained.model(torch.from_numpy(bag.features).to(trained.device))
        if output.attention is None:
            raise ValueError(
                f"model {trained.checkpoint['model']!r} has no attention; heatmaps need abmil, "
                "abmil_plain, clam_sb or transmil"
            )
        predicted = trained.classes[int(trained.head.predict(output.h.float()[None])[0])]
    return output.attention.float().cpu().numpy(), bag.coords, predicted


def check_bag_tiles(bag_path: Path, coords_path: Path) -> None:
    """Refuse a bag embedded from other tiles than the slide's current coords file (the slide was tiled again):
    its attention would be drawn at stale positions. Bags without a coords digest are compared by coordinates."""
    from wsi_ncmi.bags import BagFormatError, coords_digest, read_bag_attrs, read_coords

    current = read_coords(coords_path).coords
    digest = read_bag_attrs(bag_path).get("coords_sha256")
    if digest is None:
        from wsi_ncmi.bags import read_bag

        same = np.array_equal(read_bag(bag_path).coords, current)
    else:
        same = digest == coords_digest(current)
    if not same:
        raise BagFormatError(
            f"{bag_path}: embedded from other tiles than {coords_path} (the slide was tiled again); "
            "run `wsi-ncmi embed --overwrite` for this slide first"
        )


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

    ranks = np.argsort(np.argsort(attention)) / max(len(attention) - 1, 1)
    top = np.argsort(-attention)[:top_k]
    with open_slide(slide_path, backend) as slide:
        low = read_lowres(slide, mpp0, thumbnail_mpp)
        tiles = [slide.read_region(tuple(coords[i]), read_level, (read_size, read_size)) for i in top]
    image = low.image.astype(np.float32) / 255.0
    overlay = np.full(image.shape[:2], np.nan, dtype=np.float32)
    side = max(1, round(size0 / low.scale))
    for (x, y), value in zip(coords, ranks, strict=True):
        left, upper = int(x / low.scale), int(y / low.scale)
        region = overlay[upper : upper + side, left : left + side]
        region[np.isnan(region) | (region < value)] = value
    cmap = plt.get_cmap("turbo")
    coloured = cmap(np.nan_to_num(overlay))[..., :3]
    mask = ~np.isnan(overlay)
    blended = image.copy()
    blended[mask] = 0.35 * image[mask] + 0.65 * coloured[mask]
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
