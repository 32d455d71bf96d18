"""Aggregators and the training loop: shapes, learning, exact resume, reproducibility, and bad inputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.cohort.manifest import read_manifest
from wsi_ncmi.cohort.splits import read_split
from wsi_ncmi.mil.checkpoint import load_trained
from wsi_ncmi.mil.data import BagDataError, join_split, load_bagset, step_groups
from wsi_ncmi.mil.models import MODELS, build_model
from wsi_ncmi.mil.run import train_run
from wsi_ncmi.mil.runfolder import RunError
from wsi_ncmi.mil.train import TrainConfig, predict
from wsi_ncmi.synthetic import write_synthetic_bags

runner = CliRunner()
FAST = TrainConfig(
    model="abmil", loss="ce", epochs=3, warmup_epochs=1, lr=2e-3, device="cpu", model_args={"dim": 32, "dropout": 0.0}
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("bags")
    manifest, split = write_synthetic_bags(out, slides=400)
    return manifest, out / "features", split


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("small_bags")
    manifest, split = write_synthetic_bags(out, slides=40)
    return manifest, out / "features", split


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_give_an_embedding_and_attention(name: str) -> None:
    torch.manual_seed(0)
    kwargs = {"n_classes": 3} if name == "clam_sb" else {}
    model = build_model(name, 24, dim=32, **kwargs).eval()
    x = torch.randn(37, 24)
    out = model(x)
    assert out.h.shape == (32,) and torch.isfinite(out.h).all()
    if name in ("abmil", "abmil_plain", "clam_sb", "transmil"):
        assert out.attention.shape == (37,)
        torch.testing.assert_close(out.attention.sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)
    assert model(torch.randn(1, 24)).h.shape == (32,)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dim_none_keeps_the_tile_features(name: str) -> None:
    kwargs = {"n_classes": 2, "k_sample": 2} if name == "clam_sb" else {}
    model = build_model(name, 24, dim=None, dropout=0.0, neck="none", **kwargs).eval()
    assert model.dim == 24
    assert list(model.project.parameters()) == []
    x = torch.randn(9, 24)
    out = model(x)
    assert out.h.shape == (24,)
    if name == "mean":
        torch.testing.assert_close(out.h, x.mean(0))
    elif name == "max":
        torch.testing.assert_close(out.h, x.max(0).values)
    elif name == "abmil":
        torch.testing.assert_close(out.h, out.attention @ x)


def test_abmil_is_permutation_invariant() -> None:
    model = build_model("abmil", 8, dim=16).eval()
    x = torch.randn(10, 8)
    torch.testing.assert_close(model(x).h, model(x[torch.randperm(10)]).h)


def test_clam_adds_its_instance_loss() -> None:
    model = build_model("clam_sb", 8, dim=16, n_classes=2, k_sample=3)
    out = model(torch.randn(12, 8))
    bag_loss = torch.tensor(1.0)
    total = model.combine_loss(bag_loss, out, torch.tensor([1]))
    assert total.requires_grad and float(total.detach()) != 0.7
    small_bag = model(torch.randn(1, 8))
    assert model.combine_loss(bag_loss, small_bag, torch.tensor([0])) is bag_loss


def test_transmil_handles_long_bags() -> None:
    model = build_model("transmil", 8, dim=32, heads=4).eval()
    with torch.no_grad():
        out = model(torch.randn(5000, 8))
    assert out.h.shape == (32,) and out.attention.shape == (5000,)


def test_unknown_model_lists_known() -> None:
    with pytest.raises(ValueError, match="known: abmil"):
        build_model("resnet", 8)
    with pytest.raises(ValueError, match=r"model 'abmil': .*unexpected keyword argument 'depth'"):
        build_model("abmil", 8, depth=3)
    with pytest.raises(ValueError, match="model 'mean' is registered twice"):
        MODELS.register("mean")(type("Other", (), {}))


def _train(cohort: tuple[Path, Path, Path], run: Path, config: TrainConfig, **kwargs: object):
    manifest, features, split = cohort
    return train_run(manifest, features, split, run, config, progress=False, **kwargs)


def test_abmil_with_ce_learns_the_count_rule(cohort: tuple[Path, Path, Path], tmp_path: Path) -> None:
    result = _train(cohort, tmp_path / "ce", replace(FAST, epochs=15, model_args={"dim": 64, "dropout": 0.0}))
    assert result.best_metrics["macro_f1"] >= 0.9


def test_abmil_with_ncmi_learns_the_count_rule(cohort: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config = replace(FAST, loss="ncmi", epochs=6, model_args={"dim": 64, "dropout": 0.0, "neck": "mlp"})
    result = _train(cohort, tmp_path / "ncmi", config)
    history = result.history
    assert history[["train_loss", "val_loss"]].notna().all().all()
    assert result.best_metrics["macro_f1"] >= 0.9
    trained = load_trained(tmp_path / "ncmi" / "model.pt")
    head = trained.head
    assert head.centroids.shape == (4, 64) and float(head.tau) > 0 and head.mu.abs().sum() > 0


def _old_layout(data: dict, projector: bool) -> dict:
    """The checkpoint layout earlier versions wrote: no neck setting, an NCMI projector inside the head."""
    old = {**data, "model_args": {k: v for k, v in data["model_args"].items() if k != "neck"}}
    old["state_dict"] = {k: v for k, v in data["state_dict"].items() if not k.startswith("neck.")}
    old["head_state"] = {k: v for k, v in data["head_state"].items() if not k.startswith("centre_")}
    old["loss_args"] = {k: v for k, v in data["loss_args"].items() if k in ("temperature", "decay", "centroids")}
    if projector:
        old["loss_args"]["projector"] = "mlp"
        neck = {k: v for k, v in data["state_dict"].items() if k.startswith("neck.")}
        old["head_state"].update({"projector." + k.removeprefix("neck."): v for k, v in neck.items()})
    return old


@pytest.mark.parametrize("projector", [True, False])
def test_checkpoints_written_before_the_neck_predict_as_trained(
    small: tuple[Path, Path, Path], tmp_path: Path, projector: bool
) -> None:
    """Old NCMI files (projector weights in the head, or no projector at all) give the predictions the old
    formula gives: pooled embedding -> Linear-ReLU-Linear (when present) -> nearest centroid in KL."""
    neck = "mlp" if projector else "none"
    config = replace(FAST, loss="ncmi", epochs=1, model_args={"dim": 32, "dropout": 0.0, "neck": neck})
    _train(small, tmp_path / "run", replace(config, loss_args={"centroids": "epoch"}))
    old = _old_layout(torch.load(tmp_path / "run" / "model.pt", weights_only=True), projector)
    torch.save(old, tmp_path / "old.pt")
    manifest, features, split = small
    parts = join_split(read_manifest(manifest), read_split(split), old["classes"])
    bags = load_bagset(parts["test"]["slide_id"].tolist(), parts["test"]["y"].tolist(), features)
    pooler = build_model("abmil", 32, dim=32, dropout=0.0).eval()
    pooler.load_state_dict(old["state_dict"])
    head = old["head_state"]
    expected = []
    with torch.no_grad():
        for i in range(len(bags)):
            h = pooler(torch.from_numpy(bags.features(i))).h
            if projector:
                hidden = torch.relu(h @ head["projector.0.weight"].T + head["projector.0.bias"])
                h = hidden @ head["projector.2.weight"].T + head["projector.2.bias"]
            z = (h - head["mu"]) / (h - head["mu"]).norm()
            log_p = torch.nn.functional.logsigmoid(z / 0.2)
            log_p = log_p - torch.logsumexp(log_p, 0)
            kl = [float((log_p.exp() * (log_p - q.log())).sum()) for q in head["centroids"]]
            expected.append(int(np.argmin(kl)))
    _, preds, _ = predict(load_trained(tmp_path / "old.pt"), bags)
    assert preds.tolist() == expected
    assert len(set(expected)) > 1 or len(bags) < 3


def test_checkpoints_carry_every_resolved_setting(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _train(small, tmp_path / "run", replace(FAST, loss="ncmi", epochs=1, loss_args={}))
    data = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert data["loss_args"] == {
        "class_weights": None,
        "temperature": 0.2,
        "decay": 0.999999,
        "centroids": "anchor",
        "ema_alpha": 0.99,
        "centre": "frozen",
        "centre_samples": 128,
        "separation": "mean_all",
        "tau_smoothing": None,
    }
    assert data["model_args"] == {"dim": 32, "dropout": 0.0, "attention_dim": 256, "neck": "mlp"}
    assert data["select"] == "best_f1" and set(data["calibration"]) == {"tau", "at_bound", "separable", "smoothing"}
    assert (data["optimizer"], data["momentum"], data["schedule"], data["milestones"], data["gamma"]) == (
        "adamw",
        0.9,
        "cosine",
        [],
        0.1,
    )
    assert (data["bags_per_step"], data["select_window"]) == (1, 5)


def test_a_model_without_parameters_predicts(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config = replace(FAST, model="mean", loss="ce", epochs=1, model_args={"dim": None, "neck": "none"})
    _train(small, tmp_path / "run", config)
    trained = load_trained(tmp_path / "run" / "model.pt")
    assert list(trained.model.parameters()) == []
    manifest, features, split = small
    parts = join_split(read_manifest(manifest), read_split(split), trained.classes)
    bags = load_bagset(parts["test"]["slide_id"].tolist(), parts["test"]["y"].tolist(), features)
    probs, _, _ = predict(trained, bags)
    assert probs.shape == (len(bags), 4)
    with pytest.raises(ValueError, match="no trainable parameters"):
        _train(small, tmp_path / "none", replace(config, loss="ncmi"))


def test_settings_that_bias_a_comparison_are_refused_or_warned(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grad_clip must be set for loss ncmi"):
        TrainConfig(loss="ncmi", grad_clip=None)
    with pytest.raises(ValueError, match=r"model_args\.neck"):
        TrainConfig(loss="ncmi", loss_args={"projector": "mlp"})
    with pytest.raises(ValueError, match="select must be one of"):
        TrainConfig(select="best_auc")
    config = replace(FAST, epochs=1, balanced_sampling=True, class_weights="balanced")
    with pytest.warns(UserWarning, match="correct the class imbalance"):
        _train(small, tmp_path / "run", config)


@pytest.mark.parametrize("select", ["last", "best_loss", "best_f1"])
def test_selection_rule_is_recorded_and_applied(small: tuple[Path, Path, Path], tmp_path: Path, select: str) -> None:
    """The kept epoch ends the best 2-epoch window of the rule's metric, from the first epoch after warm-up."""
    config = replace(FAST, select=select, epochs=5, select_window=2)
    result = _train(small, tmp_path / "run", config)
    assert f"select: {select}" in (tmp_path / "run" / "config.yaml").read_text()
    chosen = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["epoch"]
    history = result.history.set_index("epoch")
    windows = history.rolling(2).mean().loc[2:]
    if select == "last":
        expected = 5
    elif select == "best_loss":
        expected = int(windows["val_loss"].idxmin())
    else:
        ranked = sorted(windows.index, key=lambda e: (-windows.at[e, "val_macro_f1"], -windows.at[e, "val_auc"], e))
        expected = int(ranked[0])
    assert chosen == expected == result.best_epoch


