"""The catalog is the one list of stages: names, files, configs, contracts."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from stages.base import Stage, VideoTask
from stages.catalog import RENAMED_SECTIONS, STAGES, stage_class

REPO = Path(__file__).resolve().parents[2]
TASK_FIELDS = {f.name for f in dataclasses.fields(VideoTask)}


def test_each_stage_is_one_name_file_and_section():
    for stage in STAGES:
        assert issubclass(stage, Stage) and stage_class(stage.name) is stage
        assert (REPO / "stages" / f"{stage.name}.py").is_file()
        assert (REPO / "tests" / "stages" / f"test_{stage.name}.py").is_file(), f"tests mirror stages/{stage.name}.py"
        assert dataclasses.is_dataclass(stage.config_class)
    assert len({s.name for s in STAGES}) == len(STAGES)
    assert not set(RENAMED_SECTIONS) & {s.name for s in STAGES}


def test_declared_fields_exist_and_each_need_is_produced_earlier():
    produced = {"key", "source", "video_id", "video_path", "captions"}   # what a dataset fills
    for stage in STAGES:
        instance = stage()
        for name in (*instance.needs, *instance.uses, *instance.produces):
            assert name in TASK_FIELDS, f"{stage.name}: {name}"
        assert set(instance.needs) <= produced, f"{stage.name} needs {set(instance.needs) - produced}"
        produced |= set(instance.produces)
