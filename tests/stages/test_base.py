"""The stage contract: needed inputs checked in one place, bugs reported as internal_error with file:line."""
from __future__ import annotations

from dataclasses import dataclass

from stages.base import Resources, Stage, VideoTask


@dataclass
class EchoConfig:
    fail: bool = False


class EchoStage(Stage):
    name = "echo"
    config_class = EchoConfig
    needs = ("dsg",)

    def process_one(self, task):
        if self.cfg.fail:
            [][1]   # a bug
        return task


def task(**fields):
    return VideoTask("k", "test", "v", "v.mp4", **fields)


def test_a_missing_input_is_a_sample_error_naming_the_field():
    [out] = EchoStage().process_batch([task()])
    assert (out.failure.stage, out.failure.error_type) == ("echo", "missing_input")
    assert "task.dsg" in out.failure.message


def test_an_unexpected_exception_is_internal_error_with_file_and_line():
    [out] = EchoStage(EchoConfig(fail=True)).process_batch([task(dsg=object())])
    assert out.failure.error_type == "internal_error"
    assert out.failure.message.startswith("IndexError: list index out of range | stages/test_base.py:")


def test_tasks_that_already_failed_are_skipped():
    first = EchoStage().process_batch([task()])[0]
    again = EchoStage(EchoConfig(fail=True)).process_batch([first])[0]
    assert again.failure.error_type == "missing_input"


def test_resources_for_device():
    assert Resources.for_device("cpu", threads=3) == Resources(cpus=3.0, gpus=0.0)
    assert Resources.for_device("cuda:0", threads=0, gpus=0.5) == Resources(cpus=1.0, gpus=0.5)
