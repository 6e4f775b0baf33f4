"""The caption-parsing stage: ``task.captions`` → ``task.tsgs``, batched.

One ``parser.parse`` call (one ``nlp.pipe`` for spaCy) covers every caption of
every live task in the batch; the rules then run per caption. Then, with
``hard_negatives`` > 0, each real caption of a task that brings no negatives
of its own (the synthetic world does) gets up to that many hard negatives made
from its TSG (:mod:`stages.captions.negatives`), appended to ``task.captions``
like the synthetic ones (``negative_of`` = the caption's index, its times) and
parsed in one more call. A caption whose
rules fail gets an empty TSG only if the failure is local to it: the error is
re-raised as the task's failure (``SampleError("caption_parse", …)``), so no
half-filled task goes on.

Example::

    stage = ParseCaptionsStage(ParseCaptionsConfig(name="spacy"))
    stage.setup()
    [task] = stage.process_batch([VideoTask("v1", "manifest", "v1", "v1.mp4",
                                            captions=[CaptionInput("a dog runs", 0.0, 2.5)])])
    task.tsgs[0].caption_id   # 'v1#0'
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional

from schemas.errors import SampleError
from schemas.records import TextSceneGraph
from stages.base import CaptionInput, Resources, Stage, VideoTask
from stages.captions.base import CaptionParser, ParseCaptionsConfig, build_caption_parser, caption_parser_class
from stages.captions.negatives import make_negatives
from stages.predicate_prior import PredicatePrior
from stages.captions.rules import build_tsg


class ParseCaptionsStage(Stage):
    """Fills ``task.tsgs[i]`` for ``task.captions[i]`` (``caption_id = f"{key}#{i}"``, times copied)."""

    name = "parse_captions"
    config_class = ParseCaptionsConfig
    needs = ("captions",)
    produces = ("tsgs",)

    def __init__(self, cfg: Optional[ParseCaptionsConfig] = None):
        super().__init__(cfg)
        self.parser: Optional[CaptionParser] = None
        self.prior: Optional[PredicatePrior] = None

    @property
    def batch_size(self) -> int:
        return self.cfg.tasks_per_batch

    @property
    def resources(self) -> Resources:
        return Resources(cpus=1.0, gpus=1.0 if self.cfg.use_gpu else 0.0)

    def preflight(self) -> None:
        check = getattr(caption_parser_class(self.cfg.name), "preflight", None)
        if check is not None:
            check(self.cfg)

    def setup(self) -> None:
        self.parser = build_caption_parser(self.cfg)
        self.parser.setup()
        if self.cfg.hard_negatives > 0:
            self.prior = PredicatePrior.load()

    def process_one(self, task: VideoTask) -> VideoTask:
        return self.process_batch([task])[0]

    def process_batch(self, tasks: list[VideoTask]) -> list[VideoTask]:
        self._parse_batch(tasks)
        if self.cfg.hard_negatives > 0:
            self._add_negatives([t for t in tasks if t.failure is None and t.tsgs
                                 and all(c.negative_of is None for c in t.captions)])
        return tasks

    def _add_negatives(self, tasks: list[VideoTask]) -> None:
        """Each real caption's hard negatives appended to its task, with their TSGs (one parse call)."""
        made: list[VideoTask] = []
        for task in tasks:
            begun = time.perf_counter()
            negatives = [CaptionInput(text, caption.start, caption.end, negative_of=i, negative_type=kind)
                         for i, (caption, tsg) in enumerate(zip(task.captions, task.tsgs))
                         for text, kind in make_negatives(caption.text or "", tsg, self.prior,
                                                          self.cfg.hard_negatives, offset=i)]
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + time.perf_counter() - begun
            if negatives:
                task.counts["hard_negatives_made"] = len(negatives)
                made.append(VideoTask(task.key, task.source, task.video_id, task.video_path, captions=negatives))
        self._parse_batch(made)
        owners = [t for t in tasks if t.counts.get("hard_negatives_made")]
        for task, extra in zip(owners, made):
            if extra.failure is not None:
                task.fail(self.name, SampleError("caption_parse", extra.failure.message))
                continue
            first = len(task.captions)   # the negatives' ids continue the task's own
            task.tsgs = list(task.tsgs) + [replace(tsg, caption_id=f"{task.key}#{first + j}")
                                           for j, tsg in enumerate(extra.tsgs)]
            task.captions = list(task.captions) + extra.captions
            for name, seconds in extra.stage_seconds.items():
                task.stage_seconds[name] = task.stage_seconds.get(name, 0.0) + seconds

    def _parse_batch(self, tasks: list[VideoTask]) -> list[VideoTask]:
        """``task.tsgs`` for every live task's captions."""
        live = self.check_inputs(tasks)
        texts = [caption.text or "" for task in live for caption in task.captions]
        for task in live:   # the parser sees the first max_chars characters (stages/captions/base.py clip())
            clipped = sum(len(caption.text or "") > self.cfg.max_chars for caption in task.captions)
            if clipped:
                task.counts["captions_clipped_for_parsing"] = clipped
        if hasattr(self.parser, "parse_graphs"):
            return self._graphs_batch(tasks, live, texts)
        started = time.perf_counter()
        try:
            docs = self.parser.parse(texts)
        except Exception as error:  # the parser itself broke: every task of the batch fails
            for task in live:
                task.fail(self.name, SampleError("caption_parse", f"{type(error).__name__}: {error}"))
            return tasks
        per_caption = (time.perf_counter() - started) / max(1, len(texts))
        at = 0
        for task in live:
            begun = time.perf_counter()
            docs_of_task = docs[at:at + len(task.captions)]
            at += len(task.captions)
            try:
                task.tsgs = [
                    build_tsg(doc, f"{task.key}#{i}", caption.text or "", caption.start, caption.end)
                    for i, (caption, doc) in enumerate(zip(task.captions, docs_of_task))]
            except Exception as error:  # a rule bug on one caption fails its task, not the batch
                task.tsgs = []
                task.fail(self.name, SampleError("caption_parse", f"{type(error).__name__}: {error}"))
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + (
                time.perf_counter() - begun + per_caption * len(task.captions))
        return tasks


    def _graphs_batch(self, tasks: list[VideoTask], live: list[VideoTask], texts: list[str]) -> list[VideoTask]:
        """A backend that gives TSGs itself (``learned``): one call for the batch, no rules."""
        ids = [f"{task.key}#{i}" for task in live for i in range(len(task.captions))]
        starts = [c.start for task in live for c in task.captions]
        ends = [c.end for task in live for c in task.captions]
        started = time.perf_counter()
        try:
            graphs = self.parser.parse_graphs(texts, ids, starts, ends)
        except Exception as error:
            for task in live:
                task.fail(self.name, SampleError("caption_parse", f"{type(error).__name__}: {error}"))
            return tasks
        per_caption = (time.perf_counter() - started) / max(1, len(texts))
        at = 0
        for task in live:
            task.tsgs = graphs[at:at + len(task.captions)]
            at += len(task.captions)
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + per_caption * len(task.captions)
        return tasks


def parse_texts(parser: CaptionParser, texts: list[str], prefix: str = "caption") -> list[TextSceneGraph]:
    """Parse bare caption strings (no task): ``caption_id = f"{prefix}#{i}"``."""
    if hasattr(parser, "parse_graphs"):
        return parser.parse_graphs(texts, [f"{prefix}#{i}" for i in range(len(texts))])
    return [build_tsg(doc, f"{prefix}#{i}", text) for i, (text, doc) in enumerate(zip(texts, parser.parse(texts)))]
