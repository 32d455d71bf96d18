"""Manifests, splits and CAMELYON-17 helpers: validation never crashes, splits never leak patients."""

from __future__ import annotations

import csv
import math
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.cohort.camelyon17 import STAGES, StageLabelsError, pn_stage, read_stage_labels, stage_kappa
from wsi_ncmi.cohort.manifest import ManifestError, class_names, read_columns, read_manifest, unsafe_id_reason
from wsi_ncmi.cohort.splits import SplitError, make_splits, read_split, write_splits

runner = CliRunner()
STAGE_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "camelyon17_stage_labels.csv"


def _write(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    columns = columns or sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


cells = st.text(alphabet=string.ascii_letters + string.digits + "._-/ \\", max_size=8)
columns = st.lists(
    st.sampled_from(["slide_id", "label", "case_id", "center", "path", "mpp", "extra"]),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    columns.flatmap(
        lambda cols: st.tuples(st.just(cols), st.lists(st.fixed_dictionaries({c: cells for c in cols}), max_size=8))
    ),
    st.booleans(),
)
def test_validation_only_raises_documented_errors(tmp_path: Path, spec: tuple, strict: bool) -> None:
    cols, rows = spec
    path = _write(tmp_path / "m.csv", rows, cols)
    try:
        frame = read_manifest(path, require=["label"], strict=strict)
    except ManifestError as exc:
        assert exc.problems and str(path) in str(exc)
        return
    assert frame["slide_id"].is_unique
    assert all(unsafe_id_reason(s) is None for s in frame["slide_id"])
    assert (frame["label"] != "").all()
    assert (frame["mpp"].dropna() > 0).all()


@given(st.text(max_size=20))
def test_unsafe_ids_never_escape_their_folder(slide_id: str) -> None:
    if unsafe_id_reason(slide_id) is None:
        assert "/" not in slide_id and "\\" not in slide_id and slide_id not in ("", ".", "..")
        assert (Path("/job/tiles") / f"{slide_id}.h5").parent == Path("/job/tiles")


def test_every_problem_is_named_with_its_row(tmp_path: Path) -> None:
    rows = [
        {"slide_id": "a", "label": "x", "case_id": "p1", "center": "0", "mpp": "0.25"},
        {"slide_id": "a", "label": "y", "case_id": "p2", "center": "0", "mpp": ""},
        {"slide_id": "b/c", "label": "", "case_id": "p1", "center": "1", "mpp": "-1"},
    ]
    with pytest.raises(ManifestError) as info:
        read_manifest(_write(tmp_path / "m.csv", rows), require=["label"])
    text = str(info.value)
    assert "row 3: duplicate slide_id 'a' (first at row 2)" in text
    assert "row 4: slide_id 'b/c'" in text and "row 4: empty label" in text and "row 4: mpp '-1'" in text
    assert "case_id 'p1' appears in centers ['0', '1']" in text


def test_case_defaults_to_slide_and_paths_resolve(tmp_path: Path) -> None:
    frame = read_manifest(_write(tmp_path / "m.csv", [{"slide_id": "s1", "label": "a", "path": "x/s1.svs"}]))
    assert frame.loc[0, "case_id"] == "s1" and frame.loc[0, "path"] == str(tmp_path / "x" / "s1.svs")
    assert class_names(frame) == ["a"]
    with pytest.raises(ManifestError, match="not among the configured classes"):
        class_names(frame, ["b"])


def test_strict_reports_unknown_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", [{"slide_id": "s1", "label": "a", "scanner": "x"}])
    assert "scanner" in read_manifest(path).columns
    with pytest.raises(ManifestError, match="unknown column 'scanner'"):
        read_manifest(path, strict=True)


def test_csv_reading_without_pandas(tmp_path: Path) -> None:
    """The csv-module reader: BOM and padded header, blank lines skipped, short rows padded, quoted commas kept;
    the DataFrame for other commands holds the same columns."""
    path = tmp_path / "m.csv"
    path.write_text('\ufeffslide_id , label,path\n\ns1,a,"x,1.svs"\ns2,b\n', encoding="utf-8")
    columns = read_columns(path)
    assert columns["slide_id"] == ["s1", "s2"] and columns["label"] == ["a", "b"]
    assert columns["path"] == [str(tmp_path / "x,1.svs"), ""]
    assert all(math.isnan(v) for v in columns["mpp"]) and columns["case_id"] == ["s1", "s2"]
    assert read_manifest(path).to_dict("list").keys() == columns.keys()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slide_id,label\ns1,a,extra\n", "row 2: 3 fields but the header has 2"),
        ("slide_id,label,label\ns1,a,b\n", "column 'label' appears more than once"),
        ("", "no header row"),
    ],
)
def test_unreadable_csv_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_columns(path)