def test_rng_states_are_kept_per_rank() -> None:
    """Each rank of a multi-process run gets its own generator state back on resume (row `rank` of the file)."""
    from wsi_ncmi.mil.train import _restore_rng

    class Rank:
        rank, world = 1, 2

    torch.manual_seed(0)
    first = torch.get_rng_state()
    torch.manual_seed(1)
    second = torch.get_rng_state()
    _restore_rng({"rng_states": {"torch": torch.stack([first, second])}}, torch.device("cpu"), Rank())
    assert torch.equal(torch.get_rng_state(), second)
    _restore_rng({"torch_rng": first}, torch.device("cpu"), Rank())
    assert torch.equal(torch.get_rng_state(), first)


def test_checkpoint_is_plain_data(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _train(small, tmp_path / "run", replace(FAST, loss="ncmi"))
    data = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["rng_states"]["torch"].shape[0] == 1
    assert data["classes"] == ["itc", "macro", "micro", "negative"]
    assert {"mu", "centroids", "tau"} <= set(data["head_state"])
    assert data["encoder_attrs"]["encoder"] == "synthetic"
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "classes:" in config and "code_version" in config and "encoder: synthetic" in config
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_macro_f1",
        "val_accuracy",
        "val_auc",
        "val_ncmi",
        "lr",
        "seconds",
    ]
    assert len(history) == 3


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the CUDA generator state is tested")


