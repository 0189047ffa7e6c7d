"""Convolutions with few output channels for their inputs as one MatMul plus shifted sums.

Profile heads (BPNet: 64 → 2 channels, kernel 75; the Yuzu paper's ToyNet: 32 → 2, kernel 7)
are slow as ONNX Runtime convolutions: im2col builds a ``Cin·K``-row buffer for a GEMM with
only ``Cout`` rows. Computing ``Z = W2 @ x`` with ``W2`` of shape ``(Cout·K, Cin)`` is one
efficient GEMM; the output is then ``out[o, q] = Σ_k Z[o, k, q + k·dilation]``, read as a
"skewed" view: flattened, padded and reshaped so that row ``k`` starts ``k·dilation`` later,
then summed over ``k``. The convolution's zero padding goes on ``x`` or on ``Z``, whichever
has fewer rows (``Cin`` or ``Cout·K``). The sums are over the same products as the
convolution's, in another order. :func:`~yuzu_onnx.analysis.wide_convs.is_wide_conv` says
where this pays.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..analysis.region import node_attributes
from ..analysis.wide_convs import MAX_OUT_CHANNELS, MIN_KERNEL, is_wide_conv
from .builder import GraphBuilder

__all__ = ["MAX_OUT_CHANNELS", "MIN_KERNEL", "emit_wide_conv", "is_wide_conv"]


def emit_wide_conv(b: GraphBuilder, node: onnx.NodeProto, x: str, out: str, shapes, constants) -> None:
    """Emit ``node`` (original names in ``shapes``) on input ``x`` as MatMul + skewed sums into ``out``."""
    weight = constants[node.input[1]].astype(np.float32)
    cout, cin, k = weight.shape
    attrs = node_attributes(node)
    dilation = int((attrs.get("dilations") or [1])[0])
    stride = int((attrs.get("strides") or [1])[0])
    pads = attrs.get("pads") or [0, 0]
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) == "VALID":
        pads = [0, 0]
    p_in = shapes[node.input[0]][2]
    p_out = shapes[node.output[0]][2]
    p_pad = p_in + int(pads[0]) + int(pads[1])
    w2 = weight.transpose(0, 2, 1).reshape(cout * k, cin)  # row o*K + k
    # the zero padding goes on the input or on the products, whichever has fewer rows
    zero_pad = [0, 0, int(pads[0]), 0, 0, int(pads[1])] if pads[0] or pads[1] else None
    pad_products = cout * k < cin
    if zero_pad and not pad_products:
        x = b.op("Pad", [x, b.ints(zero_pad, "pads")], hint="wide_conv_pad")
    z = b.op("MatMul", [b.const(w2, "wide_conv_weight"), x], hint="wide_conv_products")  # (N, Cout*K, P)
    if zero_pad and pad_products:
        z = b.op("Pad", [z, b.ints(zero_pad, "pads")], hint="wide_conv_pad")
    flat = b.reshape(z, [-1, cout, k * p_pad], hint="wide_conv_flat")
    row = p_pad + dilation
    tail = k * row - k * p_pad
    flat = b.op("Pad", [flat, b.ints([0, 0, 0, 0, 0, tail], "pads")], hint="wide_conv_skew")
    skewed = b.reshape(flat, [-1, cout, k, row], hint="wide_conv_rows")
    span = (p_out - 1) * stride + 1
    summed = b.reduce("ReduceSum", skewed, [2], keepdims=0, hint="wide_conv_sum")  # (N, Cout, row)
    summed = b.slice(summed, [0], [span], [2], hint="wide_conv_window")
    if stride > 1:
        summed = b.op("Slice", [summed, b.ints([0], "s"), b.ints([span], "e"), b.ints([2], "a"), b.ints([stride], "st")],
                      hint="wide_conv_stride")
    if len(node.input) > 2 and node.input[2]:
        bias = constants[node.input[2]].astype(np.float32).reshape(1, cout, 1)
        summed = b.op("Add", [summed, b.const(bias, "wide_conv_bias")], hint="wide_conv_bias")
    b.nodes.append(helper.make_node("Identity", [summed], [out], name=out + "/wide_conv"))
