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

A data-parallel run (``world_size`` replicas, ``finsta_model.distributed``) has the
same layout, written by rank 0: the model and optimiser are the same on every
replica; each other rank's data position and python/numpy RNG states are in
``state.json["ranks"]`` and its torch generators in ``rng.safetensors`` under
``rank{r}.torch_cpu`` / ``rank{r}.torch_cuda_{i}`` (rank 0 keeps the single-process
keys), so :meth:`Checkpoint.restore_rng` and :meth:`Checkpoint.position` take a rank.

Reading is bounded and confined: ``latest`` must name a ``step-N`` folder next to it
(never a path), no symbolic link is followed (``checkpoints``, ``step-N`` or a file in it),
``state.json`` and ``latest`` have size limits, weights and optimiser moments must be
finite, a malformed RNG state is refused, and the tensors of
``model.safetensors`` must have exactly the shapes the checkpoint's config and dims
build (checked on the file header against a model built on the ``meta`` device, so a
forged config cannot make a reader allocate more than the file holds); anything else
is refused with one line.

Example::

    path = save_checkpoint(run_dir, step, model, optimizer, scheduler, position, config, dims)
    ckpt = load_checkpoint(path)           # or load_checkpoint(run_dir): the latest one
    model.load_state_dict(ckpt.model)
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from finsta_model.config import TrainConfig
from schemas.errors import UserError

LATEST = "latest"
STEP_NAME = re.compile(r"step-\d{7,}")
MAX_LATEST_BYTES = 256
MAX_STATE_BYTES = 64 << 20        # state.json: RNG states of every rank, config, position (~40 KB a rank)


