"""Settings of models and heads: the resolved settings of a model or head (every constructor argument with the
value it took, defaults included), and a loss's head settings from loss_args in either of its two shapes."""

from __future__ import annotations

import inspect
from typing import Any


def resolved_settings(cls: type, skip: tuple[str, ...], **given: Any) -> dict[str, Any]:
    """`given` completed with the constructor defaults of `cls`, leaving out the positional inputs named in `skip`."""
    out = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        out[name] = given.get(name, parameter.default)
    unknown = sorted(set(given) - set(out))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} for {cls.__name__}")
    return out


def keyed_by_loss(loss_args: Any) -> bool:
    """Whether loss_args is in the keyed shape of pipeline and tuning files ({ncmi: {temperature: 0.2}, ce: {}}):
    a mapping whose every value is a mapping. No head setting takes a mapping, so a training config's flat shape
    ({temperature: 0.2}) is never taken for it; an empty one is both."""
    return isinstance(loss_args, dict) and all(isinstance(value, dict) for value in loss_args.values())


def loss_settings(loss: str, loss_args: dict[str, Any] | None) -> dict[str, Any]:
    """The head settings of `loss` from loss_args in either shape: flat, as a training config gives them, or keyed
    by loss name, as a pipeline or tuning file does (a loss without an entry gets none); a copy."""
    import copy

    loss_args = loss_args or {}
    if keyed_by_loss(loss_args):
        return copy.deepcopy(dict(loss_args.get(loss) or {}))
    return copy.deepcopy(dict(loss_args))
