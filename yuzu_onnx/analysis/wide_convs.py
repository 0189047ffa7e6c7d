"""Wide convolutions with few output channels (profile heads), which the emitter runs as
one MatMul plus skewed sums (``emit/wide_conv.py``); the planner counts their memory."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..ops import node_attributes, op_spec

MAX_OUT_CHANNELS = 8
MIN_KERNEL = 16


def is_wide_conv(node: onnx.NodeProto, shapes, constants) -> bool:
    """A 1-D Conv with constant weights, few output channels and a long kernel."""
    if not op_spec(node.op_type).convolution or node.input[1] not in constants:
        return False
    weight = constants[node.input[1]]
    attrs = node_attributes(node)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return (
        weight.dtype == np.float32  # the MatMul form is emitted in float32
        and weight.ndim == 3
        and weight.shape[0] <= MAX_OUT_CHANNELS
        and weight.shape[2] >= MIN_KERNEL
        and attrs.get("group", 1) == 1
        and auto_pad in ("NOTSET", "VALID")
        and node.input[0] in shapes
        and node.output[0] in shapes
    )


def wide_conv_bytes(node: onnx.NodeProto, shapes, constants: Mapping[str, np.ndarray]) -> int:
    """Bytes per sequence (or probe) of the MatMul form's live tensors: the products
    ``(Cout·K, P)`` and their skewed copy, plus the input."""
    weight = constants[node.input[1]]
    cout, cin, k = weight.shape
    length = shapes[node.input[0]][2]
    return 4 * (2 * cout * k * (length + k) + cin * length)
