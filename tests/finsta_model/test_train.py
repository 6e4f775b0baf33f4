"""Training: exact resume, checkpoints (safetensors + weights_only), config handling, eval report and CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finsta_model.checkpoint import load_checkpoint
from finsta_model.config import TrainConfig, load_config
from finsta_model.evaluate import evaluate, retrieval_metrics
from finsta_model.train import train
from schemas.errors import UserError
from tests.test_cli import in_process

ROOT = Path(__file__).resolve().parents[2]
TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=2, steps=8, batch_size=4, log_every=1,
                   checkpoint_every=3, shuffle_buffer=6, warmup_steps=2)


def _losses(run: Path) -> list[tuple[int, float, float]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(x["step"], x["total"], x["lr"]) for x in lines]


def test_resume_continues_exactly(small_dataset, tmp_path):
    # 24 videos / batch 4 = 6 batches an epoch: the run crosses an epoch boundary after the crash
    whole = tmp_path / "whole"
    train(small_dataset, whole, TINY, progress=False)
    cut = tmp_path / "cut"
    train(small_dataset, cut, TINY, progress=False, max_new_steps=5)        # last checkpoint at step 5
    (cut / "checkpoints" / "step-0000005").rename(cut / "checkpoints" / "gone")  # "crash" after step 3's checkpoint
    (cut / "checkpoints" / "latest").write_text("step-0000003")
    train(small_dataset, cut, TINY, resume=True, progress=False)
    a, b = _losses(whole), _losses(cut)
    assert [s for s, _, _ in b] == list(range(1, 9))
    np.testing.assert_allclose([x for _, x, _ in a], [x for _, x, _ in b], rtol=1e-5)
    np.testing.assert_allclose([x for _, _, x in a], [x for _, _, x in b], rtol=1e-9)
    wa, wb = load_checkpoint(whole).model, load_checkpoint(cut).model
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_resume_with_two_loader_workers(small_dataset, tmp_path):
    cfg = TINY.replace(num_workers=2, steps=8)   # 6 batches an epoch: crosses into epoch 1
    train(small_dataset, tmp_path / "whole", cfg, progress=False)
    train(small_dataset, tmp_path / "cut", cfg, progress=False, max_new_steps=5)  # resumes at worker 1
    train(small_dataset, tmp_path / "cut", cfg, resume=True, progress=False)
    np.testing.assert_allclose([x for _, x, _ in _losses(tmp_path / "whole")],
                               [x for _, x, _ in _losses(tmp_path / "cut")], rtol=1e-5)


def test_checkpoint_files_are_safe_formats(small_dataset, tmp_path):
    train(small_dataset, tmp_path / "run", TINY.replace(steps=3), progress=False)
    ckpt = load_checkpoint(tmp_path / "run")
    assert {p.name for p in ckpt.path.iterdir()} == {"model.safetensors", "optimizer.pt", "rng.safetensors",
                                                     "state.json"}
    state = torch.load(ckpt.path / "optimizer.pt", weights_only=True)
    assert state["state"]
    assert ckpt.state["position"] == {"epoch": 0, "consumed": [3], "in_epoch": 3}
    assert ckpt.config == TINY.replace(steps=3)


def test_user_mistakes_are_user_errors(small_dataset, tmp_path):
    train(small_dataset, tmp_path / "run", TINY.replace(steps=2), progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(small_dataset, tmp_path / "run", TINY.replace(steps=2), progress=False)
    with pytest.raises(UserError, match="different config"):
        train(small_dataset, tmp_path / "run", TINY.replace(steps=4, use_osc=False), resume=True, progress=False)
    with pytest.raises(UserError, match="no checkpoint"):
        train(small_dataset, tmp_path / "fresh", TINY, resume=True, progress=False)
    with pytest.raises(UserError):
        train(tmp_path / "missing", tmp_path / "x", TINY, progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text('{"dimension": 3}')
    with pytest.raises(UserError, match="unknown config key"):
        load_config(bad)
    good = tmp_path / "good.json"
    good.write_text('{"dim": 32, "ptc_shifts": [0.5]}')
    assert load_config(good) == TrainConfig(dim=32, ptc_shifts=(0.5,))


def test_a_non_empty_run_folder_is_refused_without_resume_and_overwrite_starts_over(small_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')   # what a run stopped before its first checkpoint leaves
    with pytest.raises(UserError, match=r"already holds files \(metrics.jsonl\); pass --resume to continue it, "
                                        r"--overwrite to start over"):
        train(small_dataset, run, TINY.replace(steps=2), progress=False)
    train(small_dataset, run, TINY.replace(steps=2), progress=False, overwrite=True)
    assert [step for step, _, _ in _losses(run)] == [1, 2]   # started over: the old line is gone
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(small_dataset, run, TINY.replace(steps=2), progress=False)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds files that are not a run's \(notes.txt\)"):
        train(small_dataset, run, TINY.replace(steps=2), progress=False, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoints").is_dir()
    with pytest.raises(UserError, match="contradict"):
        train(small_dataset, run, TINY.replace(steps=2), progress=False, resume=True, overwrite=True)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_the_step_in_progress_and_says_how_to_resume(signum, small_dataset, tmp_path):
    import signal
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"dim": 16, "heads": 2, "gtrm_layers": 1, "batch_size": 4, "log_every": 1,
                               "checkpoint_every": 1000}))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "cli.py", "train", "--shards", str(small_dataset), "--out", str(run),
                             "--config", str(cfg), "--steps", "100000"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()          # the first step is done: progress, not a clock, says when to signal
    assert first.startswith("train step 1/"), first
    proc.send_signal(getattr(signal, signum))
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == (130 if signum == "SIGINT" else 143), rest
    last = rest.strip().splitlines()[-1]
    step = load_checkpoint(run).step
    assert step >= 1 and last == (f"interrupted ({signum}): step {step} saved in {run / 'checkpoints' / f'step-{step:07d}'}; "
                                  f"resume with python cli.py train --shards {small_dataset} --out {run} --resume")


def test_retrieval_metrics_by_hand():
    video = np.eye(4, dtype=np.float32)
    text = np.concatenate([np.eye(4), np.eye(4)[:1], 0.5 * np.eye(4)[1:2]]).astype(np.float32)
    cap_video = np.array([0, 1, 2, 3, 0, 1])
    neg_of = np.array([-1, -1, -1, -1, 0, 1])       # caption 4 ties caption 0 on video 0: counts as a miss
    report = retrieval_metrics(video, text, cap_video, neg_of, ["", "", "", "", "swap", "change_relation"])
    assert report["t2v"] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
    assert report["v2t"]["R@1"] == 100.0
    hard = report["hard_negatives"]
    assert hard["t2v"]["R@1"] == 50.0 and hard["queries"] == 2
    assert hard["pair_accuracy"] == 50.0 and hard["by_type"] == {"change_relation": 100.0, "swap": 0.0}


def test_cli_train_and_eval_json(small_dataset, tmp_path, capsys):
    # cli.main in this process (what `python cli.py` runs); the signal tests above run cli.py as a process
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({k: v for k, v in TINY.as_dict().items() if k in ("dim", "heads", "batch_size",
                                                                               "gtrm_layers")}))
    run = tmp_path / "run"
    args = ["train", "--shards", str(small_dataset), "--out", str(run), "--config", str(cfg), "--steps", "2",
            "--no-ptc"]
    code, out, err = in_process(capsys, *args)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["steps"] == 2
    code, out, err = in_process(capsys, "eval", "--shards", str(small_dataset), "--checkpoint", str(run), "--json")
    assert code == 0, err
    report = json.loads(out)
    for direction in ("t2v", "v2t"):
        assert set(report[direction]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
        assert 0 <= report[direction]["R@1"] <= 100
    assert report["no_sg"]["t2v"] and report["hard_negatives"]["queries"] > 0
    assert report == evaluate(small_dataset, run)
    code, out, err = in_process(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "--resume" in err


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_train_log_prints_a_loss_line_with_eta_off_a_terminal():
    import io

    from finsta_model.train import TrainLog
    stream, clock = io.StringIO(), _Clock()
    log = TrainLog(total=300, start=100, stream=stream, clock=clock)   # resumed at step 100
    clock.now += 20.0
    log.record({"step": 110, "epoch": 0, "lr": 9.8e-4, "nce": 2.10123, "osc": 0.93111, "ptc": 1.08, "distill": 0.41,
                "total": 3.214, "graphs_per_s": 61.23})
    log.close()
    assert stream.getvalue() == ("train step 110/300 · total 3.2140 · nce 2.1012 osc 0.9311 ptc 1.0800 "
                                 "distill 0.4100 · lr 9.80e-04 · 61.2 graphs/s · ETA 6m20s\n")  # 190 × 2 s


def test_train_log_draws_a_bar_on_a_terminal():
    import io

    from finsta_model.train import TrainLog
    stream = io.StringIO()
    log = TrainLog(total=8, start=0, stream=stream, terminal=True)
    log.step(1, 3.25)                      # each step's loss, before any metrics line
    assert "loss 3.250" in stream.getvalue()
    for step in range(2, 9):
        log.step(step)
    log.record({"step": 8, "lr": 1e-3, "total": 2.5, "graphs_per_s": 40.0})
    log.close()
    screen = stream.getvalue()
    assert "8/8" in screen and "loss 2.500 · 40.0 graphs/s" in screen and "train step" not in screen


def test_cli_train_logs_loss_lines_when_not_on_a_terminal(small_dataset, tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"dim": 16, "heads": 2, "gtrm_layers": 1, "batch_size": 4, "log_every": 2}))
    code, out, err = in_process(capsys, "train", "--shards", str(small_dataset), "--out", str(tmp_path / "run"),
                                "--config", str(cfg), "--steps", "4")   # capsys's stderr is no terminal
    assert code == 0, err
    lines = err.splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["train step 2/4", "train step 4/4"]
    assert all("graphs/s" in line and "ETA" in line and "lr" in line for line in lines)


# ------------------------------------------------------------------ shards on S3 (moto's server on 127.0.0.1)
from tests.storage_servers import make_bucket  # noqa: E402


def test_train_and_eval_read_an_s3_dataset_exactly_like_the_local_one(small_dataset, s3_env, tmp_path):
    files = {f"ds/{p.relative_to(small_dataset).as_posix()}": p for p in small_dataset.rglob("*") if p.is_file()}
    url = make_bucket(s3_env, "shards", files) + "/ds"
    config = TrainConfig(**{**TINY.as_dict(), "steps": 2})
    train(small_dataset, tmp_path / "local", config, progress=False)
    train(url, tmp_path / "s3", config, progress=False)
    assert _losses(tmp_path / "s3") == _losses(tmp_path / "local")
    got, want = evaluate(url, tmp_path / "s3"), evaluate(small_dataset, tmp_path / "local")
    assert "training shards (s3://shards/ds)" in got["warnings"][0]   # the run recorded the URL, eval read it
    same = lambda report: {k: v for k, v in report.items() if k not in ("warnings", "checkpoint")}  # noqa: E731
    assert same(got) == same(want)
