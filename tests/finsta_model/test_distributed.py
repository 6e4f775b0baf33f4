"""Data-parallel training on a local Ray (2 CPU workers, gloo): the recipe, resume, restarts, eval.

One Ray instance serves the module (started like `train --ray-workers` starts its own); only the signal test
runs the CLI's own process (and so its own local Ray). The model is tiny and runs are 8 steps: each Ray Train
run costs seconds of process start-up (quiet; minutes at load 2x the cores), not of training, so the module's
2-worker run is also the restart drill, and every other run is one the behaviour needs.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_dataset
from finsta_model.checkpoint import load_checkpoint
from finsta_model.config import TrainConfig
from finsta_model.data import ShardStream, make_loader
from finsta_model.evaluate import evaluate
from finsta_model.model import FinstaModel
from finsta_model.gather import merge_batches
from finsta_model.train import lr_factor, seed_everything, train
from schemas.errors import UserError
from tests.test_cli import in_process

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow   # Ray Train start-up: ≈ 10–30 s per run on 2 shared cores (still run by default)
from finsta_model import distributed  # noqa: E402
from finsta_model.distributed import TrainingFailed, train_distributed  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# 48 videos in 8 shards: each of 2 replicas reads 4 shards, 6 steps an epoch at a global batch of 8. No dropout:
# the replicas' dropout streams differ from one process's (replica_seed), everything else is the same. No
# phrase alignment: its teacher is a softmax at temperature 0.05 over units whose order flips on 1e-7 weight
# differences (summation order) after a few steps (one step of it is equal: tests/finsta_model/test_gather.py)
CONFIG = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=2, steps=8, batch_size=8, log_every=1,
                     checkpoint_every=3, shuffle_buffer=6, warmup_steps=2, dropout=0.0, align_distill_weight=0.0)


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    with distributed._ray(None):
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("dist") / "ds", n_videos=48, per_shard=6)


@pytest.fixture(scope="module")
def two_workers(local_ray, dataset, tmp_path_factory):
    """The module's 2-worker run, which is also Ray Train's restart drill: rank 1's process dies after step 5,
    once (``FailureConfig(max_failures=1)``), and the restarted workers continue from the step-3 checkpoint.
    Returns the run, its summary, what it printed on stderr and the drill's marker. (One Ray Train run for
    both: a run that restarted must end exactly where an uninterrupted one does, which the first test checks
    term by term against one process.)"""
    root = tmp_path_factory.mktemp("two")
    run, marker = root / "run", root / "died"
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        summary = train_distributed(dataset, run, CONFIG, workers=2, max_failures=1,
                                    crash_drill={"rank": 1, "step": 5, "marker": str(marker)})
    return run, summary, printed.getvalue(), marker


@pytest.fixture(scope="module")
def reference(two_workers, dataset) -> list[dict[str, float]]:
    """Each step's loss parts of the 2-replica recipe, computed in one process."""
    return _global_reference(dataset, CONFIG, load_checkpoint(two_workers[0]).dims, world=2)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _totals(run: Path) -> np.ndarray:
    return np.array([line["total"] for line in _metrics(run)])


def _same_weights(a: Path, b: Path, atol: float = 1e-5) -> bool:
    wa, wb = load_checkpoint(a).model, load_checkpoint(b).model
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=atol) for k in wa)


def _global_reference(shards: Path, config: TrainConfig, dims: dict, world: int) -> list[dict[str, float]]:
    """What a `world`-replica run computes, in one process: each step the loss of the replicas' batches
    together (each replica streams its own shards), one optimiser step on its gradient; each step's loss parts."""
    torch.set_num_threads(1)
    seed_everything(config.seed)
    model = FinstaModel(config, dims)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    totals, epoch = [], 0
    while len(totals) < config.steps:
        streams = [iter(make_loader(ShardStream(shards, config.batch_size // world, seed=config.seed, epoch=epoch,
                                                buffer_size=config.shuffle_buffer, rank=rank, world=world)))
                   for rank in range(world)]
        while len(totals) < config.steps:
            batches = [next(stream, None) for stream in streams]
            if None in batches:
                break
            optimizer.zero_grad()
            loss, parts = model.losses(merge_batches(batches))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            totals.append({k: float(v) for k, v in parts.items()})
        epoch += 1
    return totals


