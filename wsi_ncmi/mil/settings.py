"""The resolved settings of a model or head: every constructor argument with the value it took, defaults included."""

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
