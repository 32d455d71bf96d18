"""A name -> class registry filled by a decorator, so adding an aggregator or a loss is one class."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(dict[str, T], Generic[T]):
    """Classes by name; `build` turns an unknown name or a bad setting into one ValueError naming what is known."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Any:
        """Class decorator: file the class under `name` (and set its `name` attribute)."""

        def wrap(cls: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = cls
            cls.name = name
            return cls

        return wrap

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}")
        try:
            return self[name](*args, **kwargs)
        except TypeError as exc:
            raise ValueError(f"{self.kind} {name!r}: {exc}") from exc
