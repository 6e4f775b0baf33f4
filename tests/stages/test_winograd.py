"""Winograd F(4,3) rewrite of 3×3 convolutions (stages/detectors/winograd.py) against OpenVINO's direct
convolution (skipped without OpenVINO)."""
import numpy as np
import pytest

from stages import openvino_runtime
from stages.detectors import winograd

ov = pytest.importorskip("openvino")


def _conv_model(cin: int, couts: tuple[int, ...], height: int, width: int, seed: int = 0):
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)
    image = ops.parameter([-1, cin, height, width], np.float32, name="x")
    outputs = []
    for cout in couts:
        weights = ops.constant(rng.normal(0, 0.1, (cout, cin, 3, 3)).astype(np.float32))
        outputs.append(ops.relu(ops.convolution(image, weights, [1, 1], [1, 1], [1, 1], [1, 1])))
    return ov.Model(outputs, [image])


def test_the_rewrite_equals_the_direct_convolution_where_it_pays():
    # 10 × 13: neither side a multiple of the 4-pixel output tile (padding and the final slice are exercised).
    cin, couts, height, width = 128, (256, 8), 10, 13
    assert winograd.pays(height, width, cin, 256) and not winograd.pays(height, width, cin, 8)
    direct, rewritten = _conv_model(cin, couts, height, width), _conv_model(cin, couts, height, width)
    assert winograd.rewrite(rewritten) == 1           # the 8-output convolution stays direct
    assert winograd.rewrite(_conv_model(cin, couts, height, 2)) == 0   # a map narrower than one tile: no gain
    core = openvino_runtime.core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    x = np.random.default_rng(1).normal(0, 1, (2, cin, height, width)).astype(np.float32)   # batch left dynamic
    want = core.compile_model(direct, "CPU", config)(x)
    got = core.compile_model(rewritten, "CPU", config)(x)
    for k in range(len(couts)):
        assert got[k].shape == want[k].shape == (2, couts[k], height, width)
        assert np.abs(got[k] - want[k]).max() <= 1e-4 * max(1.0, np.abs(want[k]).max())


def test_the_ssd_class_heads_are_what_pays():
    """At 300 × 544 the two big class-predictor convolutions are rewritten; box heads and small maps are not."""
    assert winograd.pays(19, 34, 576, 273) and winograd.pays(10, 17, 1280, 546)
    assert not winograd.pays(10, 17, 1280, 24) and not winograd.pays(5, 9, 512, 546)
    direct, ours = winograd.multiply_adds(10, 17, 1280, 546)
    assert direct == 10 * 17 * 9 * 1280 * 546 and 2.5 < direct / ours < 3