def test_two_workers_follow_the_recipe_and_eval_reads_the_result(two_workers, reference, dataset, tmp_path):
    run, summary, _, _ = two_workers
    assert summary["steps"] == 8 and summary["epoch"] == 1 and summary["ray_workers"] == 2
    lines = _metrics(run)
    assert [line["step"] for line in lines] == list(range(1, 9))          # written once, by rank 0
    # the loss of the global batch (global negatives), exactly as one process computes it, term by term
    assert len(reference) == len(lines) and {"nce", "host_nce", "osc", "ptc", "distill", "total"} <= set(reference[0])
    for line, parts in zip(lines, reference):
        for name, value in parts.items():   # metrics.jsonl rounds to 6 decimals
            assert line[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (line["step"], name)
    train(dataset, tmp_path / "one", CONFIG, progress=False)
    assert [x["lr"] for x in lines] == [x["lr"] for x in _metrics(tmp_path / "one")]
    ckpt = load_checkpoint(run)
    assert ckpt.world_size == 2 and ckpt.position(1)["in_epoch"] == ckpt.position(0)["in_epoch"] == 2
    report = evaluate(dataset, run)
    assert report["videos"] == 48 and 0 <= report["t2v"]["R@1"] <= 100 and report["step"] == 8


def test_a_dead_worker_is_one_line_and_resume_continues_exactly(two_workers, dataset, tmp_path):
    whole = two_workers[0]    # ends as an uninterrupted run does (checked against one process above)
    cut = tmp_path / "cut"
    drill = {"rank": 1, "step": 5, "marker": str(tmp_path / "died")}
    with pytest.raises(TrainingFailed) as failed:
        train_distributed(dataset, cut, CONFIG, workers=2, progress=False, max_failures=0, crash_drill=drill)
    message = str(failed.value)
    assert "\n" not in message, repr(message)
    assert "rank 1" in message and "process died" in message, message
    assert "step-0000003" in message and "--resume" in message, message
    with pytest.raises(UserError, match="--ray-workers 2"):
        train_distributed(dataset, cut, CONFIG, workers=1, resume=True, progress=False)
    with pytest.raises(UserError, match="--ray-workers 2"):
        train(dataset, cut, CONFIG, resume=True, progress=False)
    summary = train_distributed(dataset, cut, CONFIG, workers=2, resume=True, progress=False)
    assert summary["steps"] == 8
    assert [line["step"] for line in _metrics(cut)] == list(range(1, 9))   # lines 4, 5 of the dead run replaced
    np.testing.assert_allclose(_totals(cut), _totals(whole), rtol=1e-5)
    assert _same_weights(cut, whole)


def test_failure_config_restart_resumes_from_the_last_checkpoint(two_workers, reference):
    """The module's run (:func:`two_workers`): rank 1 died after step 5, Ray Train restarted the workers from
    the step-3 checkpoint, and the run ends where the uninterrupted recipe does."""
    run, summary, err, marker = two_workers
    assert marker.exists() and summary["restarts"] == 1 and summary["steps"] == 8
    np.testing.assert_allclose(_totals(run), [parts["total"] for parts in reference], rtol=1e-4, atol=1e-6)
    failure = [line for line in err.splitlines() if "failed" in line]
    assert len(failure) == 1 and "rank 1" in failure[0] and "step-0000003" in failure[0]
    assert "train step 8/8" in err


def test_layouts_that_cannot_split_are_refused_before_ray_starts(dataset, tmp_path):
    for workers, config, match in ((3, CONFIG, "not divisible"), (8, CONFIG, "per worker"),
                                   (2, CONFIG.replace(num_workers=8), "at least 16")):
        with pytest.raises(UserError, match=match):
            train_distributed(dataset, tmp_path / "x", config, workers=workers, progress=False)
    assert not (tmp_path / "x").exists()

def test_a_ray_address_without_ray_workers_is_one_line_exit_2(dataset, tmp_path, capsys):
    code, _, err = in_process(capsys, "train", "--shards", str(dataset), "--out", str(tmp_path / "y"),
                              "--ray-address", "127.0.0.1:1")
    assert code == 2 and err.count("\n") == 1 and "--ray-workers" in err, err


def test_cli_on_one_ray_worker_is_the_in_process_run(local_ray, dataset, tmp_path, capsys):
    """Through the CLI's code (cli.main, in this process, on the module's Ray: the signal test below runs the
    CLI's own process with its own local Ray): progress on stderr, the summary on stdout, and one Ray worker
    computes exactly what the in-process run does."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({k: v for k, v in CONFIG.as_dict().items() if k != "steps"}))
    code, out, err = in_process(capsys, "train", "--shards", str(dataset), "--out", str(tmp_path / "ray"),
                                "--config", str(cfg), "--steps", "8", "--ray-workers", "1")
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["steps"] == 8 and summary["ray_workers"] == 1 and summary["restarts"] == 0
    assert "train step 8/8" in err and "Traceback" not in err
    train(dataset, tmp_path / "here", CONFIG, progress=False)
    np.testing.assert_allclose(_totals(tmp_path / "ray"), _totals(tmp_path / "here"), rtol=1e-6)
    assert _same_weights(tmp_path / "ray", tmp_path / "here", atol=1e-6)


def test_a_signal_stops_every_worker_at_one_checkpointed_step(dataset, tmp_path):
    """Ctrl-C (SIGINT to the process group) of `train --ray-workers 2` (schemas.stop, as in-process and
    build-sgs), in its own process with its own local Ray (the workers import this checkout): both replicas checkpoint the same step, the driver says how to resume in one line, exit 130."""
    import signal
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({**{k: v for k, v in CONFIG.as_dict().items() if k != "steps"},
                               "checkpoint_every": 1000}))
    run = (tmp_path / "run").resolve()
    proc = subprocess.Popen([sys.executable, "cli.py", "train", "--shards", str(dataset), "--out", str(run),
                             "--config", str(cfg), "--steps", "100000", "--ray-workers", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    before = []
    for line in proc.stderr:     # the first logged step: progress, not a clock, says when to signal
        if line.startswith("train step 1/"):
            break
        before.append(line)
    else:
        pytest.fail(f"no step was logged: {before}")
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=600)
    assert proc.returncode == 130, rest
    ckpt = load_checkpoint(run)
    assert 1 <= ckpt.step < 1000 and ckpt.world_size == 2
    assert ckpt.position(0)["in_epoch"] == ckpt.position(1)["in_epoch"] == (ckpt.step - 1) % 6 + 1
    assert rest.strip().splitlines()[-1] == (
        f"interrupted (SIGINT): step {ckpt.step} saved in {run / 'checkpoints' / f'step-{ckpt.step:07d}'}; "
        f"resume with python cli.py train --shards {dataset} --out {run} --resume")
    assert "Traceback" not in rest and [x["step"] for x in _metrics(run)][-1] == ckpt.step