@pytest.mark.parametrize(
    ("loss", "device", "optimizer", "loop"),
    [
        ("ncmi", "cpu", "adamw", {}),
        ("ce", "cpu", "adamw", {}),
        ("ce", "cpu", "adam", {}),
        ("ncmi", "cpu", "adamw", {"bags_per_step": 4, "neck": "bn"}),
        ("ce", "cpu", "sgd", {"bags_per_step": 3, "schedule": "step", "milestones": [3], "neck": "mlp_bn"}),
        pytest.param("ce", "cuda", "adamw", {}, marks=CUDA),
        pytest.param("ncmi", "cuda", "adamw", {"bags_per_step": 4, "neck": "bn"}, marks=CUDA),
    ],
)
def test_resume_equals_an_uninterrupted_run(
    small: tuple[Path, Path, Path], tmp_path: Path, loss: str, device: str, optimizer: str, loop: dict
) -> None:
    loop = dict(loop)
    neck = loop.pop("neck", "mlp")
    config = replace(
        FAST,
        loss=loss,
        epochs=4,
        device=device,
        model_args={"dim": 32, "dropout": 0.25, "neck": neck},
        optimizer=optimizer,
        **loop,
    )
    _train(small, tmp_path / "whole", config)

    class Stop(Exception):
        pass

    def stop_after_two(epoch: int) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        _train(small, tmp_path / "split", config, on_epoch_end=stop_after_two)
    _train(small, tmp_path / "split", config, resume=True)
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["checkpoint"]
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["checkpoint"]
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, split["state_dict"][key]), key
    for key, value in whole["head_state"].items():
        assert torch.equal(value, split["head_state"][key]), key
    columns = ["train_loss", "val_loss", "val_macro_f1"]
    a = pd.read_csv(tmp_path / "whole" / "history.csv")[columns]
    b = pd.read_csv(tmp_path / "split" / "history.csv")[columns]
    pd.testing.assert_frame_equal(a, b)


