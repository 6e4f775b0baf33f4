"""``minilm``: phrase ↔ track-label similarity from MiniLM sentence embeddings.

Both sides are wrapped in ``cfg.label_template`` and embedded (cached: labels
repeat); the similarity is their cosine, clipped to ``[0, 1]``. Text only:
it never looks at pixels, so it works after the frames are dropped.
"""
from __future__ import annotations

import numpy as np

from stages.embed_text import EmbedTextConfig, TextEmbedder
from stages.linking.base import LinkScorerConfig, TrackEvidence, normalize_label
from stages.registry import LINK_SCORERS


@LINK_SCORERS.register("minilm")
class MiniLMScorer:
    name = "minilm"
    needs_pixels = False

    def __init__(self, cfg: LinkScorerConfig):
        self.cfg = cfg
        self.embedder = TextEmbedder(EmbedTextConfig(model_dir=cfg.model, device=cfg.device, threads=cfg.threads))

    def setup(self) -> None:
        self.embedder.setup()

    def embed_labels(self, labels: list[str]) -> np.ndarray:
        return self.embedder.embed_cached([self.cfg.label_template.format(normalize_label(x)) for x in labels])

    def similarity(self, phrases: list[str], tracks: list[TrackEvidence]) -> np.ndarray:
        if not phrases or not tracks:
            return np.zeros((len(phrases), len(tracks)), np.float32)
        sims = self.embed_labels(phrases) @ self.embed_labels([t.label for t in tracks]).T
        return np.clip(sims, 0.0, 1.0).astype(np.float32)
