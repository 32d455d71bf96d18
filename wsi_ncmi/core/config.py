"""YAML configuration: load a file, let command-line flags override it, and check each setting's type and range
(naming the key) before anything is written."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from wsi_ncmi.core.errors import WsiNcmiError


class ConfigError(WsiNcmiError):
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


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "dict": (dict,),
    "list": (list,),
    "None": (type(None),),
}

NON_NEGATIVE = (
    "overlap",
    "min_saturation",
    "median_um",
    "closing_um",
    "min_region_um2",
    "max_hole_um2",
    "thumbnail_px",
    "warmup_epochs",
    "weight_decay",
    "patience",
    "cache_gb",
    "seed",
)
"""Settings (of any section) that are sizes, counts or amounts: a negative value is refused, naming the key."""


def shown(value: Any, limit: int = 80) -> str:
    """repr(value) for a message, cut to `limit` characters (a setting can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _allowed(annotation: str) -> tuple[type, ...]:
    names = [re.sub(r"\[.*", "", part.strip()) for part in annotation.split("|")]
    return tuple(t for name in names for t in _TYPES.get(name, (object,)))


def setting_problems(values: dict[str, Any], cls: type, section: str) -> list[str]:
    """Every setting in `values` whose type does not fit dataclass `cls`'s field or that is negative where it may
    not be: 'tiling.tile_size must be an integer, got 256.7'."""
    problems = []
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields or dataclasses.is_dataclass(value):
            continue
        allowed = _allowed(fields[key])
        wrong = not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
        if wrong:
            kinds = " or ".join(dict.fromkeys("integer" if t is int else t.__name__ for t in allowed))
            problems.append(f"{section}.{key} must be {kinds.replace('NoneType', 'null')}, got {shown(value)}")
        elif key in NON_NEGATIVE and isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            problems.append(f"{section}.{key} must not be negative, got {shown(value)}")
    return problems


def check_settings(values: dict[str, Any], cls: type, section: str) -> None:
    """Raise ValueError listing every bad setting of `values` for dataclass `cls` (see setting_problems)."""
    problems = setting_problems(values, cls, section)
    if problems:
        raise ValueError("; ".join(problems))