def _cohort(n_cases: int, seed: int, centers: int = 5, nodes: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_cases):
        for node in range(nodes):
            rows.append(
                {
                    "slide_id": f"c{case}_n{node}",
                    "case_id": f"c{case}",
                    "center": str(case % centers),
                    "label": str(rng.choice(["neg", "itc", "micro", "macro"], p=[0.55, 0.15, 0.15, 0.15])),
                }
            )
    return pd.DataFrame(rows)


@settings(max_examples=25, deadline=None)
@given(st.integers(20, 60), st.integers(0, 1000), st.sampled_from(["holdout-center", "leave-one-center-out", "kfold"]))
def test_no_case_in_two_splits(n_cases: int, seed: int, scheme: str) -> None:
    frame = _cohort(n_cases, seed)
    folds = make_splits(frame, scheme, test_centers=["3", "4"], val_frac=0.2, folds=4, seed=seed)
    for fold in folds:
        assert set(fold.assignment.index) == set(frame["slide_id"])
        per_case = frame.assign(split=fold.assignment.reindex(frame["slide_id"]).to_numpy()).groupby("case_id")
        assert (per_case["split"].nunique() == 1).all()
    if scheme == "kfold":
        tested = pd.concat([f.assignment[f.assignment == "test"] for f in folds])
        assert sorted(tested.index) == sorted(frame["slide_id"])


def test_holdout_center_and_stratification() -> None:
    frame = _cohort(200, 3, nodes=1)
    fold = make_splits(frame, "holdout-center", ["3", "4"], val_frac=0.1, seed=1)[0]
    test_centers = set(frame.loc[fold.assignment.reindex(frame["slide_id"]).to_numpy() == "test", "center"])
    assert test_centers == {"3", "4"}
    rest = frame[frame["center"].isin(["0", "1", "2"])]
    val = rest[fold.assignment.reindex(rest["slide_id"]).to_numpy() == "val"]
    assert abs(len(val) / len(rest) - 0.1) < 0.03
    share = val["label"].value_counts(normalize=True)
    overall = rest["label"].value_counts(normalize=True)
    assert (share.reindex(overall.index, fill_value=0) - overall).abs().max() < 0.12


def test_small_classes_warn_by_name() -> None:
    frame = _cohort(30, 1, nodes=1)
    frame.loc[frame.index[:1], "label"] = "rare"
    fold = make_splits(frame, "holdout-center", ["4"], val_frac=0.2, seed=1)[0]
    assert any("'rare'" in w for w in fold.warnings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "holdout-center"}, "needs --test-centers"),
        ({"scheme": "holdout-center", "test_centers": ["9"]}, "not in the manifest"),
        ({"scheme": "kfold", "folds": 1}, "between 2"),
        ({"scheme": "nope"}, "unknown scheme"),
    ],
)
def test_split_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SplitError, match=message):
        make_splits(_cohort(20, 0), **kwargs)


def test_files_are_reproducible_and_clam_readable(tmp_path: Path) -> None:
    frame = _cohort(40, 2)
    for name in ("a", "b"):
        write_splits(frame, make_splits(frame, "kfold", folds=3, seed=7), tmp_path / name, "test")
    for file in (tmp_path / "a").iterdir():
        assert file.read_bytes() == (tmp_path / "b" / file.name).read_bytes()
    split = read_split(tmp_path / "a" / "split_1.csv")
    clam = pd.read_csv(tmp_path / "a" / "splits_1.csv", dtype=str)
    for name in ("train", "val", "test"):
        assert sorted(clam[name].dropna()) == sorted(split.index[split == name])
    boolean = pd.read_csv(tmp_path / "a" / "splits_1_bool.csv", index_col=0)
    assert boolean.sum(axis=1).eq(1).all() and boolean.loc[split.index[0], split.iloc[0]]
    descriptor = pd.read_csv(tmp_path / "a" / "splits_1_descriptor.csv", index_col=0)
    assert descriptor.to_numpy().sum() == len(frame)
    assert "fold 2" in (tmp_path / "a" / "summary.txt").read_text()
    other = make_splits(frame, "kfold", folds=3, seed=8)
    assert not all(
        o.assignment.equals(s.assignment)
        for o, s in zip(other, make_splits(frame, "kfold", folds=3, seed=7), strict=True)
    )


