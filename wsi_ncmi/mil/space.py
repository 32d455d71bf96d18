"""The tuning file of `wsi-ncmi tune` (configs/tune_camelyon17.yaml): losses, trial budget, sampler seed, the
validation metric, fixed training settings and the search space; every problem is reported at once.

A search-space key is a training setting (`lr`, `weight_decay`, `bags_per_step`) or one level inside
`model_args`/`loss_args` (`model_args.neck`, `loss_args.temperature`). Each has a `type`: `float` or `int` (`low`,
`high`, optional `log` or `step`) or `categorical` (`choices`), and optionally `losses`, the losses it applies to
(`loss_args.temperature` only means something for ncmi).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.mil.settings import keyed_by_loss, loss_settings

METRICS = {
    "val_macro_f1": "maximize",
    "val_accuracy": "maximize",
    "val_auc": "maximize",
    "val_loss": "minimize",
    "val_ncmi": "minimize",
}
"""Validation figures of the epoch a trial's run keeps (its `select` rule), and which way is better."""

DEFAULTS: dict[str, Any] = {
    "losses": ["ncmi", "ce"],
    "trials": 20,
    "seed": 1,
    "metric": "val_macro_f1",
    "batch": 1,
    "training": {},
    "loss_args": {},
}
TOP_KEYS = (*DEFAULTS, "space")
NESTED = ("model_args", "loss_args")
NOT_TUNED = {
    "loss": "each loss is tuned on its own (top-level losses)",
    "seed": "tuning on the seed fits noise (set training.seed)",
    "classes": "the classes are not a setting to tune",
}
SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step", "losses"},
    "int": {"type", "low", "high", "log", "step", "losses"},
    "categorical": {"type", "choices", "losses"},
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SpaceError(WsiNcmiError):
    """A tuning file that cannot be used; the message names the file and lists every problem."""


@dataclass(frozen=True)
class Param:
    """One searched setting (a dotted key) and its range or choices."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    losses: tuple[str, ...] | None = None

    def applies(self, loss: str) -> bool:
        return self.losses is None or loss in self.losses

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial proposes for this setting."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def probes(self) -> list[Any]:
        """Values that together exercise the whole range: both ends, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.losses is not None:
            out["losses"] = list(self.losses)
        return out


@dataclass(frozen=True)
class TuneSettings:
    """A checked tuning file."""

    space: tuple[Param, ...]
    losses: tuple[str, ...] = ("ncmi", "ce")
    trials: int = 20
    seed: int = 1
    metric: str = "val_macro_f1"
    batch: int = 1
    training: dict[str, Any] = field(default_factory=dict)
    loss_args: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def params_for(self, loss: str) -> list[Param]:
        return [p for p in self.space if p.applies(loss)]

    def trial_settings(self, loss: str, params: dict[str, Any]) -> dict[str, Any]:
        """The training settings of one trial: the fixed ones, the loss and its fixed loss_args, then `params`."""
        settings = copy.deepcopy(self.training)
        settings["loss"] = loss
        settings["loss_args"] = loss_settings(loss, self.loss_args)
        for key, value in params.items():
            head, _, leaf = key.partition(".")
            if leaf:
                settings[head] = {**(settings.get(head) or {}), leaf: value}
            else:
                settings[key] = value
        return settings

    def record(self) -> dict[str, Any]:
        """The file's content, resolved (defaults filled in); parse_tune(record()) gives these settings back."""
        return {
            "losses": list(self.losses),
            "trials": self.trials,
            "seed": self.seed,
            "metric": self.metric,
            "batch": self.batch,
            "training": copy.deepcopy(self.training),
            "loss_args": copy.deepcopy(self.loss_args),
            "space": {p.key: p.record() for p in self.space},
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key_problems(key: Any) -> list[str]:
    if not isinstance(key, str):
        return [f"space key {key!r} must be a setting name"]
    parts = key.split(".")
    if len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts):
        return [
            f"space.{key}: give a training setting (lr) or one level inside {' or '.join(NESTED)} (model_args.neck)"
        ]
    if len(parts) == 2 and parts[0] not in NESTED:
        return [f"space.{key}: only {' and '.join(NESTED)} take a dotted key"]
    if parts[0] in NESTED and len(parts) == 1:
        return [f"space.{key}: tune one setting inside it ({key}.NAME), not the whole mapping"]
    if parts[0] in NOT_TUNED:
        return [f"space.{key}: not tunable ({NOT_TUNED[parts[0]]})"]
    return []


def _range_problems(where: str, kind: str, spec: dict[str, Any]) -> list[str]:
    problems = []
    check = _is_int if kind == "int" else _is_number
    what = "whole numbers" if kind == "int" else "numbers"
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    for name, value in (("low", low), ("high", high)):
        if value is None:
            problems.append(f"{where}: {name} is required for type {kind}")
        elif not check(value):
            problems.append(f"{where}: {name} must be {what[:-1]}, got {value!r}")
    ends = check(low) and check(high)
    if ends and not low < high:
        problems.append(f"{where}: low must be below high, got low {low!r}, high {high!r}")
    if not isinstance(log, bool):
        problems.append(f"{where}: log must be true or false, got {log!r}")
    elif log and check(low) and low <= 0:
        problems.append(f"{where}: a log scale needs low > 0, got {low!r}")
    if step is not None:
        if not check(step) or step <= 0:
            problems.append(f"{where}: step must be a positive {what[:-1]}, got {step!r}")
        elif log is True:
            problems.append(f"{where}: log and step cannot be used together")
    return problems


