"""Caption-parsing throughput: ParseCaptionsStage vs bare ``nlp.pipe``; prints ONE JSON object.

    .venv/bin/python bench/bench_captions.py [--n 10000] [--per-task 5] [--repeats 2]

Both sides parse the same ``--n`` captions (the first ones of FACTUAL-MR's
training csv when ``../shared`` is there, else generated ones) with the same
loaded spaCy pipeline in one process (one core), best of ``--repeats`` runs,
interleaved:

* ``reference``: ``for doc in nlp.pipe(captions, batch_size=256): pass``;
* ``stage``: ``ParseCaptionsStage.process_batch`` on tasks of ``--per-task``
  captions, 256 tasks per batch: text preparation, the same ``nlp.pipe``, the
  conversion to the common form and the rules, TSGs filled in.

With ``--parser learned`` the stage runs the learned backend instead and the
reference is the bare frozen MiniLM forward it starts from (the same batches
and threads); ``ratio`` is then what the BiLSTM, heads and decoding cost.

``ratio`` = stage captions/s ÷ reference captions/s (target ≥ 0.9 for spaCy);
``cpu_ratio`` is the same on process CPU time, steadier on a shared machine.
The stage skips the pipeline's ``attribute_ruler`` and ``lemmatizer`` (it
looks their results up per distinct word instead); ``cpu_ratio_vs_trimmed``
compares it with a bare ``nlp.pipe`` that skips them too, i.e. the cost of
preparation, conversion and rules alone.
Captions/s per core equals captions/s here: both run in one process.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.base import CaptionInput, VideoTask  # noqa: E402
from stages.captions import ParseCaptionsConfig  # noqa: E402
from stages.parse_captions import ParseCaptionsStage  # noqa: E402

TRAIN = Path(os.environ.get("FINSTA_SHARED", ROOT / ".." / "shared")) / "data" / "factual" / "factual_mr_train.csv"


def load_captions(n: int) -> tuple[list[str], str]:
    if TRAIN.exists():
        with TRAIN.open(newline="", encoding="utf-8") as handle:
            captions = [row["caption"] for row, _ in zip(csv.DictReader(handle), range(n))]
        return captions, str(TRAIN.name)
    rng = random.Random(0)
    subjects = ["a man", "two dogs", "the woman", "a red car", "three children", "a black cat", "the player"]
    verbs = ["sits on", "runs across", "holds", "is next to", "walks quickly along", "looks at", "rides"]
    objects = ["a wooden bench", "the green grass", "a tennis racket", "the busy street", "a large table"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}" for _ in range(n)], "generated"


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--parser", default="spacy", help="spacy | learned")
    args = ap.parse_args()

    captions, source = load_captions(args.n)
    if args.parser == "learned":
        return bench_learned(captions, source, args)
    stage = ParseCaptionsStage(ParseCaptionsConfig(name="spacy", batch_size=256, tasks_per_batch=256))
    stage.setup()
    nlp = stage.parser.nlp

    def reference() -> None:
        for _ in nlp.pipe(captions, batch_size=256):
            pass

    def reference_trimmed() -> None:
        for _ in nlp.pipe(captions, batch_size=256, disable=stage.parser.skipped):
            pass

    def ours() -> None:
        tasks = [VideoTask(f"t{i}", "bench", f"t{i}", "", captions=[CaptionInput(c) for c in captions[i:i + args.per_task]])
                 for i in range(0, len(captions), args.per_task)]
        for first in range(0, len(tasks), stage.batch_size):
            stage.process_batch(tasks[first:first + stage.batch_size])
        assert all(t.failure is None and len(t.tsgs) == len(t.captions) for t in tasks)

    reference()  # warm-up (first batches allocate)
    ref, stg, trim = [], [], []
    for _ in range(args.repeats):
        ref.append(timed(reference))
        stg.append(timed(ours))
        trim.append(timed(reference_trimmed))
    ref_wall, ref_cpu = min(r[0] for r in ref), min(r[1] for r in ref)
    stg_wall, stg_cpu = min(s[0] for s in stg), min(s[1] for s in stg)
    n = len(captions)
    print(json.dumps({
        "benchmark": "caption_parsing", "captions": n, "source": source, "backend": "spacy",
        "model": nlp.meta.get("name", "") + "-" + nlp.meta.get("version", ""), "pipeline": nlp.pipe_names,
        "stage_captions_per_s": round(n / stg_wall, 1), "reference_captions_per_s": round(n / ref_wall, 1),
        "ratio": round(ref_wall / stg_wall, 3), "cpu_ratio": round(ref_cpu / stg_cpu, 3),
        "stage_captions_per_s_per_core": round(n / stg_cpu, 1),
        "reference_captions_per_s_per_core": round(n / ref_cpu, 1),
        "trimmed_reference_captions_per_s_per_core": round(n / min(t[1] for t in trim), 1),
        "cpu_ratio_vs_trimmed": round(min(t[1] for t in trim) / stg_cpu, 3),
        "stage_skips": stage.parser.skipped,
        "processes": 1, "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "target_ratio": 0.9,
    }))


def bench_learned(captions: list[str], source: str, args) -> None:
    """The learned backend through the stage vs its bare MiniLM forward, on CPU."""
    stage = ParseCaptionsStage(ParseCaptionsConfig(name="learned", batch_size=64, tasks_per_batch=256))
    stage.setup()
    encoder = stage.parser.encoder

    def reference() -> None:
        for first in range(0, len(captions), 64):
            encoder.encode(captions[first:first + 64])

    def ours() -> None:
        tasks = [VideoTask(f"t{i}", "bench", f"t{i}", "", captions=[CaptionInput(c) for c in captions[i:i + args.per_task]])
                 for i in range(0, len(captions), args.per_task)]
        for first in range(0, len(tasks), stage.batch_size):
            stage.process_batch(tasks[first:first + stage.batch_size])
        assert all(t.failure is None and len(t.tsgs) == len(t.captions) for t in tasks)

    reference()
    ref, stg = [], []
    for _ in range(args.repeats):
        ref.append(timed(reference))
        stg.append(timed(ours))
    n = len(captions)
    ref_wall, stg_wall = min(r[0] for r in ref), min(s[0] for s in stg)
    ref_cpu, stg_cpu = min(r[1] for r in ref), min(s[1] for s in stg)
    import torch
    print(json.dumps({
        "benchmark": "caption_parsing", "captions": n, "source": source, "backend": "learned", "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "stage_captions_per_s": round(n / stg_wall, 1), "reference_captions_per_s": round(n / ref_wall, 1),
        "reference": "bare MiniLM word states", "ratio": round(ref_wall / stg_wall, 3),
        "cpu_ratio": round(ref_cpu / stg_cpu, 3), "stage_captions_per_s_per_cpu_second": round(n / stg_cpu, 1),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
