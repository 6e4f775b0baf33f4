"""Diagnostic for docs/results.md: a fine-grained checkpoint evaluated with every caption's frame window
replaced by the whole video, i.e. without the caption's time stamps (the pooled part is unchanged).

    .venv/bin/python scripts/results_whole_window.py SHARDS RUN > eval-whole-window.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finsta_model.evaluate import evaluate  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(json.dumps(evaluate(sys.argv[1], sys.argv[2], whole_video_windows=True), indent=1))


if __name__ == "__main__":
    main()
