"""stages/openvino_runtime.py: converted models cached once, batches split across streams (skipped without
OpenVINO)."""
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
    streams = openvino_runtime.Streams(ov.Core(), _model(), threads)
    assert streams.streams == threads
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    product, relu = streams(x)
    assert np.allclose(product, x @ np.arange(6, dtype=np.float32).reshape(3, 2), atol=1e-5)
    assert np.array_equal(relu, np.maximum(x, 0))
    assert streams(x[:1])[0].shape == (1, 2)        # fewer images than streams
