"""Name → class registries, so config picks a backend by name (as in detectron2).

Example::

    DETECTORS = Registry("detector")

    @DETECTORS.register("color")
    class ColorDetector: ...

    DETECTORS.get("color")  # -> ColorDetector
"""
from __future__ import annotations

from typing import Callable, TypeVar

from schemas.errors import UserError

T = TypeVar("T")


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = cls
            return cls
        return add

    def get(self, name: str) -> type:
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)


DETECTORS = Registry("detector")
CAPTION_PARSERS = Registry("caption parser")
LINK_SCORERS = Registry("link scorer")
