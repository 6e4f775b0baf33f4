"""Winograd F(4×4, 3×3) for an OpenVINO model's large 3×3 convolutions: the same sums with ~3× fewer multiplies.

In SSD-MobileNet-v2 two class-predictor convolutions (3×3 over the 576- and
1280-channel maps, 273 and 546 outputs) are ~60 % of the multiply-adds of a
300×544 frame, and OpenVINO's CPU plugin runs them as direct convolutions
(oneDNN no longer has Winograd kernels). This module rewrites them, in the
graph, as Lavin & Gray's minimal filtering (arXiv 1509.09308): the input is cut
into 6×6 tiles overlapping by 2, each tile transformed (``Bᵀ d B``), one batched
matrix product per tile position against the transformed filters (``G g Gᵀ``,
computed once here in float64), and the 4×4 outputs transformed back
(``Aᵀ m A``). Per output tile that is 36 products per input channel instead of
144. It is exact arithmetic reordered; in float32 the logits move by ~1e-4
(tests/stages/test_winograd.py bounds it against the direct convolution).

Only convolutions where it pays are rewritten (:func:`pays`): the transforms
cost ``36·36`` per tile and input channel and ``16·36`` per tile and output
channel, so a convolution with few outputs (a box-encoding head) or a map of a
few tiles gains nothing.
"""
from __future__ import annotations

import numpy as np

# F(4, 3): input tile 6, output tile 4 (Lavin & Gray, section 4.2).
TILE_IN, TILE_OUT = 6, 4
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)
MIN_SAVING = 2.0      # rewrite only where the multiply-adds (transforms included) at least halve


def multiply_adds(height: int, width: int, cin: int, cout: int) -> tuple[int, int]:
    """(direct, Winograd incl. transforms) multiply-adds of a 3×3 stride-1 SAME convolution on one image."""
    tiles = -(-height // TILE_OUT) * -(-width // TILE_OUT)
    k = TILE_IN * TILE_IN
    return height * width * 9 * cin * cout, tiles * (k * cin * cout + k * k * cin + TILE_OUT ** 2 * k * cout)


def pays(height: int, width: int, cin: int, cout: int) -> bool:
    direct, winograd = multiply_adds(height, width, cin, cout)
    return winograd * MIN_SAVING <= direct


def _is_3x3_same(conv) -> bool:
    attrs = conv.get_attributes()
    weights = conv.input_value(1)
    shape = weights.get_partial_shape()
    return (weights.get_node().get_type_name() == "Constant" and shape.is_static
            and list(shape.to_shape())[2:] == [3, 3] and list(attrs["strides"]) == [1, 1]
            and list(attrs["dilations"]) == [1, 1] and list(attrs["pads_begin"]) == [1, 1]
            and list(attrs["pads_end"]) == [1, 1] and conv.input_value(0).get_partial_shape()[2:].is_static)


def _const(values, dtype=np.int64):
    import openvino.opset13 as ops
    return ops.constant(np.ascontiguousarray(np.asarray(values, dtype)))


def _replace(conv) -> None:
    """``conv``'s consumers read its Winograd equivalent (batch size may stay dynamic)."""
    import openvino.opset13 as ops

    weights = conv.input_value(1).get_node().get_data().astype(np.float64)     # [Cout, Cin, 3, 3]
    cout, cin = weights.shape[:2]
    height, width = (d.get_length() for d in list(conv.input_value(0).get_partial_shape())[2:])
    rows, cols = -(-height // TILE_OUT), -(-width // TILE_OUT)
    padded_h, padded_w = TILE_OUT * rows + 2, TILE_OUT * cols + 2
    k = TILE_IN * TILE_IN
    # Pad 1 on top/left (SAME), enough on bottom/right for whole tiles; flatten space, channels last.
    x = ops.pad(conv.input_value(0), _const([0, 0, 1, 1]),
                _const([0, 0, padded_h - height - 1, padded_w - width - 1]), "constant")
    x = ops.transpose(ops.reshape(x, _const([-1, cin, padded_h * padded_w]), False), _const([0, 2, 1]))
    # Every tile's 6×6 pixels in one gather: [N, tiles·36, Cin] → [N, tiles, 36, Cin].
    ty, tx, u, v = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(TILE_IN), np.arange(TILE_IN),
                               indexing="ij")
    x = ops.gather(x, _const(((TILE_OUT * ty + u) * padded_w + TILE_OUT * tx + v).reshape(-1)), _const(1))
    x = ops.reshape(x, _const([-1, rows * cols, k, cin]), False)
    x = ops.matmul(_const(np.kron(BT, BT), np.float32), x, False, False)        # Bᵀ d B, flattened
    x = ops.reshape(ops.transpose(x, _const([2, 0, 1, 3])), _const([k, -1, cin]), False)
    filters = np.einsum("ai,oeij,bj->abeo", G, weights, G).reshape(k, cin, cout)   # G g Gᵀ per position
    m = ops.matmul(x, _const(filters, np.float32), False, False)               # [36, N·tiles, Cout]
    y = ops.matmul(_const(np.kron(AT, AT), np.float32), ops.reshape(m, _const([k, -1]), False), False, False)
    y = ops.reshape(y, _const([TILE_OUT, TILE_OUT, -1, rows, cols, cout]), False)
    y = ops.transpose(y, _const([2, 5, 3, 0, 4, 1]))                            # [N, Cout, rows, 4, cols, 4]
    y = ops.reshape(y, _const([-1, cout, TILE_OUT * rows, TILE_OUT * cols]), False)
    y = ops.slice(y, _const([0, 0]), _const([height, width]), _const([1, 1]), _const([2, 3]))
    for target in list(conv.output(0).get_target_inputs()):
        target.replace_source_output(y.output(0))


def rewrite(model) -> int:
    """Replace, in place, every 3×3 stride-1 SAME convolution of ``model`` (static spatial shape) where
    Winograd pays; returns how many were replaced."""
    replaced = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution" or not _is_3x3_same(op):
            continue
        cout, cin = list(op.input_value(1).get_partial_shape().to_shape())[:2]
        height, width = (d.get_length() for d in list(op.input_value(0).get_partial_shape())[2:])
        if pays(height, width, cin, cout):
            _replace(op)
            replaced += 1
    if replaced:
        model.validate_nodes_and_infer_types()
    return replaced
