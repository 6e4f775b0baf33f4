"""BuildConfig: derived from the catalog; every key through --set, --config and flags; validation; identity."""
from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import yaml

from pipeline.config import (BuildConfig, apply_overrides, config_rows, finalize, load_config, set_key,
                             show_config)
from pipeline.main import FLAG_KEYS, make_config
from schemas.errors import UserError
from schemas.store import DatasetWriter
from stages.catalog import STAGES

# String options with a fixed set of values: a value other than the default that they accept.
CHOICES = {"dataset.name": "manifest", "decode.mode": "uniform", "decode.transport": "rgb24", "detect.name": "lite",
           "embed_visual.detection_features": "crop", "parse_captions.name": "stanza", "run.executor": "sequential",
           "run.pools": "each", "merge_hsg.scorer.name": "minilm", "dataset.split": "val_1", "relate.pairs": "all",
           "segment_shots.method": "transnetv2", "detect.ssd.engine": "opencv", "detect.ssd.precision": "bf16",
           "embed_visual.engine": "torch", "track.labels.engine": "torch", "embed_visual.precision": "f32",
           "track.labels.precision": "f32"}
CONTRADICTS = {"run.retry_failed"}   # true only together with overwrite=false, its default: still fine alone


def leaf_keys() -> list[tuple[str, typing.Any]]:
    """Every option as (dotted key, field type)."""
    out = []

    def walk(obj, prefix):
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, hints[f.name]))
    walk(BuildConfig(), "")
    return out


def other_value(key: str, hint, default):
    """A valid value different from ``default``."""
    if key in CHOICES:
        return CHOICES[key]
    if typing.get_origin(hint) is typing.Union:
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return {str: "x-other", int: 3, float: 0.4}[inner] if default is None else other_value(key, inner, default)
    if hint is bool:
        return not default
    if hint is int:
        return default + 1
    if hint is float:
        return round(default * 0.9, 6) if default else 0.1
    if hint is str:
        return default + "-other" if default else "x-other"
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[-1] is not Ellipsis:
        return tuple(v + 1 for v in default)
    if typing.get_origin(hint) is tuple or hint is tuple:
        return tuple(default) + ("other",)
    if hint is list or typing.get_origin(hint) is list:
        return list(default) + ["MODEL.X", 1]
    if hint is dict or typing.get_origin(hint) is dict:
        return {**default, "other": 1}
    raise AssertionError(f"no test value for {key} ({hint})")


def get(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def nested(key, value) -> dict:
    head, _, rest = key.partition(".")
    return {head: nested(rest, value) if rest else value}


def as_cli_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(list(value) if isinstance(value, tuple) else value)


CASES = [(key, hint, get(BuildConfig(), key)) for key, hint in leaf_keys()]


def test_sections_are_the_catalog_stages_plus_dataset_write_run():
    names = [f.name for f in dataclasses.fields(BuildConfig)]
    assert names == ["dataset"] + [stage.name for stage in STAGES] + ["write", "run"]
    for stage in STAGES:
        assert stage.__module__ == f"stages.{stage.name}", "a stage's file, name and config section are one name"
        assert isinstance(getattr(BuildConfig(), stage.name), stage.config_class)


@pytest.mark.parametrize("key, hint, default", CASES, ids=[c[0] for c in CASES])
def test_every_key_round_trips_through_set_and_config(key, hint, default, tmp_path):
    value = other_value(key, hint, default)
    via_set, _ = finalize(apply_overrides(BuildConfig(), [f"{key}={as_cli_text(value)}"]))
    assert get(via_set, key) == value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(nested(key, list(value) if isinstance(value, tuple) else value)))
    via_file, _ = finalize(load_config(path))
    assert get(via_file, key) == value
    options = {"config": path, "overrides": [], "out": str(tmp_path / "out")}
    cfg, _, _ = make_config(options)   # no flag given: the file's value stands
    assert get(cfg, key) == value


