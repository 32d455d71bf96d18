"""Cohort commands: a synthetic cohort (`synth`), manifests (`manifest check`, `manifest camelyon17`) and
patient-grouped splits (`splits`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsi_ncmi.cli.common import fail, reported


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
    from wsi_ncmi.cohort.synthdir import prepare_synth_folder
    from wsi_ncmi.synthetic import CohortSpec, write_cohort

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise fail(f"--size {size!r} is not WIDTHxHEIGHT in pixels, e.g. 8192x6144") from exc
    if fmt not in ("tiff", "svs"):
        raise fail(f"--format {fmt!r}: use tiff or svs")
    try:
        cohort = CohortSpec(slides, centers, nodes_per_case, width, height, mpp, seed, fmt)
    except ValueError as exc:
        raise fail(f"--size {size!r}: {exc}") from exc
    with reported():
        prepare_synth_folder(out, cohort, overwrite)
    manifest = write_cohort(cohort, out, progress=True)
    typer.echo(f"wrote {slides} synthetic slide(s); manifest: {manifest}")


manifest_app = typer.Typer(help="Check manifests and build the CAMELYON-17 one.", no_args_is_help=True)


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

    from wsi_ncmi.cohort.manifest import class_names, read_manifest

    with reported():
        frame = read_manifest(manifest, require=["label"] if require_labels else [], strict=strict)
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
    from wsi_ncmi.cohort.camelyon17 import find_slides, read_stage_labels
    from wsi_ncmi.cohort.manifest import write_manifest
    from wsi_ncmi.core.atomic import atomic_path

    with reported():
        slides, patients = read_stage_labels(stage_labels)
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
    from wsi_ncmi.cohort.manifest import read_manifest
    from wsi_ncmi.cohort.splits import PROTOCOLS, make_splits, write_splits

    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise fail(f"unknown --protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        scheme = PROTOCOLS[protocol]["scheme"]
        test_centers = ",".join(PROTOCOLS[protocol]["test_centers"])
        val_frac = PROTOCOLS[protocol]["val_frac"]
    centers = [c.strip() for c in test_centers.split(",") if c.strip()]
    with reported():
        frame = read_manifest(manifest, require=["label"])
        result = make_splits(frame, scheme, centers, val_frac, folds, seed)
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
