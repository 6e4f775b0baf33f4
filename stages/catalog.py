"""The stage catalog: every stage of build-sgs, in pipeline order. One line per stage.

Each entry is a :class:`stages.base.Stage` subclass; its ``name`` is its
config section (``--set detect.max_detections=20``) and its file
(``stages/detect.py``), its ``config_class`` that section's dataclass. From
this tuple the pipeline derives the build config's sections
(:mod:`pipeline.config`), the identity hash (the fields not declared
``runtime``), the actor pools and their resources (each stage's
``resources``), and where decoded frames travel (each stage's
``needs``/``uses``); nothing else lists the stages.

Adding a stage (docs/architecture.md, "Adding a stage"): write
``stages/<name>.py`` with its config dataclass and ``Stage`` subclass, its
test ``tests/stages/test_<name>.py``, and one line here.

Example::

    [stage.name for stage in STAGES]   # ['decode', 'detect', 'segment_shots', 'track', ...]
    stage_class("track").config_class  # TrackConfig
"""
from __future__ import annotations

from schemas.errors import UserError
from stages.base import Stage
from stages.decode import DecodeStage
from stages.detect import DetectStage
from stages.embed_text import EmbedTextStage
from stages.embed_visual import EmbedVisualStage
from stages.merge_hsg import MergeHSGStage
from stages.parse_captions import ParseCaptionsStage
from stages.relate import RelateStage
from stages.segment_shots import SegmentShotsStage
from stages.track import TrackStage

STAGES: tuple[type[Stage], ...] = (
    DecodeStage,          # video file → sampled frames
    DetectStage,          # frames → boxes, labels, RoI features
    SegmentShotsStage,    # video → shots (cuts), low-res stream
    TrackStage,           # boxes → tracks, never across a cut
    RelateStage,          # tracks → attributes, relations           (DSG complete)
    EmbedVisualStage,     # frames, boxes → host video features
    ParseCaptionsStage,   # captions → TSGs
    MergeHSGStage,        # DSG + TSGs → HSGs
    EmbedTextStage,       # TSG nodes, captions → host text features
)

# Section names of the previous release, accepted with a warning until the next one.
RENAMED_SECTIONS: dict[str, str] = {
    "detector": "detect", "tracker": "track", "relations": "relate", "visual": "embed_visual",
    "parser": "parse_captions", "text": "embed_text", "merge": "merge_hsg",
}


def stage_class(name: str) -> type[Stage]:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise UserError(f"unknown stage {name!r}; the stages are: {', '.join(s.name for s in STAGES)}")