@dataclass
class Checkpoint:
    path: Path
    step: int
    config: TrainConfig
    dims: dict[str, int]
    model: dict[str, torch.Tensor]
    state: dict[str, Any]          # state.json as read

    @property
    def world_size(self) -> int:
        """How many data-parallel replicas wrote this checkpoint (1: a single-process run)."""
        return int(self.state.get("world_size", 1))

    def position(self, rank: int = 0) -> dict[str, Any]:
        """Replica ``rank``'s data position: ``{"epoch", "consumed", "in_epoch"}``."""
        return self.state["position"] if rank == 0 else self._rank_state(rank)["position"]

    def _rank_state(self, rank: int) -> dict[str, Any]:
        for entry in self.state.get("ranks", []):
            if entry["rank"] == rank:
                return entry
        raise UserError(f"checkpoint {self.path} holds no state for rank {rank} (written by "
                        f"{self.world_size} replica(s)); resume with the run's own --ray-workers")

    def optimizer_state(self) -> dict[str, Any]:
        try:
            state = torch.load(_inside(self.path, "optimizer.pt"), map_location="cpu", weights_only=True)
            moments = {f"{p}.{k}": v for p, entry in state["state"].items() for k, v in entry.items()
                       if isinstance(v, torch.Tensor)}
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as error:
            raise UserError(f"checkpoint {self.path}: optimizer.pt is unreadable: {error}".replace("\n", " ")) from None
        bad = nonfinite_tensors(moments)
        if bad:
            raise UserError(f"checkpoint {self.path}: optimizer.pt holds NaN or infinite values ({len(bad)} tensor(s), "
                            f"e.g. {bad[0]}); resume from an earlier checkpoint")
        return state

    def restore_rng(self, rank: int = 0) -> None:
        """Set this process's torch, CUDA, python and numpy generators to replica ``rank``'s states
        (a malformed state is refused in one line)."""
        try:
            self._restore_rng(rank)
        except (OSError, ValueError, KeyError, IndexError, TypeError, OverflowError, RuntimeError,
                SafetensorError) as error:
            raise UserError(f"checkpoint {self.path}: its RNG state (state.json \"rng\", rng.safetensors) is "
                            f"malformed ({type(error).__name__}: {error}); it was not written by `python cli.py "
                            f"train`".replace("\n", " ")) from None

    def _restore_rng(self, rank: int) -> None:
        rng = load_file(_inside(self.path, "rng.safetensors"))
        prefix = "" if rank == 0 else f"rank{rank}."
        torch.set_rng_state(rng[f"{prefix}torch_cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith(f"{prefix}torch_cuda_")]
            if cuda:
                torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
        state = self.state["rng"] if rank == 0 else self._rank_state(rank)["rng"]
        random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
        np.random.set_state((state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32),
                             *state["numpy"][2:]))


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding NaN or ±inf (checked wherever weights enter)."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite_loss(loss: torch.Tensor, step: int, run_dir: Path) -> None:
    """Stop a run whose loss is NaN or infinite before it steps the optimiser or writes a checkpoint
    of poisoned weights (one line; the last checkpoint, if any, stays the latest)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise UserError(f"step {step}: the training loss is {value}; stopped before writing it into a checkpoint "
                        f"of {run_dir} (lower --lr, check the shards' features, or resume from the last checkpoint)")


def _rng_json() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def rank_state(position: dict[str, Any]) -> dict[str, Any]:
    """What one replica contributes to a checkpoint: its data position and every RNG state of this
    process (gathered to rank 0 by ``finsta_model.train``, passed to :func:`save_checkpoint` as ``ranks``)."""
    cuda = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []
    return {"position": position, "rng": _rng_json(), "torch_cpu": torch.get_rng_state(), "torch_cuda": cuda}


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, position: dict[str, Any], config: TrainConfig, dims: dict[str, int],
                    extra: dict[str, Any] | None = None, ranks: list[dict[str, Any]] | None = None) -> Path:
    """Write checkpoint ``step`` atomically and point ``latest`` at it.

    ``ranks``: :func:`rank_state` of replicas 1..N-1 of a data-parallel run (this process is rank 0).
    Weights that are no longer finite are refused (one line) before anything is written."""
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise UserError(f"step {step}: the weights hold NaN or infinite values ({len(bad)} tensor(s), e.g. {bad[0]}); "
                        f"stopped without checkpointing them (lower --lr, or resume from the last checkpoint)")
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
    ranks = ranks or []
    for rank, entry in enumerate(ranks, start=1):
        rng[f"rank{rank}.torch_cpu"] = entry["torch_cpu"]
        for i, state in enumerate(entry["torch_cuda"]):
            rng[f"rank{rank}.torch_cuda_{i}"] = state
    save_file(rng, str(tmp / "rng.safetensors"))
    state = {"step": step, "position": position, "scheduler": scheduler.state_dict(), "rng": _rng_json(),
             "config": config.as_dict(), "dims": dims, "world_size": 1 + len(ranks), **(extra or {})}
    if ranks:
        state["ranks"] = [{"rank": rank, "position": entry["position"], "rng": entry["rng"]}
                          for rank, entry in enumerate(ranks, start=1)]
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / LATEST)
    return final


def _inside(folder: Path, name: str) -> str:
    """``folder/name`` for reading, refusing a symbolic link (a checkpoint never writes one, and one would
    make a reader open files outside the run)."""
    path = folder / name
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; a checkpoint holds its own files (copy the target in its place)")
    return str(path)


def _read_bounded(path: Path, limit: int) -> str:
    with open(_inside(path.parent, path.name), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path} is larger than a finsta checkpoint writes ({limit} bytes at most); "
                        f"it was not written by `python cli.py train`")
    return data.decode("utf-8", errors="replace")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself, a run folder or a ``checkpoints`` folder (→ the latest).

    ``latest`` must hold the name of a ``step-N`` folder beside it: a path (``../x``, ``/abs``)
    is refused, so a run folder never makes a reader open files outside it."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if candidate != path and candidate.is_symlink():
            _inside(path, "checkpoints")
        if (candidate / "state.json").is_file():
            return candidate
        if (candidate / LATEST).is_file():
            name = _read_bounded(candidate / LATEST, MAX_LATEST_BYTES).strip()
            if not STEP_NAME.fullmatch(name):
                raise UserError(f"{candidate / LATEST} must name a step-NNNNNNN folder beside it, not "
                                f"{name[:80]!r}; point it at one of {candidate}/step-* or pass that folder")
            _inside(candidate, name)
            return candidate / name
    raise UserError(f"no checkpoint at {path}: pass a checkpoint folder (RUN_DIR/checkpoints/step-N) "
                    f"or a run folder written by `python cli.py train`")


def _check_shapes(folder: Path, config: TrainConfig, dims: dict[str, int]) -> None:
    """The weights file holds exactly the tensors ``FinstaModel(config, dims)`` has (read from its header)."""
    from finsta_model.model import FinstaModel

    with torch.device("meta"):   # shapes only: nothing is allocated, whatever the config says
        expected = {k: tuple(v.shape) for k, v in FinstaModel(config, dims).state_dict().items()}
    with safe_open(_inside(folder, "model.safetensors"), framework="pt") as weights:
        found = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise UserError(f"checkpoint {folder}: model.safetensors does not match its config and dims "
                        f"({len(wrong)} tensor(s) differ, e.g. {wrong[0]}); it was not written by this config")


def load_checkpoint(path: str | Path) -> Checkpoint:
    folder = resolve_checkpoint(path)
    try:
        state = json.loads(_read_bounded(folder / "state.json", MAX_STATE_BYTES))
        config = TrainConfig.from_dict(state["config"])
        dims = {k: int(v) for k, v in state["dims"].items()}
        if any(v < 1 for v in dims.values()):
            raise ValueError(f"feature dims must be positive, not {dims}")
        _check_shapes(folder, config, dims)
        weights = load_file(_inside(folder, "model.safetensors"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as error:
        raise UserError(f"checkpoint {folder} is unreadable: {error}".replace("\n", " ")) from None
    bad = nonfinite_tensors(weights)
    if bad:
        raise UserError(f"checkpoint {folder}: model.safetensors holds NaN or infinite weights ({len(bad)} tensor(s), "
                        f"e.g. {bad[0]}); use an earlier checkpoint")
    return Checkpoint(path=folder, step=int(state["step"]), config=config, dims=dims, model=weights,
                      state=state)
