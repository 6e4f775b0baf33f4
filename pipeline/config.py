"""``BuildConfig``: the one object holding every option of ``build-sgs``.

It composes each component's own config dataclass. ``identity()`` is the part
that determines the data (hashed into the manifest; a rerun with another
identity is refused without ``--overwrite``); :class:`RunOptions` holds what
does not change the data (where Ray runs, how many workers, display, limit).

Example::

    cfg = BuildConfig()
    cfg = load_config("my.yaml", base=cfg)                 # JSON or YAML, nested like the dataclasses
    cfg = apply_overrides(cfg, ["decode.fps=2", "detector.name=lite"])
"""
from __future__ import annotations

import copy
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.datasets.base import DatasetConfig
from schemas.errors import UserError
from stages.captions.base import CaptionParserConfig
from stages.decode import DecodeConfig
from stages.detectors.base import DetectorConfig
from stages.embed_text import TextEmbedConfig
from stages.embed_visual import VisualEmbedConfig
from stages.hsg_merge import MergeConfig
from stages.relations import RelationConfig
from stages.tracking import TrackerConfig


@dataclass
class RunOptions:
    """How to run; never changes what is written.

    ``executor``: ``ray`` (default) or ``sequential`` (one process, same
    stages: for debugging and as the benchmark reference). ``num_cpus``: CPUs
    of the local Ray instance (0 = all). ``workers``: actors per stage group.
    ``stage_groups``: ``auto`` | ``one`` | ``two`` actor pools (see
    :func:`pipeline.build.stage_groups`).
    """

    executor: str = "ray"
    stage_groups: str = "auto"
    ray_address: Optional[str] = None
    num_cpus: int = 0
    workers: int = 1
    limit: Optional[int] = None
    quiet: bool = False
    dry_run: bool = False
    strict: bool = False
    retry_failed: bool = False
    overwrite: bool = False


@dataclass
class BuildConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    relations: RelationConfig = field(default_factory=RelationConfig)
    visual: VisualEmbedConfig = field(default_factory=VisualEmbedConfig)
    parser: CaptionParserConfig = field(default_factory=CaptionParserConfig)
    text: TextEmbedConfig = field(default_factory=TextEmbedConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    shard_size: int = 16
    video_batch_size: int = 1
    caption_batch_size: int = 8
    run: RunOptions = field(default_factory=RunOptions)

    def identity(self) -> dict[str, Any]:
        """The options that determine the output (what the manifest stores and hashes)."""
        data = dataclasses.asdict(self)
        data.pop("run")
        data["dataset"].pop("limit", None)
        for name in ("device", "threads", "batch_frames", "batch_size", "use_gpu"):
            for section in data.values():
                if isinstance(section, dict):
                    section.pop(name, None)
        return data


def _convert(hint: Any, raw: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            return None
        return _convert(args[0], raw, where)
    try:
        if hint is bool and isinstance(raw, str):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if hint in (int, float, str, bool):
            return hint(raw)
        if origin in (list, tuple) and isinstance(raw, str):
            return json.loads(raw)
        if origin is dict and isinstance(raw, str):
            return json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        raise UserError(f"bad value {raw!r} for {where}: expected {getattr(hint, '__name__', hint)}") from None
    return raw


def _set(obj: Any, path: list[str], raw: Any, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    if path[0] not in hints:
        names = ", ".join(f.name for f in dataclasses.fields(obj))
        raise UserError(f"unknown config key {where!r}; {'.'.join(path[:0]) or 'top level'} has: {names}")
    if len(path) == 1:
        current = getattr(obj, path[0])
        if dataclasses.is_dataclass(current) and isinstance(raw, dict):
            for key, value in raw.items():
                _set(current, [key], value, f"{where}.{key}")
        else:
            setattr(obj, path[0], _convert(hints[path[0]], raw, where))
        return
    child = getattr(obj, path[0])
    if not dataclasses.is_dataclass(child):
        raise UserError(f"config key {where!r}: {path[0]} is not a section")
    _set(child, path[1:], raw, where)


def apply_overrides(cfg: BuildConfig, assignments: list[str]) -> BuildConfig:
    """``["decode.fps=2", ...]`` → a new config with those fields set."""
    cfg = _deep_copy(cfg)
    for item in assignments:
        if "=" not in item:
            raise UserError(f"bad --set {item!r}: write SECTION.FIELD=VALUE, e.g. decode.fps=2")
        key, value = item.split("=", 1)
        _set(cfg, key.strip().split("."), value.strip(), key.strip())
    return cfg


def load_config(path: Path, base: Optional[BuildConfig] = None) -> BuildConfig:
    """Read a JSON or YAML file nested like :class:`BuildConfig` onto ``base``."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as error:  # any parse error is the user's file
        raise UserError(f"cannot parse config file {path}: {error}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections")
    cfg = _deep_copy(base or BuildConfig())
    for key, value in data.items():
        _set(cfg, [key], value, key)
    return cfg


def _deep_copy(cfg: BuildConfig) -> BuildConfig:
    return copy.deepcopy(cfg)