def test_read_split_rejects_bad_files(tmp_path: Path) -> None:
    _write(tmp_path / "s.csv", [{"slide_id": "a", "split": "training"}], ["slide_id", "split"])
    with pytest.raises(SplitError, match="row 2"):
        read_split(tmp_path / "s.csv")


@pytest.mark.parametrize(
    ("nodes", "stage"),
    [
        (["negative"] * 5, "pN0"),
        (["itc", "negative", "itc"], "pN0(i+)"),
        (["micro", "itc"], "pN1mi"),
        (["micro"] * 5, "pN1mi"),
        (["macro", "itc", "itc", "itc", "itc"], "pN1"),
        (["macro", "micro", "micro"], "pN1"),
        (["macro", "micro", "micro", "micro"], "pN2"),
        (["macro"] * 5, "pN2"),
    ],
)
def test_pn_stage_rules(nodes: list[str], stage: str) -> None:
    assert pn_stage(nodes) == stage


def test_stage_kappa() -> None:
    assert stage_kappa(["pN0", "pN1", "pN2"], ["pN0", "pN1", "pN2"]) == 1.0
    from sklearn.metrics import cohen_kappa_score

    truth, pred = ["pN0", "pN0(i+)", "pN1mi", "pN1", "pN2", "pN0"], ["pN0", "pN1", "pN1mi", "pN2", "pN2", "pN0(i+)"]
    assert stage_kappa(truth, pred) == pytest.approx(
        cohen_kappa_score(truth, pred, labels=list(STAGES), weights="quadratic")
    )
    with pytest.raises(ValueError, match="unknown pN-stage"):
        stage_kappa(["pN3"], ["pN0"])


def test_stage_labels_disagreement_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "stage_labels.csv"
    path.write_text("patient,stage\npatient_000.zip,pN0\npatient_000_node_0.tif,macro\n")
    with pytest.raises(StageLabelsError, match="patient_000 \\(official pN0, from nodes pN1\\)"):
        read_stage_labels(path)


@pytest.mark.skipif(not STAGE_FILE.exists(), reason="CAMELYON-17 stage_labels.csv not available")
def test_real_camelyon17_label_file(tmp_path: Path) -> None:
    slides, patients = read_stage_labels(STAGE_FILE)
    assert len(slides) == 500 and len(patients) == 100
    assert (patients["stage"] == patients["stage_derived"]).all()
    assert slides.groupby("center").size().tolist() == [100] * 5
    out = tmp_path / "c17.csv"
    result = runner.invoke(
        app,
        [
            "manifest",
            "camelyon17",
            "--stage-labels",
            str(STAGE_FILE),
            "--out",
            str(out),
            "--patients-out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    split_dir = tmp_path / "splits"
    result = runner.invoke(app, ["splits", "--manifest", str(out), "--protocol", "camelyon17", "--out", str(split_dir)])
    assert result.exit_code == 0, result.output
    split = read_split(split_dir / "split_0.csv")
    assert (split == "test").sum() == 200 and abs((split == "val").sum() - 30) <= 3


def test_manifest_check_cli(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m.csv",
        [{"slide_id": "s1", "label": "a", "center": "0"}, {"slide_id": "s2", "label": "b", "center": "1"}],
    )
    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "s1.h5").write_bytes(b"")
    (bags / "zz.h5").write_bytes(b"")
    result = runner.invoke(app, ["manifest", "check", str(path), "--features", str(bags)])
    assert result.exit_code == 1
    assert "1 slide(s) without a bag" in result.output and "s2" in result.output and "zz" in result.output
    bad = _write(tmp_path / "bad.csv", [{"slide_id": "s1", "label": ""}])
    assert runner.invoke(app, ["manifest", "check", str(bad)]).exit_code == 2
