"""OpenVINO on the CPU for the stages: converted models kept in finsta's cache folder, batches run as streams.

Two stages run a network through OpenVINO: ``detect`` (``ssd``,
stages/detectors/ssd_openvino.py) and ``embed_visual`` (``efficientnet_lite0``,
stages/hosts/efficientnet.py). Both convert once and cache the IR
(:func:`cached_model`), and both run a batch as :class:`Streams`: ``threads``
single-threaded OpenVINO streams, the batch split into one slice per stream,
the slices as concurrent infer requests. One thread per request never waits on
another at a layer's end, which on a shared 2-core machine is ~20 % of the CPU
time of one request on two threads (bench/bench_detect.py). Both compute in a
``precision`` option (``detect.ssd.precision``, ``embed_visual.precision``):
``bf16`` by default, run as bf16 only where the CPU lists BF16 among OpenVINO's
optimization capabilities, else f32 (:func:`resolved_precision`).

Every model is read and compiled by the process's one ``ov.Core`` (:func:`core`); see there why.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from schemas.cache import cache_dir

VERSION = "2026.4.1"
INSTALL_HINT = f"pip install openvino=={VERSION}"
PRECISIONS = ("bf16", "f32")       # INFERENCE_PRECISION_HINT values the stages' precision options take


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def core():
    """The process's one ``ov.Core``, made on first use and kept until the process exits.

    Why one: OpenVINO's CPU plugin (one per Core) replaces the alternate signal stack of the thread that
    makes it with one of its own, and when destroyed puts back the one it replaced (SigAltStackSetup in
    openvino's src/plugins/intel_cpu, added for AMX). Two Cores destroyed in the order they were made leave
    that thread on the first plugin's alternate stack, already unmapped; the next signal whose handler runs
    on the alternate stack (every Python-level handler: CPython installs them with SA_ONSTACK; Ctrl-C and
    SIGTERM under pipeline/stop.py, torch's SIGCHLD handler once a DataLoader had workers) cannot be
    delivered, and the kernel kills the process with SIGSEGV, no traceback (faulthandler's handler needs
    that stack too). One Core that lives as long as the process swaps the stack once, to a mapped one.
    """
    import openvino as ov

    return ov.Core()


def cached_model(name: str, convert: Callable[[], object]) -> Path:
    """The IR ``.xml`` of ``name`` for this OpenVINO version, made by ``convert()`` (an ``ov.Model``) once."""
    import openvino as ov

    runtime_version = re.sub(r"[^\w.]+", "_", ov.__version__)     # "2026.4.1-22982-…/2026/4": no slashes in a name
    target = cache_dir() / f"{name}-openvino-{runtime_version}.xml"
    if target.is_file() and target.with_suffix(".bin").is_file():
        return target
    model = convert()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: concurrent workers converting at once never read half a file.
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        xml = Path(work) / target.name
        ov.save_model(model, str(xml), compress_to_fp16=False)
        os.replace(xml.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(xml, target)
    return target


def resolved_precision(requested: str, capabilities: list[str]) -> str:
    """``requested`` where the CPU computes in it (its OpenVINO ``OPTIMIZATION_CAPABILITIES``), else ``"f32"``.

    >>> resolved_precision("bf16", ["FP32", "BF16", "INT8"]), resolved_precision("bf16", ["FP32", "INT8"])
    ('bf16', 'f32')
    """
    return requested if requested == "f32" or requested.upper() in capabilities else "f32"


def cpu_capabilities() -> list[str]:
    """The CPU's OpenVINO ``OPTIMIZATION_CAPABILITIES`` (``FP32``, ``BF16``, ``INT8``, …)."""
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


class Streams:
    """``model`` compiled for the CPU (by :func:`core`) as ``threads`` single-threaded streams (0 = one per
    CPU) in ``precision`` (``INFERENCE_PRECISION_HINT``: ``f32`` or ``bf16``, already resolved for this CPU by
    :func:`resolved_precision`; kept as ``self.precision``).

    Calling it with a batch returns the outputs named by ``outputs`` (tensor
    names; default all), the slices' results concatenated in batch order.
    """

    def __init__(self, model, threads: int, precision: str = "f32"):
        self.streams, self.precision = threads or cpu_count(), precision
        self.compiled = core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": str(self.streams),
            "INFERENCE_NUM_THREADS": str(self.streams)})
        # Plain requests, waited on from this thread: no Python callback runs on OpenVINO's threads (a queue
        # freed from one of them aborts the process).
        self.requests = [self.compiled.create_infer_request() for _ in range(self.streams)]

    def output_shape(self, name: str) -> list[int]:
        """The static dimensions of output ``name`` (-1 where dynamic)."""
        shape = self.compiled.output(name).get_partial_shape()
        return [d.get_length() if d.is_static else -1 for d in shape]

    def __call__(self, batch: np.ndarray, outputs: tuple[str, ...] = ()) -> list[np.ndarray]:
        ports = [self.compiled.output(name) for name in outputs] or list(self.compiled.outputs)
        slices = [part for part in np.array_split(batch, min(self.streams, len(batch))) if len(part)]
        for request, part in zip(self.requests, slices):
            request.start_async({0: part})
        for request in self.requests[:len(slices)]:
            request.wait()
        return [np.concatenate([request.get_tensor(port).data for request in self.requests[:len(slices)]])
                for port in ports]
