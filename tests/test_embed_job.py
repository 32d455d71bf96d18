"""Which slides `embed` embeds: every tiled slide of the job or a manifest's, one shard of them, and the checks
before any work (weights first, then a tiled job with something to embed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_ncmi.embedding.embed import EmbedSettings
from wsi_ncmi.embedding.job import EmbedJobError, embed_targets
from wsi_ncmi.formats.shards import shard_of

SETTINGS = EmbedSettings("resnet18", "random", workers=0)


def _tiled(job: Path, ids: list[str]) -> Path:
    (job / "tiles").mkdir(parents=True)
    for slide_id in ids:
        (job / "tiles" / f"{slide_id}.h5").write_bytes(b"")
    return job


def test_every_tiled_slide_or_the_manifest_s(tmp_path: Path) -> None:
    job = _tiled(tmp_path / "job", ["b", "a"])
    assert embed_targets(job, SETTINGS, ["resnet18"]) == [("a", None), ("b", None)]
    table = {"slide_id": ["a", "c"], "path": ["/s/a.tif", ""]}
    assert embed_targets(job, SETTINGS, ["resnet18"], table) == [("a", "/s/a.tif"), ("c", None)]


def test_shards_split_the_slides_between_them(tmp_path: Path) -> None:
    ids = [f"s{i}" for i in range(12)]
    job = _tiled(tmp_path / "job", ids)
    parts = []
    for index in range(3):
        if not any(shard_of(s, 3) == index for s in ids):
            with pytest.raises(EmbedJobError, match="no slides to embed"):
                embed_targets(job, SETTINGS, ["resnet18"], shard=(index, 3))
            continue
        chosen = [slide_id for slide_id, _ in embed_targets(job, SETTINGS, ["resnet18"], shard=(index, 3))]
        assert all(shard_of(s, 3) == index for s in chosen)
        parts += chosen
    assert sorted(parts) == sorted(ids)


def test_weights_are_checked_before_the_job_folder(tmp_path: Path) -> None:
    from wsi_ncmi.embedding.weights import WeightsError

    with pytest.raises(WeightsError, match="unknown encoder"):
        embed_targets(tmp_path, SETTINGS, ["resnet-18"])
    with pytest.raises(ValueError, match="fits one encoder"):
        embed_targets(tmp_path, EmbedSettings("resnet18", str(tmp_path / "w.pt")), ["resnet18", "resnet34"])
    with pytest.raises(EmbedJobError, match="no tiles/ folder"):
        embed_targets(tmp_path, SETTINGS, ["resnet18"])
    with pytest.raises(EmbedJobError, match="no slides to embed"):
        embed_targets(_tiled(tmp_path / "empty", []), SETTINGS, ["resnet18"])
