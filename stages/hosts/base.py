"""The host-model protocols and their builders.

A **visual host** turns RGB images into a pooled vector each and, for frames,
a ``grid × grid`` map of cells (the backbone's final feature map or patch
tokens, average-pooled to the grid)::

    host = build_visual_host(EmbedVisualConfig())   # the class named by cfg.name, built from cfg
    host.setup()
    pooled, cells = host.encode(images, grid=2)     # [n, host.dim], [n, 4, host.patch_dim]

A **text host** turns strings into sentence vectors (L2-normalised) and, for
captions, the last hidden state of every token with its character span::

    host = build_text_host(EmbedTextConfig())
    host.setup()
    vectors = host.encode(["a dog"])                                   # [1, host.dim]
    vectors, tokens, spans = host.encode_with_tokens(["a dog runs"])  # tokens[0]: [L, host.token_dim]
                                                                       # spans[0]: [L, 2] (0, 0) = special

Both are built from their stage's config; a backend's own options are the
section named like it (``embed_visual.clip.model``). ``feature_dims(cfg)``
(a classmethod) gives the widths without loading anything, for the manifest.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from stages.registry import TEXT_HOSTS, VISUAL_HOSTS


class VisualHost(Protocol):
    summary: str

    @classmethod
    def feature_dims(cls, cfg: Any) -> dict[str, int]: ...   # {"frame": D, "patch": Dp}

    def setup(self) -> None: ...

    def encode(self, images: list[np.ndarray], grid: int = 0) -> tuple[np.ndarray, np.ndarray]: ...


class TextHost(Protocol):
    summary: str

    @classmethod
    def feature_dims(cls, cfg: Any) -> dict[str, int]: ...   # {"sentence": D, "token": Dt}

    def setup(self) -> None: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]: ...


def visual_host_class(name: str) -> type:
    import stages.hosts  # noqa: F401  (registers every backend)
    return VISUAL_HOSTS.get(name)


def text_host_class(name: str) -> type:
    import stages.hosts  # noqa: F401
    return TEXT_HOSTS.get(name)


def build_visual_host(cfg: Any) -> VisualHost:
    return visual_host_class(cfg.name)(cfg)


def build_text_host(cfg: Any) -> TextHost:
    return text_host_class(cfg.name)(cfg)


def pool_grid(maps, grid: int):
    """``[n, C, H, W]`` torch maps → ``[n, grid², C]`` cells (adaptive average pooling, row-major)."""
    import torch.nn.functional as F

    n, c = maps.shape[:2]
    return F.adaptive_avg_pool2d(maps, grid).reshape(n, c, grid * grid).transpose(1, 2)
