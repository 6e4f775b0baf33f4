"""Exporting the post-trained host, and loading it for use without scene graphs.

``python cli.py export --checkpoint RUN --out DIR`` writes

* ``DIR/host.safetensors`` — the host's weights (:class:`finsta_model.host.HostModel`), nothing of the SG branch;
* ``DIR/host.json`` — ``format`` ("finsta-host"), ``version``, the module's ``arguments``, the
  ``feature_dims`` it reads (``frame``, ``frame_patch``, ``caption``, ``caption_token``), ``cells_per_frame``,
  the ``host`` identity of the backbones that made its training features (the shards' manifest ``host``),
  and ``trained`` (source checkpoint, step, and the run's training config).

:func:`load_host` reads it back; the result embeds host features of new videos and captions and scores
them, with no scene graph anywhere. The features come from the same host backbones the shards were
built with (``stages.hosts``; ``host.json`` names them), e.g.::

    from finsta_model import load_host
    host = load_host("exported/")
    video = host.embed_videos([frames], [cells])          # frames [T, 1280], cells [T·P, 1280] (or [T, P, 1280])
    text = host.embed_captions(sentences, tokens)         # sentences [C, 384], tokens: C arrays [L, 384]
    scores = host.score(text, video)                      # numpy [C, B]: pooled cosine + λ_h · late interaction
    host.video_vectors(video), host.text_vectors(text)    # L2-normalised pooled embeddings, numpy
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from finsta_model.checkpoint import load_checkpoint
from finsta_model.graphs import pad_patches, pad_tokens
from finsta_model.host import HostModel, HostText, HostVideo
from schemas.errors import UserError

FORMAT = "finsta-host"
VERSION = 1
WEIGHTS = "host.safetensors"
INFO = "host.json"
HOST_DIMS = ("frame", "frame_patch", "caption", "caption_token")


def is_exported_host(path: str | Path) -> bool:
    return (Path(path) / INFO).is_file()


def export_host(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the host of ``checkpoint`` (a run folder or checkpoint folder) to ``out``; returns host.json."""
    from finsta_model.model import build_host   # the checkpoint's config rebuilds exactly its host

    ckpt = load_checkpoint(checkpoint)
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
    """The exported host in ``path`` (written by ``export``), ready to embed host features."""
    path = Path(path)
    if not is_exported_host(path):
        raise UserError(f"{path} holds no exported host ({INFO} missing); write one with "
                        f"`python cli.py export --checkpoint RUN --out {path}`")
    try:
        info = json.loads((path / INFO).read_text())
        weights = load_file(str(path / WEIGHTS))
    except (OSError, ValueError) as error:
        raise UserError(f"exported host {path} is unreadable: {error}") from None
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise UserError(f"{path / INFO} is format {info.get('format')!r} version {info.get('version')}; this finsta "
                        f"reads {FORMAT!r} version {VERSION}")
    model = HostModel(info["feature_dims"], **info["arguments"])
    model.load_state_dict(weights, strict=True)
    dev = torch.device(device)
    return ExportedHost(model=model.to(dev).eval(), info=info, device=dev)
