"""Attention heatmaps: a model's tile attention drawn over the slide at the tile positions, and the top tiles.

`slide_attention` is the one way a slide's attention is drawn: the `heatmap` command (a PNG figure) and the run
report's slide images both start from it, so both check the bag against the run and the slide's current tiles and
read the slide with the backend it was tiled with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.core.errors import EXIT_USAGE, WsiNcmiError
from wsi_ncmi.formats.layout import JobFolder

if TYPE_CHECKING:
    from wsi_ncmi.formats.bags import Bag
    from wsi_ncmi.mil.train import Trained

THUMBNAIL_MPP = 8.0
"""Resolution (um/px) of the slide overview under a heatmap figure."""
MODELS_WITH_ATTENTION = "abmil, abmil_plain, clam_sb or transmil"


class NoHeatmap(WsiNcmiError):
    """A slide whose attention cannot be drawn: an empty bag, a model without attention or that cannot read the bag,
    an unreadable slide. The message names the file and the fix; `note` says why in a report's words."""

    def __init__(self, message: str, note: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.note, self.exit_code = note, exit_code


@dataclass(frozen=True)
class SlideAttention:
    """One slide under a run's model: its overview with each tile coloured by attention percentile (RGB floats 0-1),
    the top attended tiles read from the slide, and the slide's predicted class."""

    overlay: np.ndarray
    tiles: list[np.ndarray]
    predicted: str


def slide_attention(
    trained: Trained, job: Path, slide_id: str, encoder: str, top_k: int, side: int | None = None
) -> SlideAttention:
    """Attention of one tiled slide of JOB under a loaded model, drawn over the slide's overview (`side` px on its
    longest side, at most 2 um/px; None: THUMBNAIL_MPP), with its `top_k` attended tiles. The bag must match the run
    and the slide's current tiles (BagFormatError, BagMismatchError otherwise); NoHeatmap when nothing can be drawn."""
    from wsi_ncmi.core.faults import describe
    from wsi_ncmi.formats.bags import read_geometry
    from wsi_ncmi.slides.backend import SlideError

    folder = JobFolder(job)
    geometry = read_geometry(folder.coords(slide_id))
    bag, scores = _scored_bag(trained, folder.bag(encoder, slide_id), folder.coords(slide_id))
    mpp0 = geometry.mpp_level0
    longest = max(geometry.width, geometry.height)
    thumbnail_mpp = THUMBNAIL_MPP if side is None else max(2.0, longest * mpp0 / side)
    tile = (geometry.size_level0, geometry.read_level, geometry.read_size)
    try:
        overlay, tiles = _overlay_and_tiles(
            geometry.slide_path,
            geometry.backend,
            bag.coords,
            scores.attention,
            tile,
            top_k,
            mpp0,
            thumbnail_mpp,
        )
    except (SlideError, OSError) as exc:
        message, code = describe(exc)
        raise NoHeatmap(message, f"no heatmap: slide {geometry.slide_path} not readable ({exc})", code) from exc
    return SlideAttention(overlay, tiles, scores.predicted)


def draw_slide_heatmap(run: Path, job: Path, slide_id: str, out: Path, top_k: int = 16, device: str = "cpu") -> Path:
    """The `heatmap` command: the slide's attention under the run's selected model (on `device`) as a PNG figure,
    the overview beside the top-k tiles; returns `out`. A bad device is refused before anything is read."""
    from wsi_ncmi.core.device import check_device
    from wsi_ncmi.evaluation.evaluate import run_config
    from wsi_ncmi.mil.runs import load_run_model

    check_device(device)
    config = run_config(run)
    check_slide_known(job, slide_id, config.get("inputs", {}).get("manifest"))
    trained = load_run_model(Path(run), device)
    view = slide_attention(trained, job, slide_id, config.get("encoder", {}).get("encoder", ""), top_k)
    write_heatmap(view.overlay, view.tiles, out, f"{slide_id}: predicted {view.predicted}")
    return out


def attention_scores(
    run: Path, bag_path: Path, device: str = "cpu", coords_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(attention (N,), coords (N, 2), predicted class) of one bag under the run's model; the bag must match the
    run (and, given `coords_path`, the slide's current tiles)."""
    from wsi_ncmi.mil.runs import load_run_model

    bag, scores = _scored_bag(load_run_model(Path(run), device), Path(bag_path), coords_path)
    return scores.attention, bag.coords, scores.predicted


def _scored_bag(trained: Trained, bag_path: Path, coords_path: Path | None) -> tuple[Bag, TileScores]:
    """A slide's bag, checked against the run (mil.runs.run_bag), and its scores; NoHeatmap for an empty bag or a
    model that gives no attention for it."""
    from wsi_ncmi.mil.runs import run_bag

    bag = run_bag(trained, bag_path, coords_path)
    if len(bag) == 0:
        raise NoHeatmap(
            f"{bag_path}: empty bag (no tissue tiles); nothing to draw",
            "no tiles: the slide was predicted from the training prior",
        )
    try:
        scores = tile_scores(trained, bag.features)
    except RuntimeError as exc:
        raise NoHeatmap(
            f"{bag_path}: the model cannot read this bag ({exc})",
            f"no heatmap: the model cannot read this bag ({exc})",
        ) from exc
    if scores.attention is None:
        model = trained.checkpoint["model"]
        raise NoHeatmap(
            f"model {model!r} has no attention; heatmaps need {MODELS_WITH_ATTENTION}",
            f"no heatmap: model {model!r} has no attention",
        )
    return bag, scores


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
    thumbnail_mpp: float = THUMBNAIL_MPP,
    mpp0: float = 0.25,
    backend: str = "auto",
) -> None:
    """Thumbnail with given attention (percentile-ranked, colour map + legend) over the tissue tiles, and a montage
    of the top-k attended tiles read from the slide, as a PNG figure (what `heatmap` draws, without a run)."""
    overlay, tiles = _overlay_and_tiles(
        slide_path, backend, coords, attention, (size0, read_level, read_size), top_k, mpp0, thumbnail_mpp
    )
    write_heatmap(overlay, tiles, out, title)


def _overlay_and_tiles(
    slide_path: str,
    backend: str,
    coords: np.ndarray,
    attention: np.ndarray,
    tile: tuple[int, int, int],
    top_k: int,
    mpp0: float,
    thumbnail_mpp: float,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The slide's overview at `thumbnail_mpp` with the attention overlay, and its top-k attended tiles; `tile` is
    (side at level 0, level read, side read) of the tiles at `coords`."""
    from wsi_ncmi.slides.backend import open_slide
    from wsi_ncmi.slides.lowres import read_lowres

    size0, read_level, read_size = tile
    top = np.argsort(-attention)[:top_k]
    with open_slide(slide_path, backend) as slide:
        low = read_lowres(slide, mpp0, thumbnail_mpp)
        tiles = [slide.read_region(tuple(coords[i]), read_level, (read_size, read_size)) for i in top]
    return attention_overlay(low.image, low.scale, coords, attention, size0), tiles


def write_heatmap(overlay: np.ndarray, tiles: list[np.ndarray], out: Path, title: str) -> None:
    """Write the heatmap figure (heatmap_figure) as a PNG, atomically."""
    import matplotlib.pyplot as plt

    fig = heatmap_figure(overlay, tiles, title)
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
