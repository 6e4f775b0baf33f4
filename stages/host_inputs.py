"""An exported host's input contract in code: a video file and captions → the host's embeddings, end to end.

An exported host (``finsta_model.load_host``) reads the features ``build-sgs`` stores, made the same way:

* frames decoded as ``decode`` does (:class:`stages.decode.DecodeConfig`, by default 1 frame per second at
  the native size capped at 1920×1080; pass the build's own ``decode`` section if it used another);
* embedded by the visual host its ``host.json`` names (``info["host"]["embed_visual"]``, by default
  EfficientNet-Lite0 at 224 px): a pooled vector per frame and a ``grid × grid`` cell map;
* captions embedded by the text host it names (``info["host"]["embed_text"]``, by default MiniLM):
  a sentence vector each and its first ``max_tokens`` token states.

:class:`FileEmbedder` builds those two embedders from ``host.json`` (their ``setup()`` loads the models once)
and runs the whole chain. Example (``exported/`` made by ``python cli.py export``)::

    from finsta_model import load_host
    from stages.host_inputs import FileEmbedder

    embed = FileEmbedder(load_host("exported/"))    # the host's own embedders, models loaded once
    result = embed("clip.mp4", ["a man rides a horse", "a dog sleeps"])
    print(result.scores)          # [C]: each caption's host score against the video (higher = better match)
    result.video, result.captions # L2-normalised embeddings, [D] and [C, D] (for an ANN index)

The host's weights come from ``finsta_model``; this module only reads its ``info`` and calls its
``embed_videos``/``embed_captions``/``score``/``*_vectors`` (the layering keeps ``stages`` free of it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from schemas.errors import UserError
from stages.decode import DecodeConfig, decode_video
from stages.embed_text import EmbedTextConfig, TextEmbedder
from stages.embed_visual import EmbedVisualConfig, VisualEmbedder


@dataclass
class FileEmbedding:
    """One video and its captions as the host sees them."""

    scores: np.ndarray     # [C] host score of each caption against the video (pooled cosine + λ_h · late interaction)
    video: np.ndarray      # [D] L2-normalised pooled video embedding
    captions: np.ndarray   # [C, D] L2-normalised pooled caption embeddings
    frames: int            # frames decoded and embedded


def config_from(cls: type, data: Optional[dict[str, Any]]) -> Any:
    """``cls`` (a config dataclass) with the values of ``data`` (an identity, as a manifest or ``host.json``
    stores it); nested sections recurse, fields ``data`` lacks keep their defaults."""
    data = data or {}
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:   # a nested section
            value = config_from(type(f.default_factory()), value)
        values[f.name] = value
    return cls(**values)


def visual_config(stored: Optional[dict[str, Any]]) -> EmbedVisualConfig:
    """The ``embed_visual`` config of a stored host identity. One recorded before ``embed_visual.precision``
    existed lacks it and was embedded in f32 (the only precision then), not in today's default bf16."""
    return config_from(EmbedVisualConfig, {"precision": "f32", **(stored or {})})


class FileEmbedder:
    """``embed(path, captions)`` → :class:`FileEmbedding` with an exported host (see the module docstring).

    ``decode``: how frames are sampled (default :class:`DecodeConfig`, the build's default). Raises
    :class:`UserError` when the host's ``host.json`` names no embedders (a host trained on shards that
    recorded none) and :class:`stages.base.SampleError` for a video that cannot be decoded.
    """

    def __init__(self, host: Any, decode: Optional[DecodeConfig] = None):
        identity = host.info.get("host") or {}
        if not {"embed_visual", "embed_text"} <= identity.keys():
            raise UserError("this exported host's host.json names no embedders (its shards recorded no host); "
                            "embed its inputs yourself as docs/model.md describes")
        self.host = host
        self.decode = decode or DecodeConfig()
        self.visual_cfg = visual_config(identity["embed_visual"])
        self.text_cfg = config_from(EmbedTextConfig, identity["embed_text"])
        self.visual, self.text = VisualEmbedder(self.visual_cfg), TextEmbedder(self.text_cfg)
        self.visual.setup()
        self.text.setup()

    def features(self, path: str, captions: Sequence[str]) -> dict[str, Any]:
        """The host's inputs, as ``build-sgs`` stores them: ``frame [T, Df]``, ``frame_patch [T·P, Dp]``,
        ``caption [C, Dc]`` and ``caption_token`` (per caption ``[L, Dt]``, the first ``max_tokens``)."""
        _, _, images = decode_video(str(path), self.decode)
        frames, cells = self.visual.embed_with_cells(images, self.visual_cfg.grid)
        sentences, tokens, _ = self.text.embed_with_tokens(list(captions))
        return {"frame": frames, "frame_patch": cells, "caption": sentences,
                "caption_token": [t[:self.text_cfg.max_tokens] for t in tokens]}

    def __call__(self, path: str, captions: Sequence[str]) -> FileEmbedding:
        inputs = self.features(path, captions)
        video = self.host.embed_videos([inputs["frame"]], [inputs["frame_patch"]])
        text = self.host.embed_captions(inputs["caption"], inputs["caption_token"] if self.text_cfg.max_tokens else None)
        return FileEmbedding(scores=self.host.score(text, video)[:, 0], video=self.host.video_vectors(video)[0],
                             captions=self.host.text_vectors(text), frames=len(inputs["frame"]))
