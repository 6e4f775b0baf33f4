"""``clip``: the CLIP family as the host, both sides, through Hugging Face ``transformers``.

For users with internet (once: the weights are cached by the hub) or a local
copy. ``embed_visual.name=clip`` and ``embed_text.name=clip`` pick it; the
``clip`` section of each stage names the model, by name or folder::

    --set embed_visual.name=clip --set embed_text.name=clip                    # ViT-B/32 (openai)
    --set embed_visual.clip.model=ViT-B/16 --set embed_text.clip.model=ViT-B/16
    --set embed_visual.clip.model=/models/clip-vit-base-patch32 ...             # a save_pretrained folder

Features, all in CLIP's projected (joint) space, so text and image sides are
comparable as CLIP trained them:

* frame / crop vector: ``visual_projection(pooler_output)`` (CLIP's image embedding);
* frame cells: every patch token through the vision tower's ``post_layernorm``
  and ``visual_projection`` (FILIP-style), the patch grid (7×7 for ViT-B/32 at
  224 px) average-pooled to ``grid × grid``;
* sentence / node vector: ``text_projection(pooler_output)`` (CLIP's text
  embedding), L2-normalised;
* token states: every token's last hidden state (after the final layer norm)
  through ``text_projection``, start/end-of-text tokens included, with their
  character spans (special tokens ``(0, 0)``).

Images are squashed to the model's square input (as the EfficientNet host
does, nothing at the edges is cropped away) and normalised with CLIP's
mean/std. ``transformers`` is imported lazily; a missing package or weights
give one line with the fix.

Example::

    host = ClipText(EmbedTextConfig(name="clip"))
    host.setup()
    vectors, tokens, spans = host.encode_with_tokens(["a red cube"])   # [1, 512], [[L, 512]], [[L, 2]]
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from schemas.errors import UserError
from stages.hosts.base import pool_grid
from stages.hosts.efficientnet import to_input
from stages.registry import TEXT_HOSTS, VISUAL_HOSTS

# CLIP names → (Hugging Face hub id, projected width, patch-grid side at the model's input size)
CLIP_MODELS = {
    "ViT-B/32": ("openai/clip-vit-base-patch32", 512, 7),
    "ViT-B/16": ("openai/clip-vit-base-patch16", 512, 14),
    "ViT-L/14": ("openai/clip-vit-large-patch14", 768, 16),
}
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32) * 255.0
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32) * 255.0
INSTALL = "pip install transformers"


@dataclass
class ClipOptions:
    """The ``clip`` host's own options (the ``embed_visual.clip`` / ``embed_text.clip`` sections).

    ``model``: a CLIP name (``ViT-B/32``, ``ViT-B/16``, ``ViT-L/14``), a Hugging Face hub id, or a local
    folder written by ``CLIPModel.save_pretrained`` (with its tokenizer files for the text side)."""

    backend_options: ClassVar[bool] = True

    model: str = "ViT-B/32"

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise ValueError(f"clip.model must name a CLIP model ({', '.join(CLIP_MODELS)}) or a folder")


def _source(options: ClipOptions) -> str:
    return CLIP_MODELS[options.model][0] if options.model in CLIP_MODELS else options.model


def clip_dims(options: ClipOptions) -> tuple[int, int]:
    """(projected width, patch-grid side) of ``options.model`` without loading weights."""
    if options.model in CLIP_MODELS:
        _, width, side = CLIP_MODELS[options.model]
        return width, side
    config = Path(options.model) / "config.json"
    if not config.is_file():
        raise UserError(f"clip.model {options.model!r} is neither a known CLIP name ({', '.join(CLIP_MODELS)}) "
                        f"nor a folder with config.json (CLIPModel.save_pretrained)")
    values = json.loads(config.read_text())
    vision = values.get("vision_config", {})
    return int(values.get("projection_dim", 512)), int(vision.get("image_size", 224)) // int(
        vision.get("patch_size", 32))


def _check_installed() -> None:
    import importlib.util
    if importlib.util.find_spec("transformers") is None:
        raise UserError(f"the clip host needs Hugging Face transformers: {INSTALL}")


@functools.lru_cache(maxsize=2)
def load_clip(source: str, device: str, tokenizer: bool):
    """``(CLIPModel in eval mode, tokenizer or None)``, shared by both stages of a worker."""
    _check_installed()
    import torch
    from transformers import AutoTokenizer, CLIPModel

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device 'cpu'")
    try:
        model = CLIPModel.from_pretrained(source).eval().to(device)
        tok = AutoTokenizer.from_pretrained(source) if tokenizer else None
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load CLIP {source!r} ({first}); the first use downloads it from the Hugging Face "
                        f"hub (needs internet), or set clip.model to a local CLIPModel.save_pretrained folder") \
            from None
    return model, tok


@VISUAL_HOSTS.register("clip")
class ClipVisual:
    """CLIP image embeddings and projected patch-token cells (see the module docstring)."""

    summary = "CLIP (ViT-B/32 … by name or folder) via transformers; needs the weights (internet once)"

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = None

    @classmethod
    def feature_dims(cls, cfg) -> dict[str, int]:
        if cfg.cell_block != -1:
            raise UserError(f"embed_visual.cell_block={cfg.cell_block} is an efficientnet_lite0 option; the clip "
                            f"host's cells are its last layer's patch tokens (leave cell_block at -1)")
        width, side = clip_dims(cfg.clip)
        return {"frame": width, "patch": width, "map": side}

    @classmethod
    def preflight(cls, cfg) -> None:
        _check_installed()
        clip_dims(cfg.clip)

    def setup(self) -> None:
        if self.model is None:
            self.model, _ = load_clip(_source(self.cfg.clip), self.cfg.device, False)
            self.size = int(self.model.config.vision_config.image_size)

    def encode(self, images: list[np.ndarray], grid: int = 0) -> tuple[np.ndarray, np.ndarray]:
        import torch

        width = int(self.model.config.projection_dim)
        pooled = np.zeros((len(images), width), np.float32)
        cells = np.zeros((len(images), grid * grid, width), np.float32)
        vision = self.model.vision_model
        step = self.cfg.batch_size
        with torch.inference_mode():
            for first in range(0, len(images), step):
                batch = np.stack([to_input(im, self.size, CLIP_MEAN, CLIP_STD) for im in images[first:first + step]])
                out = vision(pixel_values=torch.from_numpy(batch).to(self.cfg.device))
                pooled[first:first + len(batch)] = self.model.visual_projection(out.pooler_output).float().cpu().numpy()
                if grid:
                    patches = self.model.visual_projection(vision.post_layernorm(out.last_hidden_state[:, 1:]))
                    side = int(round(patches.shape[1] ** 0.5))
                    maps = patches.transpose(1, 2).reshape(len(batch), width, side, side)
                    cells[first:first + len(batch)] = pool_grid(maps, grid).float().cpu().numpy()
        return pooled, cells


@TEXT_HOSTS.register("clip")
class ClipText:
    """CLIP text embeddings and projected token states (see the module docstring)."""

    summary = "CLIP text tower (same model names as the visual side); needs the weights (internet once)"

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = None

    @classmethod
    def feature_dims(cls, cfg) -> dict[str, int]:
        width, _ = clip_dims(cfg.clip)
        return {"sentence": width, "token": width}

    @classmethod
    def preflight(cls, cfg) -> None:
        _check_installed()
        clip_dims(cfg.clip)

    def setup(self) -> None:
        if self.model is None:
            self.model, self.tokenizer = load_clip(_source(self.cfg.clip), self.cfg.device, True)

    def _forward(self, texts: list[str]):
        import torch

        limit = int(self.model.config.text_config.max_position_embeddings)
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit,
                                 return_tensors="pt", return_offsets_mapping=True)
        offsets = encoded.pop("offset_mapping").numpy()
        inputs = {k: v.to(self.cfg.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            out = self.model.text_model(**inputs)
            vectors = torch.nn.functional.normalize(self.model.text_projection(out.pooler_output).float(), dim=-1)
            tokens = self.model.text_projection(out.last_hidden_state).float()
        return vectors.cpu().numpy(), tokens.cpu().numpy(), encoded["attention_mask"].numpy(), offsets

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, int(self.model.config.projection_dim)), np.float32)
        return self._forward(texts)[0]

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        vectors, tokens, mask, offsets = self._forward(texts)
        keep = [mask[i].astype(bool) for i in range(len(texts))]
        spans = []
        for i in range(len(texts)):
            span = offsets[i][keep[i]].astype(np.int64)
            spans.append(np.where((span[:, 1] <= span[:, 0])[:, None], 0, span))
        return vectors, [tokens[i][keep[i]] for i in range(len(texts))], spans
