"""stages/openvino_runtime.py: converted models cached once, batches split across streams, one Core per
process (skipped without OpenVINO)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages import openvino_runtime

ov = pytest.importorskip("openvino")


def _model():
    import openvino.opset13 as ops
    x = ops.parameter([-1, 3], np.float32, name="x")
    weights = ops.constant(np.arange(6, dtype=np.float32).reshape(3, 2))
    return ov.Model([ops.matmul(x, weights, False, False), ops.relu(x)], [x])


def test_a_converted_model_is_made_once_in_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("FINSTA_CACHE", str(tmp_path))
    calls = []
    path = openvino_runtime.cached_model("tiny", lambda: calls.append(1) or _model())
    again = openvino_runtime.cached_model("tiny", lambda: calls.append(1) or _model())
    assert path == again and path.parent == tmp_path and path.with_suffix(".bin").is_file() and calls == [1]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []      # no staging folder left


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_streams_return_the_whole_batch_in_order(threads):
    streams = openvino_runtime.Streams(_model(), threads)
    assert streams.streams == threads
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    product, relu = streams(x)
    assert np.allclose(product, x @ np.arange(6, dtype=np.float32).reshape(3, 2), atol=1e-5)
    assert np.array_equal(relu, np.maximum(x, 0))
    assert streams(x[:1])[0].shape == (1, 2)        # fewer images than streams


REPO = Path(__file__).resolve().parents[2]
# Two models compiled, dropped in the order they were made, then a signal handled in Python (what Ctrl-C under
# pipeline/stop.py, or a child's exit under torch's SIGCHLD handler, is). faulthandler on: as under pytest.
DROP_THEN_SIGNAL = """
import faulthandler, gc, os, signal
import numpy as np, openvino as ov, openvino.opset13 as ops
from stages import openvino_runtime
faulthandler.enable()
x = ops.parameter([-1, 3], np.float32)
first = openvino_runtime.Streams(ov.Model([ops.relu(x)], [x]), 1)
second = openvino_runtime.Streams(ov.Model([ops.relu(x)], [x]), 1)
del first; gc.collect(); del second; gc.collect()
signal.signal(signal.SIGUSR1, lambda *_: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGUSR1)
print("alive", flush=True)
"""


def test_models_dropped_in_the_order_they_were_made_leave_signal_handling_intact():
    """With a Core per model, this process died of SIGSEGV at the signal, without a traceback (the CPU plugin of
    the second Core put back the first one's alternate signal stack, already unmapped: see core()); that is how
    one pytest process running the whole suite died, at a subprocess's exit after a DataLoader test."""
    done = subprocess.run([sys.executable, "-c", DROP_THEN_SIGNAL], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.split() == ["handled", "alive"], (done.returncode, done.stderr)


def test_every_openvino_model_goes_through_the_one_core():
    """No module but stages/openvino_runtime.py makes an ov.Core (the reason: core()'s docstring)."""
    made = [f"{path.relative_to(REPO)}:{n}" for folder in ("schemas", "stages", "pipeline", "finsta_model", "bench",
                                                          "scripts", "tests")
            for path in (REPO / folder).rglob("*.py") if path.name != "openvino_runtime.py"
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"\bCore\(\)", line)]
    assert made == []
    assert openvino_runtime.core() is openvino_runtime.core()
