"""finsta's cache folder: ``$FINSTA_CACHE``, else ``~/.cache/finsta``.

Generated sample data (pipeline/datasets/synthetic.py) and converted models
(stages/detectors/ssd_openvino.py) live there; everything in it can be rebuilt.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "FINSTA_CACHE"


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "finsta")
