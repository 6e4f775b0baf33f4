"""Cross-modal link scorers: one file per backend, picked by name from config.

Importing this package registers every backend in
:data:`stages.registry.LINK_SCORERS`; see :mod:`stages.linking.base` for the
contract.
"""
from stages.linking import minilm  # noqa: F401  (registers "minilm")
from stages.linking.base import (LinkScorer, LinkScorerConfig, TrackEvidence, build_link_scorer, link_scorer_class,
                                 normalize_label)

__all__ = ["LinkScorer", "LinkScorerConfig", "TrackEvidence", "build_link_scorer", "link_scorer_class",
           "normalize_label"]
