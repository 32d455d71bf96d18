"""The ablation's tuned mode: every loss and neck gets the same trial budget on validation, and the seeds then
train with the settings that search chose."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytest.importorskip("optuna")


def test_tuned_arms_share_the_budget_and_train_with_the_chosen_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import benchmarks.ncmi_ablation as ablation

    tried: dict[tuple[str, str], list[dict[str, Any]]] = {}
    trained: dict[str, list[dict[str, Any]]] = {}

    def fake_validate(fold: Any, arm: dict[str, Any], grid: Any, classes: list[str], params: dict[str, Any]) -> Any:
        tried.setdefault((arm["loss"], arm["neck"]), []).append(params)
        return {"val_macro_f1": 1.0 - abs(math.log10(params["lr"]) + 3)}

    def fake_run(fold: Any, arm: dict[str, Any], grid: Any, classes: list[str], params: Any = None) -> Any:
        trained.setdefault(ablation.arm_name(arm), []).append(params)
        return {"accuracy": 0.5, "macro_f1": 0.5}

    monkeypatch.setattr(ablation, "validate_one", fake_validate)
    monkeypatch.setattr(ablation, "run_one", fake_run)
    out = tmp_path / "tuned.json"
    flags = ["--datasets", "synthetic", "--seeds", "2", "--tuned", "--trials", "5", "--tune-folds", "1"]
    ablation.main([*flags, "--jobs", "1", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert sorted(tried) == [("ce", "mlp"), ("ce", "none"), ("ncmi", "mlp"), ("ncmi", "none")]
    assert {key: len(v) for key, v in tried.items()} == dict.fromkeys(tried, 5), "5 trials each"
    chosen = payload["tuned"]["chosen"]["synthetic"]
    for (loss, neck), params in tried.items():
        best = max(params, key=lambda p: 1.0 - abs(math.log10(p["lr"]) + 3))
        assert chosen[neck][loss]["params"] == best and chosen[neck][loss]["trials"] == 5
        assert trained[f"{loss}/{neck}"][-2:] == [best, best], "both seeds train with the chosen settings"
        assert ("loss_args.temperature" in best) == (loss == "ncmi")
    assert payload["summary"]["synthetic"].keys() == {"ce/none", "ce/mlp", "ncmi/none", "ncmi/mlp"}
    assert ablation.table(payload).startswith("tuned arms (lr, weight decay and NCMI's T chosen per loss and neck")
