"""TrainConfig declares which fields change a run's result; the resume check derives from that."""
from __future__ import annotations

import dataclasses

from finsta_model.config import TrainConfig
from finsta_model.train import RESUME_MAY_CHANGE, resume_changes
from schemas.options import is_runtime


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, tuple):
        return value + (9.0,)
    return value + "x"


def test_a_resume_refuses_every_result_field_and_allows_the_runtime_ones():
    base = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        changed = dataclasses.replace(base, **{f.name: _other(getattr(base, f.name))})
        expected = [] if is_runtime(f) or f.name in RESUME_MAY_CHANGE else [f.name]
        assert resume_changes(base, changed) == expected, f.name


def test_only_declared_fields_are_runtime():
    runtime = {f.name for f in dataclasses.fields(TrainConfig) if is_runtime(f)}
    assert runtime == {"threads", "cache_mb", "checkpoint_every", "log_every"}
    assert set(TrainConfig().identity()) == {f.name for f in dataclasses.fields(TrainConfig)} - runtime
