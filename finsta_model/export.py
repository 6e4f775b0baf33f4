"""Exporting the post-trained host, and loading it for use without scene graphs.

``python cli.py export --checkpoint RUN --out DIR`` writes

* ``DIR/host.safetensors`` — the host's weights (:class:`finsta_model.host.HostModel`), nothing of the SG branch;
* ``DIR/host.json`` — ``format`` ("finsta-host"), ``version``, the module's ``arguments``, the
  ``feature_dims`` it reads (``frame``, ``frame_patch``, ``caption``, ``caption_token``), ``cells_per_frame``,
  the ``host`` identity of the backbones that made its training features (the shards' manifest ``host``),
  ``trained`` (source checkpoint, step, and the run's training config) and ``weights_sha256`` (of
  ``host.safetensors``).

:func:`load_host` reads it back; the result embeds host features of new videos and captions and scores
them, with no scene graph anywhere. The features come from the same host backbones the shards were
built with (``stages.hosts``; ``host.json`` names them), e.g.::

    from finsta_model import load_host
    host = load_host("exported/")
    video = host.embed_videos([frames], [cells])          # frames [T, 1280], cells [T·P, 1280] (or [T, P, 1280])
    text = host.embed_captions(sentences, tokens)         # sentences [C, 384], tokens: C arrays [L, 384]
    scores = host.score(text, video)                      # numpy [C, B]: pooled cosine + λ_h · late interaction
    host.video_vectors(video), host.text_vectors(text)    # L2-normalised pooled embeddings, numpy

``export --video-sg-free`` (a run trained with host slots and ``video_side_weight``) also writes

* ``DIR/video_side.safetensors`` — what the **video-side SG-free score** reads besides the host: the
  caption's TSG encoder (label embeddings, GTrm), its unit head and the slot head
  (:data:`finsta_model.model.VIDEO_SIDE_TEXT`); nothing that reads a video's scene graph;
* ``host.json["video_side"]`` — that file's name, ``sha256`` and tensor names.

The gallery then needs host features only (no detector: the expensive part of ``build-sgs``), while a
query caption is parsed into its TSG at query time. The folder is still an exported host (``load_host``
reads it and ignores the rest); :func:`load_video_side` loads both, and ``eval --checkpoint DIR`` reports
the video-side score beside the host's.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from finsta_model.checkpoint import load_checkpoint, nonfinite_tensors
from finsta_model.config import SIZE_LIMITS
from finsta_model.graphs import pad_patches, pad_tokens
from finsta_model.host import HostModel, HostText, HostVideo
from schemas.errors import UserError
from schemas.store import sha256_file

FORMAT = "finsta-host"
VERSION = 1
WEIGHTS = "host.safetensors"
VIDEO_SIDE_WEIGHTS = "video_side.safetensors"
INFO = "host.json"
HOST_DIMS = ("frame", "frame_patch", "caption", "caption_token")
# What a host.json may ask a reader to build: the sizes a TrainConfig may have (config.SIZE_LIMITS; host argument
# name → config field), and the host's sequence lengths, fixed by finsta_model/host.py, up to 2^16.
SIZE_BOUNDS = {"dim": (1, SIZE_LIMITS["dim"]), "heads": (1, SIZE_LIMITS["heads"]),
               "layers": (1, SIZE_LIMITS["host_layers"]), "slots": (0, SIZE_LIMITS["host_slots"]),
               "max_frames": (1, 1 << 16), "max_tokens": (1, 1 << 16), "max_cells": (1, 1 << 16)}
RATES = {"dropout": (0.0, 1.0), "fine_weight": (0.0, math.inf)}
MAX_FEATURE_DIM = 1 << 16
MAX_INFO_BYTES = 16 << 20     # host.json: sizes, the host identity and the training config (a few KB)


def is_exported_host(path: str | Path) -> bool:
    return (Path(path) / INFO).is_file()


def export_host(checkpoint: str | Path, out: str | Path, video_sg_free: bool = False) -> dict[str, Any]:
    """Write the host of ``checkpoint`` (a run folder or checkpoint folder) to ``out``; returns host.json.
    ``video_sg_free``: also the caption side of the video-side SG-free score (module docstring)."""
    from finsta_model.model import VIDEO_SIDE_TEXT, build_host   # the checkpoint's config rebuilds its host

    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt.config
    if video_sg_free and not (cfg.use_sg and cfg.host_slots and cfg.video_side_weight and cfg.fine_grained_weight):
        raise UserError(f"--video-sg-free: checkpoint {ckpt.path} was not trained with the video-side score "
                        f"(it needs host_slots > 0, video_side_weight > 0 and fine_grained_weight > 0)")
    host = build_host(ckpt.config, ckpt.dims)
    prefix = "host."
    weights = {k[len(prefix):]: v for k, v in ckpt.model.items() if k.startswith(prefix)}
    host.load_state_dict(weights, strict=True)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not is_exported_host(out):
        raise UserError(f"--out {out} exists and is not an exported host; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    info = {"format": FORMAT, "version": VERSION, "arguments": host.arguments(),
            "feature_dims": {k: int(ckpt.dims.get(k, 0)) for k in HOST_DIMS},
            "cells_per_frame": ckpt.state.get("cells_per_frame"), "host": ckpt.state.get("host"),
            "trained": {"checkpoint": str(ckpt.path), "step": ckpt.step, "train_shards": ckpt.state.get("train_shards"),
                        "config": ckpt.config.as_dict()}}
    save_file({k: v.contiguous() for k, v in host.state_dict().items()}, str(out / WEIGHTS))
    info["weights_sha256"] = sha256_file(out / WEIGHTS)     # load_host refuses a truncated or flipped copy
    if video_sg_free:
        side = {k: v.contiguous() for k, v in ckpt.model.items() if k.startswith(VIDEO_SIDE_TEXT)}
        save_file(side, str(out / VIDEO_SIDE_WEIGHTS))
        info["video_side"] = {"weights": VIDEO_SIDE_WEIGHTS, "sha256": sha256_file(out / VIDEO_SIDE_WEIGHTS),
                              "dims": {k: int(v) for k, v in ckpt.dims.items() if k not in HOST_DIMS},
                              "tensors": sorted(side)}
    elif (out / VIDEO_SIDE_WEIGHTS).exists():      # re-exporting a host over a video-side export
        (out / VIDEO_SIDE_WEIGHTS).unlink()
    (out / INFO).write_text(json.dumps(info, indent=1))
    return info


@dataclass
class ExportedHost:
    """A loaded exported host (see the module docstring); ``model`` is the :class:`HostModel` in eval mode."""

    model: HostModel
    info: dict[str, Any]
    device: torch.device

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.info["feature_dims"])

    @torch.no_grad()
    def embed_videos(self, frames: Sequence[np.ndarray], cells: Optional[Sequence[np.ndarray]] = None) -> HostVideo:
        """Per video its frame vectors ``[T, Df]`` and grid cells (``[T·P, Dp]`` as stored, or ``[T, P, Dp]``)."""
        dims = self.dims
        t_max = max([len(f) for f in frames] + [1])
        feat = np.zeros((len(frames), t_max, dims["frame"]), np.float32)
        mask = np.zeros((len(frames), t_max), bool)
        grids = []
        for v, f in enumerate(frames):
            f = np.asarray(f, np.float32).reshape(-1, dims["frame"])
            feat[v, :len(f)], mask[v, :len(f)] = f, True
            c = None if cells is None else np.asarray(cells[v], np.float32)
            grids.append(None if c is None or c.size == 0 else c.reshape(len(f), -1, dims["frame_patch"]))
        patches = pad_patches(grids, t_max, dims["frame_patch"])
        return self.model.video(*(torch.from_numpy(x).to(self.device) for x in (feat, mask, patches)))

    @torch.no_grad()
    def embed_captions(self, sentences: np.ndarray, tokens: Optional[Sequence[np.ndarray]] = None) -> HostText:
        """Sentence vectors ``[C, Dc]`` and per caption its token states ``[L, Dt]`` (None: none)."""
        dims = self.dims
        sentences = np.asarray(sentences, np.float32).reshape(-1, dims["caption"])
        tok, mask = pad_tokens([None] * len(sentences) if tokens is None else list(tokens), dims["caption_token"])
        return self.model.text(*(torch.from_numpy(x).to(self.device) for x in (sentences, tok, mask)))

    @torch.no_grad()
    def score(self, text: HostText, video: HostVideo) -> np.ndarray:
        """``[C, B]`` host scores (pooled cosine + λ_h · token late interaction)."""
        return self.model.score(text, video).float().cpu().numpy()

    @staticmethod
    def video_vectors(video: HostVideo) -> np.ndarray:
        return F.normalize(video.pooled.float(), dim=-1).cpu().numpy()

    @staticmethod
    def text_vectors(text: HostText) -> np.ndarray:
        return F.normalize(text.pooled.float(), dim=-1).cpu().numpy()


def load_host(path: str | Path, device: str = "cpu") -> ExportedHost:
    """The exported host in ``path`` (written by ``export``), ready to embed host features.

    Validated before anything is allocated (each problem one line, a :class:`UserError`): no symbolic link
    is followed; ``host.json`` is bounded, of this format, its sizes integers within :data:`SIZE_BOUNDS`;
    ``host.safetensors`` matches the ``weights_sha256`` export recorded (a truncated or bit-flipped file),
    its header holds exactly the tensors and shapes those sizes build (checked against a model on the
    ``meta`` device, so forged sizes never make a reader allocate more than the file holds), and every
    weight is finite."""
    path = Path(path)
    if not is_exported_host(path):
        raise UserError(f"{path} holds no exported host ({INFO} missing); write one with "
                        f"`python cli.py export --checkpoint RUN --out {path}`")
    info = _read_info(path)
    dims, arguments = _sizes(path, info)
    weights_path = _own_file(path, WEIGHTS)
    recorded = info.get("weights_sha256")
    try:
        if recorded is not None and sha256_file(Path(weights_path)) != recorded:
            raise ValueError(f"{WEIGHTS} is not the file export wrote (its sha256 differs from {INFO}'s): "
                             f"truncated or corrupted; export it again")
        with torch.device("meta"):    # shapes only: nothing is allocated, whatever host.json says
            expected = {k: tuple(v.shape) for k, v in HostModel(dims, **arguments).state_dict().items()}
        with safe_open(weights_path, framework="pt") as handle:
            found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
            raise ValueError(f"{WEIGHTS} does not hold the tensors {INFO}'s sizes build ({len(wrong)} differ, "
                             f"e.g. {wrong[0]})")
        weights = load_file(weights_path)
    except (OSError, ValueError, SafetensorError) as error:
        raise UserError(f"exported host {path} is unreadable: {error}".replace("\n", " ")) from None
    bad = nonfinite_tensors(weights)
    if bad:
        raise UserError(f"exported host {path}: {WEIGHTS} holds NaN or infinite weights ({len(bad)} tensor(s), "
                        f"e.g. {bad[0]}); export a finite checkpoint again")
    model = HostModel(dims, **arguments)
    model.load_state_dict(weights, strict=True)
    dev = torch.device(device)
    return ExportedHost(model=model.to(dev).eval(), info=info, device=dev)


def _own_file(folder: Path, name: str) -> str:
    """``folder/name``, refusing a symbolic link (export never writes one)."""
    target = folder / name
    if target.is_symlink():
        raise UserError(f"exported host {folder}: {name} is a symbolic link; an exported host holds its own files")
    return str(target)


def _read_info(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(_own_file(path, INFO), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_INFO_BYTES + 1)
        if len(data) > MAX_INFO_BYTES:
            raise ValueError(f"{INFO} is larger than export writes ({MAX_INFO_BYTES} bytes at most)")
        info = json.loads(data)
    except (OSError, ValueError) as error:
        raise UserError(f"exported host {path} is unreadable: {error}".replace("\n", " ")) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
        found = (info.get("format"), info.get("version")) if isinstance(info, dict) else (type(info).__name__, None)
        raise UserError(f"{path / INFO} is format {found[0]!r} version {found[1]}; this finsta "
                        f"reads {FORMAT!r} version {VERSION}")
    return info


def _sizes(path: Path, info: dict[str, Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """``feature_dims`` and the module ``arguments`` of host.json, each checked against :data:`SIZE_BOUNDS`."""
    dims, arguments = info.get("feature_dims"), info.get("arguments")
    if isinstance(arguments, dict):
        arguments = {"slots": 0, **arguments}     # hosts exported before object slots existed have none
    problem = None
    if not isinstance(dims, dict) or set(dims) != set(HOST_DIMS):
        problem = f"feature_dims must name exactly {', '.join(HOST_DIMS)}"
    elif not isinstance(arguments, dict) or set(arguments) != set(SIZE_BOUNDS) | set(RATES):
        problem = f"arguments must name exactly {', '.join(sorted(set(SIZE_BOUNDS) | set(RATES)))}"
    else:
        checks = [(f"feature_dims.{k}", v, (1 if k in ("frame", "caption") else 0, MAX_FEATURE_DIM))
                  for k, v in dims.items()]
        checks += [(f"arguments.{k}", arguments[k], bounds) for k, bounds in SIZE_BOUNDS.items()]
        for name, value, (low, high) in checks:
            if type(value) is not int or not low <= value <= high:
                problem = f"{name} must be an integer from {low} to {high}, not {value!r}"
                break
        for name, (low, high) in RATES.items():
            value = arguments[name]
            if problem is None and (type(value) not in (int, float) or not low <= value < high):
                problem = f"arguments.{name} must be a number from {low} to below {high}, not {value!r}"
        if problem is None and arguments["dim"] % arguments["heads"]:
            problem = f"arguments.dim ({arguments['dim']}) must be divisible by arguments.heads ({arguments['heads']})"
    if problem:
        raise UserError(f"{path / INFO}: {problem}; it was not written by `python cli.py export`")
    return dict(dims), dict(arguments)


@dataclass
class ExportedVideoSide:
    """A loaded ``export --video-sg-free`` folder: ``host`` (the :class:`ExportedHost`) and ``model``, a
    :class:`finsta_model.model.FinstaModel` holding the host and the caption side of the video-side score
    (its video-scene-graph modules are never called and hold no trained weights)."""

    host: ExportedHost
    model: Any

    @torch.no_grad()
    def score(self, batch) -> np.ndarray:
        """``[C, B]`` video-side SG-free scores of a :class:`finsta_model.graphs.GraphBatch`'s captions (their
        TSGs) against its videos (host features only)."""
        text, video = self.model.host_units(batch)
        return self.model.video_side_scores(self.model.caption_units(batch), text, video).float().cpu().numpy()


def load_video_side(path: str | Path, device: str = "cpu") -> ExportedVideoSide:
    """The video-side SG-free model of ``path`` (``export --video-sg-free``): :func:`load_host`'s checks,
    then ``video_side.safetensors`` checked against host.json (sha256, tensor names and the shapes the
    recorded training config builds, finite values)."""
    from finsta_model.config import TrainConfig
    from finsta_model.model import VIDEO_SIDE_TEXT, FinstaModel
    host = load_host(path, device)
    path, side = Path(path), host.info.get("video_side")
    if not isinstance(side, dict) or side.get("weights") != VIDEO_SIDE_WEIGHTS:
        raise UserError(f"{path} holds an SG-free host but no video-side model; export one with "
                        f"`python cli.py export --video-sg-free --checkpoint RUN --out {path}`")
    try:
        config = TrainConfig.from_dict(host.info["trained"]["config"])
        model = FinstaModel(config, {**host.dims, **{k: int(v) for k, v in side["dims"].items()}})
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(VIDEO_SIDE_TEXT)}
        weights_path = _own_file(path, VIDEO_SIDE_WEIGHTS)
        if sha256_file(Path(weights_path)) != side.get("sha256"):
            raise ValueError(f"{VIDEO_SIDE_WEIGHTS} is not the file export wrote (its sha256 differs from "
                             f"{INFO}'s); export it again")
        weights = load_file(weights_path)
        found = {k: tuple(v.shape) for k, v in weights.items()}
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
            raise ValueError(f"{VIDEO_SIDE_WEIGHTS} does not hold the tensors its training config builds "
                             f"({len(wrong)} differ, e.g. {wrong[0]})")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError, UserError) as error:
        raise UserError(f"video-side model {path} is unreadable: {error}".replace("\n", " ")) from None
    bad = nonfinite_tensors(weights)
    if bad:
        raise UserError(f"video-side model {path}: {VIDEO_SIDE_WEIGHTS} holds NaN or infinite weights "
                        f"(e.g. {bad[0]}); export a finite checkpoint again")
    model.host = host.model
    model.load_state_dict(weights, strict=False)     # exactly the video-side tensors (checked above)
    return ExportedVideoSide(host=host, model=model.to(host.device).eval())
