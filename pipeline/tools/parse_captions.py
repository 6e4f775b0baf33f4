"""The ``parse-captions`` command: one caption per input line → one graph per output line.

Example::

    run_parse_captions(Path("caps.txt"), parser="spacy", fmt="factual", out=None)   # prints
    tsgs = parse_to_tsgs(["a man sits on a bench"])                                 # in code

Output line *i* is the graph of input line *i* (an empty caption gives an
empty graph: a blank line in ``factual`` format, a TSG with no nodes in
``json``). Captions are parsed through :class:`ParseCaptionsStage`, in chunks,
so the command and the dataset pipeline share one code path.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, Optional, TextIO

from schemas.errors import UserError
from schemas.records import TextSceneGraph
from stages.base import CaptionInput, VideoTask
from stages.captions.base import ParseCaptionsConfig
from stages.captions.factual import to_factual
from stages.captions.io import tsg_to_json
from stages.parse_captions import ParseCaptionsStage

FORMATS = ("factual", "json")
CHUNK = 4096


def parse_to_tsgs(texts: list[str], parser: str = "spacy", stanza_dir: str = "",
                  prefix: str = "line") -> list[TextSceneGraph]:
    """TSGs of ``texts``, in order (``caption_id = f"{prefix}#{i}"``, ``i`` counted from 0)."""
    return list(iter_tsgs(texts, build_stage(parser, stanza_dir), prefix))


def build_stage(parser: str = "spacy", stanza_dir: str = "") -> ParseCaptionsStage:
    if stanza_dir and not Path(stanza_dir).is_dir():
        raise UserError(f"--stanza-dir {stanza_dir}: no such folder")
    stage = ParseCaptionsStage(ParseCaptionsConfig(name=parser, stanza_dir=stanza_dir))
    stage.setup()
    return stage


def iter_tsgs(texts: list[str], stage: ParseCaptionsStage, prefix: str = "line") -> Iterator[TextSceneGraph]:
    for first in range(0, len(texts), CHUNK):
        chunk = texts[first:first + CHUNK]
        # one task per caption, so a rule failure costs one line, not the chunk
        tasks = [VideoTask(f"{prefix}#{first + i}", "text", "", "", captions=[CaptionInput(text)])
                 for i, text in enumerate(chunk)]
        for task, text in zip(stage.process_batch(tasks), chunk):
            if task.failure is None and task.tsgs:
                tsg = task.tsgs[0]
                tsg.caption_id = task.key
                yield tsg
            else:
                yield TextSceneGraph(task.key, text)


def run_parse_captions(file: Path, parser: str = "spacy", fmt: str = "factual", out: Optional[Path] = None,
                       stanza_dir: str = "") -> int:
    """Parse ``file`` and write one graph per line to ``out`` (stdout when None); returns the count."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not file.is_file():
        raise UserError(f"caption file not found: {file}")
    try:
        texts = file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise UserError(f"cannot read {file}: {error}") from error
    stage = build_stage(parser, stanza_dir)
    write = to_factual if fmt == "factual" else tsg_to_json
    handle: TextIO = sys.stdout if out is None else _open_out(out)
    try:
        n = 0
        for tsg in iter_tsgs(texts, stage):
            handle.write(write(tsg) + "\n")
            n += 1
        return n
    finally:
        if out is not None:
            handle.close()


def _open_out(out: Path) -> TextIO:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return out.open("w", encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {out}: {error}") from error
