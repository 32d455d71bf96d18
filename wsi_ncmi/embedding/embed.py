"""The embedding stage: coords files + slides -> feature bags, one HDF5 file per slide and encoder.

Tiles flow: TileDataset.read (the slide region, decoded to uint8 at the tile size, once per tile whatever the
number of encoders) -> each encoder's Preprocess (resize, crop) -> Embedder (normalise on the device, forward,
pool) -> `storable` (finite, within the storage dtype) -> BagWriter. With decoding on the device, the reader
processes pass on each tile's JPEG stream instead, and the main process decodes, resizes and crops the batch on
the encoder's device (TileDataset.device_inputs), with the same pixels up to the JPEG decoder's rounding.

One DataLoader serves every slide, so its worker processes stay warm from slide to slide; batches never span two
slides, so a slide's features are the same whether it is embedded alone or in a cohort. Each worker opens its
own slide handles. Features stream into the bag in chunks, never held for a whole slide.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsi_ncmi.core.device import resolve_device
from wsi_ncmi.core.locks import LockedError, acquire_lock, release_lock
from wsi_ncmi.embedding.device_decode import streams_available
from wsi_ncmi.embedding.registry import EncoderSpec, get_encoder
from wsi_ncmi.embedding.stain import METHODS as STAIN_METHODS
from wsi_ncmi.embedding.stain import UNRECORDED, StainNormaliser, stain_normaliser
from wsi_ncmi.embedding.tiles import SlideWork, TileDataset, slide_batches
from wsi_ncmi.embedding.weights import load_encoder, weights_label
from wsi_ncmi.formats.bags import (
    BagFormatError,
    BagWriter,
    CoordsFile,
    coords_digest,
    read_bag_attrs,
    read_coords,
)
from wsi_ncmi.formats.layout import JobFolder, bag_path, coords_path, tensor_beside
from wsi_ncmi.formats.status import BUSY, FAILED, NO_TISSUE, OK, SKIPPED, StatusRow
from wsi_ncmi.slides.backend import SlideError, open_slide

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DECODES = ("auto", "cpu", "device")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class EmbedSettings:
    """Settings of an embedding run; see `wsi-ncmi embed --help`."""

    encoder: str = "resnet50_trunc"
    weights: str = "pretrained"
    batch_size: int = 256
    workers: int = 4
    device: str = "auto"
    precision: str = "auto"
    feature_dtype: str = "float32"
    also_pt: bool = False
    overwrite: bool = False
    allow_download: bool = False
    seed: int = 0
    backend: str = "auto"
    max_failed_fraction: float = 0.05
    stain_norm: str = "none"
    stain_target: str | None = None
    decode: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.feature_dtype not in ("float32", "float16"):
            raise ValueError(f"feature dtype must be float32 or float16, got {self.feature_dtype!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError("batch size must be >= 1 and workers >= 0")
        if self.stain_norm not in STAIN_METHODS:
            raise ValueError(f"stain normalisation must be one of {', '.join(STAIN_METHODS)}, got {self.stain_norm!r}")
        if self.decode not in DECODES:
            raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")
        if self.decode == "device" and self.stain_norm != "none":
            raise ValueError(
                "decode device cannot be combined with stain normalisation, which runs on the CPU; use "
                "decode auto or cpu"
            )


def resolve_decode(settings: EmbedSettings, device: torch.device) -> str:
    """auto -> device (JPEG tiles decoded on the encoder's device) on CUDA without stain normalisation, else cpu."""
    if settings.decode != "auto":
        return settings.decode
    return "device" if device.type == "cuda" and settings.stain_norm == "none" else "cpu"


def resolve_precision(precision: str, device: torch.device, spec: EncoderSpec) -> str:
    """auto -> the encoder's preferred reduced precision on CUDA (bf16 where supported), fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    if spec.precision == "bf16" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp16" if spec.precision in ("bf16", "fp16") else "fp32"


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class Embedder:
    """A model on a device with its normalisation and precision; halves the batch on out-of-memory errors."""

    def __init__(self, model: torch.nn.Module, spec: EncoderSpec, device: torch.device, precision: str):
        self.device = device
        self.precision = precision
        self.model = model.to(device).eval()
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0
        self.micro_batch: int | None = None
        self.notes: list[str] = []

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.to(self.device, non_blocking=True).float() - self.mean) / self.std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision in AUTOCAST:
            with torch.autocast(self.device.type, dtype=AUTOCAST[self.precision]):
                return self.model(x).float()
        return self.model(x).float()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        while True:
            step = self.micro_batch or len(images)
            try:
                parts = [self._forward(images[i : i + step]) for i in range(0, len(images), step)]
                return torch.cat(parts).cpu().numpy()
            except torch.OutOfMemoryError:
                if step <= 1:
                    raise
                self.micro_batch = max(1, step // 2)
                self.notes.append(f"out of memory at batch {step}; continuing with batches of {self.micro_batch}")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


def _expected_attrs(settings: EmbedSettings, spec: EncoderSpec, precision: str, label: str) -> dict[str, Any]:
    return {
        "encoder": spec.name,
        "weights": label,
        "precision": precision,
        "input_size": spec.input_size,
        "preprocess": spec.preprocess.describe(),
        "normalization": spec.normalization,
        "feature_dtype": settings.feature_dtype,
    }


def _legacy_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """What bags written before an attribute existed did: every encoder's input was a bilinear resize to its size."""
    size = attrs.get("input_size")
    return {"preprocess": f"resize={size},bilinear,crop={size}"}


def _existing_bag(out: Path, coords: CoordsFile, expected: dict[str, Any], slide_id: str) -> StatusRow | None:
    """The final row of an encoder whose bag exists (skipped; failed when made with other settings or tiles), or
    None when the bag is missing or unreadable and the slide still needs this encoder."""
    if not out.exists():
        return None
    try:
        attrs = read_bag_attrs(out)
    except BagFormatError:
        return None
    mpp, source = coords.geometry.mpp_level0, coords.geometry.mpp_source
    attrs = {**UNRECORDED, **_legacy_attrs(attrs), **attrs}
    changed = [f"{k} was {attrs.get(k)!r}, now {v!r}" for k, v in expected.items() if attrs.get(k) != v]
    if attrs.get("coords_sha256") != coords_digest(coords.coords):
        changed.append("the slide was tiled again since")
    if changed:
        return StatusRow(
            slide_id,
            FAILED,
            mpp_level0=mpp,
            mpp_source=source,
            error=f"{out}: bag exists with other settings ({'; '.join(changed)}); pass --overwrite to embed it again",
        )
    return StatusRow(slide_id, SKIPPED, n_tiles=len(coords.coords), mpp_level0=mpp, mpp_source=source)


def _check_slide(work: SlideWork, backend: str, decode: str) -> str:
    """Open the slide once: the error when it cannot be opened or its size is not the tiled one, else '' (and, for
    decode 'device', the work decodes on the device when every tile is one whole JPEG tile of the slide)."""
    coords = work.coords
    if not len(coords.coords):
        return ""
    was = (coords.geometry.width, coords.geometry.height)
    try:
        with open_slide(work.slide_path, backend) as slide:
            now = tuple(slide.dimensions)
            if now != was:
                return (
                    f"{work.slide_path}: slide is {now[0]}x{now[1]} px but was {was[0]}x{was[1]} when tiled; "
                    "the file changed: tile it again with --overwrite"
                )
            if decode == "device" and streams_available(slide, work.read_level, work.read_size, coords.coords):
                work.decode = "device"
    except SlideError as exc:
        return str(exc)
    return ""


def plan_slide(
    slide_id: str,
    slide_path: str | None,
    job: Path,
    settings: EmbedSettings,
    expected: list[dict[str, Any]],
    decode: str = "cpu",
) -> tuple[SlideWork | None, dict[str, StatusRow]]:
    """Check one slide's inputs (its coords file read and the slide opened once, whatever the number of encoders)
    and each encoder's existing bag: the work left (None when there is none), and the final rows (skipped /
    failed) of the encoders that need no work; `decode` is the run's resolved decode path."""
    names = [e["encoder"] for e in expected]
    try:
        coords = read_coords(coords_path(job, slide_id))
    except BagFormatError as exc:
        return None, {name: StatusRow(slide_id, FAILED, error=str(exc)) for name in names}
    rows: dict[str, StatusRow] = {}
    outputs: dict[str, Path] = {}
    for name, attrs in zip(names, expected, strict=True):
        out = bag_path(job, name, slide_id)
        done = None if settings.overwrite else _existing_bag(out, coords, attrs, slide_id)
        if done is None:
            outputs[name] = out
        else:
            rows[name] = done
    if not outputs:
        return None, rows
    work = SlideWork(slide_id, slide_path or coords.geometry.slide_path, outputs, coords)
    error = _check_slide(work, settings.backend, decode)
    if error:
        mpp, source = coords.geometry.mpp_level0, coords.geometry.mpp_source
        failed = {name: StatusRow(slide_id, FAILED, mpp_level0=mpp, mpp_source=source, error=error) for name in outputs}
        return None, {**rows, **failed}
    return work, rows


@dataclass
class EncoderRun:
    """One encoder of an embedding pass: its spec, the attributes its bags record, and (once loaded) its model."""

    spec: EncoderSpec
    expected: dict[str, Any]
    embedder: Embedder | None = None


def embed_slides(
    slides: list[tuple[str, str | None]],
    job: Path,
    settings: EmbedSettings,
    progress: bool = True,
    keep_model: bool = False,
) -> list[StatusRow]:
    """Embed every (slide_id, slide path or None to use the coords file's) into JOB/features/{encoder}/."""
    name = get_encoder(settings.encoder).name
    return embed_encoders(slides, job, settings, [name], progress, keep_model)[name]


def embed_encoders(
    slides: list[tuple[str, str | None]],
    job: Path,
    settings: EmbedSettings,
    encoders: list[str],
    progress: bool = True,
    keep_model: bool = False,
) -> dict[str, list[StatusRow]]:
    """Embed every slide with every encoder in one pass: each tile is read and decoded once and fed to each encoder
    (its own resize and normalisation) that still needs the slide; one bag folder and one row list per encoder.

    Each bag is locked while it is written, so concurrent workers never write the same bag. keep_model keeps
    the loaded encoders in this process for the next call with the same settings (cluster workers).
    """
    device = resolve_device(settings.device)
    stain = stain_normaliser(settings.stain_norm, settings.stain_target).attrs()
    runs: dict[str, EncoderRun] = {}
    for name in encoders:
        spec = get_encoder(name)
        precision = resolve_precision(settings.precision, device, spec)
        label = weights_label(settings.weights, spec, settings.seed)
        runs[spec.name] = EncoderRun(spec, {**_expected_attrs(settings, spec, precision, label), **stain})
        JobFolder(job).bags(spec.name).mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, StatusRow]] = {name: {} for name in runs}
    merged: dict[str, SlideWork] = {}
    decode = resolve_decode(settings, device)
    for slide_id, path in slides:
        planned, done = plan_slide(slide_id, path, Path(job), settings, [r.expected for r in runs.values()], decode)
        for name, row in done.items():
            rows[name][slide_id] = row
        if planned is not None:
            merged[slide_id] = planned
    locks = []
    for item in merged.values():
        for name, out in list(item.outputs.items()):
            try:
                locks.append(acquire_lock(out))
            except LockedError as exc:
                del item.outputs[name]
                rows[name][item.slide_id] = _row(item, BUSY, 0.0, warning=str(exc))
    work = [item for item in merged.values() if item.outputs]
    try:
        if work:
            for name, done in _embed_work(work, runs, settings, device, progress, keep_model).items():
                rows[name].update(done)
    finally:
        for lock in locks:
            release_lock(lock)
    return {name: [rows[name][slide_id] for slide_id, _ in slides] for name in runs}


