"""YAML configuration: load a file, then let command-line flags override it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file."""


def load_yaml(path: Path | str | None) -> dict[str, Any]:
    """The mapping in a YAML file ({} for None); errors name the file."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def override(base: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """`base` with every flag that was given (not None) set on top; dotted keys ('tissue.mask_mpp') nest."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in flags.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = merged
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return merged
