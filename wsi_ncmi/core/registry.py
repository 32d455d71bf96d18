"""A name -> entry registry filled by a decorator, so adding an aggregator, a loss or an encoder is one class or
function plus its registration; every registry refuses an unknown name the same way (UnknownNameError)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from wsi_ncmi.core.errors import WsiNcmiError

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(WsiNcmiError, KeyError, ValueError):
    """A name no registry entry has; the message lists the known ones. A KeyError and a ValueError too, so callers
    catching either (lookups, settings checks) keep working."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(dict[str, T], Generic[T]):
    """Entries (classes or factory functions) by name; an unknown name is an UnknownNameError naming what is known,
    and `build` turns a bad setting into one ValueError."""

    def __init__(self, kind: str, also: tuple[str, ...] = ()):
        super().__init__()
        self.kind = kind
        self.also = also
        """Names served outside the table (e.g. the `timm:<name>` family of encoders), listed after the entries."""

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: file the class or function under `name` (a class also gets it as its `name` attribute)."""

        def wrap(entry: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = entry
            if isinstance(entry, type):
                entry.name = name
            return entry

        return wrap

    def known(self) -> list[str]:
        """The registered names, sorted, then the names served outside the table."""
        return [*sorted(self), *self.also]

    def lookup(self, name: str) -> T:
        """The entry filed under `name`; an unknown name is an UnknownNameError listing the known ones."""
        if name not in self:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.known())}")
        return self[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The entry under `name` called with the arguments; a TypeError (a setting it does not take) becomes a
        ValueError naming the entry."""
        entry = self.lookup(name)
        try:
            return entry(*args, **kwargs)
        except TypeError as exc:
            raise ValueError(f"{self.kind} {name!r}: {exc}") from exc