_LOADED: dict[tuple[str, str], tuple[torch.nn.Module, str]] = {}
_LOADED_LOCK = threading.Lock()


def _load(spec: EncoderSpec, settings: EmbedSettings) -> tuple[torch.nn.Module, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_encoder(spec, settings.weights, settings.seed, settings.allow_download)


def _kept_encoders(runs: dict[str, EncoderRun], settings: EmbedSettings) -> dict[str, tuple[torch.nn.Module, str]]:
    """The encoders and their weights labels, kept for the next call in this process: a Dask worker embeds one
    slide per task and would otherwise load the models again for each. Keyed by the weights label, so a changed
    weights file (another sha256) is loaded afresh; encoders this call does not use are let go."""
    keys = {name: (name, run.expected["weights"]) for name, run in runs.items()}
    with _LOADED_LOCK:
        for key in set(_LOADED) - set(keys.values()):
            del _LOADED[key]
        for name, key in keys.items():
            if key not in _LOADED:
                _LOADED[key] = _load(runs[name].spec, settings)
        return {name: _LOADED[key] for name, key in keys.items()}


def _embed_work(
    work: list[SlideWork],
    runs: dict[str, EncoderRun],
    settings: EmbedSettings,
    device: torch.device,
    progress: bool,
    keep_model: bool,
) -> dict[str, dict[str, StatusRow]]:
    """Load the encoders once (or reuse the kept ones) and embed every planned slide."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if keep_model:
        loaded = _kept_encoders(runs, settings)
    else:
        loaded = {name: _load(run.spec, settings) for name, run in runs.items()}
    for name, run in runs.items():
        model, label = loaded[name]
        run.expected["weights"] = label
        run.embedder = Embedder(model, run.spec, device, run.expected["precision"])
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("embedding", total=sum(len(w.coords.coords) for w in work), rate="")
        return _run(work, runs, settings, bar, task)


def storable(features: np.ndarray, dtype: str) -> tuple[np.ndarray, int, str]:
    """Features cast to the storage dtype, or the first bad row and why: NaN/inf from the encoder, or (for float16)
    values beyond its range, which the cast would turn into inf. The row is -1 when all is well."""
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        return features, int(np.argmin(finite)), "NaN/inf features; embed it with --precision fp32"
    if dtype == "float16" and len(features):
        peak = np.abs(features).max(axis=1)
        limit = float(np.finfo(np.float16).max)
        if (peak > limit).any():
            row = int(np.argmax(peak > limit))
            return (
                features,
                row,
                (
                    f"feature values up to {float(peak[row]):.4g}, beyond float16's range ({limit:g}); embed it with "
                    "--feature-dtype float32"
                ),
            )
    return features.astype(dtype), -1, ""


def _run(
    work: list[SlideWork],
    runs: dict[str, EncoderRun],
    settings: EmbedSettings,
    bar: Any,
    task: Any,
) -> dict[str, dict[str, StatusRow]]:
    rows: dict[str, dict[str, StatusRow]] = {name: {} for name in runs}
    for item in work:
        if not len(item.coords.coords):
            for name, out in item.outputs.items():
                writer = BagWriter(out, 0, runs[name].spec.dim, settings.feature_dtype)
                try:
                    attrs = _bag_attrs(item, runs[name].expected)
                    writer.finish(item.coords, attrs, np.zeros(0, np.int64), _pt_path(out, settings))
                except OSError as exc:
                    rows[name][item.slide_id] = _row(item, FAILED, 0.0, error=str(exc))
                    continue
                rows[name][item.slide_id] = _row(item, NO_TISSUE, 0.0, "no tiles in the coords file: empty bag written")
    work = [w for w in work if len(w.coords.coords)]
    if not work:
        return rows
    names = list(runs)
    device = runs[names[0]].embedder.device
    stain = StainNormaliser.from_attrs(runs[names[0]].expected)
    dataset = TileDataset(work, [runs[name].spec.preprocess for name in names], settings.backend, stain=stain)
    loader = DataLoader(
        dataset,
        batch_sampler=slide_batches(work, settings.batch_size),
        num_workers=settings.workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if settings.workers else None,
        persistent_workers=False,
        prefetch_factor=4 if settings.workers else None,
    )
    current: int | None = None
    writers: dict[str, BagWriter] = {}
    problems: dict[str, str] = {}
    failed: list[int] = []
    start = time.perf_counter()
    run_start = start
    done = 0
    try:
        for payload, slide_index, tile_index, ok in loader:
            s = int(slide_index[0])
            item = work[s]
            if item.decode == "device":
                inputs, ok = dataset.device_inputs(payload, s, tile_index.tolist(), device)
            else:
                inputs = payload
            if s != current:
                current, failed, problems, start = s, [], {}, time.perf_counter()
                n = len(item.coords.coords)
                writers = {
                    name: BagWriter(out, n, runs[name].spec.dim, settings.feature_dtype)
                    for name, out in item.outputs.items()
                }
            bad = (~ok).nonzero().flatten().tolist()
            first = int(tile_index[0])
            for i, name in enumerate(names):
                if name not in writers:
                    continue
                features = runs[name].embedder(inputs[i])
                features[bad] = 0.0
                stored, row, reason = storable(features, settings.feature_dtype)
                if reason:
                    writers.pop(name).abort()
                    problems[name] = f"{item.slide_path} ({name}): tile {first + row} has {reason}"
                    continue
                writers[name].write(first, stored)
            failed += [int(tile_index[i]) for i in bad]
            done += len(tile_index)
            bar.update(
                task,
                advance=len(tile_index),
                description=item.slide_id,
                rate=f"{done / max(time.perf_counter() - run_start, 1e-9):.0f} tiles/s",
            )
            if int(tile_index[-1]) == len(item.coords.coords) - 1:
                seconds = time.perf_counter() - start
                for name in item.outputs:
                    if name in problems:
                        rows[name][item.slide_id] = _row(item, FAILED, seconds, error=problems[name])
                    else:
                        run = runs[name]
                        rows[name][item.slide_id] = _finish(
                            item, name, writers[name], failed, run.expected, settings, run.embedder, start
                        )
                writers = {}
    finally:
        for writer in writers.values():
            writer.abort()
    return rows


def _bag_attrs(item: SlideWork, expected: dict[str, Any]) -> dict[str, Any]:
    """The attributes a finished bag records: the encoder settings, the digest of its coordinates, and where its
    tiles were decoded. The decode path is provenance, not a setting the resume check compares: both paths give
    the same pixels up to the JPEG decoder's rounding, as two libjpeg-turbo builds do."""
    return {**expected, "coords_sha256": coords_digest(item.coords.coords), "decode": item.decode}


def _pt_path(out: Path, settings: EmbedSettings) -> Path | None:
    return tensor_beside(out) if settings.also_pt else None


def _row(item: SlideWork, status: str, seconds: float, warning: str = "", error: str = "") -> StatusRow:
    return StatusRow(
        item.slide_id,
        status,
        n_tiles=len(item.coords.coords),
        mpp_level0=item.coords.geometry.mpp_level0,
        mpp_source=item.coords.geometry.mpp_source,
        seconds=seconds,
        warning=warning,
        error=error,
    )


def _finish(
    item: SlideWork,
    name: str,
    writer: BagWriter,
    failed: list[int],
    expected: dict[str, Any],
    settings: EmbedSettings,
    embedder: Embedder,
    start: float,
) -> StatusRow:
    n = len(item.coords.coords)
    notes = list(embedder.notes)
    embedder.notes.clear()
    if failed and len(failed) > math.floor(settings.max_failed_fraction * n):
        writer.abort()
        return _row(
            item,
            FAILED,
            time.perf_counter() - start,
            error=f"{item.slide_path}: {len(failed)} of {n} tiles could not be read or hold corrupt data (more than "
            f"{settings.max_failed_fraction:.0%}); the slide file is damaged: copy it again",
        )
    if failed:
        notes.append(
            f"{len(failed)} of {n} tile(s) unreadable or with corrupt data, zero-filled (indices in dataset "
            "failed_tiles)"
        )
    pt_path = _pt_path(item.outputs[name], settings)
    try:
        writer.finish(item.coords, _bag_attrs(item, expected), np.asarray(failed, np.int64), pt_path)
    except OSError as exc:
        return _row(item, FAILED, time.perf_counter() - start, error=str(exc))
    return _row(item, OK, time.perf_counter() - start, warning="; ".join(notes))


@dataclass(frozen=True)
class EmbedTask:
    """One slide to embed on its own (a Dask task): everything a remote worker needs."""

    slide_id: str
    slide_path: str | None
    job: str
    settings: EmbedSettings


def embed_task(task: EmbedTask) -> StatusRow:
    """Embed one slide; its DataLoader reads in the worker itself (workers 0), as cluster workers are daemons, and
    the worker keeps the encoder for its next slide."""
    from dataclasses import replace

    slides = [(task.slide_id, task.slide_path)]
    return embed_slides(slides, Path(task.job), replace(task.settings, workers=0), progress=False, keep_model=True)[0]


def embed_on_dask(
    slides: list[tuple[str, str | None]],
    job: Path,
    settings: EmbedSettings,
    workers: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
) -> list[StatusRow]:
    """One Dask task per slide; with a scheduler address and a non-CPU device each task asks for GPU=1."""
    from wsi_ncmi.batch.runner import run_slides

    tasks = [EmbedTask(slide_id, path, str(job), settings) for slide_id, path in slides]
    gpu = {"GPU": 1} if scheduler and settings.device != "cpu" else None
    return run_slides(
        embed_task, tasks, [t.slide_id for t in tasks], workers, "embedding", progress, "dask", scheduler, gpu
    )