def test_optimizer_is_checked_recorded_and_kept_on_resume(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"optimizer must be one of adamw, adam, sgd .*got 'lamb'"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match=r"training\.optimizer must be str, got 1"):
        TrainConfig.from_dict({"optimizer": 1})
    config = replace(FAST, optimizer="adam", weight_decay=5e-3)
    _train(small, tmp_path / "run", config)
    assert "optimizer: adam" in (tmp_path / "run" / "config.yaml").read_text()
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["optimizer"] == "adam"
    with pytest.raises(RunError, match="trained with optimizer adam, resumed with adamw"):
        _train(small, tmp_path / "run", replace(config, optimizer="adamw", epochs=4), resume=True)


def test_resume_refuses_the_last_pt_of_another_run(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config = replace(FAST, epochs=1)
    for name in ("run", "other"):
        _train(small, tmp_path / name, config)
    (tmp_path / "run" / "last.pt").write_bytes((tmp_path / "other" / "last.pt").read_bytes())
    with pytest.raises(RunError, match=r"last\.pt: does not belong to this run \(run id "):
        _train(small, tmp_path / "run", replace(config, epochs=2), resume=True)


def test_adam_adds_weight_decay_to_the_gradient_and_adamw_does_not() -> None:
    """adam: a step with decay w on gradient g is a step without decay on g + w p (coupled L2); adamw differs."""
    from wsi_ncmi.mil.speed import optimizer

    torch.manual_seed(0)
    start, grad = torch.randn(6), torch.randn(6)
    lr, decay = 1e-2, 0.5

    def steps(name: str, weight_decay: float, coupled: bool) -> torch.Tensor:
        p = torch.nn.Parameter(start.clone())
        opt = optimizer(name, [p], lr, weight_decay, torch.device("cpu"))
        for _ in range(3):
            p.grad = grad + (decay * p.detach() if coupled else 0)
            opt.step()
        return p.detach()

    reference = steps("adam", 0.0, coupled=True)
    torch.testing.assert_close(steps("adam", decay, coupled=False), reference)
    assert not torch.allclose(steps("adamw", decay, coupled=False), reference, atol=1e-4)


def test_same_seed_same_history(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    for name in ("a", "b"):
        _train(small, tmp_path / name, replace(FAST, loss="ncmi", model_args={"dim": 32, "dropout": 0.25}))
    columns = ["train_loss", "val_loss", "val_macro_f1", "val_ncmi"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "history.csv")[columns], pd.read_csv(tmp_path / "b" / "history.csv")[columns]
    )


def test_run_folder_is_protected(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _train(small, tmp_path / "run", FAST)
    with pytest.raises(RunError, match="--resume to continue it or --overwrite"):
        _train(small, tmp_path / "run", FAST)
    with pytest.raises(RunError, match="nothing to resume"):
        _train(small, tmp_path / "fresh", FAST, resume=True)
    _train(small, tmp_path / "run", FAST, overwrite=True)


def _copy_cohort(small: tuple[Path, Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    import shutil

    manifest, features, split = small
    shutil.copytree(features, tmp_path / "features")
    shutil.copy(manifest, tmp_path / "manifest.csv")
    shutil.copy(split, tmp_path / "split.csv")
    return tmp_path / "manifest.csv", tmp_path / "features", tmp_path / "split.csv"


def _first_train_slide(split: Path) -> str:
    frame = pd.read_csv(split)
    return str(frame.loc[frame["split"] == "train", "slide_id"].iloc[0])


def test_missing_bags_listed_or_skipped(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    cohort = _copy_cohort(small, tmp_path)
    victim = _first_train_slide(cohort[2])
    (cohort[1] / f"{victim}.h5").unlink()
    with pytest.raises(BagDataError, match=f"have no bag in .*{victim}.*--skip-missing"):
        _train(cohort, tmp_path / "run", FAST)
    with pytest.warns(UserWarning, match=victim):
        _train(cohort, tmp_path / "run2", replace(FAST, skip_missing=True))


@pytest.mark.parametrize("problem", ["dim", "nan", "empty"])
def test_bad_bags(small: tuple[Path, Path, Path], tmp_path: Path, problem: str) -> None:
    cohort = _copy_cohort(small, tmp_path)
    victim = _first_train_slide(cohort[2])
    path = cohort[1] / f"{victim}.h5"
    with h5py.File(path, "a") as h5:
        features = h5["features"][:]
        attrs = dict(h5["features"].attrs)
        del h5["features"]
        if problem == "dim":
            features = features[:, :16]
        elif problem == "nan":
            features[:3] = np.nan
        else:
            features = features[:0]
            del h5["coords"]
            h5["coords"] = np.zeros((0, 2), np.int64)
        h5["features"] = features
        h5["features"].attrs.update(attrs)
    if problem == "empty":
        with pytest.warns(UserWarning, match=f"empty training bag.*{victim}"):
            _train(cohort, tmp_path / "run", FAST)
        return
    message = "feature size differs" if problem == "dim" else "3 tile\\(s\\) with NaN"
    with pytest.raises(BagDataError, match=message):
        _train(cohort, tmp_path / "run", FAST)


def test_split_and_class_problems(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    cohort = _copy_cohort(small, tmp_path)
    split = pd.read_csv(cohort[2])
    pd.concat([split, pd.DataFrame({"slide_id": ["ghost"], "split": ["train"]})]).to_csv(cohort[2], index=False)
    with pytest.raises(BagDataError, match="not in the manifest: ghost"):
        _train(cohort, tmp_path / "run", FAST)
    manifest = pd.read_csv(cohort[0])
    only_test = manifest.loc[manifest["label"] == "macro", "slide_id"]
    split.loc[split["slide_id"].isin(only_test), "split"] = "test"
    split.to_csv(cohort[2], index=False)
    with pytest.raises(BagDataError, match="\\['macro'\\] have no training slides"):
        _train(cohort, tmp_path / "run2", FAST)


def test_train_cli(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, features, split = small
    config = tmp_path / "c.yaml"
    config.write_text("model: mean\nloss: focal\nepochs: 2\nwarmup_epochs: 0\nmodel_args: {dim: 16}\n")
    args = [
        "train",
        "--manifest",
        str(manifest),
        "--features",
        str(features),
        "--split",
        str(split),
        "--out",
        str(tmp_path / "run"),
        "--config",
        str(config),
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "selected epoch" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    config.write_text("epochs: 2\nmodell: abmil\n")
    bad = runner.invoke(app, [*args, "--overwrite"])
    assert bad.exit_code == 2 and "modell" in bad.output


@pytest.mark.parametrize(
    ("model", "loss"),
    [
        ("abmil", "focal"),
        ("abmil", "cmic"),
        ("abmil_plain", "ncmi"),
        ("clam_sb", "ce"),
        ("transmil", "ncmi"),
        ("max", "ce"),
    ],
)
def test_every_model_and_loss_trains_and_predicts(
    small: tuple[Path, Path, Path], tmp_path: Path, model: str, loss: str
) -> None:
    config = replace(
        FAST,
        model=model,
        loss=loss,
        epochs=2,
        model_args={"dim": 32, "dropout": 0.0, **({"heads": 4} if model == "transmil" else {})},
    )
    result = _train(small, tmp_path / "run", config)
    assert len(result.history) == 2 and result.history["train_loss"].notna().all()
    trained = load_trained(tmp_path / "run" / "model.pt")

    manifest, features, split = small

    parts = join_split(read_manifest(manifest), read_split(split), trained.classes)
    bags = load_bagset(parts["test"]["slide_id"].tolist(), parts["test"]["y"].tolist(), features)
    probs, preds, no_tiles = predict(trained, bags)
    assert probs.shape == (len(bags), 4) and np.allclose(probs.sum(1), 1) and not no_tiles.any()
    assert set(preds.tolist()) <= set(range(4))


def test_evaluate_reports_the_selected_and_the_last_epoch(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import json

    manifest, features, split = small
    config = tmp_path / "c.yaml"
    config.write_text(
        "model_args: {dim: 16, dropout: 0.0}\nloss: ce\nepochs: 3\nwarmup_epochs: 0\nlr: 0.002\nselect_window: 1\n"
    )
    base = ["--manifest", str(manifest), "--features", str(features), "--split", str(split)]
    for select in ("last", "best_loss"):
        run = tmp_path / select
        trained = runner.invoke(
            app, ["train", *base, "--out", str(run), "--config", str(config), "--device", "cpu", "--select", select]
        )
        assert trained.exit_code == 0, trained.output
        assert f"select: {select}" in (run / "config.yaml").read_text()
        evaluated = runner.invoke(app, ["evaluate", "--run", str(run), "--split", "test", "--bootstrap", "0"])
        assert evaluated.exit_code == 0, evaluated.output
        assert "last epoch 3" in evaluated.output
        metrics = json.loads((run / "metrics_test.json").read_text())
        history = pd.read_csv(run / "history.csv")
        chosen = 3 if select == "last" else int(history.loc[history["val_loss"].idxmin(), "epoch"])
        assert metrics["selection"] == {"rule": select, "epoch": chosen}
        assert metrics["last_epoch"]["epoch"] == 3
        if select == "last":
            assert metrics["last_epoch"]["macro_f1"] == metrics["macro_f1"]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 31, 33, 270])
@pytest.mark.parametrize("per_step", [1, 2, 4, 8, 32])
def test_step_groups_cover_the_epoch_in_order(n: int, per_step: int) -> None:
    order = np.random.default_rng(n).permutation(n)
    groups = step_groups(order, per_step)
    assert np.concatenate(groups).tolist() == order.tolist()
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1
    if per_step == 1:
        assert sizes == [1] * n
    else:
        assert n < 2 or min(sizes) >= 2
        assert len(groups) in (-(-n // per_step), -(-n // per_step) - 1)
        assert max(sizes) <= per_step or (per_step == 2 and n % 2 == 1 and sizes.count(3) == 1)


def test_bags_per_step_takes_fewer_optimiser_steps_to_the_same_shapes(
    small: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    states = {}
    for per_step in (1, 4):
        config = replace(FAST, epochs=2, bags_per_step=per_step)
        _train(small, tmp_path / f"b{per_step}", config)
        states[per_step] = torch.load(tmp_path / f"b{per_step}" / "last.pt", weights_only=True)
    n_train = int((pd.read_csv(small[2])["split"] == "train").sum())
    assert states[1]["scheduler"]["last_epoch"] == 2 * n_train
    assert states[4]["scheduler"]["last_epoch"] == 2 * -(-n_train // 4)
    one, four = (states[k]["checkpoint"] for k in (1, 4))
    assert four["bags_per_step"] == 4 and "bags_per_step: 4" in (tmp_path / "b4" / "config.yaml").read_text()
    assert {k: v.shape for k, v in one["state_dict"].items()} == {k: v.shape for k, v in four["state_dict"].items()}
    assert {k: v.shape for k, v in one["head_state"].items()} == {k: v.shape for k, v in four["head_state"].items()}
    assert any(not torch.equal(v, four["state_dict"][k]) for k, v in one["state_dict"].items())


@pytest.mark.parametrize(
    ("model", "loss"), [("abmil", "ce"), ("abmil", "ncmi"), ("clam_sb", "ce"), ("transmil", "focal"), ("mean", "cmic")]
)
def test_a_step_on_four_bags_is_the_mean_of_four_one_bag_steps(model: str, loss: str) -> None:
    """Loss and gradient of one step over four bags equal the mean over the four bags alone (no dropout, no
    BatchNorm): the batch changes how often the optimiser steps, not what a bag contributes."""
    from wsi_ncmi.mil.heads import build_head
    from wsi_ncmi.mil.train import _Step

    torch.manual_seed(0)
    kwargs = {"n_classes": 3, "k_sample": 2} if model == "clam_sb" else {"heads": 4} if model == "transmil" else {}
    net = build_model(model, 12, dim=16, dropout=0.0, neck="mlp", **kwargs)
    # A frozen NCMI centre is set by the first training steps, so it would differ between the two passes.
    head = build_head(loss, 16, 3, **({"centre": "epoch"} if loss == "ncmi" else {}))
    step = _Step(net, head, torch.device("cpu"))
    bags = [torch.randn(n, 12) for n in (5, 9, 3, 7)]
    y = torch.tensor([0, 2, 1, 2])

    def gradient(xs: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        step.zero_grad()
        loss_value, h = step(xs, labels)
        assert h.shape == (len(xs), 16)
        loss_value.backward()
        return loss_value.detach(), [p.grad.clone() for p in step.parameters()]

    together = gradient(bags, y)
    alone = [gradient([x], y[i : i + 1]) for i, x in enumerate(bags)]
    torch.testing.assert_close(together[0], torch.stack([a[0] for a in alone]).mean(), rtol=1e-5, atol=1e-7)
    for k, grad in enumerate(together[1]):
        torch.testing.assert_close(grad, torch.stack([a[1][k] for a in alone]).mean(0), rtol=1e-4, atol=1e-7)


def test_batchnorm_necks_need_two_bags_a_step(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    for neck in ("bn", "mlp_bn"):
        with pytest.raises(ValueError, match=f"neck {neck} normalises over the bags of a step and needs bags_per_step"):
            TrainConfig(model_args={"neck": neck})
        TrainConfig(model_args={"neck": neck}, bags_per_step=2)
    net = build_model("abmil", 8, dim=16, neck="bn")
    bags = [torch.randn(n, 8) for n in (4, 6, 5)]
    net.train()
    h = torch.stack([o.h for o in net.forward_bags(bags)])
    torch.testing.assert_close(h.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    net.eval()
    torch.testing.assert_close(net(bags[0]).h, net.forward_bags(bags)[0].h)
    config = replace(FAST, epochs=2, bags_per_step=2, model_args={"dim": 32, "dropout": 0.0, "neck": "bn"})
    _train(small, tmp_path / "run", config)
    trained = load_trained(tmp_path / "run" / "model.pt")
    assert float(trained.model.neck.running_mean.abs().sum()) > 0
    manifest, features, split = small
    parts = join_split(read_manifest(manifest), read_split(split), trained.classes)
    bags_test = load_bagset(parts["test"]["slide_id"].tolist(), parts["test"]["y"].tolist(), features)
    probs, _, _ = predict(trained, bags_test)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1)


def test_sgd_with_a_step_schedule_decays_at_the_milestones(small: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config = replace(
        FAST, epochs=5, warmup_epochs=1, optimizer="sgd", momentum=0.8, lr=0.01, schedule="step", milestones=[2, 4],
        gamma=0.5, bags_per_step=4,
    )  # fmt: skip
    result = _train(small, tmp_path / "run", config)
    # history.lr is the rate of the next epoch's steps: epoch 2 starts after warm-up, epochs 3-4 x0.5, 5 x0.25
    assert result.history["lr"].tolist() == pytest.approx([0.01, 0.005, 0.005, 0.0025, 0.0025])
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["nesterov"], group["initial_lr"]) == (0.8, False, 0.01)
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "schedule: step" in text and "optimizer: sgd" in text and "momentum: 0.8" in text
    with pytest.raises(RunError, match=r"trained with schedule step, resumed with cosine; resume with schedule: step"):
        _train(small, tmp_path / "run", replace(config, schedule="cosine", milestones=[], epochs=6), resume=True)
    with pytest.raises(RunError, match=r"trained with milestones \[2, 4\], resumed with \[3\]"):
        _train(small, tmp_path / "run", replace(config, milestones=[3], epochs=6), resume=True)
    with pytest.raises(RunError, match="trained with bags_per_step 4, resumed with 2"):
        _train(small, tmp_path / "run", replace(config, bags_per_step=2, epochs=6), resume=True)
    other_neck = replace(config, model_args={"dim": 32, "neck": "none"}, epochs=6)
    with pytest.raises(RunError, match=r"trained with neck mlp, resumed with none; resume with model_args: \{neck"):
        _train(small, tmp_path / "run", other_neck, resume=True)


def test_schedule_factors_at_the_boundaries() -> None:
    from wsi_ncmi.mil.schedule import lr_factor

    step = lr_factor("step", warmup_steps=10, total_steps=100, steps_per_epoch=10, milestones=[3, 6], gamma=0.1)
    assert [step(s) for s in (0, 9, 10, 29, 30, 59, 60, 99)] == pytest.approx(
        [0.1, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )
    cosine = lr_factor("cosine", warmup_steps=0, total_steps=100)
    assert [cosine(s) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="schedule must be one of cosine, step"):
        lr_factor("linear", 0, 1)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"schedule": "poly"}, "schedule must be one of cosine, step"),
        ({"milestones": [10]}, "milestones apply to schedule: step only"),
        ({"schedule": "step", "milestones": [20, 10]}, "milestones must be increasing epoch numbers"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ({"bags_per_step": 0}, "bags_per_step must be >= 1"),
        ({"select_window": 0}, "select_window must be >= 1"),
        ({"select_from": 0}, "select_from must be >= 1"),
    ],
)
def test_loop_settings_are_checked(values: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TrainConfig(**values)


def _history(losses: list[float], f1: list[float]) -> list[dict]:
    return [{"val_loss": v, "val_macro_f1": f, "val_auc": 0.5} for v, f in zip(losses, f1, strict=True)]


def test_best_loss_never_selects_a_degenerate_epoch() -> None:
    """A negative or non-finite validation loss (a numerical failure) is never the best one, nor is any window
    that holds it."""
    from wsi_ncmi.mil.selection import improves, selection_score

    losses = [0.9, -5974.0, 0.5, float("nan"), 11200.0, 0.6, 0.7, float("inf"), 0.4]
    history = _history(losses, [0.5] * len(losses))
    best, chosen = None, None
    for epoch in range(1, len(history) + 1):
        score = selection_score("best_loss", history[:epoch], 1, 1, len(history))
        if improves(score, best):
            best, chosen = score, epoch
    assert chosen == 9
    windowed = [selection_score("best_loss", history[:e], 2, 1, len(history)) for e in range(1, 10)]
    assert [w is not None for w in windowed] == [False, False, False, False, False, True, True, False, False]


def test_windowed_f1_ignores_a_lucky_early_epoch() -> None:
    """With few validation slides one early epoch can top macro-F1 by chance; the trailing mean of the default
    window does not keep it, and the warm-up is never selected."""
    from wsi_ncmi.mil.selection import first_eligible, improves, selection_score

    f1 = [0.8, 0.3, 0.35, 0.4, 0.5, 0.55, 0.6, 0.62, 0.6, 0.61]
    history = _history([1.0] * len(f1), f1)
    defaults = TrainConfig(epochs=len(f1), warmup_epochs=2)
    first = first_eligible(defaults.select_from, defaults.warmup_epochs, defaults.epochs)
    assert first == 3
    best, chosen = None, None
    for epoch in range(1, len(f1) + 1):
        score = selection_score("best_f1", history[:epoch], defaults.select_window, first, len(f1))
        if improves(score, best):
            best, chosen = score, epoch
    assert chosen == 10
    single = [selection_score("best_f1", history[:e], 1, 1, len(f1)) for e in range(1, 11)]
    assert max(range(10), key=lambda i: single[i]) == 0
    assert first_eligible(None, 5, 3) == 3 and first_eligible(40, 5, 50) == 40


def test_a_run_whose_every_validation_loss_is_degenerate_keeps_the_last_epoch(
    small: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_ncmi.mil import train as train_module

    validate = train_module._validate

    def negative_loss(*args: object, **kwargs: object) -> tuple[dict, float]:
        metrics, _ = validate(*args, **kwargs)
        return metrics, -1.0

    monkeypatch.setattr(train_module, "_validate", negative_loss)
    result = _train(small, tmp_path / "run", replace(FAST, select="best_loss", select_window=1, patience=1))
    assert result.best_epoch == 3 and not result.stopped_early
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["epoch"] == 3
