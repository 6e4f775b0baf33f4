"""BuildConfig: overrides, config files, the identity that guards resume."""
from __future__ import annotations

import json

import pytest

from pipeline.config import BuildConfig, apply_overrides, load_config
from schemas.errors import UserError


def test_overrides_convert_types_and_leave_the_base_alone():
    base = BuildConfig()
    cfg = apply_overrides(base, ["decode.fps=2.5", "detector.name=lite", "shard_size=4", "run.quiet=true"])
    assert cfg.decode.fps == 2.5 and cfg.detector.name == "lite" and cfg.shard_size == 4 and cfg.run.quiet
    assert base.detector.name == BuildConfig().detector.name


@pytest.mark.parametrize("item, needle", [("decode.nope=1", "decode.nope"), ("shard_size=many", "many"),
                                           ("novalue", "SECTION.FIELD=VALUE")])
def test_bad_overrides_name_the_problem(item, needle):
    with pytest.raises(UserError, match=needle):
        apply_overrides(BuildConfig(), [item])


def test_config_file_json_and_yaml(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"decode": {"fps": 3}, "shard_size": 8}))
    (tmp_path / "b.yaml").write_text("detector:\n  name: lite\n  score_threshold: 0.3\n")
    assert load_config(tmp_path / "a.json").decode.fps == 3
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.detector.name == "lite" and cfg.detector.score_threshold == 0.3
    (tmp_path / "bad.yaml").write_text("detector: [unclosed")
    with pytest.raises(UserError, match="cannot parse"):
        load_config(tmp_path / "bad.yaml")


def test_identity_ignores_run_options_and_limit_but_not_data_options():
    a, b = BuildConfig(), BuildConfig()
    b.run.workers, b.run.quiet, b.dataset.limit = 4, True, 10
    assert a.identity() == b.identity()
    b.decode.fps = a.decode.fps + 1
    assert a.identity() != b.identity()
