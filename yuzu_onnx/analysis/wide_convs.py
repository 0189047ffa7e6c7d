"""Wide convolutions with few output channels (profile heads), which the emitter runs as
one MatMul plus skewed sums (``emit/wide_conv.py``); the planner counts their memory."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..ops import node_attributes, op_spec

MAX_OUT_CHANNELS = 8
MIN_KERNEL = 3
#: input channels per output channel above which the MatMul form pays (any kernel of at least
#: MIN_KERNEL; :data:`LONG_KERNEL` and longer from half as many). Measured on ONNX Runtime's
#: CPU convolution, 2 threads, 40-78 probes of 1000 positions (conv time ÷ MatMul-form time):
#: 32→2 k7 1.38, 32→2 k3 1.74, 64→1 k3 3.87, 16→1 k5 1.45, 64→4 k7 1.00, 64→2 k75 2.49,
#: 32→4 k17 1.29, 64→8 k21 1.16, against 32→8 k7 0.62, 64→8 k9 0.83, 16→4 k5 0.86,
#: 8→2 k7 0.56, 32→8 k25 0.88.
MIN_CHANNEL_RATIO = 16
LONG_KERNEL = 16


def is_wide_conv(node: onnx.NodeProto, shapes, constants) -> bool:
    """A 1-D Conv with constant weights and few output channels for its input channels and
    kernel (:data:`MIN_CHANNEL_RATIO`), where im2col's ``Cin·K`` rows cost more than
    the MatMul form's ``Cout·K``."""
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
        and weight.shape[1] >= weight.shape[0] * MIN_CHANNEL_RATIO // (2 if weight.shape[2] >= LONG_KERNEL else 1)
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
