"""``BuildConfig``: every option of ``build-sgs``, derived from the stage catalog.

Sections: ``dataset`` (:class:`DatasetConfig`), one section per stage of
:data:`stages.catalog.STAGES` named like the stage (``decode``, ``detect``,
``track``, …, each the stage's own ``config_class``), ``write`` (shards) and
``run`` (how to run). Nothing here lists the stages: a new catalog line is a
new section.

What changes the output is declared once, on each field (``runtime(...)``
marks the ones that do not, see :mod:`schemas.options`); :meth:`identity` is
what the manifest stores and hashes, and a rerun with another identity is
refused with the changed keys named.

Every option is reachable in one way, and validated in one place
(:func:`finalize`, which runs each section's ``__post_init__`` checks) whether
it came from a default, ``--config FILE``, ``--set`` or a flag::

    cfg = load_config("my.yaml")                                   # JSON or YAML, nested like the sections
    cfg = apply_overrides(cfg, ["decode.fps=2", "detect.lite.grid=[2,3]"])
    cfg, warnings = finalize(cfg)                                  # validate, resolve ``auto`` values
    print(show_config(cfg))                                        # YAML that --config reads back
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.datasets.base import DatasetConfig
from schemas.errors import UserError
from schemas.options import identity as identity_of, is_runtime, runtime
from stages.catalog import RENAMED_SECTIONS, STAGES

EXECUTORS = ("ray", "sequential")
POOLS = ("auto", "one", "each")


@dataclass
class WriteOptions:
    """``shard_size``: samples (and failure rows) per shard; ``shard_max_bytes``: a shard's
    feature bytes (whichever comes first); a shard is committed when it reaches either,
    or when it has been open ``shard_max_seconds`` (bounds what a kill -9 can lose), or at
    the end of the run. The small shards time-based commits leave are merged during the
    run once ``compact_every`` of them wait, and all of them at its end (issue 23: shards
    sized for clusters, ~10k samples or ~1 GB like webdataset). None changes what a sample holds."""

    shard_size: int = 10000
    shard_max_bytes: int = 1 << 30
    shard_max_seconds: float = 60.0
    compact_every: int = 64

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.shard_max_bytes < 1 or not self.shard_max_seconds > 0 \
                or self.compact_every < 2:
            raise ValueError("shard_size and shard_max_bytes must be >= 1, shard_max_seconds > 0, "
                             "compact_every >= 2")


@dataclass
class RunOptions:
    """How to run; never changes what is written.

    ``executor``: ``ray`` (default) or ``sequential`` (one process, same
    stages: for debugging and as the benchmark reference). ``pools``: ``auto``
    (one actor pool per run of consecutive stages on the same kind of device:
    a CUDA stage gets its own pool), ``one`` (every stage in one actor) or
    ``each`` (one pool per stage). ``workers``: actors per CPU pool (0 = one
    each to start, then grown onto free CPUs, nodes that join included, the
    busiest pool first, and moved between pools by measured throughput);
    ``gpu_workers``: actors per GPU pool (0 = as many as the cluster's GPUs
    hold). ``num_cpus``: CPUs of the local Ray instance (0 = all).
    ``status_interval``: seconds between the status lines of ``quiet`` mode
    (and of a run whose stderr is not a terminal, e.g. a batch job's log).
    ``check_data``: before resuming, hash every file of every committed shard
    (reads all the data, like ``verify``) so a shard whose bytes changed but
    not their size is quarantined too (a resume otherwise reads metadata only).

    Bounds (docs: README "Reliability"): ``stage_timeout_s``: seconds one
    sample may spend in one stage (decode: its own ``decode.timeout_s``)
    before its worker is stopped and the sample retried or failed as
    ``timeout``; ``max_sample_retries``: how often a sample that killed or
    hung its worker is retried before it fails (``worker_lost`` /
    ``timeout``); ``ray_start_timeout_s``: starting or joining Ray;
    ``worker_start_timeout_s``: a worker's start (model loading included);
    ``stop_grace_s``: after SIGINT/SIGTERM, the most the run takes to commit
    what is finished and stop before it exits regardless (a second signal
    exits at once).
    """

    executor: str = "ray"
    pools: str = "auto"
    ray_address: Optional[str] = None
    num_cpus: int = 0
    workers: int = 1
    gpu_workers: int = 0
    quiet: bool = False
    status_interval: float = 30.0
    dry_run: bool = False
    strict: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    check_data: bool = False
    stage_timeout_s: float = 600.0
    max_sample_retries: int = 1
    ray_start_timeout_s: float = 120.0
    worker_start_timeout_s: float = 900.0
    stop_grace_s: float = 30.0

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor {self.executor!r}: choose {' or '.join(EXECUTORS)}")
        if self.pools not in POOLS:
            raise ValueError(f"pools {self.pools!r}: choose {', '.join(POOLS)}")
        if self.workers < 0 or self.gpu_workers < 0 or self.num_cpus < 0:
            raise ValueError("workers, gpu_workers and num_cpus must be >= 0")
        if not (self.stage_timeout_s > 0 and self.ray_start_timeout_s > 0 and self.worker_start_timeout_s > 0
                and self.stop_grace_s > 0):
            raise ValueError("stage_timeout_s, ray_start_timeout_s, worker_start_timeout_s and stop_grace_s "
                             "must be > 0")
        if self.max_sample_retries < 0:
            raise ValueError("max_sample_retries must be >= 0")
        if not self.status_interval > 0:
            raise ValueError(f"status_interval {self.status_interval!r}: give seconds > 0")
        if self.retry_failed and self.overwrite:
            raise ValueError("retry_failed and overwrite contradict each other: pick one")


def _identity(self) -> dict[str, Any]:
    """The options that determine the output (what the manifest stores and hashes)."""
    return identity_of(self)


BuildConfig = dataclasses.make_dataclass(
    "BuildConfig",
    [("dataset", DatasetConfig, field(default_factory=DatasetConfig))]
    + [(stage.name, stage.config_class, field(default_factory=stage.config_class)) for stage in STAGES]
    + [("write", WriteOptions, runtime(default_factory=WriteOptions)),
       ("run", RunOptions, runtime(default_factory=RunOptions))],
    namespace={"identity": _identity, "__module__": __name__,
               "__doc__": "Every option of build-sgs: dataset, one section per catalog stage, write, run."})

# Keys of the previous release, accepted with a warning until the next one.
RENAMED_KEYS: dict[str, str] = {
    "shard_size": "write.shard_size", "run.stage_groups": "run.pools", "run.limit": "dataset.limit",
    "detector.config": "detect.detectron2.config", "detector.weights": "detect.detectron2.weights",
}
REMOVED_KEYS: dict[str, str] = {
    "video_batch_size": "a video pool takes one video per batch",
    "caption_batch_size": "use parse_captions.tasks_per_batch",
    "detector.extra": "each backend's options are their own section, e.g. detect.lite.grid, detect.detectron2.opts",
}


# ---------------------------------------------------------------- reading values
def parse_value(raw: str) -> Any:
    """A ``--set`` value: JSON or YAML (``[2,3]``, ``{a: 1}``, ``true``, ``null``), else the string itself."""
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the field type ``hint``; one-line UserError when it does not fit."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    expected = getattr(hint, "__name__", str(hint))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
        elif hint is int and not isinstance(value, (bool, float, list, dict)):
            return int(value)
        elif hint is float and not isinstance(value, (bool, list, dict)):
            number = float(value)
            if math.isfinite(number):   # nan and inf pass every `x > 0` check the wrong way
                return number
        elif hint is str and not isinstance(value, (list, dict)):
            return str(value)
        elif origin in (list, tuple) or hint in (list, tuple):
            items = parse_value(value) if isinstance(value, str) else value
            if isinstance(items, (list, tuple)):
                if args and args[-1] is not Ellipsis and origin is tuple:
                    if len(items) != len(args):
                        raise ValueError
                    return tuple(_convert(a, v, where) for a, v in zip(args, items))
                inner = args[0] if args else None
                items = [v if inner is None else _convert(inner, v, where) for v in items]
                return tuple(items) if origin is tuple or hint is tuple else items
        elif origin is dict or hint is dict:
            items = parse_value(value) if isinstance(value, str) else value
            if isinstance(items, dict):
                return dict(items)
    except (TypeError, ValueError):
        pass
    raise UserError(f"bad value {value!r} for {where}: expected {expected}")


def _set(obj: Any, path: list[str], value: Any, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    name = path[0]
    if name not in {f.name for f in dataclasses.fields(obj)}:
        section = ".".join(where.split(".")[:-len(path)]) or "the top level"
        names = ", ".join(f.name for f in dataclasses.fields(obj))
        raise UserError(f"unknown config key {where!r}; {section} has: {names} "
                        "(all keys: build-sgs --show-config)")
    current = getattr(obj, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise UserError(f"config key {where!r}: {name} is not a section")
        _set(current, path[1:], value, where)
    elif dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise UserError(f"config key {where!r} is a section: give a mapping, or set {where}.FIELD")
        for key, inner in value.items():
            _set(current, [str(key)], inner, f"{where}.{key}")
    else:
        setattr(obj, name, _convert(hints[name], value, where))


def _renamed(key: str, warnings: list[str]) -> str:
    if key in REMOVED_KEYS:
        raise UserError(f"config key {key!r} was removed: {REMOVED_KEYS[key]}")
    for old, new in RENAMED_KEYS.items():
        if key == old or key.startswith(old + "."):
            warnings.append(f"config key {old!r} is now {new!r}; the old name goes in the next release")
            return new + key[len(old):]
    head, _, rest = key.partition(".")
    if head in RENAMED_SECTIONS:
        new = RENAMED_SECTIONS[head]
        warnings.append(f"config section {head!r} is now {new!r}; the old name goes in the next release")
        return _renamed(new + ("." + rest if rest else ""), warnings)
    return key


def set_key(cfg: Any, key: str, value: Any, warnings: Optional[list[str]] = None) -> None:
    """Set dotted ``key`` (old names accepted with a warning) to ``value`` (converted to the field's type)."""
    key = _renamed(key.strip(), warnings if warnings is not None else [])
    _set(cfg, key.split("."), value, key)


def apply_overrides(cfg: Any, assignments: list[str], warnings: Optional[list[str]] = None) -> Any:
    """``["decode.fps=2", ...]`` → a new config with those fields set."""
    cfg = copy.deepcopy(cfg)
    for item in assignments:
        if "=" not in item:
            raise UserError(f"bad --set {item!r}: write SECTION.FIELD=VALUE, e.g. decode.fps=2")
        key, raw = item.split("=", 1)
        set_key(cfg, key, parse_value(raw.strip()), warnings)
    return cfg


def load_config(path: Path, base: Any = None, warnings: Optional[list[str]] = None) -> Any:
    """Read a JSON or YAML file nested like :class:`BuildConfig` onto ``base``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        import yaml
        data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except Exception as error:  # any parse error is the user's file
        raise UserError(f"cannot parse config file {path}: {error}".replace("\n", " ")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections")
    cfg = copy.deepcopy(base if base is not None else BuildConfig())
    for key, value in _flat_keys(data):
        set_key(cfg, key, value, warnings)
    return cfg


def _flat_keys(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mapping → dotted keys; a mapping stays one value where the field itself is a dict."""
    out = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not _is_dict_field(name):
            out += _flat_keys(value, name + ".")
        else:
            out.append((name, value))
    return out


def _is_dict_field(key: str) -> bool:
    obj: Any = BuildConfig()
    for part in _renamed(key, []).split("."):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            return False
        obj = getattr(obj, part)
    return isinstance(obj, dict)


# ---------------------------------------------------------------- validation
def finalize(cfg: Any) -> tuple[Any, list[str]]:
    """Validate every section (its ``__post_init__`` checks) and resolve ``auto`` values.

    Returns ``(config, warnings)``; a bad value raises a one-line
    :class:`UserError` naming the section.
    """
    cfg = copy.deepcopy(cfg)
    _validate(cfg, "")
    cfg.detect = cfg.detect.resolved(cfg.dataset.name)
    cfg.relate = cfg.relate.resolved(cfg.dataset.name)
    cfg.segment_shots = cfg.segment_shots.resolved(cfg.dataset.name)
    # segment_shots reads the decode stage's shot stream: one decode of the video feeds both (stages/decode.py)
    cfg.decode.shot_stream = cfg.decode.shot_stream or cfg.segment_shots.method != "none"
    warnings = []
    if cfg.detect.name == "color" and cfg.dataset.name != "synthetic":
        warnings.append(f"detect.name=color is the synthetic world's shape detector; on {cfg.dataset.name} "
                        "videos it finds coloured blobs, not objects (leave detect.name unset for the real one)")
    return cfg, warnings


def _validate(obj: Any, where: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate(value, f"{where}{f.name}.")
    check = getattr(obj, "__post_init__", None)
    if check is not None:
        try:
            check()
        except (ValueError, TypeError, UserError) as error:
            section = where.rstrip(".") or "config"
            message = str(error)
            raise UserError(message if message.startswith(section) else f"{section}: {message}") from None


# ---------------------------------------------------------------- showing
def config_rows(cfg: Any, prefix: str = "", runtime_section: bool = False) -> list[tuple[str, Any, Any, bool]]:
    """``(key, value, default, changes_output)`` for every leaf option of ``cfg``."""
    rows = []
    default = type(cfg)()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        quiet = runtime_section or is_runtime(f)
        if dataclasses.is_dataclass(value):
            rows += config_rows(value, f"{prefix}{f.name}.", quiet)
        else:
            rows.append((prefix + f.name, value, getattr(default, f.name), not quiet))
    return rows


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if typing.get_origin(hint) is None else str(hint).replace("typing.", "")


def show_config(cfg: Any) -> str:
    """The whole configuration as YAML that ``--config`` reads back; each key's type and default as a comment."""
    lines = ["# build-sgs configuration: every key, its value, # type, default (runtime = does not change the data)"]

    def emit(obj: Any, indent: str, in_runtime: bool) -> None:
        default = type(obj)()
        for f in dataclasses.fields(obj):
            value, quiet = getattr(obj, f.name), in_runtime or is_runtime(f)
            if dataclasses.is_dataclass(value):
                lines.append(f"{indent}{f.name}:" + ("  # runtime" if quiet and not in_runtime else ""))
                emit(value, indent + "  ", quiet)
                continue
            hint = typing.get_type_hints(type(obj))[f.name]
            note = f"{_type_name(hint)}, default {json.dumps(getattr(default, f.name))}"
            lines.append(f"{indent}{f.name}: {json.dumps(value)}  # {note}" + (", runtime" if quiet else ""))

    emit(cfg, "", False)
    return "\n".join(lines)


def print_warnings(warnings: list[str]) -> None:
    for line in dict.fromkeys(warnings):   # each once, in order
        print(f"warning: {line}", file=sys.stderr)
