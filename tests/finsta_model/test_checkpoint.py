"""Checkpoint reading is confined and bounded; metrics.jsonl survives a torn line (issue 18, item 10)."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from finsta_model import checkpoint as checkpoint_module
from finsta_model.checkpoint import load_checkpoint, resolve_checkpoint
from finsta_model.config import TrainConfig
from finsta_model.train import train
from schemas.errors import UserError

TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=1, steps=3, batch_size=4, log_every=1,
                   checkpoint_every=2, shuffle_buffer=6, warmup_steps=1)


@pytest.fixture(scope="module")
def trained(small_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(small_dataset, run, TINY, progress=False)
    return run


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("pointer", ["../../elsewhere/checkpoints/step-0000003", "/tmp", "step-0000003/../..",
                                     "step-3"])
def test_latest_must_name_a_step_folder_beside_it(trained, tmp_path, pointer):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(trained, elsewhere)
    run = tmp_path / "runs" / "victim"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text(pointer)
    with pytest.raises(UserError, match="must name a step-NNNNNNN folder") as error:
        load_checkpoint(run)
    assert pointer[:20] in _one_line(error)


def test_oversized_pointer_and_state_are_refused(trained, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "checkpoints" / "latest").write_text("step-0000003" + " " * 10_000)
    with pytest.raises(UserError, match="larger than a finsta checkpoint writes"):
        resolve_checkpoint(run)
    (run / "checkpoints" / "latest").write_text("step-0000003")
    monkeypatch.setattr(checkpoint_module, "MAX_STATE_BYTES", 1000)   # the real limit is 64 MiB
    with pytest.raises(UserError, match="larger than a finsta checkpoint writes") as error:
        load_checkpoint(run)
    _one_line(error)


@pytest.mark.parametrize("forged", [{"config": {"dim": 4096}}, {"dims": {"frame": 10 ** 9}},
                                    {"config": {"gtrm_layers": 3}}])
def test_sizes_that_do_not_match_the_weights_are_refused_before_allocating(trained, tmp_path, forged):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state_path = run / "checkpoints" / "step-0000003" / "state.json"
    state = json.loads(state_path.read_text())
    for section, values in forged.items():
        state[section].update(values)
    state_path.write_text(json.dumps(state))
    with pytest.raises(UserError, match="does not match its config and dims") as error:
        load_checkpoint(run)
    _one_line(error)


def test_a_checkpoint_of_this_code_loads(trained):
    ckpt = load_checkpoint(trained)
    assert ckpt.step == 3 and ckpt.world_size == 1 and ckpt.position() == ckpt.state["position"]


def test_resume_survives_a_torn_metrics_line(small_dataset, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    config = TINY.replace(steps=6)
    train(small_dataset, whole, config, progress=False)
    train(small_dataset, cut, config, progress=False, max_new_steps=3)    # checkpoints at 2 and 3
    with open(cut / "metrics.jsonl", "a") as handle:                       # a crash in the middle of a write
        handle.write('{"step": 4, "epoch": 0, "lr": 0.0009, "nce": 3.1')
    train(small_dataset, cut, config, resume=True, progress=False)
    lines = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(x) for x in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert [x["total"] for x in lines] == pytest.approx([x["total"] for x in expected], rel=1e-5)


def test_a_fresh_run_drops_metrics_of_a_crash_before_its_first_checkpoint(small_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "total": 99.0}\n{"step": 2, "tot')
    # a folder that holds a run's files is refused without --resume (test_train.py); --overwrite starts over
    train(small_dataset, run, TINY, progress=False, overwrite=True)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


# ------------------------------------------------------------------ issue 26: finite numbers, symlinks, RNG state
def _copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run, run / "checkpoints" / "step-0000003"


def test_nan_weights_in_a_checkpoint_are_refused(trained, tmp_path):
    run, step = _copy(trained, tmp_path)
    weights = load_file(str(step / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name][...] = float("nan")
    save_file(weights, str(step / "model.safetensors"))
    with pytest.raises(UserError, match="NaN or infinite weights") as error:
        load_checkpoint(run)
    assert name in _one_line(error)


def test_a_symlinked_step_folder_is_not_followed_out_of_the_run(trained, tmp_path):
    run, step = _copy(trained, tmp_path)
    outside = tmp_path / "outside"
    step.rename(outside)
    step.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match="symbolic link") as error:
        load_checkpoint(run)
    _one_line(error)
    step.unlink()
    outside.rename(step)
    (step / "model.safetensors").rename(tmp_path / "weights")
    (step / "model.safetensors").symlink_to(tmp_path / "weights")
    with pytest.raises(UserError, match="symbolic link"):
        load_checkpoint(run)


@pytest.mark.parametrize("rng", [None, 7, {"python": [3, "x", None]}, {"python": [3, [1] * 5, None],
                                                                       "numpy": ["MT19937", [1], 0, 0, 0.0]}])
def test_a_malformed_rng_state_is_refused_in_one_line(trained, tmp_path, rng):
    run, step = _copy(trained, tmp_path)
    state = json.loads((step / "state.json").read_text())
    state["rng"] = rng
    (step / "state.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match="RNG state") as error:
        load_checkpoint(run).restore_rng()
    _one_line(error)


def test_a_non_finite_loss_stops_train_and_resume_before_any_checkpoint_of_it(small_dataset, tmp_path):
    run = tmp_path / "run"
    # lr 1e30 overflows the weights within a step or two: the loss (or the weights) stop being finite
    config = TINY.replace(steps=40, checkpoint_every=1, lr=1e30, warmup_steps=0)
    for resume in (False, True):
        # step 1 is finite and checkpointed, step 2 is not: the resume half always runs (from step 1)
        assert not resume or (run / "checkpoints" / "latest").exists()
        with pytest.raises(UserError, match="(training loss is|weights hold) (nan|inf|NaN)") as error:
            train(small_dataset, run, config, resume=resume, progress=False)
        _one_line(error)
        for folder in (run / "checkpoints").glob("step-*"):    # every checkpoint left is finite and loads
            load_checkpoint(folder)
