"""The command-line interface: one command per pipeline stage, nothing but argument handling and reporting.

Heavy libraries are imported inside the commands that need them, so `wsi-ncmi --help` starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from wsi_ncmi.cohort.manifest import Columns
    from wsi_ncmi.core.faults import Interrupted

app = typer.Typer(
    name="wsi-ncmi",
    help="Whole-slide images -> tiles -> feature bags -> MIL aggregators trained with NCMI -> honest metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


ShardOption = Annotated[str | None, typer.Option("--shard", help="Only shard I of N (I/N, 0-based) for array jobs.")]
ExecutorOption = Annotated[str, typer.Option("--executor", help="local or dask (a task per slide).")]
SchedulerOption = Annotated[
    str | None, typer.Option("--dask-scheduler", help="tcp://HOST:8786 of a running cluster [a LocalCluster].")
]


def _show_version(value: bool) -> None:
    """--version: print the package version and stop before any command runs."""
    if value:
        from wsi_ncmi import __version__

        typer.echo(f"wsi-ncmi {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Options that come before the command."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear error line to stderr and return the Exit to raise."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {message}", markup=True)
    return typer.Exit(code)


def _interrupted(stop: Interrupted, status_csv: Path) -> typer.Exit:
    """Say what finished before Ctrl-C/SIGTERM and how to resume; return the Exit (128 + signal) to raise."""
    import signal

    name = signal.Signals(stop.signum).name
    return _fail(
        f"interrupted by {name}: {len(stop.rows)} of {stop.total} slide(s) finished (status: {status_csv}); "
        "run the same command again to resume (finished slides are skipped)",
        128 + stop.signum,
    )


def _shard(text: str | None) -> tuple[int, int] | None:
    from wsi_ncmi.formats.shards import parse_shard

    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _summary(rows: list, stage: str, status_csv: Path) -> int:
    """Print a per-status summary and the failures; return the exit code (1 when any slide failed)."""
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    counts = Counter(row.status for row in rows)
    table = Table(title=f"{stage}: {len(rows)} slide(s)")
    table.add_column("status")
    table.add_column("slides", justify="right")
    table.add_column("tiles", justify="right")
    for status in sorted(counts):
        tiles = sum(row.n_tiles for row in rows if row.status == status)
        table.add_row(status, str(counts[status]), str(tiles))
    console.print(table)
    failed = [row for row in rows if row.failed]
    for row in failed[:20]:
        console.print(f"[red]failed[/] {row.slide_id}: {row.error}", markup=True, soft_wrap=True)
    if len(failed) > 20:
        console.print(f"... and {len(failed) - 20} more failures")
    warned = [row for row in rows if row.warning and not row.failed]
    for row in warned[:10]:
        console.print(f"[yellow]warning[/] {row.slide_id}: {row.warning}", markup=True, soft_wrap=True)
    console.print(f"status table: {status_csv}")
    return 1 if failed else 0


def _slide_table(manifest: Path | None, slides: Path | None) -> Columns:
    """The slides of --manifest or --slides as validated manifest columns (no pandas: `tile` starts fast)."""
    from wsi_ncmi.cohort.manifest import ManifestError, read_columns, slide_columns

    if (manifest is None) == (slides is None):
        raise _fail("give exactly one of --manifest M.csv or --slides DIR")
    if slides is not None and not slides.is_dir():
        raise _fail(f"{slides}: --slides folder does not exist or is not a folder; give the folder of slide files")
    try:
        return read_columns(manifest, require=["path"]) if manifest else slide_columns(slides)
    except ManifestError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for slides/, truth/ and manifest.csv.")],
    slides: Annotated[int, typer.Option("--slides", min=1, help="Number of slides.")] = 20,
    centers: Annotated[int, typer.Option("--centers", min=1, help="Hospitals, each with its own stain shift.")] = 5,
    nodes_per_case: Annotated[int, typer.Option("--nodes-per-case", min=1, help="Slides per patient.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same cohort.")] = 0,
    size: Annotated[str, typer.Option("--size", help="Level-0 size WxH in pixels.")] = "8192x6144",
    mpp: Annotated[float, typer.Option("--mpp", min=0.05, help="Level-0 microns per pixel.")] = 0.25,
    fmt: Annotated[str, typer.Option("--format", help="tiff (CAMELYON layout) or svs (Aperio layout).")] = "tiff",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a cohort made with other settings in --out.")
    ] = False,
) -> None:
    """Write a synthetic CAMELYON-style cohort: pyramidal JPEG TIFFs with tissue and lesions, truth, manifest.

    The same settings into the same --out continue an interrupted run; other settings need --overwrite."""
    from wsi_ncmi.cohort.synthdir import SynthFolderError, prepare_synth_folder
    from wsi_ncmi.synthetic import CohortSpec, write_cohort

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise _fail(f"--size {size!r} is not WIDTHxHEIGHT in pixels, e.g. 8192x6144") from exc
    if fmt not in ("tiff", "svs"):
        raise _fail(f"--format {fmt!r}: use tiff or svs")
    try:
        cohort = CohortSpec(slides, centers, nodes_per_case, width, height, mpp, seed, fmt)
    except ValueError as exc:
        raise _fail(f"--size {size!r}: {exc}") from exc
    try:
        prepare_synth_folder(out, cohort, overwrite)
    except SynthFolderError as exc:
        raise _fail(str(exc)) from exc
    manifest = write_cohort(cohort, out, progress=True)
    typer.echo(f"wrote {slides} synthetic slide(s); manifest: {manifest}")


@app.command()
def tile(
    out: Annotated[Path, typer.Option("--out", help="Job folder; tiles/, thumbnails/ and status/ go inside.")],
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Manifest CSV with a path column.")] = None,
    slides: Annotated[Path | None, typer.Option("--slides", help="Folder of slide files (id = file stem).")] = None,
    mpp: Annotated[float | None, typer.Option("--mpp", help="Target microns per pixel [config: 0.5].")] = None,
    tile_size: Annotated[int | None, typer.Option("--tile-size", help="Tile side in px at --mpp [256].")] = None,
    overlap: Annotated[int | None, typer.Option("--overlap", help="Overlap in px at --mpp [0].")] = None,
    min_tissue: Annotated[
        float | None,
        typer.Option("--min-tissue", help="Keep tiles with at least this tissue fraction [0.1]."),
    ] = None,
    grid: Annotated[
        str | None,
        typer.Option("--grid", help="slide (one lattice, no overlaps) or tissue (one per region, as CLAM) [slide]."),
    ] = None,
    edges: Annotated[
        str | None,
        typer.Option(
            "--edges",
            help="At the right/bottom edge: inward (a last whole tile moved in), overhang (white beyond), "
            "none [inward].",
        ),
    ] = None,
    thumbnails: Annotated[
        bool | None,
        typer.Option("--thumbnails/--no-thumbnails", help="Write thumbnails and label/macro images [yes]."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", help="auto (each format's own reader), openslide, tiffslide, wsidicom or pylibczirw [auto]."
        ),
    ] = None,
    assume_mpp: Annotated[
        float | None,
        typer.Option("--assume-mpp", help="Level-0 um/px for slides whose metadata has none."),
    ] = None,
    qc: Annotated[
        str | None,
        typer.Option("--qc", help="on: remove pen ink, black borders and blurry tiles (qc: in the config); off [on]."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Slides tiled in parallel (processes).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo slides whose outputs exist.")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML settings (configs/tiling.yaml); flags override it."),
    ] = None,
    shard: ShardOption = None,
    executor: ExecutorOption = "local",
    dask_scheduler: SchedulerOption = None,
) -> None:
    """Find tissue and tile each slide at a physical resolution; write JOB/tiles/*.h5 and JOB/thumbnails/*.jpg."""
    from wsi_ncmi.core.config import ConfigError, load_yaml, override
    from wsi_ncmi.core.faults import Interrupted
    from wsi_ncmi.formats.jobdir import JobDirError
    from wsi_ncmi.formats.shards import status_file
    from wsi_ncmi.tiling.tile import TilingParams, tile_slides

    if qc not in (None, "on", "off"):
        raise _fail(f"--qc must be on or off, got {qc!r}")
    try:
        settings = override(
            load_yaml(config),
            **{"qc.enabled": None if qc is None else qc == "on"},
            mpp=mpp,
            tile_size=tile_size,
            overlap=overlap,
            min_tissue=min_tissue,
            grid=grid,
            edges=edges,
            thumbnails=thumbnails,
            backend=backend,
            assume_mpp=assume_mpp,
        )
        params = TilingParams.from_dict(settings)
    except (ConfigError, ValueError, TypeError) as exc:
        raise _fail(f"tiling settings: {exc}") from exc
    table = _slide_table(manifest, slides)
    if not table["slide_id"]:
        raise _fail("no slides to tile (empty manifest or no slide files in the folder)")
    part = _shard(shard)
    try:
        rows = tile_slides(
            table, out, params, workers, overwrite, shard=part, executor=executor, scheduler=dask_scheduler
        )
    except Interrupted as stop:
        raise _interrupted(stop, status_file(out, "tile", part)) from stop
    except (JobDirError, RuntimeError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    raise typer.Exit(_summary(rows, "tile", status_file(out, "tile", part)))


@app.command()
def embed(
    job: Annotated[Path, typer.Option("--job", help="Job folder written by `tile`; bags go to JOB/features/ENCODER.")],
    encoder: Annotated[
        list[str],
        typer.Option(
            "--encoder",
            help="An entry of `wsi-ncmi encoders` or timm:<name>; repeat it to embed with several encoders in one "
            "pass (each tile read once).",
        ),
    ] = ["resnet50_trunc"],  # noqa: B006
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Embed these slides (path column).")] = None,
    slides: Annotated[Path | None, typer.Option("--slides", help="Embed the slide files in this folder.")] = None,
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="pretrained (the entry's published weights, from the local cache; 'imagenet' is the same), "
            "random (seeded; tests), or a state_dict/safetensors PATH.",
        ),
    ] = "pretrained",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Tiles per forward pass.")] = 256,
    workers: Annotated[
        str,
        typer.Option(
            "--workers",
            help="Processes reading tiles (0: the main process), or auto: every core but one on a GPU (at most "
            "16), one per 16 cores on a CPU (1 to 4).",
        ),
    ] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        str, typer.Option("--precision", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.")
    ] = "auto",
    decode: Annotated[
        str,
        typer.Option(
            "--decode",
            help="Where tiles that are whole JPEG tiles of the slide are decoded: device (torchvision on the "
            "encoder's device, nvJPEG on CUDA; other slides on the CPU), cpu, or auto (device on CUDA without "
            "--stain-norm, else cpu).",
        ),
    ] = "auto",
    feature_dtype: Annotated[
        str,
        typer.Option(
            "--feature-dtype", help="float32 or float16 on disk (readers upcast; a slide beyond float16 range fails)."
        ),
    ] = "float32",
    also_pt: Annotated[bool, typer.Option("--also-pt", help="Also write CLAM-style {slide_id}.pt tensors.")] = False,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Download missing weights (otherwise nothing is downloaded).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --weights random.")] = 0,
    stain_norm: Annotated[
        str,
        typer.Option(
            "--stain-norm", help="Stain normalisation of each tile before the encoder: none, macenko or reinhard."
        ),
    ] = "none",
    stain_target: Annotated[
        Path | None,
        typer.Option(
            "--stain-target",
            exists=True,
            dir_okay=False,
            help="H&E image (PNG, JPEG, TIFF) whose stains tiles are mapped to; default: a target fitted from a CC0 "
            "H&E scan (CMU-1-Small-Region).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo slides whose bags exist.")] = False,
    shard: ShardOption = None,
    executor: ExecutorOption = "local",
    dask_scheduler: SchedulerOption = None,
    dask_workers: Annotated[int, typer.Option("--dask-workers", min=1, help="LocalCluster processes.")] = 2,
) -> None:
    """Embed every tile of every tiled slide into JOB/features/ENCODER/{slide_id}.h5 (features N x D + coords).

    With several --encoder, each tile is read and decoded once and fed to every encoder (each with its own resize
    and normalisation); each encoder resumes on its own and writes its rows to status/embed-ENCODER.csv. With
    --executor dask and a scheduler address, each slide's task asks its worker for the resource GPU=1 unless
    --device cpu: start GPU workers with `dask worker ... --resources GPU=1`, one CUDA_VISIBLE_DEVICES each.
    """
    from wsi_ncmi.embedding.registry import encoder_folder
    from wsi_ncmi.embedding.weights import PUBLISHED, WeightsError, check_weights
    from wsi_ncmi.formats.shards import shard_of, status_file
    from wsi_ncmi.formats.status import write_status

    try:
        from wsi_ncmi.core.cores import parse_workers
        from wsi_ncmi.embedding.embed import EmbedSettings

        encoders = list(dict.fromkeys(encoder))
        if len(encoders) > 1 and weights not in (*PUBLISHED, "random"):
            raise ValueError("--weights PATH fits one encoder; with several --encoder use pretrained or random")
        settings = EmbedSettings(
            encoders[0],
            weights,
            batch_size,
            parse_workers(workers, device),
            device,
            precision,
            feature_dtype,
            also_pt,
            overwrite,
            allow_download,
            seed,
            stain_norm=stain_norm,
            stain_target=None if stain_target is None else str(stain_target),
            decode=decode,
        )
        for name in encoders:
            check_weights(name, weights, allow_download)
    except (ValueError, WeightsError) as exc:
        raise _fail(str(exc)) from exc
    if not (job / "tiles").is_dir():
        raise _fail(f"{job}: no tiles/ folder; run `wsi-ncmi tile --out {job}` first")
    if manifest is not None or slides is not None:
        table = _slide_table(manifest, slides)
        pairs = zip(table["slide_id"], table["path"], strict=True)
        targets = [(str(slide_id), str(path) or None) for slide_id, path in pairs]
    else:
        targets = [(p.stem, None) for p in sorted((job / "tiles").glob("*.h5"))]
    part = _shard(shard)
    if part is not None:
        targets = [t for t in targets if shard_of(t[0], part[1]) == part[0]]
    if not targets:
        raise _fail(f"{job}: no slides to embed")
    if weights == "random":
        typer.secho(
            f"warning: {', '.join(encoders)} with random-initialised weights (seed {seed}): features are for tests "
            "and demos, not for real models",
            fg="yellow",
            err=True,
        )
    try:
        results = _embed_run(targets, job, settings, encoders, executor, dask_workers, dask_scheduler)
    except (WeightsError, KeyError, ValueError, RuntimeError) as exc:
        raise _fail(str(exc).strip('"')) from exc
    codes = []
    for name, rows in results.items():
        stage = "embed" if len(results) == 1 else f"embed-{encoder_folder(name)}"
        write_status(status_file(job, stage, part), rows)
        codes.append(_summary(rows, stage, status_file(job, stage, part)))
    raise typer.Exit(max(codes))


def _embed_run(
    targets: list[tuple[str, str | None]],
    job: Path,
    settings: Any,
    encoders: list[str],
    executor: str,
    dask_workers: int,
    dask_scheduler: str | None,
) -> dict[str, list[Any]]:
    """Rows per encoder: one pass over the tiles locally; on Dask, one pass per encoder (a task is one slide)."""
    from dataclasses import replace

    from wsi_ncmi.embedding.embed import embed_encoders, embed_on_dask

    if executor != "dask":
        return embed_encoders(targets, job, settings, encoders)
    return {
        name: embed_on_dask(targets, job, replace(settings, encoder=name), dask_workers, dask_scheduler)
        for name in encoders
    }


@app.command()
def encoders(
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """List the registered encoders: output dim, input size, preprocessing, precision, licence, and whether the
    published weights are in the local cache (and where they are expected)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from wsi_ncmi.embedding.registry import get_encoder, registered
    from wsi_ncmi.embedding.weights import weights_present

    rows = []
    for name in registered():
        spec = get_encoder(name)
        found = spec.checkpoint.local() if spec.checkpoint else None
        rows.append(
            {
                "encoder": name,
                "dim": spec.dim,
                "input_size": spec.input_size,
                "preprocess": spec.preprocess.describe(),
                "mean": list(spec.mean),
                "std": list(spec.std),
                "pooling": spec.pooling,
                "precision": spec.precision,
                "licence": spec.licence,
                "weights": spec.weights_name,
                "present": bool(weights_present(spec)),
                "path": str(found or (spec.checkpoint.expected() if spec.checkpoint else "")),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="encoders (also timm:<name>)")
    for column in ("encoder", "dim", "input", "precision", "licence", "local weights"):
        table.add_column(column, justify="right" if column in ("dim", "input") else "left")
    for row in rows:
        table.add_row(
            row["encoder"],
            str(row["dim"]),
            str(row["input_size"]),
            row["precision"],
            row["licence"],
            "[green]yes[/]" if row["present"] else "[red]no[/]",
        )
    Console(highlight=False).print(table)


@app.command()
def status(
    job: Annotated[Path, typer.Argument(help="Job folder.")],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="List the manifest's slides not done yet.")
    ] = None,
) -> None:
    """Merge the status files of every stage (and shard) of JOB, write them as {stage}.csv (and the QC table as
    qc.csv), print what is left."""
    from rich.console import Console
    from rich.table import Table

    from wsi_ncmi.formats.qc_table import qc_warned
    from wsi_ncmi.formats.shards import merge_job_status, slides_left

    if not job.is_dir():
        raise _fail(f"{job}: no such job folder; give the folder `wsi-ncmi tile --out` wrote")
    merged = merge_job_status(job)
    if not merged:
        coords = list((job / "tiles").glob("*.h5")) if (job / "tiles").is_dir() else []
        if coords:
            raise _fail(
                f"{job}: no status files, but {len(coords)} coords file(s) in tiles/: a run was stopped before it "
                "wrote its status; run the same `wsi-ncmi tile` command again (finished slides are skipped and "
                "recorded)",
                1,
            )
        raise _fail(f"{job}: no status files; nothing has run here yet")
    console = Console(highlight=False)
    table = Table(title=f"{job}")
    statuses = ("ok", "skipped", "no_tissue", "failed")
    for column in ("stage", *statuses, "tiles"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    failed = 0
    for stage, rows in merged.items():
        counts = [sum(r.status == k for r in rows) for k in statuses]
        failed += counts[-1]
        table.add_row(stage, *map(str, counts), str(sum(r.n_tiles for r in rows if not r.failed)))
    console.print(table)
    warned = qc_warned(merged.get("tile", []))
    if warned:
        console.print(
            f"quality control warnings: {len(warned)} slide(s) lost more than qc.warn_removed of their tissue or "
            f"tiles (warning column of tile.csv and qc.csv): {', '.join(warned[:20])}"
            + (f" and {len(warned) - 20} more" if len(warned) > 20 else ""),
            soft_wrap=True,
        )
    if manifest is not None:
        wanted = set(_slide_table(manifest, None)["slide_id"])
        for stage, left in slides_left(merged, wanted).items():
            console.print(f"{stage}: {len(left)} slide(s) left" + (f": {', '.join(left[:20])}" if left else ""))
            failed += len(left)
    raise typer.Exit(1 if failed else 0)


manifest_app = typer.Typer(help="Check manifests and build the CAMELYON-17 one.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("check")
def manifest_check(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV (slide_id, label, case_id, center, path, mpp).")],
    features: Annotated[
        Path | None, typer.Option("--features", help="Bag folder to compare with the manifest.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Also refuse unknown extra columns.")] = False,
    require_labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Require a label on every row.")] = True,
) -> None:
    """Validate a manifest, print slides per class and center, and (with --features) what lacks a bag."""
    from rich.console import Console
    from rich.table import Table

    from wsi_ncmi.cohort.manifest import ManifestError, class_names, read_manifest

    try:
        frame = read_manifest(manifest, require=["label"] if require_labels else [], strict=strict)
    except ManifestError as exc:
        raise _fail(str(exc)) from exc
    console = Console(highlight=False)
    centers = sorted(set(frame["center"]))
    table = Table(title=f"{manifest.name}: {len(frame)} slides, {frame['case_id'].nunique()} cases")
    table.add_column("class")
    for center in centers:
        table.add_column(f"center {center}" if center else "no center", justify="right")
    table.add_column("total", justify="right")
    for label in class_names(frame) if require_labels else sorted(set(frame["label"])):
        row = frame[frame["label"] == label]
        table.add_row(label or "(none)", *[str(int((row["center"] == c).sum())) for c in centers], str(len(row)))
    console.print(table)
    code = 0
    if features is not None:
        bags = {p.stem for p in features.glob("*.h5")}
        missing = sorted(set(frame["slide_id"]) - bags)
        extra = sorted(bags - set(frame["slide_id"]))
        console.print(
            f"{len(missing)} slide(s) without a bag in {features}" + (f": {', '.join(missing[:20])}" if missing else "")
        )
        console.print(f"{len(extra)} bag(s) without a manifest row" + (f": {', '.join(extra[:20])}" if extra else ""))
        code = 1 if missing else 0
    raise typer.Exit(code)


@manifest_app.command("camelyon17")
def manifest_camelyon17(
    stage_labels: Annotated[Path, typer.Option("--stage-labels", help="The challenge's stage_labels.csv.")],
    out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write (500 slides).")],
    slides_dir: Annotated[
        Path | None,
        typer.Option("--slides-dir", help="Folder with the center_k/ slide folders, to fill the path column."),
    ] = None,
    patients_out: Annotated[Path | None, typer.Option("--patients-out", help="Patient table CSV to write.")] = None,
) -> None:
    """Build the CAMELYON-17 manifest (and patient pN-stage table) from the challenge's label file."""
    from wsi_ncmi.cohort.camelyon17 import StageLabelsError, find_slides, read_stage_labels
    from wsi_ncmi.cohort.manifest import write_manifest
    from wsi_ncmi.core.atomic import atomic_path

    try:
        slides, patients = read_stage_labels(stage_labels)
    except StageLabelsError as exc:
        raise _fail(str(exc)) from exc
    slides["path"] = ""
    if slides_dir is not None:
        found = find_slides(slides["slide_id"], slides_dir)
        slides["path"] = [found[s] for s in slides["slide_id"]]
        missing = int((slides["path"] == "").sum())
        if missing:
            typer.secho(
                f"warning: {missing} slide(s) not found under {slides_dir}; their path is empty", fg="yellow", err=True
            )
    write_manifest(slides, out)
    if patients_out is not None:
        with atomic_path(patients_out) as tmp:
            patients.to_csv(tmp, index=False)
    typer.echo(
        f"wrote {out} ({len(slides)} slides, {len(patients)} patients; every official pN-stage matches its node labels)"
    )


@app.command()
def splits(
    manifest: Annotated[Path, typer.Option("--manifest", help="Labelled manifest CSV.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for split_{k}.csv and the CLAM-style files.")],
    scheme: Annotated[str, typer.Option("--scheme", help="holdout-center, leave-one-center-out or kfold.")] = (
        "holdout-center"
    ),
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="camelyon17: holdout-center, test centers 3,4, val 10%.")
    ] = None,
    test_centers: Annotated[str, typer.Option("--test-centers", help="Comma-separated test centers.")] = "",
    val_frac: Annotated[
        float, typer.Option("--val-frac", help="Share of the training cases held out for validation.")
    ] = 0.1,
    folds: Annotated[int, typer.Option("--folds", help="Folds for kfold.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="The same seed always gives the same files.")] = 1,
) -> None:
    """Patient-grouped, label-stratified train/val/test splits."""
    from wsi_ncmi.cohort.manifest import ManifestError, read_manifest
    from wsi_ncmi.cohort.splits import PROTOCOLS, SplitError, make_splits, write_splits

    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise _fail(f"unknown --protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        scheme = PROTOCOLS[protocol]["scheme"]
        test_centers = ",".join(PROTOCOLS[protocol]["test_centers"])
        val_frac = PROTOCOLS[protocol]["val_frac"]
    centers = [c.strip() for c in test_centers.split(",") if c.strip()]
    try:
        frame = read_manifest(manifest, require=["label"])
        result = make_splits(frame, scheme, centers, val_frac, folds, seed)
    except (ManifestError, SplitError) as exc:
        raise _fail(str(exc)) from exc
    description = (
        f"scheme={scheme} test_centers={','.join(centers) or '-'} val_frac={val_frac} folds={folds} "
        f"seed={seed} manifest={manifest}"
    )
    paths = write_splits(frame, result, out, description)
    for fold in result:
        for warning in fold.warnings:
            typer.secho(f"warning: {warning}", fg="yellow", err=True)
    typer.echo((out / "summary.txt").read_text().rstrip())
    typer.echo(f"wrote {len(paths)} fold(s) to {out}")


@app.command(
    epilog="Distributed: torchrun --nproc-per-node G -m wsi_ncmi train ... trains one run on G GPUs (NCCL) or "
    "processes (gloo on CPU) with DistributedDataParallel; only rank 0 writes."
)
def train(
    manifest: Annotated[Path, typer.Option("--manifest", help="Labelled manifest CSV.")],
    features: Annotated[Path, typer.Option("--features", help="Bag folder (ours, CLAM h5_files/ or TRIDENT).")],
    split: Annotated[Path, typer.Option("--split", help="Split file (slide_id,split).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML settings (configs/camelyon17_ncmi.yaml); flags override it.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="abmil, abmil_plain, mean, max, transmil, clam_sb [abmil].")
    ] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="ncmi, ce, focal or cmic [ncmi].")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs [50].")] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Learning rate of the optimiser (config optimizer: adamw, adam or sgd) [5e-4]."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of weights, order and subsampling [1].")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [auto].")] = None,
    max_tiles: Annotated[
        int | None, typer.Option("--max-tiles", help="Random tiles per bag per step (training only).")
    ] = None,
    cache_gb: Annotated[float | None, typer.Option("--cache-gb", help="Keep bags in memory up to this size [8].")] = (
        None
    ),
    skip_missing: Annotated[
        bool,
        typer.Option("--skip-missing", help="Drop split slides without a bag (with a warning) instead of failing."),
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue RUN from last.pt exactly.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start RUN again from scratch.")] = False,
    select: Annotated[
        str | None,
        typer.Option(
            "--select",
            help="Which epoch model.pt keeps: best_f1 (validation, mean over select_window epochs), best_loss or "
            "last [best_f1].",
        ),
    ] = None,
) -> None:
    """Train a MIL aggregator on feature bags with NCMI or a baseline loss; keep the epoch chosen by --select."""
    import signal

    from wsi_ncmi.cohort.manifest import ManifestError
    from wsi_ncmi.cohort.splits import SplitError
    from wsi_ncmi.core.config import ConfigError, load_yaml, override
    from wsi_ncmi.mil.data import BagDataError
    from wsi_ncmi.mil.run import train_run
    from wsi_ncmi.mil.runfolder import RunError
    from wsi_ncmi.mil.schedule import fit_warmup
    from wsi_ncmi.mil.train import TrainConfig

    try:
        settings = (
            load_yaml(out / "config.yaml")["training"]
            if resume and (out / "config.yaml").exists()
            else (load_yaml(config))
        )
        settings = override(
            settings,
            model=model,
            loss=loss,
            epochs=epochs,
            lr=lr,
            seed=seed,
            device=device,
            max_tiles=max_tiles,
            cache_gb=cache_gb,
            skip_missing=skip_missing or None,
            select=select,
        )
        note = fit_warmup(settings, TrainConfig.warmup_epochs) if epochs is not None else None
        train_config = TrainConfig.from_dict(settings)
    except (ConfigError, ValueError, TypeError, KeyError) as exc:
        raise _fail(f"training settings: {exc}") from exc
    if note:
        typer.secho(f"note: {note}", fg="yellow", err=True)
    try:
        from wsi_ncmi.mil.distributed import Cluster

        cluster = Cluster.from_env()
        result = train_run(
            manifest, features, split, out, train_config, resume=resume, overwrite=overwrite, cluster=cluster
        )
    except (ManifestError, SplitError, BagDataError, RunError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt as stop:
        from wsi_ncmi.core.faults import signal_of

        signum = signal_of(stop)
        again = (
            "run the same command with --resume to continue from the last finished epoch"
            if (out / "last.pt").exists()
            else "no epoch finished; run the same command again to start the run"
        )
        raise _fail(f"interrupted by {signal.Signals(signum).name}: {out}: {again}", 128 + signum) from stop
    if cluster.main:
        typer.echo(
            f"selected epoch {result.best_epoch} ({train_config.select}): validation macro-F1 "
            f"{result.best_metrics['macro_f1']:.3f}; checkpoint {out / 'model.pt'}"
        )


@app.command()
def tune(
    manifest: Annotated[Path, typer.Option("--manifest", help="Labelled manifest CSV.")],
    features: Annotated[Path, typer.Option("--features", help="Bag folder (ours, CLAM h5_files/ or TRIDENT).")],
    split: Annotated[
        list[Path], typer.Option("--split", help="Split file; repeat once per fold to score the mean over folds.")
    ],
    config: Annotated[
        Path, typer.Option("--config", help="Tuning YAML: losses, trials, seed, metric, training, space.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for trials.csv, best_{loss}.yaml and the trial runs.")],
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="Trials per loss (default: the file's).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Seed of the TPE sampler (default: the file's).")
    ] = None,
    losses: Annotated[
        str | None, typer.Option("--losses", help="Comma-separated losses to tune (default: the file's).")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", min=1, help="Training runs at once, one thread each (default: the idle cores)."),
    ] = None,
    dask_scheduler: Annotated[
        str | None, typer.Option("--dask-scheduler", help="tcp://HOST:8786: train the runs on that Dask cluster.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the search again from scratch.")] = False,
) -> None:
    """Tune each loss with the same number of trials (Optuna TPE) on validation; write the best as training configs."""
    from wsi_ncmi.core.config import ConfigError, load_yaml, override
    from wsi_ncmi.mil.space import SpaceError, parse_tune
    from wsi_ncmi.mil.tune import TuneError, TuneInputs, best_trials
    from wsi_ncmi.mil.tune import tune as run_tune

    try:
        data = override(
            load_yaml(config),
            trials=trials,
            seed=seed,
            losses=[x.strip() for x in losses.split(",")] if losses else None,
        )
        settings = parse_tune(data, str(config))
        found, paths = run_tune(
            settings, TuneInputs(manifest, features, tuple(split)), out, jobs, dask_scheduler, overwrite
        )
    except (ConfigError, SpaceError, TuneError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    best = best_trials(found, settings)
    for loss in settings.losses:
        if loss in best:
            trial = best[loss]
            typer.echo(f"{loss}: best {trial.name} {settings.metric} {trial.value:.4f} {trial.params} -> {paths[loss]}")
        else:
            typer.echo(f"{loss}: no completed trial")
    typer.echo(f"trials: {out / 'trials.csv'}")
    failed = [t for t in found if t.failed]
    for trial in failed:
        typer.secho(f"failed {trial.name}: {' | '.join(trial.errors)}", fg="red", err=True)
    if failed:
        raise typer.Exit(1)


def _metrics_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(metrics: dict, key: str) -> str:
        value = metrics.get(key)
        if value is None or value != value:
            return "n/a"
        ci = metrics.get("bootstrap", {}).get(key)
        return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    table = Table(title="evaluation (95% CIs: bootstrap over cases)")
    for column in ("split", "slides", "macro-F1", "accuracy", "balanced acc.", "AUC", "NCMI"):
        table.add_column(column)
    for name, metrics in results.items():
        ncmi = metrics.get("ncmi")
        table.add_row(
            name,
            str(metrics["n_slides"]),
            cell(metrics, "macro_f1"),
            cell(metrics, "accuracy"),
            f"{metrics['balanced_accuracy']:.3f}",
            cell(metrics, "auc"),
            "n/a" if ncmi is None or ncmi != ncmi else f"{ncmi:.3f}",
        )
    console = Console(highlight=False)
    console.print(table)
    for name, metrics in results.items():
        for note in metrics.get("notes", []):
            console.print(f"[yellow]note[/] ({name}): {note}", markup=True)
        if "pn_stage" in metrics:
            stage = metrics["pn_stage"]
            console.print(
                f"pN-stage ({name}): {stage['patients']} patients with all nodes in the split; accuracy "
                f"{stage['accuracy']:.3f}, quadratic kappa {stage['kappa_quadratic']:.3f}"
            )


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `train`.")],
    split: Annotated[str, typer.Option("--split", help="test, val, train or all.")] = "test",
    features: Annotated[Path | None, typer.Option("--features", help="Bag folder [the run's].")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Manifest [the run's].")] = None,
    split_file: Annotated[Path | None, typer.Option("--split-file", help="Split file [the run's].")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples (cases) for CIs.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    pn_stage: Annotated[
        bool | None,
        typer.Option("--pn-stage/--no-pn-stage", help="Patient pN-stage metrics [auto: CAMELYON-17 manifests]."),
    ] = None,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Leave out slides without a bag.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Predict a split with the run's selected model (and its last epoch's, for comparison); write
    predictions_{split}.csv, metrics_{split}.json and plots."""
    from wsi_ncmi.cohort.manifest import ManifestError
    from wsi_ncmi.cohort.splits import SplitError
    from wsi_ncmi.core.config import ConfigError
    from wsi_ncmi.evaluation.evaluate import evaluate_run
    from wsi_ncmi.mil.data import BagDataError
    from wsi_ncmi.mil.runfolder import RunError

    try:
        results = evaluate_run(
            run, split, features, manifest, split_file, bootstrap, seed, pn_stage, skip_missing, device
        )
    except (ManifestError, SplitError, BagDataError, RunError, ConfigError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    _metrics_table(results)
    for name, metrics in results.items():
        last, chosen = metrics.get("last_epoch"), metrics["selection"]
        if last is not None:
            typer.echo(
                f"{name}: selected epoch {chosen['epoch']} ({chosen['rule']}) macro-F1 {metrics['macro_f1']:.3f}, "
                f"accuracy {metrics['accuracy']:.3f}; last epoch {last['epoch']} macro-F1 {last['macro_f1']:.3f}, "
                f"accuracy {last['accuracy']:.3f}"
            )
    typer.echo(f"wrote {', '.join(f'predictions_{n}.csv, metrics_{n}.json' for n in results)} in {run}")


@app.command()
def predict(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `train`.")],
    features: Annotated[Path, typer.Option("--features", help="Bag folder.")],
    out: Annotated[Path, typer.Option("--out", help="Prediction CSV to write.")],
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Only these slides [all bags].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Accept bags from another encoder than the model's.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Predict unlabelled slides: slide_id, case_id, center, split, y_pred, p_<class>..., flag."""
    from wsi_ncmi.cohort.manifest import ManifestError
    from wsi_ncmi.evaluation.evaluate import predict_slides
    from wsi_ncmi.mil.data import BagDataError
    from wsi_ncmi.mil.runfolder import RunError

    try:
        table = predict_slides(run, features, manifest, out, force, device)
    except (ManifestError, BagDataError, RunError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    flagged = int((table["flag"] != "").sum())
    typer.echo(
        f"wrote {out}: {len(table)} slide(s)"
        + (f", {flagged} without tiles (predicted from the prior)" if flagged else "")
    )


@app.command()
def heatmap(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `train`.")],
    job: Annotated[Path, typer.Option("--job", help="Job folder with tiles/ and features/.")],
    slide: Annotated[str, typer.Option("--slide", help="slide_id to draw.")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write [RUN/heatmap_{slide}.png].")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Top attended tiles in the montage.")] = 16,
) -> None:
    """Draw the model's attention over the slide thumbnail, with a montage of the top-k attended tiles."""
    from wsi_ncmi.cohort.manifest import unsafe_id_reason
    from wsi_ncmi.embedding.embed import bag_path
    from wsi_ncmi.evaluation.evaluate import run_config
    from wsi_ncmi.evaluation.heatmap import attention_scores, check_slide_known, draw_heatmap
    from wsi_ncmi.formats.bags import BagFormatError, read_coords_attrs
    from wsi_ncmi.mil.runfolder import RunError
    from wsi_ncmi.slides.backend import SlideError

    reason = unsafe_id_reason(slide)
    if reason is not None:
        raise _fail(f"--slide {slide!r}: {reason}; give a slide_id of the job's tiles/ folder")
    out = out or run / f"heatmap_{slide}.png"
    try:
        config = run_config(run)
        check_slide_known(job, slide, config.get("inputs", {}).get("manifest"))
        encoder = config.get("encoder", {}).get("encoder", "")
        bag = bag_path(job, encoder, slide)
        attrs = read_coords_attrs(job / "tiles" / f"{slide}.h5")
        attention, coords, predicted = attention_scores(run, bag, coords_path=job / "tiles" / f"{slide}.h5")
        draw_heatmap(
            str(attrs["slide_path"]),
            coords,
            attention,
            int(attrs["patch_size_level0"]),
            int(attrs["patch_level"]),
            int(attrs["patch_size"]),
            out,
            f"{slide}: predicted {predicted}",
            top_k,
            mpp0=float(attrs["mpp_level0"]),
        )
    except (BagFormatError, RunError, SlideError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"wrote {out}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (seeds, folds, losses).")],
    out: Annotated[Path, typer.Option("--out", help="CSV: one row per (model, loss), mean and std.")],
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write a markdown table.")] = None,
    split: Annotated[str, typer.Option("--split", help="Which metrics_{split}.json to read.")] = "test",
    paired_view: Annotated[
        bool,
        typer.Option(
            "--paired",
            help="Also write per-seed/fold differences against --baseline (OUT with _paired) and their mean, "
            "bootstrap 95% CI and Wilcoxon signed-rank p-value (OUT with _paired_stats).",
        ),
    ] = False,
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline loss for --paired.")] = "ce",
) -> None:
    """Does NCMI beat CE on my data? Mean +- std over runs of test macro-F1, accuracy, AUC and NCMI."""
    from rich.console import Console
    from rich.markdown import Markdown

    from wsi_ncmi.core.config import ConfigError
    from wsi_ncmi.evaluation.compare import (
        collect,
        paired,
        paired_markdown,
        paired_statistics,
        summarise,
        to_markdown,
        write_table,
        write_text,
    )
    from wsi_ncmi.mil.runfolder import RunError

    try:
        frame = collect(runs, split)
    except (RunError, ConfigError, KeyError) as exc:
        raise _fail(str(exc)) from exc
    table = summarise(frame)
    write_table(table, out)
    text = to_markdown(table)
    if markdown is not None:
        write_text(text, markdown)
    Console().print(Markdown(text))
    if paired_view:
        differences = paired(frame, baseline)
        path = out.with_name(f"{out.stem}_paired{out.suffix}")
        write_table(differences, path)
        typer.echo(f"paired differences against {baseline}: {path} ({len(differences)} pair(s))")
        if len(differences):
            stats = paired_statistics(differences)
            write_table(stats, out.with_name(f"{out.stem}_paired_stats{out.suffix}"))
            if markdown is not None:
                write_text(paired_markdown(stats), markdown.with_name(f"{markdown.stem}_paired{markdown.suffix}"))
            for _, row in stats[stats["pairs"] > 0].iterrows():
                typer.echo(
                    f"{row['model']} {row['metric']}: {row['loss']} - {row['baseline']} = "
                    f"{row['mean_difference']:+.3f} [95% CI {row['ci_low']:+.3f}, {row['ci_high']:+.3f}]; "
                    f"{row['verdict']}"
                )
    typer.echo(f"wrote {out}")


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write (images go to OUT_STEM_files/ beside it).")],
    run: Annotated[Path | None, typer.Option("--run", help="One run folder: its report on --split.")] = None,
    compare_runs: Annotated[
        bool, typer.Option("--runs", help="Compare the run folders given as arguments (seeds, losses, models).")
    ] = False,
    folders: Annotated[list[Path] | None, typer.Argument(help="Run folders, with --runs.", show_default=False)] = None,
    job: Annotated[
        Path | None, typer.Option("--job", help="Job folder: adds each slide's thumbnail, heatmap and top tiles.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Which predictions/metrics_{split} to show.")] = "test",
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline loss of the paired differences (--runs).")] = (
        "ce"
    ),
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Top attended tiles shown per slide.")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing report.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N (attention for --job).")] = "cpu",
) -> None:
    """One self-contained HTML page to look at results offline: a run (--run) or a comparison of runs (--runs)."""
    from wsi_ncmi.core.config import ConfigError
    from wsi_ncmi.evaluation.report import ReportError, experiment_report, run_report
    from wsi_ncmi.mil.runfolder import RunError

    if (run is None) == (not compare_runs):
        raise _fail("give either --run RUN, or --runs RUN [RUN ...]")
    if compare_runs and not folders:
        raise _fail("--runs needs the run folders as arguments: --runs runs/ncmi_seed1 runs/ce_seed1 ...")
    if folders and not compare_runs:
        raise _fail(f"unexpected argument(s) {', '.join(map(str, folders))}; use --runs to compare run folders")
    try:
        if run is not None:
            path = run_report(run, out, split, job, top_k, overwrite, device)
        else:
            path = experiment_report(list(folders or []), out, split, baseline, overwrite)
    except (ReportError, RunError, ConfigError, KeyError, ValueError) as exc:
        raise _fail(str(exc).strip('"')) from exc
    typer.echo(f"wrote {path}")


export_app = typer.Typer(help="Export results for other tools (QuPath).", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("qupath")
def export_qupath(
    job: Annotated[Path, typer.Option("--job", help="Job folder with tiles/ (and features/ with --run).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for one {slide_id}.geojson per slide.")],
    run: Annotated[
        Path | None, typer.Option("--run", help="Run folder: adds attention, class probabilities, the prediction.")
    ] = None,
    slide: Annotated[list[str] | None, typer.Option("--slide", help="Only these slide_ids (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rewrite files that exist.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """GeoJSON for QuPath (level-0 pixels): tiles as detections with measurements, the tissue as an annotation.

    Open a slide in QuPath and drag the slide's .geojson onto it.
    """
    from wsi_ncmi.export.qupath import ExportError, export_job
    from wsi_ncmi.mil.runfolder import RunError

    try:
        results = export_job(job, out, run, slide, overwrite, device)
    except (ExportError, RunError, KeyError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    failed = [r for r in results if r.status == "failed"]
    written = sum(r.status == "ok" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    for row in failed:
        typer.secho(f"failed {row.slide_id}: {row.detail}", fg="red", err=True)
    typer.echo(
        f"wrote {written} GeoJSON file(s) to {out}"
        + (f"; kept {skipped} existing (--overwrite rewrites them)" if skipped else "")
        + (f"; {len(failed)} failed" if failed else "")
    )
    raise typer.Exit(1 if failed else 0)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", help="Pipeline YAML (configs/pipeline_camelyon17.yaml).")],
    executor: Annotated[
        str | None, typer.Option("--executor", help="local or dask for the per-slide stages [the file's].")
    ] = None,
    dask_scheduler: SchedulerOption = None,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Download missing encoder weights (otherwise nothing is).")
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", min=1, help="Training runs at once, one thread each (default: the file's, else the idle cores)."
        ),
    ] = None,
) -> None:
    """Run tile -> embed -> splits -> train (losses x seeds) -> evaluate -> compare -> reports from one YAML file."""
    from wsi_ncmi.cohort.manifest import ManifestError
    from wsi_ncmi.cohort.splits import SplitError
    from wsi_ncmi.core.config import ConfigError
    from wsi_ncmi.embedding.weights import WeightsError
    from wsi_ncmi.formats.jobdir import JobDirError
    from wsi_ncmi.mil.data import BagDataError
    from wsi_ncmi.mil.runfolder import RunError
    from wsi_ncmi.pipeline.run import PipelineConfig, PipelineError, run_pipeline

    try:
        pipeline = PipelineConfig.from_yaml(config)
        pipeline.executor = executor or pipeline.executor
        pipeline.dask_scheduler = dask_scheduler or pipeline.dask_scheduler
        if allow_download:
            pipeline.embedding["allow_download"] = True
        pipeline.jobs = jobs or pipeline.jobs
        result = run_pipeline(pipeline)
    except (
        PipelineError,
        ConfigError,
        ManifestError,
        SplitError,
        BagDataError,
        RunError,
        WeightsError,
        JobDirError,
        ValueError,
        TypeError,
    ) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(result["markdown"].read_text())
    typer.echo(f"wrote {result['comparison']}")
    for path in result["run_reports"]:
        typer.echo(f"run report: {path}")
    typer.echo(f"experiment report: {result['report']}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's cohort, job and runs.")] = Path("demo_out"),
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes for per-slide stages.")] = 2,
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="Encoder weights: random (default; nothing to download), imagenet (local cache) or a PATH.",
        ),
    ] = "random",
    encoder: Annotated[str, typer.Option("--encoder", help="Tile encoder.")] = "resnet18",
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Download missing encoder weights (otherwise nothing is).")
    ] = False,
) -> None:
    """Run the whole pipeline on a built-in synthetic CAMELYON-style cohort: NCMI against CE.

    Nothing is downloaded unless --allow-download; the encoder's weights are checked before any work."""
    from wsi_ncmi.embedding.weights import WeightsError
    from wsi_ncmi.pipeline.demo import DemoSettings, run_demo

    try:
        settings = DemoSettings(workers=workers, weights=weights, encoder=encoder, allow_download=allow_download)
        code = run_demo(out, settings)
    except WeightsError as exc:
        raise _fail(str(exc)) from exc
    raise typer.Exit(code)


def _only_command(args: list[str]) -> Any:
    """The command line for `args`: when they start with a command's name, a group holding only that command, so
    start-up skips building every other command's options (typer reads each signature's type hints); the whole app
    otherwise (top-level help, command groups, typos)."""
    import copy

    import typer.main

    name = args[0] if args else None
    chosen = [
        info
        for info in app.registered_commands
        if info.callback is not None and (info.name or typer.main.get_command_name(info.callback.__name__)) == name
    ]
    if not chosen:
        return app
    lean = copy.copy(app)
    lean.registered_commands, lean.registered_groups = chosen, []
    return typer.main.get_group(lean)


def main() -> None:
    """The `wsi-ncmi` entry point: faults (bad input, full disk, Ctrl-C, SIGTERM) end in one line and an exit code."""
    import sys

    from wsi_ncmi.core.faults import run_command_line

    run_command_line(_only_command(sys.argv[1:]))


if __name__ == "__main__":
    main()
