"""Checkpoints: safetensors for weights and RNG states, JSON for everything else.

A checkpoint is a folder ``RUN_DIR/checkpoints/step-NNNNNNN/``:

* ``model.safetensors`` — the model's state dict;
* ``optimizer.pt`` — the optimiser's state dict (tensors, numbers, lists only;
  read back with ``torch.load(..., weights_only=True)``, never unpickled freely);
* ``rng.safetensors`` — torch CPU (and CUDA) generator states;
* ``state.json`` — step, data position, scheduler state, python/numpy RNG
  states, the :class:`~finsta_model.config.TrainConfig` and the feature dims.

It is written into a temporary folder and renamed, then ``RUN_DIR/checkpoints/latest``
is rewritten, so a crash never leaves a half checkpoint that ``--resume`` picks.

Example::

    path = save_checkpoint(run_dir, step, model, optimizer, scheduler, position, config, dims)
    ckpt = load_checkpoint(path)           # or load_checkpoint(run_dir): the latest one
    model.load_state_dict(ckpt.model)
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from finsta_model.config import TrainConfig
from schemas.errors import UserError

LATEST = "latest"


@dataclass
class Checkpoint:
    path: Path
    step: int
    config: TrainConfig
    dims: dict[str, int]
    model: dict[str, torch.Tensor]
    state: dict[str, Any]          # state.json as read

    def optimizer_state(self) -> dict[str, Any]:
        return torch.load(self.path / "optimizer.pt", map_location="cpu", weights_only=True)

    def restore_rng(self) -> None:
        rng = load_file(str(self.path / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
            if cuda:
                torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
        state = self.state["rng"]
        random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
        np.random.set_state((state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32),
                             *state["numpy"][2:]))


def _rng_json() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, position: dict[str, Any], config: TrainConfig, dims: dict[str, int],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``step`` atomically and point ``latest`` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = state
    save_file(rng, str(tmp / "rng.safetensors"))
    state = {"step": step, "position": position, "scheduler": scheduler.state_dict(), "rng": _rng_json(),
             "config": config.as_dict(), "dims": dims, **(extra or {})}
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / LATEST)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself, a run folder or a ``checkpoints`` folder (→ the latest)."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / "state.json").is_file():
            return candidate
        if (candidate / LATEST).is_file():
            return candidate / (candidate / LATEST).read_text().strip()
    raise UserError(f"no checkpoint at {path}: pass a checkpoint folder (RUN_DIR/checkpoints/step-N) "
                    f"or a run folder written by `python cli.py train`")


def load_checkpoint(path: str | Path) -> Checkpoint:
    folder = resolve_checkpoint(path)
    try:
        state = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError) as error:
        raise UserError(f"checkpoint {folder} is unreadable: {error}") from None
    return Checkpoint(path=folder, step=int(state["step"]), config=TrainConfig.from_dict(state["config"]),
                      dims={k: int(v) for k, v in state["dims"].items()}, model=weights, state=state)
