"""The link-scorer protocol, its config and ``build_link_scorer``.

A scorer says how well a TSG object phrase matches each DSG track, as a
similarity in ``[0, 1]``; :mod:`stages.merge_hsg` combines it with colour and
time agreement. A backend is a class registered in
:data:`stages.registry.LINK_SCORERS`, built from a :class:`LinkScorerConfig`.
Contract::

    scorer = build_link_scorer(LinkScorerConfig(name="minilm"))
    scorer.setup()                                       # load the model once per worker
    sims = scorer.similarity(["man", "dog"], tracks)     # float32 [2, len(tracks)], in [0, 1]
    scorer.name                                          # "minilm": goes into CrossLink.method

``tracks`` are :class:`TrackEvidence`; a scorer that compares phrases with
pixels (CLIP, as in the paper) sets ``needs_pixels = True`` and the merge
stage then fills ``TrackEvidence.crops`` from the decoded frames; a text-only
scorer reads ``TrackEvidence.label``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from schemas.options import runtime
from stages.registry import LINK_SCORERS


@dataclass
class LinkScorerConfig:
    """Options every backend reads; backends ignore what does not apply to them.

    ``label_template`` wraps both the phrase and the track label before
    embedding: for MiniLM "a photo of a {}." separates kinds far better than
    bare words ("man"→"person" 0.78 vs 0.41 bare, while "man"→"dog" stays
    below 0.55). ``model``: a model folder for backends that need one.
    """

    name: str = "minilm"
    label_template: str = "a photo of a {}."
    model: str = ""
    device: str = runtime("cpu")
    threads: int = runtime(1)
    gpus: float = runtime(0.25)


@dataclass
class TrackEvidence:
    """What a scorer may look at for one track: its id, label and (optionally) RGB crops."""

    track_id: int
    label: str
    crops: list[np.ndarray] = field(default_factory=list)


class LinkScorer(Protocol):
    name: str
    needs_pixels: bool

    def setup(self) -> None: ...

    def similarity(self, phrases: list[str], tracks: list[TrackEvidence]) -> np.ndarray: ...


def normalize_label(label: str) -> str:
    """Lower-case, underscores and runs of whitespace as single spaces ("Sports_ball" → "sports ball")."""
    return " ".join(label.replace("_", " ").lower().split())


def link_scorer_class(name: str) -> type:
    """The backend class registered as ``name`` (importing the package registers every backend)."""
    import stages.linking  # noqa: F401  (registers every backend)
    return LINK_SCORERS.get(name)


def build_link_scorer(cfg: LinkScorerConfig) -> LinkScorer:
    """Instantiate the backend named by ``cfg.name``."""
    return link_scorer_class(cfg.name)(cfg)