@pytest.mark.parametrize("flag, key", sorted(FLAG_KEYS.items()))
def test_flags_override_only_when_passed(flag, key, tmp_path):
    default = get(BuildConfig(), key)
    hint = dict(leaf_keys())[key]
    value = other_value(key, hint, default)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(nested(key, value)))
    base = {"config": path, "overrides": [], "out": str(tmp_path / "out")}
    assert get(make_config(base)[0], key) == value
    flagged = other_value(key, hint, value) if not isinstance(value, bool) else value
    assert get(make_config({**base, flag: flagged})[0], key) == flagged


def test_set_run_workers_reaches_the_plan(tmp_path):
    cfg, _, _ = make_config({"overrides": ["run.workers=2", "decode.fps=3"], "out": str(tmp_path / "o")})
    assert cfg.run.workers == 2 and cfg.decode.fps == 3.0
    from pipeline.plan import plan_pools
    assert [p.workers for p in plan_pools(cfg)] == [2]


def test_show_config_is_yaml_that_config_reads_back(tmp_path):
    cfg, _ = finalize(apply_overrides(BuildConfig(), ["decode.fps=2", "detect.lite.grid=[3,4]", "run.workers=3"]))
    text = show_config(cfg)
    assert "fps: 2.0  # float, default 1.0" in text and "workers: 3  # int, default 1, runtime" in text
    path = tmp_path / "shown.yaml"
    path.write_text(text)
    again, _ = finalize(load_config(path))
    assert again == cfg
    assert len(config_rows(cfg)) == len(CASES)


def test_old_names_work_with_a_warning():
    warnings: list[str] = []
    cfg = apply_overrides(BuildConfig(), ["detector.name=lite", "shard_size=4", "tracker.max_gap=5"], warnings)
    assert cfg.detect.name == "lite" and cfg.write.shard_size == 4 and cfg.track.max_gap == 5
    assert any("'detector' is now 'detect'" in w for w in warnings) and any("write.shard_size" in w for w in warnings)
    with pytest.raises(UserError, match="detect.lite.grid"):
        apply_overrides(BuildConfig(), ["detector.extra={grid: [2, 2]}"])


@pytest.mark.parametrize("item, needle", [
    ("decode.nope=1", "decode.nope"), ("write.shard_size=many", "many"), ("novalue", "SECTION.FIELD=VALUE"),
    ("decode=5", "is a section"), ("decode.fps=[1, 2]", "expected float"), ("run.quiet=maybe", "expected bool")])
def test_bad_overrides_name_the_problem(item, needle):
    with pytest.raises(UserError, match=needle):
        apply_overrides(BuildConfig(), [item])


@pytest.mark.parametrize("item, needle", [
    ("decode.fps=0", "fps"), ("decode.fps=-1", "fps"), ("decode.timeout_s=-5", "timeout_s"),
    ("decode.mode=bogus", "bogus"), ("detect.score_threshold=2", "score_threshold"),
    ("run.executor=fast", "executor"), ("write.shard_size=0", "shard_size"), ("detect.lite.grid=[1]", "expected")])
def test_bad_values_are_refused_in_one_place(item, needle):
    with pytest.raises(UserError, match=needle):
        finalize(apply_overrides(BuildConfig(), [item]))


def test_config_file_json_and_yaml(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"decode": {"fps": 3}, "write": {"shard_size": 8}}))
    (tmp_path / "b.yaml").write_text("detect:\n  name: lite\n  score_threshold: 0.3\n  lite:\n    grid: [1, 2]\n")
    assert load_config(tmp_path / "a.json").decode.fps == 3
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.detect.name == "lite" and cfg.detect.score_threshold == 0.3 and cfg.detect.lite.grid == (1, 2)
    (tmp_path / "bad.yaml").write_text("detect: [unclosed")
    with pytest.raises(UserError, match="cannot parse"):
        load_config(tmp_path / "bad.yaml")


