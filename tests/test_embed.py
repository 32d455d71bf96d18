"""The embed stage: determinism, faithfulness to the encoder, resume, bad inputs, and the bag formats."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.embedding.embed import Embedder, EmbedSettings, TileDataset, bag_path, embed_slides, plan_slide
from wsi_ncmi.embedding.registry import Preprocess, encoder_folder, get_encoder, list_encoders
from wsi_ncmi.embedding.weights import WeightsError, load_encoder
from wsi_ncmi.formats.bags import FEATURE_ATTRS, read_bag, read_coords
from wsi_ncmi.slides.backend import open_slide
from wsi_ncmi.synthetic import SlideSpec, write_slide
from wsi_ncmi.tiling.tile import TilingParams, tile_slides

runner = CliRunner()
FAST = EmbedSettings(encoder="resnet18", weights="random", batch_size=8, workers=0)
TILING = TilingParams(mpp=2.0, tile_size=128)


def _tile(slides: dict[str, Path], job: Path) -> Path:
    import pandas as pd

    table = pd.DataFrame(
        {"slide_id": list(slides), "path": [str(p) for p in slides.values()], "mpp": [float("nan")] * len(slides)}
    )
    rows = tile_slides(table, job, TILING, progress=False)
    assert all(not r.failed for r in rows), rows
    return job


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("embed_slides") / "small.tif"
    write_slide(SlideSpec("small", 4096, 3072, 0.25, seed=21, tissue_fraction=0.6), path)
    return path


@pytest.fixture
def job(small_slide: Path, tmp_path: Path) -> Path:
    return _tile({"small": small_slide}, tmp_path / "job")


def _features(job: Path, settings: EmbedSettings = FAST, slide_id: str = "small") -> np.ndarray:
    rows = embed_slides([(slide_id, None)], job, settings, progress=False)
    assert rows[0].status == "ok", rows[0]
    return read_bag(bag_path(job, settings.encoder, slide_id)).features


def test_features_are_bit_identical_across_runs_and_worker_counts(job: Path, tmp_path: Path) -> None:
    first = _features(job)
    again = _features(job, replace(FAST, overwrite=True))
    parallel = _features(job, replace(FAST, overwrite=True, workers=2))
    assert first.shape[0] >= 5 and first.shape[1] == 512
    assert np.array_equal(first, again) and np.array_equal(first, parallel)


def test_pipeline_equals_encoder_on_hand_read_tile(job: Path, small_slide: Path) -> None:
    features = _features(job)
    coords = read_coords(job / "tiles" / "small.h5")
    spec = get_encoder("resnet18")
    model, _ = load_encoder(spec, "random", seed=0)
    picks = [0, len(coords.coords) // 2, len(coords.coords) - 1]
    with open_slide(small_slide) as slide:
        tiles = []
        for i in picks:
            x, y = coords.coords[i]
            size = int(coords.attrs["patch_size"])
            region = slide.read_region((x, y), int(coords.attrs["patch_level"]), (size, size))
            from PIL import Image

            tile_size = int(coords.attrs["tile_size"])
            image = Image.fromarray(region).resize((tile_size, tile_size), Image.Resampling.BILINEAR)
            image = image.resize((224, 224), Image.Resampling.BILINEAR)
            tiles.append(np.asarray(image, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = model(x).numpy()
    np.testing.assert_allclose(features[picks], expected, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_on_cpu_agrees_with_fp32(job: Path) -> None:
    fp32 = _features(job)
    bf16 = _features(job, replace(FAST, precision="bf16", overwrite=True))
    cosine = (fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    assert cosine.min() >= 0.99


def test_bag_layout_attributes_and_pt(job: Path) -> None:
    _features(job, replace(FAST, also_pt=True, feature_dtype="float16"))
    path = bag_path(job, "resnet18", "small")
    coords = read_coords(job / "tiles" / "small.h5")
    with h5py.File(path, "r") as h5:
        assert h5["features"].dtype == np.float16 and h5["features"].shape == (len(coords.coords), 512)
        assert np.array_equal(h5["coords"][:], coords.coords)
        assert dict(h5["coords"].attrs)["mpp_target"] == 2.0
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5["features"].attrs.items()}
        for key, kind in FEATURE_ATTRS.items():
            assert isinstance(attrs[key], kind), key
        assert attrs["weights"] == "random:seed=0" and attrs["precision"] == "fp32" and attrs["input_size"] == 224
        assert h5["failed_tiles"].shape == (0,)
    pt = torch.load(path.with_suffix(".pt"), weights_only=True)
    assert pt.shape == (len(coords.coords), 512)


def test_resume_skips_and_refuses_changed_settings(job: Path) -> None:
    _features(job)
    path = bag_path(job, "resnet18", "small")
    before = path.stat().st_mtime_ns
    assert embed_slides([("small", None)], job, FAST, progress=False)[0].status == "skipped"
    changed = embed_slides([("small", None)], job, replace(FAST, precision="bf16"), progress=False)[0]
    assert changed.status == "failed" and "precision was 'fp32', now 'bf16'" in changed.error
    assert "--overwrite" in changed.error and path.stat().st_mtime_ns == before
    assert (
        embed_slides([("small", None)], job, replace(FAST, precision="bf16", overwrite=True), progress=False)[0].status
        == "ok"
    )


def test_bags_from_before_the_preprocess_attribute_still_resume(job: Path) -> None:
    _features(job)
    path = bag_path(job, "resnet18", "small")
    with h5py.File(path, "a") as h5:
        assert h5["features"].attrs["preprocess"] == "resize=224,bilinear,crop=224"
        del h5["features"].attrs["preprocess"]
    assert embed_slides([("small", None)], job, FAST, progress=False)[0].status == "skipped"


def test_retiling_makes_the_bag_stale(job: Path, small_slide: Path) -> None:
    _features(job)
    import pandas as pd

    table = pd.DataFrame({"slide_id": ["small"], "path": [str(small_slide)], "mpp": [float("nan")]})
    tile_slides(table, job, replace(TILING, min_tissue=0.6), overwrite=True, progress=False)
    row = embed_slides([("small", None)], job, FAST, progress=False)[0]
    assert row.status == "failed" and "tiled again" in row.error


def test_missing_and_foreign_coords_files(job: Path) -> None:
    work, rows = plan_slide("nope", None, job, FAST, [{"encoder": "resnet18"}, {"encoder": "uni"}])
    assert work is None and set(rows) == {"resnet18", "uni"}
    row = rows["uni"]
    assert row.status == "failed" and "nope.h5" in row.error and "wsi-ncmi tile" in row.error
    with h5py.File(job / "tiles" / "small.h5", "a") as h5:
        h5["coords"].attrs["format_version"] = 99
    work, rows = plan_slide("small", None, job, FAST, [{"encoder": "resnet18"}])
    row = rows["resnet18"]
    assert work is None and row.status == "failed" and "format_version 99" in row.error


def test_a_slide_is_opened_once_to_plan_every_encoder(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsi_ncmi.embedding import embed

    opened: list[str] = []

    def counting(path: str, backend: str = "auto") -> object:
        opened.append(path)
        return open_slide(path, backend)

    monkeypatch.setattr(embed, "open_slide", counting)
    names = ["resnet18", "uni", "virchow2"]
    work, rows = plan_slide("small", None, job, FAST, [{"encoder": n} for n in names], decode="device")
    assert rows == {} and work is not None and list(work.outputs) == names
    assert len(opened) == 1 and work.decode == "device"
    work, _ = plan_slide("small", None, job, FAST, [{"encoder": "resnet18"}])
    assert len(opened) == 2 and work is not None and work.decode == "cpu"


def test_changed_slide_file_is_refused(job: Path, small_slide: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.tif"
    write_slide(SlideSpec("o", 2048, 3072, 0.25, seed=2), other)
    row = embed_slides([("small", str(other))], job, FAST, progress=False)[0]
    assert row.status == "failed" and "2048x3072" in row.error and "4096x3072" in row.error


def _corrupt_tile_under(path: Path, level: int, x0: int, y0: int) -> None:
    """Overwrite with zeros the JPEG data of the TIFF tile of `level` that holds level-0 point (x0, y0)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[level]
        downsample = tif.pages[0].shape[1] / page.shape[1]
        across = -(-page.shape[1] // page.tilewidth)
        index = int(y0 / downsample) // page.tilelength * across + int(x0 / downsample) // page.tilewidth
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00" * count)


def test_unreadable_tiles_are_zero_filled_or_fail_the_slide(small_slide: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tif"
    shutil.copy(small_slide, damaged)
    job = _tile({"damaged": damaged}, tmp_path / "job")
    coords = read_coords(job / "tiles" / "damaged.h5")
    x0, y0 = coords.coords[len(coords.coords) // 2]
    _corrupt_tile_under(damaged, int(coords.attrs["read_level"]), int(x0), int(y0))
    tolerant = replace(FAST, max_failed_fraction=0.9)
    row = embed_slides([("damaged", None)], job, tolerant, progress=False)[0]
    assert row.status == "ok" and "zero-filled" in row.warning
    bag = read_bag(bag_path(job, "resnet18", "damaged"))
    failed = bag.metadata["failed_tiles"]
    assert len(coords.coords) // 2 in failed.tolist() and len(failed) < len(bag)
    readable = np.setdiff1d(np.arange(len(bag)), failed)
    assert not bag.features[failed].any() and (np.abs(bag.features[readable]).sum(axis=1) > 0).all()
    strict = embed_slides([("damaged", None)], job, replace(FAST, overwrite=True), progress=False)[0]
    assert strict.status == "failed" and "could not be read" in strict.error
    assert read_bag(bag_path(job, "resnet18", "damaged")).metadata["failed_tiles"].tolist() == failed.tolist()


def test_empty_coords_give_an_empty_bag(tmp_path: Path) -> None:
    blank = tmp_path / "blank.tif"
    write_slide(SlideSpec("b", 2048, 2048, 0.5, seed=1, tissue_fraction=0.0), blank)
    job = tmp_path / "job"
    import pandas as pd

    tile_slides(
        pd.DataFrame({"slide_id": ["blank"], "path": [str(blank)], "mpp": [float("nan")]}), job, TILING, progress=False
    )
    row = embed_slides([("blank", None)], job, FAST, progress=False)[0]
    assert row.status == "no_tissue"
    bag = read_bag(bag_path(job, "resnet18", "blank"))
    assert bag.features.shape == (0, 512) and bag.coords.shape == (0, 2)


def test_out_of_memory_halves_the_batch() -> None:
    class Fussy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if len(x) > 3:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return x.mean(dim=(2, 3))

    embedder = Embedder(Fussy(), get_encoder("resnet18"), torch.device("cpu"), "fp32")
    images = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    out = embedder(images)
    assert out.shape == (10, 3) and embedder.micro_batch == 2
    assert "continuing with batches of 2" in embedder.notes[-1]


def test_dataset_zero_fills_after_one_retry(job: Path) -> None:
    from wsi_ncmi.embedding.embed import SlideWork

    coords = read_coords(job / "tiles" / "small.h5")
    work = SlideWork("small", "/nonexistent.tif", {"resnet18": Path("x")}, coords)
    (tile,), _, _, ok = TileDataset([work], [Preprocess(32, 32)], "auto")[(0, 0)]
    assert not ok and tile.shape == (3, 32, 32) and not tile.any()


def test_weights_from_a_file_and_missing_imagenet(tmp_path: Path) -> None:
    spec = get_encoder("resnet18")
    model, _ = load_encoder(spec, "random", seed=3)
    path = tmp_path / "my_resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded, label = load_encoder(spec, str(path))
    assert label.startswith("sha256:") and label.endswith(":my_resnet18.pth")
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="does not fit resnet18"):
        load_encoder(spec, str(tmp_path / "wrong.pth"))
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="missing from the file"):
        load_encoder(spec, str(tmp_path / "partial.pth"))
    with pytest.raises(WeightsError, match="not 'pretrained', 'random' or an existing file"):
        load_encoder(spec, str(tmp_path / "absent.pth"))


def test_missing_imagenet_weights_error_says_what_to_do(
    job: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    result = runner.invoke(app, ["embed", "--job", str(job), "--encoder", "resnet18", "--workers", "0"])
    assert result.exit_code == 2
    assert "not in the local cache" in result.output and "--allow-download" in result.output


def test_registry_and_timm_entries() -> None:
    assert {"resnet50_trunc", "resnet18", "resnet50"} <= set(list_encoders())
    assert get_encoder("resnet50_trunc").dim == 1024 and get_encoder("resnet50").dim == 2048
    with pytest.raises(KeyError, match=r"known: .*resnet18"):
        get_encoder("nonsense")
    spec = get_encoder("timm:resnet10t")
    model, _ = load_encoder(spec, "random")
    with torch.inference_mode():
        assert model(torch.rand(1, 3, spec.input_size, spec.input_size)).shape == (1, spec.dim)
    assert encoder_folder("timm:hf-hub:MahmoodLab/uni") == "timm-hf-hub-MahmoodLab-uni"


def test_cli_embeds_all_tiled_slides_and_reports(job: Path) -> None:
    result = runner.invoke(
        app,
        [
            "embed",
            "--job",
            str(job),
            "--encoder",
            "resnet18",
            "--weights",
            "random",
            "--workers",
            "0",
            "--batch-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    with open(job / "status" / "embed.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["slide_id"], r["status"]) for r in rows] == [("small", "ok")]
    assert "random-initialised" in result.output


def test_interop_readers(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(7, 16)).astype(np.float32)
    coords = np.arange(14, dtype=np.int64).reshape(7, 2)
    clam = tmp_path / "h5_files" / "slideA.h5"
    clam.parent.mkdir()
    with h5py.File(clam, "w") as h5:
        h5["features"] = features
        h5["coords"] = coords
    trident = tmp_path / "features_uni_v1" / "slideB.h5"
    trident.parent.mkdir()
    with h5py.File(trident, "w") as h5:
        h5["features"] = features[None]
        h5["coords"] = coords
        h5["coords"].attrs["patch_size_level0"] = 512
    a, b = read_bag(clam), read_bag(trident)
    assert (a.slide_id, a.metadata["source"]) == ("slideA", "clam")
    assert (b.slide_id, b.metadata["source"], b.metadata["encoder"]) == ("slideB", "trident", "uni_v1")
    assert b.metadata["coords_attrs"]["patch_size_level0"] == 512
    for bag in (a, b):
        assert np.array_equal(bag.features, features) and np.array_equal(bag.coords, coords) and bag.dim == 16


def test_unknown_timm_model_fails_clearly_offline() -> None:
    with pytest.raises(ValueError, match="cannot build the model offline"):
        get_encoder("timm:hf-hub:nobody/no-such-model")


def test_cluster_tasks_load_the_encoder_once_per_worker(
    small_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_ncmi.embedding import embed

    loads = []

    def counting(*args: object, **kwargs: object) -> object:
        loads.append(args)
        return load_encoder(*args, **kwargs)

    monkeypatch.setattr(embed, "load_encoder", counting)
    settings = replace(FAST, seed=4321)
    jobs = [_tile({"small": small_slide}, tmp_path / f"job{i}") for i in range(2)]
    rows = [embed.embed_task(embed.EmbedTask("small", None, str(job), settings)) for job in jobs]
    assert [row.status for row in rows] == ["ok", "ok"] and len(loads) == 1
    kept = read_bag(bag_path(jobs[1], "resnet18", "small")).features
    assert np.array_equal(kept, _features(_tile({"small": small_slide}, tmp_path / "fresh"), settings))
    assert len(loads) == 2
    embed.embed_task(embed.EmbedTask("small", None, str(jobs[0]), replace(settings, seed=4322, overwrite=True)))
    assert len(loads) == 3


def test_dask_executor_matches_local(small_slide: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    other = tmp_path / "other.tif"
    write_slide(SlideSpec("other", 3072, 2048, 0.25, seed=22, tissue_fraction=0.5), other)
    slides = {"small": small_slide, "other": other}
    local = _tile(slides, tmp_path / "local")
    embed_slides([(s, None) for s in slides], local, FAST, progress=False)
    folder = tmp_path / "slides"
    folder.mkdir()
    for name, path in slides.items():
        (folder / f"{name}.tif").symlink_to(path)
    job = tmp_path / "dask"
    tiled = runner.invoke(
        app,
        [
            "tile",
            "--slides",
            str(folder),
            "--out",
            str(job),
            "--mpp",
            "2.0",
            "--tile-size",
            "128",
            "--executor",
            "dask",
            "--workers",
            "2",
        ],
    )
    assert tiled.exit_code == 0, tiled.output
    embedded = runner.invoke(
        app,
        [
            "embed",
            "--job",
            str(job),
            "--encoder",
            "resnet18",
            "--weights",
            "random",
            "--batch-size",
            "8",
            "--executor",
            "dask",
            "--dask-workers",
            "2",
        ],
    )
    assert embedded.exit_code == 0, embedded.output
    for name in slides:
        assert np.array_equal(
            read_coords(job / "tiles" / f"{name}.h5").coords, read_coords(local / "tiles" / f"{name}.h5").coords
        )
        assert np.array_equal(
            read_bag(bag_path(job, "resnet18", name)).features, read_bag(bag_path(local, "resnet18", name)).features
        )
    assert not list((job / "features" / "resnet18").glob("*.lock"))


def test_locks_keep_two_workers_apart(tmp_path: Path) -> None:
    import json
    import os
    import socket

    from wsi_ncmi.core.locks import LockedError, acquire_lock, release_lock

    output = tmp_path / "bag.h5"
    lock = acquire_lock(output)
    with pytest.raises(LockedError, match="being written by another worker"):
        acquire_lock(output)
    release_lock(lock)
    Path(f"{output}.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "time": 0}))
    with pytest.warns(UserWarning, match="stale lock"):
        release_lock(acquire_lock(output))
    Path(f"{output}.lock").write_text(json.dumps({"host": "elsewhere", "pid": os.getpid(), "time": 1.0}))
    with pytest.warns(UserWarning, match="h old"):
        release_lock(acquire_lock(output))