def _choice_problems(where: str, choices: Any) -> list[str]:
    if not isinstance(choices, list) or not choices:
        return [f"{where}: choices must be a non-empty list, got {choices!r}"]
    problems = []
    scalar = (type(None), bool, int, float, str)
    bad = [c for c in choices if not isinstance(c, scalar)]
    if bad:
        problems.append(f"{where}: choices must be numbers, strings, true/false or null, got {bad[0]!r}")
    elif len({(type(c), c) for c in choices}) != len(choices):
        problems.append(f"{where}: choices repeat a value ({choices!r})")
    return problems


def _param(key: str, spec: Any, losses: list[str]) -> tuple[Param | None, list[str]]:
    """A parameter and the problems of its spec (every one of them)."""
    where = f"space.{key}"
    problems = _key_problems(key)
    if not isinstance(spec, dict):
        return None, [*problems, f"{where}: expected a mapping with a type (float, int or categorical), got {spec!r}"]
    kind = spec.get("type")
    if kind not in SPEC_KEYS:
        problems.append(f"{where}: type must be float, int or categorical, got {kind!r}")
        return None, problems
    unknown = sorted(set(map(str, spec)) - SPEC_KEYS[kind])
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)} for type {kind}")
    if kind == "categorical":
        problems += _choice_problems(where, spec.get("choices"))
    else:
        problems += _range_problems(where, kind, spec)
    applies = spec.get("losses")
    if applies is not None:
        if not isinstance(applies, list) or not applies or not all(isinstance(x, str) for x in applies):
            problems.append(f"{where}: losses must be a non-empty list of loss names, got {applies!r}")
        else:
            stray = [x for x in applies if x not in losses]
            if stray:
                problems.append(f"{where}: losses {', '.join(stray)} are not tuned (losses: {', '.join(losses)})")
    if problems:
        return None, problems
    return (
        Param(
            key,
            kind,
            spec.get("low"),
            spec.get("high"),
            bool(spec.get("log", False)),
            spec.get("step"),
            tuple(spec.get("choices") or ()),
            tuple(applies) if applies is not None else None,
        ),
        [],
    )


def _top_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    unknown = sorted(set(map(str, data)) - set(TOP_KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(TOP_KEYS)})")
    losses = data["losses"]
    if not isinstance(losses, list) or not losses or not all(isinstance(x, str) and x for x in losses):
        problems.append(f"losses must be a non-empty list of loss names, got {losses!r}")
    elif len(set(losses)) != len(losses):
        problems.append(f"losses repeat a name ({losses!r})")
    for key, minimum in (("trials", 1), ("seed", 0), ("batch", 1)):
        if not _is_int(data[key]) or data[key] < minimum:
            problems.append(f"{key} must be a whole number >= {minimum}, got {data[key]!r}")
    if data["metric"] not in METRICS:
        problems.append(f"metric must be one of {', '.join(METRICS)}, got {data['metric']!r}")
    training = data["training"]
    if not isinstance(training, dict):
        problems.append(f"training must be a mapping of training settings, got {training!r}")
    else:
        clash = sorted({"loss", "loss_args"} & set(training))
        if clash:
            problems.append(f"training must not set {', '.join(clash)}; use the top-level losses and loss_args")
    loss_args = data["loss_args"]
    if not keyed_by_loss(loss_args):
        problems.append(
            f"loss_args must map each loss to its settings ({{ncmi: {{temperature: 0.2}}}}), got {loss_args!r}"
        )
    elif isinstance(losses, list):
        stray = sorted(set(map(str, loss_args)) - set(map(str, losses)))
        if stray:
            problems.append(f"loss_args for {', '.join(stray)}, which is not in losses")
    return problems


def parse_tune(data: dict[str, Any], source: str = "tuning file") -> TuneSettings:
    """Check a tuning mapping and return its settings; a SpaceError listing every problem (`source: a; b; c`)."""
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    data = {**copy.deepcopy(DEFAULTS), **data}
    problems = _top_problems(data)
    losses = data["losses"] if isinstance(data["losses"], list) else []
    space = data.get("space")
    params: list[Param] = []
    if not isinstance(space, dict) or not space:
        problems.append(f"space must be a non-empty mapping of settings to search, got {space!r}")
    else:
        for key, spec in space.items():
            param, found = _param(key, spec, losses)
            problems += found
            if param is not None:
                params.append(param)
    if problems:
        raise SpaceError(f"{source}: " + "; ".join(problems))
    return TuneSettings(
        tuple(params),
        tuple(data["losses"]),
        data["trials"],
        data["seed"],
        data["metric"],
        data["batch"],
        data["training"],
        data["loss_args"],
    )


def load_tune(path: Path) -> TuneSettings:
    """The tuning file at `path`, checked."""
    from wsi_ncmi.core.config import ConfigError, load_yaml

    try:
        data = load_yaml(path)
    except ConfigError as exc:
        raise SpaceError(str(exc)) from exc
    return parse_tune(data, str(path))
