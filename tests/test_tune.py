"""`wsi-ncmi tune`: the tuning file's checks, equal trial budgets, the fold mean, resumable output folders and a
chosen config that `train --config` takes as it is."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from wsi_ncmi.batch.jobs import Job
from wsi_ncmi.cli import app
from wsi_ncmi.mil.space import SpaceError, load_tune, parse_tune
from wsi_ncmi.mil.tune import TuneError, best_trials, require_optuna, search

pytest.importorskip("optuna")
runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Search-space parsing and validation.

names = st.text("abcdefgh_", min_size=1, max_size=8).map(lambda n: "p" + n)
positive = st.floats(1e-6, 1e3, allow_nan=False)


@st.composite
def float_specs(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(positive)
    spec = {"type": "float", "low": low, "high": low * draw(st.floats(1.5, 100))}
    if draw(st.booleans()):
        spec["log"] = True
    elif draw(st.booleans()):
        spec["step"] = (spec["high"] - low) / draw(st.integers(1, 10))
    return spec


@st.composite
def int_specs(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(1, 50))
    return {"type": "int", "low": low, "high": low + draw(st.integers(1, 50)), "log": draw(st.booleans())}


choice_values = st.one_of(st.integers(-5, 64), st.sampled_from(["none", "mlp", "bn"]), st.none(), st.booleans())
categorical_specs = st.builds(
    lambda choices: {"type": "categorical", "choices": choices},
    st.lists(choice_values, min_size=1, max_size=4, unique_by=lambda c: (type(c), c)),
)
specs = st.one_of(float_specs(), int_specs(), categorical_specs)
keys = st.one_of(names, st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(["model_args", "loss_args"]), names))
spaces = st.dictionaries(keys, specs, min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(space=spaces, trials=st.integers(1, 500), seed=st.integers(0, 2**31))
def test_valid_spaces_parse_and_round_trip(space: dict[str, Any], trials: int, seed: int) -> None:
    parsed = parse_tune({"space": space, "trials": trials, "seed": seed, "losses": ["ncmi", "ce"]})
    assert [p.key for p in parsed.space] == list(space) and (parsed.trials, parsed.seed) == (trials, seed)
    assert parse_tune(yaml.safe_load(yaml.safe_dump(parsed.record(), sort_keys=False))) == parsed


FAULTS = {
    "low above high": {"type": "float", "low": 2.0, "high": 1.0},
    "log from zero": {"type": "float", "low": 0.0, "high": 1.0, "log": True},
    "unknown type": {"type": "uniform", "low": 0, "high": 1},
    "misspelt key": {"type": "float", "low": 0.1, "high": 1.0, "lgo": True},
    "fractional int": {"type": "int", "low": 1.5, "high": 4},
    "empty choices": {"type": "categorical", "choices": []},
    "mapping choice": {"type": "categorical", "choices": [{"a": 1}]},
    "log with step": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1},
    "missing high": {"type": "int", "low": 1},
    "loss not tuned": {"type": "float", "low": 0.1, "high": 1.0, "losses": ["focal"]},
    "not a mapping": [0.1, 1.0],
}


@settings(max_examples=60, deadline=None)
@given(
    good=spaces,
    faults=st.lists(st.sampled_from(sorted(FAULTS)), min_size=1, max_size=6),
    top=st.lists(st.sampled_from(["trials", "seed", "metric", "batch", "losses", "extra"]), unique=True, max_size=3),
)
def test_every_problem_is_reported_at_once(good: dict[str, Any], faults: list[str], top: list[str]) -> None:
    space = dict(good)
    bad_keys = [f"bad{i}" for i in range(len(faults))]
    space.update({key: FAULTS[fault] for key, fault in zip(bad_keys, faults, strict=True)})
    wrong = {"trials": 0, "seed": -1, "metric": "test_f1", "batch": 1.5, "losses": [], "extra": 1}
    data = {"space": space, "losses": ["ncmi", "ce"], **{key: wrong[key] for key in top}}
    with pytest.raises(SpaceError) as error:
        parse_tune(data, "t.yaml")
    message = str(error.value)
    assert message.startswith("t.yaml: ") and "\n" not in message
    for key in bad_keys:
        assert f"space.{key}:" in message, key
    for key in top:
        assert key in message, key
    good_keys = [k for k in good if f"space.{k}:" in message]
    assert not good_keys, f"valid settings reported: {good_keys}"


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"loss": {"type": "categorical", "choices": ["ce"]}}, "not tunable"),
        ({"seed": {"type": "int", "low": 1, "high": 5}}, "fits noise"),
        ({"model_args": {"type": "categorical", "choices": [1]}}, "not the whole mapping"),
        ({"optimizer.lr": {"type": "float", "low": 0.1, "high": 1.0}}, "only model_args and loss_args"),
        ({"a.b.c": {"type": "float", "low": 0.1, "high": 1.0}}, "one level inside"),
    ],
)
def test_keys_that_cannot_be_searched_are_named(space: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpaceError, match=expected):
        parse_tune({"space": space})


def test_training_must_not_set_what_tuning_owns() -> None:
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    with pytest.raises(SpaceError, match="training must not set loss, loss_args"):
        parse_tune({"space": space, "training": {"loss": "ce", "loss_args": {}}})
    with pytest.raises(SpaceError, match="loss_args for focal"):
        parse_tune({"space": space, "loss_args": {"focal": {"gamma": 2.0}}})


def test_trial_settings_nest_dotted_keys_over_the_fixed_ones() -> None:
    parsed = parse_tune(
        {
            "training": {"model_args": {"dim": 16, "neck": "mlp"}, "epochs": 3},
            "loss_args": {"ncmi": {"centroids": "anchor"}},
            "space": {
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2},
                "model_args.neck": {"type": "categorical", "choices": ["none"]},
                "loss_args.temperature": {"type": "float", "low": 0.1, "high": 1.0, "losses": ["ncmi"]},
            },
        }
    )
    params = {"lr": 1e-3, "model_args.neck": "none", "loss_args.temperature": 0.5}
    assert parsed.trial_settings("ncmi", params) == {
        "model_args": {"dim": 16, "neck": "none"},
        "epochs": 3,
        "loss": "ncmi",
        "loss_args": {"centroids": "anchor", "temperature": 0.5},
        "lr": 1e-3,
    }
    assert [p.key for p in parsed.params_for("ce")] == ["lr", "model_args.neck"]
    assert parsed.training["model_args"]["neck"] == "mlp", "the fixed settings are not changed"


def test_shipped_tuning_file_parses_and_tunes_what_the_comparison_needs() -> None:
    parsed = load_tune(CONFIGS / "tune_camelyon17.yaml")
    assert parsed.losses == ("ncmi", "ce") and parsed.metric == "val_macro_f1"
    keys = {p.key: p for p in parsed.space}
    assert {"lr", "weight_decay", "model_args.neck", "bags_per_step", "loss_args.temperature"} <= set(keys)
    assert keys["lr"].log and keys["loss_args.temperature"].losses == ("ncmi",)
    from wsi_ncmi.mil.tune import check_trial_settings

    check_trial_settings(parsed)


def test_settings_the_training_refuses_stop_before_anything_runs() -> None:
    from wsi_ncmi.mil.tune import check_trial_settings

    parsed = parse_tune(
        {
            "training": {"model": "abmil", "model_args": {"dim": 16}},
            "space": {
                "model_args.neck": {"type": "categorical", "choices": ["none", "funnel"]},
                "weight_decay": {"type": "float", "low": 1e-4, "high": 1e-2},
            },
        }
    )
    with pytest.raises(SpaceError, match="funnel"):
        check_trial_settings(parsed)


# The search: equal budgets, seeded, the fold mean.


def fake_fold(loss: str, fold: int, params: dict[str, Any]) -> dict[str, float]:
    """A stand-in for training: a smooth function of lr with a peak at 1e-3, a per-loss and a per-fold offset."""
    value = 1.0 - abs(math.log10(params["lr"]) + 3) / 4 - (0.1 if loss == "ce" else 0.0) - 0.05 * fold
    return {"val_macro_f1": value if params.get("fail") is not True else math.nan}


def _fake_jobs(folds: int):
    def fold_jobs(loss: str, number: int, params: dict[str, Any]) -> list[Job]:
        return [Job(f"{loss}/{number}/{k}", fake_fold, (loss, k, params)) for k in range(folds)]

    return fold_jobs


SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "loss_args.temperature": {"type": "float", "low": 0.05, "high": 1.0, "losses": ["ncmi"]},
}


@pytest.mark.parametrize(("trials", "batch"), [(7, 1), (5, 3)])
def test_every_loss_gets_the_same_number_of_trials(trials: int, batch: int) -> None:
    parsed = parse_tune({"space": SPACE, "trials": trials, "batch": batch, "losses": ["ncmi", "ce", "focal"]})
    found = search(parsed, _fake_jobs(1))
    counts = pd.Series([t.loss for t in found]).value_counts().to_dict()
    assert counts == {"ncmi": trials, "ce": trials, "focal": trials}
    assert all("loss_args.temperature" in t.params for t in found if t.loss == "ncmi")
    assert not any("loss_args.temperature" in t.params for t in found if t.loss != "ncmi")


def test_the_seeded_sampler_repeats_and_the_seed_matters() -> None:
    parsed = parse_tune({"space": SPACE, "trials": 12, "seed": 5})
    first, again = search(parsed, _fake_jobs(1)), search(parsed, _fake_jobs(1))
    assert [t.params for t in first] == [t.params for t in again]
    other = search(parse_tune({"space": SPACE, "trials": 12, "seed": 6}), _fake_jobs(1))
    assert [t.params for t in first] != [t.params for t in other]
    best = best_trials(first, parsed)
    assert best["ncmi"].value == max(t.value for t in first if t.loss == "ncmi")


def test_the_objective_is_the_mean_over_folds() -> None:
    parsed = parse_tune({"space": SPACE, "trials": 4})
    for trial in search(parsed, _fake_jobs(3)):
        expected = [fake_fold(trial.loss, k, trial.params)["val_macro_f1"] for k in range(3)]
        assert trial.folds == expected
        assert trial.value == pytest.approx(sum(expected) / 3)


def test_a_missing_optuna_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(TuneError, match=r"pip install 'wsi-ncmi\[tune\]'"):
        require_optuna()


# The command on real bag files.


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    from wsi_ncmi.synthetic import write_synthetic_bags

    out = tmp_path_factory.mktemp("tune_bags")
    manifest, split = write_synthetic_bags(out, slides=32, tiles=(140, 160))
    table = pd.read_csv(split)
    pool = table[table["split"] != "test"].reset_index(drop=True)
    other = table.copy()
    other.loc[other["slide_id"].isin(pool["slide_id"]), "split"] = [
        "val" if i % 4 == 1 else "train" for i in range(len(pool))
    ]
    second = out / "split_1.csv"
    other.to_csv(second, index=False)
    return manifest, out / "features", split, second


def _tuning_file(folder: Path, **extra: Any) -> Path:
    data = {
        "losses": ["ncmi", "ce"],
        "trials": 2,
        "seed": 3,
        "training": {
            "model": "abmil",
            "model_args": {"dim": 16, "dropout": 0.0},
            "epochs": 2,
            "warmup_epochs": 1,
            "device": "cpu",
            "classes": ["negative", "itc", "micro", "macro"],
        },
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "model_args.neck": {"type": "categorical", "choices": ["none", "mlp"]},
            "loss_args.temperature": {"type": "float", "low": 0.1, "high": 1.0, "losses": ["ncmi"]},
        },
        **extra,
    }
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _tune(bags: tuple[Path, ...], out: Path, config: Path, *extra: str, splits: int = 2):
    manifest, features, *split_files = bags
    args = ["tune", "--manifest", str(manifest), "--features", str(features), "--config", str(config)]
    for split in split_files[:splits]:
        args += ["--split", str(split)]
    return runner.invoke(app, [*args, "--out", str(out), *extra])


def test_tune_writes_a_run_like_folder_and_a_config_train_takes(
    bags: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    config = _tuning_file(tmp_path)
    out = tmp_path / "tuned"
    result = _tune(bags, out, config, "--jobs", "1")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "trials.csv")
    assert table.groupby("loss").size().to_dict() == {"ce": 2, "ncmi": 2}
    assert (table["state"] == "complete").all()
    for row in table.itertuples():
        folds = []
        for k in range(2):
            run = out / "trials" / row.loss / f"trial_{row.trial:03d}" / f"fold_{k}"
            history = pd.read_csv(run / "history.csv")
            kept = torch_epoch(run)
            folds.append(float(history.loc[history["epoch"] == kept, "val_macro_f1"].iloc[0]))
            assert not list(run.glob("*test*")), "tuning never looks at the test split"
        assert row.fold_0 == pytest.approx(folds[0], abs=1e-5) and row.fold_1 == pytest.approx(folds[1], abs=1e-5)
        assert row.val_macro_f1 == pytest.approx(sum(folds) / 2, abs=1e-5)
    record = yaml.safe_load((out / "tune.yaml").read_text())
    assert (
        record["search"]["seed"] == 3
        and record["search"]["trials"] == 2
        and len(record["cohort"]["splits_sha256"]) == 2
    )
    assert record["search"]["space"]["lr"] == {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    for loss in ("ncmi", "ce"):
        best = table[table["loss"] == loss].sort_values(["val_macro_f1", "trial"], ascending=[False, True]).iloc[0]
        chosen = yaml.safe_load((out / f"best_{loss}.yaml").read_text())
        assert chosen["loss"] == loss and chosen["lr"] == pytest.approx(best["lr"], rel=1e-5)
        assert chosen["model_args"] == {"dim": 16, "dropout": 0.0, "neck": best["model_args.neck"]}
        manifest, features, split, _ = bags
        trained = runner.invoke(
            app,
            [
                "train",
                "--manifest",
                str(manifest),
                "--features",
                str(features),
                "--split",
                str(split),
                "--out",
                str(tmp_path / f"final_{loss}"),
                "--config",
                str(out / f"best_{loss}.yaml"),
            ],
        )
        assert trained.exit_code == 0, trained.output
    assert "temperature" in yaml.safe_load((out / "best_ncmi.yaml").read_text())["loss_args"]


def torch_epoch(run: Path) -> int:
    import torch

    return int(torch.load(run / "model.pt", map_location="cpu", weights_only=True)["epoch"])


def test_jobs_do_not_change_the_search_and_a_rerun_resumes(bags: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    import torch

    config = _tuning_file(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert _tune(bags, one, config, "--jobs", "1", splits=1).exit_code == 0
    result = _tune(bags, two, config, "--jobs", "2", splits=1)
    assert result.exit_code == 0, result.output
    first, second = pd.read_csv(one / "trials.csv"), pd.read_csv(two / "trials.csv")
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), second.drop(columns="seconds"))
    for checkpoint in sorted(one.glob("trials/*/*/fold_0/model.pt")):
        a = torch.load(checkpoint, map_location="cpu", weights_only=True)
        b = torch.load(two / checkpoint.relative_to(one), map_location="cpu", weights_only=True)
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), f"{checkpoint}: {key}"
    stamps = {p: p.stat().st_mtime_ns for p in one.glob("trials/*/*/fold_0/model.pt")}
    more = _tuning_file(tmp_path, trials=3)
    again = _tune(bags, one, more, "--jobs", "1", splits=1)
    assert again.exit_code == 0, again.output
    extended = pd.read_csv(one / "trials.csv")
    assert extended.groupby("loss").size().to_dict() == {"ce": 3, "ncmi": 3}
    pd.testing.assert_frame_equal(
        extended[extended["trial"] < 2].drop(columns="seconds").reset_index(drop=True),
        first.drop(columns="seconds"),
    )
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "finished trial runs are read back, not retrained"
    reseeded = _tuning_file(tmp_path, seed=4)
    refused = _tune(bags, one, reseeded, splits=1)
    assert refused.exit_code == 2 and "search.seed" in refused.output and "--overwrite" in refused.output
    assert _tune(bags, one, reseeded, "--overwrite", splits=1).exit_code == 0


def test_a_failed_trial_is_named_and_the_exit_code_says_so(bags: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    manifest, features, split, _ = bags
    broken = tmp_path / "broken_split.csv"
    table = pd.read_csv(split)
    table.loc[len(table)] = {"slide_id": "no_such_slide", "split": "train"}
    table.to_csv(broken, index=False)
    config = _tuning_file(tmp_path, trials=1)
    result = _tune((manifest, features, split, broken), tmp_path / "out", config, "--jobs", "1")
    assert result.exit_code == 1
    assert "failed ncmi/trial_000" in result.output and "no_such_slide" in result.output
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert (table["state"] == "failed").all() and table["fold_0"].notna().all() and table["fold_1"].isna().all()


def test_the_settings_check_accepts_a_model_that_keeps_the_tile_features() -> None:
    from wsi_ncmi.mil.tune import check_trial_settings

    parsed = parse_tune(
        {
            "training": {"model": "abmil", "model_args": {"dim": None}, "classes": ["a", "b", "c", "d"]},
            "space": {"loss_args.temperature": {"type": "float", "low": 0.1, "high": 1.0, "losses": ["ncmi"]}},
        }
    )
    check_trial_settings(parsed)


def test_tune_creates_the_folders_above_its_output_and_names_a_file_in_the_way(tmp_path: Path) -> None:
    from wsi_ncmi.mil.tune import TuneError, _with_parents

    out = _with_parents(tmp_path / "studies" / "camelyon" / "tune")
    assert out.parent.is_dir() and not out.exists()
    (tmp_path / "blocker").write_text("")
    with pytest.raises(TuneError, match="blocker is a file"):
        _with_parents(tmp_path / "blocker" / "tune")