def test_identity_keeps_output_fields_only():
    a, b = BuildConfig(), BuildConfig()
    b.run.workers, b.run.quiet, b.dataset.limit, b.write.shard_size = 4, True, 10, 3
    b.decode.threads, b.embed_text.threads, b.embed_text.batch_size, b.detect.device = 2, 4, 8, "cuda"
    assert a.identity() == b.identity()
    b.decode.fps = a.decode.fps + 1
    assert a.identity() != b.identity()


def test_identity_counts_only_the_selected_backend():
    a, b = BuildConfig(), BuildConfig()
    a.detect.name = b.detect.name = "color"
    b.detect.lite.grid = (5, 5)
    assert a.identity() == b.identity() and "lite" not in a.identity()["detect"]
    a.detect.name = b.detect.name = "lite"
    assert a.identity() != b.identity()


def test_auto_detector_follows_the_dataset():
    synthetic, warnings = finalize(apply_overrides(BuildConfig(), ["dataset.name=synthetic"]))
    assert synthetic.detect.name == "color" and not warnings
    real, _ = finalize(apply_overrides(BuildConfig(), ["dataset.name=activitynet"]))
    assert real.detect.name != "color" and real.detect.score_threshold is not None
    _, warned = finalize(apply_overrides(BuildConfig(), ["dataset.name=manifest", "detect.name=color"]))
    assert any("synthetic" in w for w in warned)


def test_a_refused_rerun_names_each_changed_key(tmp_path):
    dims = {"frame": 4, "detection": 4, "text_node": 4, "caption": 4}
    a, _ = finalize(BuildConfig())
    DatasetWriter(tmp_path, a.identity(), dims)
    b, _ = finalize(apply_overrides(BuildConfig(), ["decode.fps=3", "track.max_gap=4"]))
    with pytest.raises(UserError) as refused:
        DatasetWriter(tmp_path, b.identity(), dims)
    assert "decode.fps: 1.0 → 3.0" in str(refused.value) and "track.max_gap: 2 → 4" in str(refused.value)
    assert "--overwrite" in str(refused.value)


def test_set_key_reaches_nested_backend_options():
    cfg = BuildConfig()
    set_key(cfg, "detect.detectron2.opts", '["MODEL.RPN.NMS_THRESH", 0.6]')
    assert cfg.detect.detectron2.opts == ["MODEL.RPN.NMS_THRESH", 0.6]


@pytest.mark.parametrize("args, needle", [
    (["--set", "decode.fps=0"], "decode fps must be > 0, got 0.0"),
    (["--set", "decode.fps=-1"], "decode fps must be > 0, got -1.0"),
    (["--set", "decode.fps=nan"], "bad value 'nan' for decode.fps"),
    (["--set", "decode.fps=.inf"], "bad value inf for decode.fps"),
    (["--set", "decode.timeout_s=-5"], "timeout_s > 0"),
    (["--set", "decode=5"], "config key 'decode' is a section"),
    (["--set", "decode.mode=bogus"], "decode mode 'bogus' is not one of fps, uniform, windows"),
    (["--set", "decode.fps=[1, 2]"], "bad value [1, 2] for decode.fps: expected float"),
    (["--set", "run.max_sample_retries=-1"], "max_sample_retries must be >= 0"),
    (["--set", "write.shard_max_seconds=0"], "shard_max_seconds > 0"),
    (["--config", "CONFIG"], "decode fps must be > 0, got 0.0"),
    (["--out", "/dev/null/x"], "cannot write the dataset folder /dev/null/x: Not a directory"),
    (["--out", "/proc/finsta-out"], "cannot write the dataset folder /proc/finsta-out"),
])
def test_bad_options_are_one_line_exit_2_from_flags_set_or_config(args, needle, tmp_path, capsys):
    import cli

    (tmp_path / "bad.yaml").write_text("decode:\n  fps: 0\n")
    args = [str(tmp_path / "bad.yaml") if a == "CONFIG" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    code = cli.main(["build-sgs", "--dataset", "sample", "--executor", "sequential", "--quiet", *out, *args])
    errors = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and [line for line in errors if not line.startswith("[finsta]")] == [f"error: {errors[-1][7:]}"]
    assert needle in errors[-1], errors
