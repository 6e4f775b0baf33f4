"""Config dataclasses' one declaration of what changes the output.

A config field is an *output* field unless declared with :func:`runtime`:
threads, devices, batch sizes, where Ray runs. The identity of a build (what
the manifest stores and hashes, what a rerun must match) and the keys a
training resume must keep (``finsta_model.config.TrainConfig.identity``, checked by
``finsta_model.train.resume_changes``) are both derived from that one declaration, so a
new option is hashed by default and only a deliberate ``runtime(...)`` takes
it out.

An output field added after outputs existed is declared with :func:`added`,
naming the value those outputs were made with (``before``). At that value it
is left out of the identity, so an output made before the field existed and
one made with it at ``before`` are the same build, and a rerun of an older
output continues it at ``before`` (:func:`adopt_older`) instead of refusing.

A section that selects a backend by ``name`` and holds one sub-section per
backend (``detect.name = "lite"`` with ``detect.lite``, ``detect.detectron2``)
counts only the selected backend's sub-section: changing an option of a
backend that does not run changes nothing.

Example::

    @dataclass
    class DecodeConfig:
        fps: float = 1.0                    # changes the output
        threads: int = runtime(0)           # does not

    identity(DecodeConfig(fps=2.0))         # {'fps': 2.0}
    diff(identity(a), identity(b))          # [('fps', 1.0, 2.0)]
"""
from __future__ import annotations

import dataclasses
from typing import Any

_RUNTIME = "finsta_runtime"
_BEFORE = "finsta_before"     # added(): the value outputs made before the field existed were made with
BACKEND_SELECTOR = "name"


def runtime(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that never changes what is written (left out of :func:`identity`)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_RUNTIME: True})


def added(default: Any, *, before: Any) -> Any:
    """An output field added after outputs were made without it; ``before``: the value they were made with
    (see the module docstring). ``precision: str = added("bf16", before="f32")``."""
    return dataclasses.field(default=default, metadata={_BEFORE: before})


def is_runtime(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get(_RUNTIME))


def backend_sections(obj: Any) -> list[str]:
    """The sub-sections of ``obj`` that belong to one backend each (empty when ``obj`` selects none)."""
    names = {f.name for f in dataclasses.fields(obj)}
    if BACKEND_SELECTOR not in names:
        return []
    return [f.name for f in dataclasses.fields(obj)
            if f.name != BACKEND_SELECTOR and dataclasses.is_dataclass(getattr(obj, f.name))
            and getattr(getattr(obj, f.name), "backend_options", False)]


def identity(obj: Any) -> dict[str, Any]:
    """``obj``'s output fields as nested plain data (see the module docstring)."""
    out: dict[str, Any] = {}
    backends = backend_sections(obj)
    selected = getattr(obj, BACKEND_SELECTOR, None)
    for f in dataclasses.fields(obj):
        if is_runtime(f) or (f.name in backends and f.name != selected):
            continue
        value = getattr(obj, f.name)
        if _BEFORE in f.metadata and _plain(value) == _plain(f.metadata[_BEFORE]):
            continue            # what outputs made before the field existed were made with
        out[f.name] = identity(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def adopt_older(obj: Any, old: dict[str, Any], prefix: str = "") -> list[str]:
    """Continue an output whose identity ``old`` was made before some :func:`added` fields existed: each such
    field absent from ``old`` (its section present) and still at its default is set, in place, to its
    ``before`` value. Returns their dotted names; a field the user changed is left as it is (the rerun then
    refuses, naming it)."""
    adopted = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and isinstance(old.get(f.name), dict):
            adopted += adopt_older(value, old[f.name], f"{prefix}{f.name}.")
        elif _BEFORE in f.metadata and f.name not in old and _plain(value) == _plain(f.default):
            object.__setattr__(obj, f.name, f.metadata[_BEFORE])
            adopted.append(f"{prefix}{f.name}")
    return adopted


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"decode": {"fps": 1}}`` → ``{"decode.fps": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


_ABSENT = "(absent)"


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every dotted key whose value differs, as ``(key, old, new)``; a missing side is ``"(absent)"``."""
    a, b = flatten(old), flatten(new)
    return [(key, a.get(key, _ABSENT), b.get(key, _ABSENT)) for key in sorted(set(a) | set(b))
            if _plain(a.get(key, _ABSENT)) != _plain(b.get(key, _ABSENT))]


def diff_text(changes: list[tuple[str, Any, Any]], limit: int = 8) -> str:
    """``decode.fps: 1.0 → 3.0; detect.name: color → lite`` (the first ``limit`` changes)."""
    shown = "; ".join(f"{key}: {old!r} → {new!r}" for key, old, new in changes[:limit])
    return shown + (f"; and {len(changes) - limit} more" if len(changes) > limit else "")
