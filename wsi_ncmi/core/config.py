"""YAML configuration: load a file, then let command-line flags override it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file."""


MAX_CONFIG_BYTES = 1 << 20
"""Largest configuration file read (settings files are a few kB)."""
MAX_ALIASES = 100
"""Most YAML aliases (*name) a configuration may use."""
MAX_NODES = 100_000
"""Most values a configuration may hold once its aliases are expanded (a YAML 'billion laughs' holds billions)."""


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds with every shared (aliased) object counted each time; stops past `limit`."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _bounded_loader() -> type:
    """yaml.SafeLoader that refuses more than MAX_ALIASES aliases (no tags, no code, as SafeLoader)."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name); write the settings out")
            return super().compose_node(parent, index)

    return BoundedLoader


def load_yaml(path: Path | str | None) -> dict[str, Any]:
    """The mapping in a YAML file ({} for None); errors name the file. Safe (no tags, no code) and bounded: at most
    MAX_CONFIG_BYTES, MAX_ALIASES aliases and MAX_NODES values once aliases are expanded."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes; a configuration file is at most {MAX_CONFIG_BYTES:,}")
        data = yaml.load(path.read_text(), Loader=_bounded_loader())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML ({text[:300]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    if _expanded_size(data, MAX_NODES) > MAX_NODES:
        raise ConfigError(f"{path}: more than {MAX_NODES:,} values once its aliases are expanded; write it out plainly")
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
