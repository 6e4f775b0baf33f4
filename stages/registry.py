"""Name → class registries, so config picks a backend by name (as in detectron2).

Example::

    DETECTORS = Registry("detector")

    @DETECTORS.register("color")
    class ColorDetector: ...

    DETECTORS.get("color")  # -> ColorDetector

Backends outside this repository register the same way from their own
module; name the modules in ``FINSTA_PLUGINS`` (comma-separated) and every
lookup imports them first, in the driver and in every Ray worker::

    FINSTA_PLUGINS=my_lab.detectors python cli.py build-sgs --detector my_detector ...
"""
from __future__ import annotations

import importlib
import os
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
            load_plugins()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)


PLUGINS_VARIABLE = "FINSTA_PLUGINS"


def load_plugins() -> None:
    """Import the modules named in ``FINSTA_PLUGINS`` (each registers its backends on import)."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UserError(f"{PLUGINS_VARIABLE} names {module!r}, which cannot be imported: {error}") from None


DETECTORS = Registry("detector")
CAPTION_PARSERS = Registry("caption parser")
LINK_SCORERS = Registry("link scorer")
# Host models (the existing video–language model whose features the shards carry): one registry per side,
# so embed_visual.name and embed_text.name pick them (stages/hosts/).
VISUAL_HOSTS = Registry("visual host")
TEXT_HOSTS = Registry("text host")
