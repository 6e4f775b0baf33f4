"""Named test doubles for what cannot run here: a CUDA detector, a pixel-reading link scorer, a stage
whose weights are missing inside a worker. Never what a user runs; registered through FINSTA_PLUGINS
(``FINSTA_PLUGINS=tests.pipeline.doubles``) so Ray workers load them too.

* ``gpu_probe_double`` detector: the ``color`` detector, plus it writes which GPUs Ray gave its actor
  to ``$FINSTA_TEST_PROBE_DIR/gpu-<pid>.json`` (it never touches CUDA).
* ``broken_setup_double`` detector: passes preflight, then fails in ``setup()`` as a worker would when
  its weights are missing on that node.
* ``pixel_probe_double`` link scorer: says it reads pixels; writes how many crops each call on a video's tracks got to
  ``$FINSTA_TEST_PROBE_DIR/crops-<pid>.json`` and scores by label like ``minilm`` would (exact match).
* ``poison_double`` detector: the ``color`` detector, except on a clip of :data:`KILL_SIZE` it SIGKILLs
  its own process (as the OOM killer does to a worker) and on one of :data:`HANG_SIZE` it never returns
  (a native sleep, or a Python loop when ``FINSTA_TEST_HANG=python``).
* ``slow_setup_double`` detector: ``setup()`` sleeps ten minutes (a model load that takes its time), after
  writing ``$FINSTA_TEST_PROBE_DIR/setup-<pid>.json`` (so a test knows a worker is inside it).
* ``setup_killer_double`` detector: ``poison_double`` whose second ``setup()`` in a run (counted in
  ``$FINSTA_TEST_PROBE_DIR``) SIGKILLs its process, as the OOM killer takes a replacement worker too.
* ``cluster_probe_double`` detector: ``gpu_probe_double`` that appends its Ray node id to
  ``$FINSTA_TEST_PROBE_DIR/detected-<pid>.txt`` per video and waits while ``$FINSTA_TEST_PROBE_DIR/hold`` exists.
* ``progress_probe_double`` detector: the ``color`` detector that appends a line to
  ``$FINSTA_TEST_PROBE_DIR/detected-<pid>.txt`` per video, so a test can tell how far a run got.
* :class:`HangOnKeyStageDouble` (a whole stage, in :func:`hang_on_key_pool`): returns its batch at once,
  except on the sample keyed :data:`HANG_KEY`, where it writes ``$FINSTA_TEST_PROBE_DIR/hang-<pid>.json``
  and never returns.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from pipeline.plan import Pool
from schemas.errors import UserError
from stages.detectors.color import ColorDetector
from stages.registry import DETECTORS, LINK_SCORERS


def _probe_file(name: str) -> Path | None:
    folder = os.environ.get("FINSTA_TEST_PROBE_DIR")
    return Path(folder) / f"{name}-{os.getpid()}.json" if folder else None


@DETECTORS.register("gpu_probe_double")
class GpuProbeDetectorDouble(ColorDetector):
    summary = "test double: the color detector that reports its Ray GPU ids"

    def setup(self) -> None:
        super().setup()
        import ray

        path = _probe_file("gpu")
        if path is not None and ray.is_initialized():   # in a Ray worker (not a sequential run's process)
            path.write_text(json.dumps({"gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                                        "node": ray.get_runtime_context().get_node_id()}))


@DETECTORS.register("broken_setup_double")
class BrokenSetupDetectorDouble(ColorDetector):
    summary = "test double: fails in setup() as a worker without its weights does"

    def setup(self) -> None:
        raise UserError("weights /models/missing.pth not found on this node: fix --set detect.weights=PATH")


@LINK_SCORERS.register("pixel_probe_double")
class PixelProbeScorerDouble:
    name = "pixel_probe_double"
    needs_pixels = True

    def __init__(self, cfg):
        self.cfg = cfg

    def setup(self) -> None:
        pass

    def similarity(self, phrases, tracks) -> np.ndarray:
        path = _probe_file("crops")
        if path is not None and any(t.track_id >= 0 for t in tracks):   # a video's tracks, not the vocabulary
            seen = json.loads(path.read_text()) if path.exists() else []
            path.write_text(json.dumps(seen + [sum(len(t.crops) for t in tracks)]))
        return np.array([[1.0 if p == t.label else 0.0 for t in tracks] for p in phrases], np.float32).reshape(
            len(phrases), len(tracks))


KILL_SIZE = (96, 64)   # (width, height) of a clip whose worker the poison double kills
HANG_SIZE = (64, 96)   # ... and of one it never returns from


def _size(images) -> tuple[int, int]:
    return (images[0].shape[1], images[0].shape[0]) if images else (0, 0)


@DETECTORS.register("poison_double")
class PoisonDetectorDouble(ColorDetector):
    summary = "test double: the color detector that kills its worker or hangs on clips of two odd sizes"

    def detect(self, images):
        if _size(images) == KILL_SIZE:
            os.kill(os.getpid(), signal.SIGKILL)
        if _size(images) == HANG_SIZE:
            if os.environ.get("FINSTA_TEST_HANG") == "python":
                while True:
                    pass
            time.sleep(3600)
        return super().detect(images)


@DETECTORS.register("slow_setup_double")
class SlowSetupDetectorDouble(ColorDetector):
    summary = "test double: a detector whose setup() takes ten minutes"

    def setup(self) -> None:
        path = _probe_file("setup")
        if path is not None:
            path.write_text("{}")
        time.sleep(600)


@DETECTORS.register("progress_probe_double")
class ProgressProbeDetectorDouble(ColorDetector):
    summary = "test double: the color detector that counts the videos it saw in a probe file"

    def detect(self, images):
        out = super().detect(images)
        folder = os.environ.get("FINSTA_TEST_PROBE_DIR")
        if folder:
            with open(Path(folder) / f"detected-{os.getpid()}.txt", "a") as handle:
                handle.write("x\n")
        return out


@DETECTORS.register("setup_killer_double")
class SetupKillerDetectorDouble(PoisonDetectorDouble):
    summary = "test double: the poison double whose second setup() in a run SIGKILLs its process"

    def setup(self) -> None:
        super().setup()
        folder = Path(os.environ["FINSTA_TEST_PROBE_DIR"])
        count = 1
        while True:   # the how-manieth start this is, across processes: one file per start, created exclusively
            try:
                os.close(os.open(folder / f"setup-{count}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                count += 1
        if count == 2:   # the OOM killer takes the replacement too, while it starts
            os.kill(os.getpid(), signal.SIGKILL)


@DETECTORS.register("cluster_probe_double")
class ClusterProbeDetectorDouble(GpuProbeDetectorDouble):
    summary = "test double: reports its node and GPUs, logs each video to its node, waits while a hold file exists"

    def detect(self, images):
        import ray

        folder = Path(os.environ["FINSTA_TEST_PROBE_DIR"])
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "no-ray"   # sequential: no node
        with open(folder / f"detected-{os.getpid()}.txt", "a") as handle:
            handle.write(node + "\n")
        waited = time.monotonic()
        while (folder / "hold").exists() and time.monotonic() - waited < 600:   # the test moves nodes meanwhile
            time.sleep(0.05)
        return super().detect(images)


HANG_KEY = "stuck"   # the sample the hang-on-key stage double never returns from


class HangOnKeyStageDouble:
    """Test double for a whole stage, quick as a trivial one: returns its batch at once, except that on the
    sample keyed :data:`HANG_KEY` it writes ``$FINSTA_TEST_PROBE_DIR/hang-<pid>.json`` (the wall time it
    started to hang) and never returns."""

    name = "hang_on_key"

    def setup(self) -> None:
        pass

    def process_batch(self, tasks):
        if any(task.key == HANG_KEY for task in tasks):
            path = _probe_file("hang")
            if path is not None:
                path.write_text(json.dumps({"started": time.time()}))
            time.sleep(3600)
        return tasks


def hang_on_key_pool(workers: int, budget_s: float):
    """A planned pool of :class:`HangOnKeyStageDouble` (batch 1): drives the Ray executor without the catalog."""
    from stages.base import Resources

    return HangOnKeyPool(name="hang_on_key", stage_names=["hang_on_key"], sections=[None],
                         resources=Resources(cpus=1.0), batch_size=1, workers=workers, drop_images_after=None,
                         images_leave=False, time_budgets=[budget_s])


class HangOnKeyPool(Pool):
    def build(self):
        return [HangOnKeyStageDouble()]
