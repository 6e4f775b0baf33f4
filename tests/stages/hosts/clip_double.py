"""``tiny_clip_double``: a test double for the CLIP weights (they cannot be downloaded here).

A randomly initialised one-layer CLIP (Hugging Face ``CLIPModel``, 16-d towers,
12-d projection, 32-px images in 8-px patches → a 4×4 patch grid) and a
letter-level CLIP BPE tokenizer, written with ``save_pretrained`` into a
folder. The real ``clip`` host backend loads it exactly as it loads a real
checkpoint folder (``--set embed_visual.clip.model=FOLDER``); only the weights
are fake. Never what a user runs.
"""
from __future__ import annotations

import string
from pathlib import Path

PROJECTION = 12
GRID = 4          # 32 px / 8 px patches


def tiny_clip_double(folder: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,'":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=PROJECTION)
    torch.manual_seed(0)
    model = CLIPModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
