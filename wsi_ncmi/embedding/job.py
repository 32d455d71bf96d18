"""Embedding a job folder, as `wsi-ncmi embed` does: which slides (the job's tiled slides, or a manifest's; one
shard of them), encoders whose weights are checked before any work, every encoder run (locally in one pass over
the tiles, on Dask one pass per encoder) and each encoder's status file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ncmi.core.errors import WsiNcmiError

if TYPE_CHECKING:
    from wsi_ncmi.cohort.manifest import Columns
    from wsi_ncmi.embedding.embed import EmbedSettings
    from wsi_ncmi.formats.status import StatusRow

Target = tuple[str, str | None]
"""A slide to embed: its id and its file (None: the path its coords file records)."""


class EmbedJobError(WsiNcmiError):
    """A job folder with nothing to embed: not tiled yet, or no slide in it (or in the shard); the message says
    what to run."""


def embed_targets(
    job: Path,
    settings: EmbedSettings,
    encoders: list[str],
    slides: Columns | None = None,
    shard: tuple[int, int] | None = None,
) -> list[Target]:
    """The slides of JOB to embed with `encoders`: those of `slides` (manifest columns with a path) or, without,
    every tiled slide; only shard I of N given `shard`. Refuses first weights that are missing or fit one encoder
    only (WeightsError, ValueError), then a job folder that was not tiled or has nothing to embed (EmbedJobError)."""
    from wsi_ncmi.embedding.weights import PUBLISHED, check_weights
    from wsi_ncmi.formats.shards import shard_of

    if len(encoders) > 1 and settings.weights not in (*PUBLISHED, "random"):
        raise ValueError("--weights PATH fits one encoder; with several --encoder use pretrained or random")
    for name in encoders:
        check_weights(name, settings.weights, settings.allow_download)
    tiles = Path(job) / "tiles"
    if not tiles.is_dir():
        raise EmbedJobError(f"{job}: no tiles/ folder; run `wsi-ncmi tile --out {job}` first")
    if slides is not None:
        pairs = zip(slides["slide_id"], slides["path"], strict=True)
        targets = [(str(slide_id), str(path) or None) for slide_id, path in pairs]
    else:
        targets = [(p.stem, None) for p in sorted(tiles.glob("*.h5"))]
    if shard is not None:
        targets = [t for t in targets if shard_of(t[0], shard[1]) == shard[0]]
    if not targets:
        raise EmbedJobError(f"{job}: no slides to embed")
    return targets


def embed_job(
    targets: list[Target],
    job: Path,
    settings: EmbedSettings,
    encoders: list[str],
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    dask_workers: int = 2,
    scheduler: str | None = None,
) -> dict[str, tuple[list[StatusRow], Path]]:
    """Embed `targets` into JOB/features/ENCODER/ with every encoder and write each encoder's status file; returns
    (rows, status file) per stage: `embed` with one encoder, `embed-ENCODER` for each of several."""
    from wsi_ncmi.embedding.registry import encoder_folder
    from wsi_ncmi.formats.shards import status_file
    from wsi_ncmi.formats.status import write_status

    results = _run_encoders(targets, job, settings, encoders, executor, dask_workers, scheduler)
    done = {}
    for name, rows in results.items():
        stage = "embed" if len(results) == 1 else f"embed-{encoder_folder(name)}"
        path = status_file(job, stage, shard)
        write_status(path, rows)
        done[stage] = (rows, path)
    return done


def _run_encoders(
    targets: list[Target],
    job: Path,
    settings: EmbedSettings,
    encoders: list[str],
    executor: str,
    dask_workers: int,
    scheduler: str | None,
) -> dict[str, list[StatusRow]]:
    """Rows per encoder: one pass over the tiles locally; on Dask, one pass per encoder (a task is one slide)."""
    from wsi_ncmi.embedding.embed import embed_encoders, embed_on_dask

    if executor != "dask":
        return embed_encoders(targets, job, settings, encoders)
    return {
        name: embed_on_dask(targets, job, replace(settings, encoder=name), dask_workers, scheduler) for name in encoders
    }
