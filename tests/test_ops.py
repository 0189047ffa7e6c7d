"""Every registered locality rule checked against brute force.

Each case builds a small model ``one-hot → Conv → [ops under test] → Conv → y`` with the
ops under test *inside* the local region, converts it with the default (spaced) probes and
compares the rewrite with the naive oracle (:func:`yuzu_onnx.testing.exactness.check_exactness`,
tolerance ``1e-5 × scale`` per output) on two sequences, one with all-zero (N) columns:
over the whole sequence, over a window (which crops every stage), and inside a deeper model
whose plan re-packs the ops' tensors between probe stages. A case first asserts that every
node of its ops sits in the region the conversion used, otherwise the comparison proves
nothing. Cases marked ``stop=`` check the other side of a rule: that op must end the region
(the rewrite stays exact through the fallback tail). :func:`test_every_registered_op_has_a_case`
fails for a registered op that no case puts inside the region.

Ops producing integers or booleans are turned back into floats (``Cast`` / ``Where``), so
every model has one float output. ``t`` below is the trunk tensor ``(N, C, L)``; ``u`` a
second local branch of the same shape with another receptive field.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from yuzu_onnx import YuzuWarning, load_model
from yuzu_onnx.analysis.region import analyse_region
from yuzu_onnx.ops import supported_ops
from yuzu_onnx.testing.exactness import check_exactness
from yuzu_onnx.testing.model_builders import _Graph
from yuzu_onnx.testing.random_models import random_batch

L = 32  # sequence length
C = 4  # channels of the trunk tensor


@dataclass(frozen=True)
class Case:
    """One model around the ops under test.

    Attributes
    ----------
    id: the test id.
    ops: op types whose every node (built by ``body``) must lie inside the local region.
    body: ``body(g, t, u) -> (tensor, channels)``: builds the ops on the trunk tensor ``t``
        and the second branch ``u`` (both ``(N, C, L)``); returns an ``(N, channels, L')``
        float tensor for the closing convolution.
    opset: the model's default-domain opset.
    layout: the model's input layout.
    stop: an op type whose nodes (built by ``body``) must end the region instead.
    """

    id: str
    ops: tuple[str, ...]
    body: Callable[[_Graph, str, str], tuple[str, int]]
    opset: int = 17
    layout: str = "ncl"
    stop: str | None = None


# -- small graph idioms ------------------------------------------------------------------


def scalar(g: _Graph, value: float, dtype=np.float32) -> str:
    return g.const(np.asarray(value, dtype=dtype), "scalar", dtype)


def positive(g: _Graph, t: str) -> str:
    """``|t| + 0.5``: an input for Log, Sqrt, Reciprocal..."""
    return g.op("Add", [g.op("Abs", [t]), scalar(g, 0.5)])


def to_float(g: _Graph, t: str) -> str:
    return g.op("Cast", [t], to=TensorProto.FLOAT)


def unsqueeze(g: _Graph, t: str, axes: list[int]) -> str:
    if g.opset >= 13:
        return g.op("Unsqueeze", [t, g.ints(axes, "axes")])
    return g.op("Unsqueeze", [t], axes=axes)


def transposed(g: _Graph, t: str) -> str:
    """``(N, C, L)`` ↔ ``(N, L, C)``."""
    return g.op("Transpose", [t], perm=[0, 2, 1])


def reduce(g: _Graph, op_type: str, t: str, axes: list[int], keepdims: int) -> str:
    """``Reduce*`` with axes as attribute (before opset 18; ReduceSum before 13) or input."""
    if g.opset >= 18 or (op_type == "ReduceSum" and g.opset >= 13):
        return g.op(op_type, [t, g.ints(axes, "axes")], keepdims=keepdims)
    return g.op(op_type, [t], axes=axes, keepdims=keepdims)


def gated(g: _Graph, cond: str, t: str) -> tuple[str, int]:
    """``Where(cond, t, 0)``: a boolean back to a float tensor."""
    return g.op("Where", [cond, t, scalar(g, 0.0)]), C


# -- the cases -----------------------------------------------------------------------------

UNARY = {  # op: (attributes, opset, input transform)
    "Relu": ({}, 17, None),
    "LeakyRelu": ({"alpha": 0.2}, 17, None),
    "Sigmoid": ({}, 17, None),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, 17, None),
    "Tanh": ({}, 17, None),
    "Softplus": ({}, 17, None),
    "Softsign": ({}, 17, None),
    "Exp": ({}, 17, None),
    "Log": ({}, 17, positive),
    "Gelu": ({}, 20, None),
    "Erf": ({}, 17, None),
    "Sqrt": ({}, 17, positive),
    "Abs": ({}, 17, None),
    "Neg": ({}, 17, None),
    "Identity": ({}, 17, None),
    "Elu": ({"alpha": 0.7}, 17, None),
    "Selu": ({}, 17, None),
    "Celu": ({"alpha": 1.5}, 17, None),
    "Mish": ({}, 18, None),
    "HardSwish": ({}, 17, None),
    "Reciprocal": ({}, 17, positive),
    "Floor": ({}, 17, lambda g, t: g.op("Mul", [t, scalar(g, 3.0)])),
    "Ceil": ({}, 17, lambda g, t: g.op("Mul", [t, scalar(g, 3.0)])),
    "Round": ({}, 17, lambda g, t: g.op("Mul", [t, scalar(g, 3.0)])),
    "Sign": ({}, 17, None),
    "Sin": ({}, 17, None),
    "Cos": ({}, 17, None),
    "ThresholdedRelu": ({"alpha": 0.3}, 17, None),
    "Shrink": ({"lambd": 0.4, "bias": 0.1}, 17, None),
    "Swish": ({"alpha": 1.5}, 24, None),
}


def unary_case(op: str) -> Case:
    attrs, opset, prepare = UNARY[op]

    def body(g, t, u):
        return g.op(op, [prepare(g, t) if prepare else t], **attrs), C

    return Case(op, (op,), body, opset=opset)


CASES: list[Case] = [unary_case(op) for op in UNARY]

CASES += [
    Case("Gelu-tanh", ("Gelu",), lambda g, t, u: (g.op("Gelu", [t], approximate="tanh"), C), opset=20),
    # PRelu: constant slopes (per channel, scalar) and a data slope (another local branch,
    # also broadcast over the channels)
    Case("PRelu-constant-slope", ("PRelu",),
         lambda g, t, u: (g.op("PRelu", [t, g.const(0.25 * g.rng.standard_normal((C, 1)), "slope")]), C)),
    Case("PRelu-scalar-slope", ("PRelu",), lambda g, t, u: (g.op("PRelu", [t, scalar(g, 0.1)]), C)),
    Case("PRelu-data-slope", ("PRelu",), lambda g, t, u: (g.op("PRelu", [t, u]), C)),
    Case("PRelu-data-slope-broadcast", ("PRelu", "ReduceMean"),
         lambda g, t, u: (g.op("PRelu", [t, reduce(g, "ReduceMean", u, [1], 1)]), C)),
    # Clip with min and max inputs, with max only, at opset 11
    Case("Clip-min-max", ("Clip",), lambda g, t, u: (g.op("Clip", [t, scalar(g, -0.5), scalar(g, 0.7)]), C)),
    Case("Clip-max-only", ("Clip",), lambda g, t, u: (g.op("Clip", [t, "", scalar(g, 0.3)]), C)),
    Case("Clip-opset11", ("Clip",), lambda g, t, u: (g.op("Clip", [t, scalar(g, -0.2), scalar(g, 0.2)]), C),
         opset=11),
    # Dropout at inference: one output; ratio, training_mode and the mask output
    Case("Dropout", ("Dropout",), lambda g, t, u: (g.op("Dropout", [t]), C)),
    Case("Dropout-mask", ("Dropout", "Where"), lambda g, t, u: dropout_mask(g, t, u)),
    # Casts: through integers, half precision and booleans
    Case("Cast-int32", ("Cast",),
         lambda g, t, u: (to_float(g, g.op("Cast", [g.op("Mul", [t, scalar(g, 4.0)])], to=TensorProto.INT32)), C)),
    Case("Cast-float16", ("Cast",), lambda g, t, u: (to_float(g, g.op("Cast", [t], to=TensorProto.FLOAT16)), C)),
    Case("Cast-float16-MaxPool", ("Cast", "MaxPool", "Round"),
         lambda g, t, u: (to_float(g, g.op("MaxPool", [half(g, t)], kernel_shape=[5], pads=[2, 2])), C)),
    Case("Cast-int64-shifted-crops", ("Cast", "Slice", "Add"), lambda g, t, u: shifted_crops(g, t, TensorProto.INT64)),
    Case("Cast-int16-shifted-crops", ("Cast", "Slice", "Concat"),
         lambda g, t, u: shifted_crops(g, t, TensorProto.INT16)),
    Case("Cast-bool", ("Cast", "Where"),
         lambda g, t, u: gated(g, g.op("Cast", [g.op("Floor", [t])], to=TensorProto.BOOL), u)),
    Case("CastLike", ("CastLike", "Cast"),
         lambda g, t, u: (to_float(g, g.op("CastLike", [g.op("Mul", [t, scalar(g, 4.0)]),
                                                        g.const(np.zeros(1), "like", np.int64)])), C)),
    Case("Not", ("Not", "Greater", "Cast"), lambda g, t, u: (to_float(g, g.op("Not", [g.op("Greater", [t, u])])), C)),
    Case("IsNaN", ("IsNaN", "Sqrt", "Where"), lambda g, t, u: is_nan(g, t)),
    Case("IsInf", ("IsInf", "Reciprocal", "Cast"),
         lambda g, t, u: (to_float(g, g.op("IsInf", [g.op("Reciprocal", [g.op("Relu", [t])])])), C)),
    Case("IsInf-positive-only", ("IsInf", "Cast"),
         lambda g, t, u: (to_float(g, g.op("IsInf", [g.op("Reciprocal", [g.op("Relu", [t])])],
                                           detect_negative=0)), C)),
    # broadcasting: rank-1 (along the length), rank-2, rank-3 constants, scalars, two branches
    Case("Add-rank1-constant", ("Add",), lambda g, t, u: (g.op("Add", [t, g.const(g.rng.standard_normal(L), "pos")]), C)),
    Case("Add-rank2-constant", ("Add",),
         lambda g, t, u: (g.op("Add", [g.const(g.rng.standard_normal((C, 1)), "bias"), t]), C)),
    Case("Add-rank3-constant", ("Add",),
         lambda g, t, u: (g.op("Add", [t, g.const(g.rng.standard_normal((1, C, L)), "pos")]), C)),
    Case("Add-scalar", ("Add",), lambda g, t, u: (g.op("Add", [t, scalar(g, 0.3)]), C)),
    Case("Add-two-branches", ("Add",), lambda g, t, u: (g.op("Add", [t, u]), C)),
    Case("Add-two-shifted-crops", ("Add", "Slice"),
         lambda g, t, u: (g.op("Add", [g.op("Slice", [t, g.ints([0]), g.ints([L - 5]), g.ints([-1])]),
                                       g.op("Slice", [u, g.ints([5]), g.ints([L]), g.ints([2])])]), C)),
    Case("Add-branch-broadcast-over-channels", ("Add", "ReduceMax"),
         lambda g, t, u: (g.op("Add", [reduce(g, "ReduceMax", u, [1], 1), t]), C)),
    Case("Sub-constant-left", ("Sub",), lambda g, t, u: (g.op("Sub", [g.const(g.rng.standard_normal((C, 1)), "c"), t]), C)),
    Case("Sub-two-branches", ("Sub",), lambda g, t, u: (g.op("Sub", [t, u]), C)),
    Case("Mul-two-branches", ("Mul", "Sigmoid"), lambda g, t, u: (g.op("Mul", [t, g.op("Sigmoid", [u])]), C)),
    Case("Mul-rank1-constant", ("Mul",), lambda g, t, u: (g.op("Mul", [g.const(g.rng.standard_normal(L), "pos"), t]), C)),
    Case("Div-two-branches", ("Div",), lambda g, t, u: (g.op("Div", [t, positive(g, u)]), C)),
    Case("Div-constant-numerator", ("Div",), lambda g, t, u: (g.op("Div", [scalar(g, 2.0), positive(g, t)]), C)),
    Case("Pow-constant-exponent", ("Pow",), lambda g, t, u: (g.op("Pow", [positive(g, t), scalar(g, 1.5)]), C)),
    Case("Pow-integer-exponent", ("Pow",), lambda g, t, u: (g.op("Pow", [t, g.const(np.int64(3), "e", np.int64)]), C)),
    Case("Pow-local-exponent", ("Pow",), lambda g, t, u: (g.op("Pow", [scalar(g, 2.0), t]), C)),
    Case("Pow-two-branches", ("Pow",), lambda g, t, u: (g.op("Pow", [positive(g, t), g.op("Tanh", [u])]), C)),
    Case("Max-three-inputs", ("Max",), lambda g, t, u: (g.op("Max", [t, u, g.const(g.rng.standard_normal((C, 1)), "c")]), C)),
    Case("Min-three-inputs", ("Min",), lambda g, t, u: (g.op("Min", [g.const(g.rng.standard_normal(L), "c"), t, u]), C)),
    Case("Mean-three-inputs", ("Mean",), lambda g, t, u: (g.op("Mean", [t, u, scalar(g, 1.0)]), C)),
    Case("Sum-three-inputs", ("Sum",), lambda g, t, u: (g.op("Sum", [t, u, g.const(g.rng.standard_normal((1, C, L)), "c")]), C)),
    Case("Sum-one-input", ("Sum",), lambda g, t, u: (g.op("Sum", [t]), C)),
    # comparisons and logic, back to floats with Where or Cast
    Case("Where-local-condition", ("Where", "Greater"),
         lambda g, t, u: (g.op("Where", [g.op("Greater", [t, scalar(g, 0.0)]), t, u]), C)),
    Case("Where-local-condition-opset11", ("Where", "Greater"),  # no boolean Pad before opset 13
         lambda g, t, u: (g.op("Where", [g.op("Greater", [t, scalar(g, 0.0)]), t, u]), C), opset=11),
    Case("Where-constant-condition", ("Where",), lambda g, t, u: where_constant_mask(g, t)),
    Case("Equal", ("Equal", "Cast"),
         lambda g, t, u: (to_float(g, g.op("Equal", [g.op("Cast", [g.op("Mul", [t, scalar(g, 2.0)])], to=TensorProto.INT64),
                                                     g.const(np.zeros((C, 1)), "zero", np.int64)])), C)),
    Case("Less", ("Less",), lambda g, t, u: gated(g, g.op("Less", [t, u]), t)),
    Case("Greater", ("Greater",), lambda g, t, u: gated(g, g.op("Greater", [t, g.const(np.linspace(-1, 1, L), "c")]), u)),
    Case("LessOrEqual", ("LessOrEqual",), lambda g, t, u: gated(g, g.op("LessOrEqual", [t, scalar(g, 0.1)]), t)),
    Case("GreaterOrEqual", ("GreaterOrEqual",), lambda g, t, u: gated(g, g.op("GreaterOrEqual", [u, t]), t)),
    Case("And", ("And", "Greater", "Less"),
         lambda g, t, u: gated(g, g.op("And", [g.op("Greater", [t, scalar(g, 0.0)]), g.op("Less", [u, scalar(g, 0.0)])]), t)),
    Case("Or", ("Or",),
         lambda g, t, u: gated(g, g.op("Or", [g.op("Greater", [t, scalar(g, 0.5)]), g.op("Less", [u, scalar(g, 0.0)])]), u)),
    Case("Xor", ("Xor",),
         lambda g, t, u: (to_float(g, g.op("Xor", [g.op("Greater", [t, scalar(g, 0.0)]),
                                                   g.const(np.arange(C * L).reshape(C, L) % 3 == 0, "m", np.bool_)])), C)),
    Case("Mod-fmod", ("Mod",), lambda g, t, u: (g.op("Mod", [t, scalar(g, 0.7)], fmod=1), C)),
    Case("Mod-integer", ("Mod", "Cast"),
         lambda g, t, u: (to_float(g, g.op("Mod", [g.op("Cast", [g.op("Mul", [t, scalar(g, 5.0)])], to=TensorProto.INT32),
                                                   g.const(np.int32(3), "three", np.int32)])), C)),
    Case("BitShift-left", ("BitShift", "Cast"), lambda g, t, u: bit_shift(g, t, "LEFT")),
    Case("BitShift-right", ("BitShift", "Cast"), lambda g, t, u: bit_shift(g, t, "RIGHT")),
    # sliding windows
    Case("Conv-strided-dilated", ("Conv",), lambda g, t, u: (g.conv(t, C, C, 3, stride=2, dilation=2, pads=[2, 1]), C)),
    Case("Conv-grouped-same-upper", ("Conv",), lambda g, t, u: (g.conv(t, C, C, 4, group=2, auto_pad="SAME_UPPER"), C)),
    Case("Conv-strided-same-lower", ("Conv",), lambda g, t, u: (g.conv(t, C, C, 4, stride=2, auto_pad="SAME_LOWER"), C)),
    Case("Conv-2d-kernel-1xk", ("Conv", "Unsqueeze", "Squeeze"), lambda g, t, u: conv_2d(g, t)),
    Case("MaxPool", ("MaxPool",), lambda g, t, u: (g.op("MaxPool", [t], kernel_shape=[3], pads=[1, 1]), C)),
    Case("MaxPool-indices", (), lambda g, t, u: max_pool_indices(g, t), stop="MaxPool"),
    Case("MaxPool-strided-dilated", ("MaxPool",),
         lambda g, t, u: (g.op("MaxPool", [t], kernel_shape=[2], strides=[2], dilations=[2], pads=[1, 0]), C)),
    Case("AveragePool-strided", ("AveragePool",),
         lambda g, t, u: (g.op("AveragePool", [t], kernel_shape=[3], strides=[2], pads=[1, 1], count_include_pad=1), C)),
    Case("AveragePool-ceil-excluding-pads", ("AveragePool",),
         lambda g, t, u: (g.op("AveragePool", [t], kernel_shape=[3], strides=[3], pads=[1, 0], ceil_mode=1), C)),
    Case("LpPool", ("LpPool",), lambda g, t, u: (g.op("LpPool", [t], kernel_shape=[3], p=2, pads=[0, 2]), C)),
    Case("BatchNormalization", ("BatchNormalization",), lambda g, t, u: (g.batch_norm(t, C), C)),
    # normalisations over one axis, with opset semantics
    Case("LayerNormalization-channels-last", ("LayerNormalization", "Transpose"),
         lambda g, t, u: layer_norm_channels_last(g, t), layout="nlc"),
    Case("LayerNormalization-rank4", ("LayerNormalization", "Reshape"), lambda g, t, u: layer_norm_rank4(g, t)),
    Case("LayerNormalization-over-length", (),
         lambda g, t, u: (g.op("LayerNormalization", [t, g.const(np.ones(L), "s")], axis=-1), C),
         stop="LayerNormalization"),
    Case("Softmax-channels", ("Softmax",), lambda g, t, u: (g.op("Softmax", [t], axis=1), C)),
    Case("Softmax-negative-axis", ("Softmax",), lambda g, t, u: (g.op("Softmax", [t], axis=-2), C)),
    Case("Softmax-opset11-channels-last", ("Softmax", "Transpose"),
         lambda g, t, u: (transposed(g, g.op("Softmax", [transposed(g, t)], axis=-1)), C), opset=11),
    Case("Softmax-opset11-coerced-2d", (), lambda g, t, u: (g.op("Softmax", [t], axis=1), C), opset=11,
         stop="Softmax"),
    Case("Softmax-over-length", (), lambda g, t, u: (g.op("Softmax", [t], axis=-1), C), stop="Softmax"),
    Case("LogSoftmax-channels", ("LogSoftmax",), lambda g, t, u: (g.op("LogSoftmax", [t], axis=1), C)),
    Case("LogSoftmax-opset11-channels-last", ("LogSoftmax", "Transpose"),
         lambda g, t, u: (transposed(g, g.op("LogSoftmax", [transposed(g, t)], axis=2)), C), opset=11),
    Case("LogSoftmax-opset11-default-axis", (), lambda g, t, u: (g.op("LogSoftmax", [t]), C), opset=11,
         stop="LogSoftmax"),
    Case("Hardmax-channels", ("Hardmax",), lambda g, t, u: (g.op("Hardmax", [t], axis=1), C)),
    Case("Hardmax-opset11-channels-last", ("Hardmax", "Transpose"),
         lambda g, t, u: (transposed(g, g.op("Hardmax", [transposed(g, t)], axis=-1)), C), opset=11),
    Case("Hardmax-default-axis", (), lambda g, t, u: (g.op("Hardmax", [t]), C), stop="Hardmax"),
    # Concat, Transpose, Reshape, Flatten, Squeeze, Unsqueeze
    Case("Concat-channels", ("Concat",), lambda g, t, u: (g.op("Concat", [t, u], axis=1), 2 * C)),
    Case("Concat-negative-axis-three-inputs", ("Concat",), lambda g, t, u: (g.op("Concat", [u, t, u], axis=-2), 3 * C)),
    Case("Concat-channels-last", ("Concat", "Transpose"),
         lambda g, t, u: (transposed(g, g.op("Concat", [transposed(g, t), transposed(g, u)], axis=-1)), 2 * C),
         layout="nlc"),
    Case("Concat-along-length", (), lambda g, t, u: (g.op("Concat", [t, u], axis=2), C), stop="Concat"),
    Case("Transpose-rank4", ("Transpose", "Unsqueeze", "Squeeze"), lambda g, t, u: transpose_rank4(g, t)),
    Case("Transpose-default-perm", (), lambda g, t, u: (g.op("Transpose", [g.op("Transpose", [t])], perm=[2, 1, 0]), C),
         stop="Transpose"),
    Case("Reshape-split-channels", ("Reshape",), lambda g, t, u: reshape_split_channels(g, t)),
    Case("Reshape-minus-one", ("Reshape",), lambda g, t, u: (g.op("Reshape", [t, g.ints([0, -1, L], "shape")]), C)),
    Case("Reshape-merging-length", (), lambda g, t, u: reshape_merging_length(g, t), stop="Reshape"),
    # length-axis blocks: split into neighbour blocks, ops over the block axis, merge back
    Case("Reshape-split2-attention-pool", ("Reshape", "Conv", "Softmax", "Mul", "ReduceSum"),
         lambda g, t, u: attention_pool(g, t, 2)),
    Case("Reshape-split3-attention-pool-padded", ("Pad", "Reshape", "Conv", "Softmax", "Mul", "ReduceSum"),
         lambda g, t, u: attention_pool(g, g.op("Pad", [t, g.ints([0, 0, 0, 0, 0, 1])]), 3)),
    Case("Reshape-split2-max", ("Reshape", "ReduceMax"),
         lambda g, t, u: (reduce(g, "ReduceMax", split_blocks(g, t, 2), [3], 0), C)),
    Case("Reshape-split3-mean", ("Slice", "Reshape", "ReduceMean"),
         lambda g, t, u: (reduce(g, "ReduceMean", split_blocks(g, g.op("Slice", [t, g.ints([1]), g.ints([L - 1]),
                                                                                 g.ints([2])]), 3), [-1], 0), C)),
    Case("Reshape-split2-merge", ("Reshape", "ReduceMean", "Sub"), lambda g, t, u: block_centred(g, t, 2)),
    Case("Reshape-split4-merge-staged", ("Reshape", "Softmax", "Conv"), lambda g, t, u: block_softmax_conv(g, t, u)),
    Case("Reshape-Transpose-split2-max", ("Reshape", "Transpose", "ReduceMax"),
         lambda g, t, u: split_transposed_max(g, t)),
    Case("Reshape-Transpose-merge2", ("Reshape", "Transpose", "Softmax"), lambda g, t, u: merge_transposed(g, t)),
    Case("Reshape-split2-channels-last", ("Reshape", "Transpose", "Softmax", "Mul", "ReduceSum"),
         lambda g, t, u: attention_pool_channels_last(g, t), layout="nlc"),
    Case("Reshape-space-to-depth-channels-last", ("Reshape", "Transpose", "MatMul"),
         lambda g, t, u: space_to_depth(g, t), layout="nlc"),
    Case("Flatten-keeps-length", ("Flatten", "Unsqueeze"), lambda g, t, u: flatten_one_channel(g, t)),
    Case("Flatten-merging-length", (), lambda g, t, u: flatten_merging_length(g, t), stop="Flatten"),
    Case("Unsqueeze-Squeeze-negative-axes", ("Unsqueeze", "Squeeze"),
         lambda g, t, u: (g.op("Squeeze", [g.op("Relu", [g.op("Unsqueeze", [t, g.ints([-1], "a")])]), g.ints([-1], "a")]), C)),
    Case("Unsqueeze-Squeeze-opset11-attributes", ("Unsqueeze", "Squeeze"),
         lambda g, t, u: (g.op("Squeeze", [g.op("Relu", [g.op("Unsqueeze", [t], axes=[1, -1])])], axes=[1, 4]), C),
         opset=11),
    # Slice
    Case("Slice-step2-negative-start", ("Slice",),
         lambda g, t, u: (g.op("Slice", [t, g.ints([-29]), g.ints([2**62]), g.ints([2]), g.ints([2])]), C)),
    Case("Slice-channels-reversed-negative-axis", ("Slice",),
         lambda g, t, u: (g.op("Slice", [t, g.ints([-1]), g.ints([-(2**62)]), g.ints([-2]), g.ints([-1])]), C)),
    Case("Slice-crop-both-axes", ("Slice",),
         lambda g, t, u: (g.op("Slice", [t, g.ints([1, 3]), g.ints([3, -2]), g.ints([1, 2])]), 2)),
    Case("Slice-opset9-attributes", ("Slice",),
         lambda g, t, u: (g.op("Slice", [t], starts=[0, 2], ends=[C, L - 1], axes=[1, 2]), C), opset=9),
    Case("Slice-reversing-length", (),
         lambda g, t, u: (g.op("Slice", [t, g.ints([-1]), g.ints([-(2**62)]), g.ints([2]), g.ints([-1])]), C),
         stop="Slice"),
    # Pad: every mode along a channel axis, constant along the length, the others not
    Case("Pad-constant-length", ("Pad",), lambda g, t, u: (g.op("Pad", [t, g.ints([0, 0, 3, 0, 0, 1]), scalar(g, 0.5)]), C)),
    Case("Pad-negative-crops", ("Pad",), lambda g, t, u: (g.op("Pad", [t, g.ints([0, 0, -2, 0, 0, 3])]), C)),
    Case("Pad-axes-input", ("Pad",),
         lambda g, t, u: (g.op("Pad", [t, g.ints([2, 1]), scalar(g, -1.0), g.ints([-1])]), C), opset=18),
    Case("Pad-opset11-channels-and-length", ("Pad",),
         lambda g, t, u: (g.op("Pad", [t, g.ints([0, 1, 2, 0, 0, 1])]), C + 1), opset=11),
    *[Case(f"Pad-{mode}-channels", ("Pad",),
           lambda g, t, u, mode=mode: (g.op("Pad", [t, g.ints([0, 1, 0, 0, 2, 0])], mode=mode), C + 3),
           opset=19 if mode == "wrap" else 17)
      for mode in ("reflect", "edge", "wrap")],
    *[Case(f"Pad-{mode}-length", (),
           lambda g, t, u, mode=mode: (g.op("Pad", [t, g.ints([0, 0, 2, 0, 0, 1])], mode=mode), C),
           opset=19 if mode == "wrap" else 17, stop="Pad")
      for mode in ("reflect", "edge", "wrap")],
    # MatMul with the local tensor on either side
    Case("MatMul-local-left", ("MatMul", "Transpose"),
         lambda g, t, u: (transposed(g, g.op("MatMul", [transposed(g, t), g.const(g.weight([C, 3], C), "W")])), 3)),
    Case("MatMul-local-right", ("MatMul",), lambda g, t, u: (g.op("MatMul", [g.const(g.weight([3, C], C), "W"), t]), 3)),
    Case("MatMul-local-right-vector", ("MatMul", "Unsqueeze"),
         lambda g, t, u: (unsqueeze(g, g.op("MatMul", [g.const(g.weight([C], C), "w"), t]), [1]), 1)),
    Case("MatMul-over-length", (), lambda g, t, u: (g.op("MatMul", [t, g.const(g.weight([L, L], L), "W")]), C),
         stop="MatMul"),
    Case("MatMul-two-local", ("Transpose",), lambda g, t, u: (g.op("MatMul", [t, transposed(g, u)]), C), stop="MatMul"),
    # Gather and Split
    Case("Gather-channels", ("Gather",), lambda g, t, u: (g.op("Gather", [t, g.ints([2, 0, 3])], axis=1), 3)),
    Case("Gather-scalar-negative-axis", ("Gather", "Unsqueeze"),
         lambda g, t, u: (unsqueeze(g, g.op("Gather", [t, g.const(np.int64(-1), "i", np.int64)], axis=-2), [1]), 1)),
    Case("Gather-2d-indices", ("Gather", "Reshape"),
         lambda g, t, u: (g.op("Reshape", [g.op("Gather", [t, g.const([[0, 1], [3, 3]], "i", np.int64)], axis=1),
                                           g.ints([0, 4, L])]), 4)),
    Case("Gather-channels-last", ("Gather", "Transpose"),
         lambda g, t, u: (transposed(g, g.op("Gather", [transposed(g, t), g.ints([1, 2])], axis=2)), 2),
         layout="nlc"),
    Case("Gather-along-length", (), lambda g, t, u: (g.op("Gather", [t, g.ints([0, 5, 9])], axis=2), C), stop="Gather"),
    Case("Split-sizes-input", ("Split", "Add"), lambda g, t, u: split_sizes(g, t)),
    Case("Split-negative-axis-num-outputs", ("Split", "Concat"), lambda g, t, u: split_num_outputs(g, t), opset=18),
    Case("Split-opset11-attribute", ("Split", "Mul"), lambda g, t, u: split_attribute(g, t), opset=11),
    # reductions over the channels: keepdims 0/1, attribute or input axes, negative axes
    Case("ReduceMean-keepdims", ("ReduceMean", "Mul"),
         lambda g, t, u: (g.op("Mul", [t, reduce(g, "ReduceMean", u, [1], 1)]), C)),
    Case("ReduceSum-no-keepdims", ("ReduceSum", "Unsqueeze"),
         lambda g, t, u: (unsqueeze(g, reduce(g, "ReduceSum", t, [1], 0), [1]), 1)),
    Case("ReduceSum-noop-with-empty-axes", ("ReduceSum",),
         lambda g, t, u: (g.op("ReduceSum", [t], noop_with_empty_axes=1), C)),
    Case("ReduceMax-axes-input-opset18", ("ReduceMax",), lambda g, t, u: (reduce(g, "ReduceMax", t, [-2], 1), 1), opset=18),
    Case("ReduceMin-no-keepdims-opset18", ("ReduceMin", "Unsqueeze"),
         lambda g, t, u: (unsqueeze(g, reduce(g, "ReduceMin", t, [1], 0), [1]), 1), opset=18),
    Case("ReduceProd", ("ReduceProd",), lambda g, t, u: (reduce(g, "ReduceProd", t, [-2], 1), 1)),
    Case("ReduceL1", ("ReduceL1",), lambda g, t, u: (reduce(g, "ReduceL1", t, [1], 1), 1)),
    Case("ReduceL2-opset18", ("ReduceL2",), lambda g, t, u: (reduce(g, "ReduceL2", t, [1], 1), 1), opset=18),
    Case("ReduceLogSum", ("ReduceLogSum",), lambda g, t, u: (reduce(g, "ReduceLogSum", positive(g, t), [1], 1), 1)),
    Case("ReduceLogSumExp", ("ReduceLogSumExp", "Unsqueeze"),
         lambda g, t, u: (unsqueeze(g, reduce(g, "ReduceLogSumExp", t, [-2], 0), [1]), 1)),
    Case("ReduceSumSquare", ("ReduceSumSquare",), lambda g, t, u: (reduce(g, "ReduceSumSquare", t, [1], 1), 1)),
    Case("ReduceSum-rank4-negative-axis", ("ReduceSum", "Reshape"),
         lambda g, t, u: (reduce(g, "ReduceSum", g.op("Reshape", [t, g.ints([0, 2, 2, L])]), [-3], 0), 2)),
    Case("ReduceMean-channels-last-no-keepdims", ("ReduceMean", "Unsqueeze", "Transpose"),
         lambda g, t, u: (transposed(g, unsqueeze(g, reduce(g, "ReduceMean", transposed(g, t), [-1], 0), [-1])), 1),
         layout="nlc"),
    Case("ReduceMean-empty-axes-noop", ("ReduceMean",),
         lambda g, t, u: (g.op("ReduceMean", [t, g.const(np.zeros(0), "axes", np.int64)], noop_with_empty_axes=1), C),
         opset=18),
    Case("ReduceMean-over-length", (), lambda g, t, u: (reduce(g, "ReduceMean", t, [2], 1), C), stop="ReduceMean"),
    Case("ArgMax-channels", ("ArgMax", "Cast"), lambda g, t, u: (to_float(g, g.op("ArgMax", [t], axis=1)), 1)),
    Case("ArgMin-negative-axis-no-keepdims", ("ArgMin", "Unsqueeze", "Cast"),
         lambda g, t, u: (to_float(g, unsqueeze(g, g.op("ArgMin", [t], axis=-2, keepdims=0, select_last_index=1), [1])), 1)),
    Case("ArgMax-channels-last", ("ArgMax", "Transpose"),
         lambda g, t, u: (transposed(g, to_float(g, g.op("ArgMax", [transposed(g, t)], axis=-1))), 1),
         layout="nlc"),
    Case("ArgMax-over-length", (), lambda g, t, u: (to_float(g, g.op("ArgMax", [t], axis=2)), C), stop="ArgMax"),
    # Expand and Tile with shapes that change nothing; else they end the region
    Case("Expand-noop", ("Expand",), lambda g, t, u: (g.op("Expand", [t, g.ints([1, 1, 1])]), C)),
    Case("Expand-noop-rank2-shape", ("Expand",), lambda g, t, u: (g.op("Expand", [t, g.ints([C, 1])]), C)),
    Case("Tile-noop", ("Tile",), lambda g, t, u: (g.op("Tile", [t, g.ints([1, 1, 1])]), C)),
    Case("Tile-along-length", (), lambda g, t, u: (g.op("Tile", [t, g.ints([1, 1, 2])]), C), stop="Tile"),
]


def half(g: _Graph, t: str) -> str:
    """``t`` rounded to eighths (exact in float16), cast to float16.

    ONNX Runtime runs float16 ops that lack a CPU kernel (MaxPool with pads) in float32 and
    then drops the float32 → float16 → float32 casts around them, so the original model
    may skip a float16 rounding that the rewrite (where the float16 tensor has more
    readers) keeps; values exact in float16 make both agree.
    """
    return g.op("Cast", [g.op("Div", [g.op("Round", [g.op("Mul", [t, scalar(g, 8.0)])]), scalar(g, 8.0)])],
                to=TensorProto.FLOAT16)


def shifted_crops(g: _Graph, t: str, to: int) -> tuple[str, int]:
    """``t · 4`` cast to integers ``to``; two crops of it shifted by 5 positions, added (int64)
    or concatenated over channels (types ONNX Runtime cannot add): a cropped stage needs the
    crops on a span wider than the one they change on."""
    ints = g.op("Cast", [g.op("Mul", [t, scalar(g, 4.0)])], to=to)
    left = g.op("Slice", [ints, g.ints([0]), g.ints([L - 5]), g.ints([-1])])
    right = g.op("Slice", [ints, g.ints([5]), g.ints([L]), g.ints([2])])
    if to == TensorProto.INT64:
        return to_float(g, g.op("Add", [left, right])), C
    return to_float(g, g.op("Concat", [left, right], axis=1)), 2 * C


def dropout_mask(g: _Graph, t: str, u: str) -> tuple[str, int]:
    out, mask = g.op("Dropout", [t, scalar(g, 0.3), g.const(np.bool_(False), "train", np.bool_)], n_outputs=2)
    return g.op("Where", [mask, out, u]), C


def is_nan(g: _Graph, t: str) -> tuple[str, int]:
    root = g.op("Sqrt", [t])  # NaN where t < 0
    return g.op("Where", [g.op("IsNaN", [root]), scalar(g, -1.0), root]), C


def where_constant_mask(g: _Graph, t: str) -> tuple[str, int]:
    keep = np.ones((1, L), dtype=bool)
    keep[:, 10:14] = False
    return g.op("Where", [g.const(keep, "keep", np.bool_), t, scalar(g, 0.0)]), C


def bit_shift(g: _Graph, t: str, direction: str) -> tuple[str, int]:
    ints = g.op("Cast", [g.op("Abs", [g.op("Mul", [t, scalar(g, 8.0)])])], to=TensorProto.UINT32)
    shifted = g.op("BitShift", [ints, g.const(np.ones((C, 1), np.uint32), "by", np.uint32)], direction=direction)
    return to_float(g, shifted), C


def conv_2d(g: _Graph, t: str) -> tuple[str, int]:
    h = g.conv(unsqueeze(g, t, [2]), C, C, (1, 5), pads=[0, 2, 0, 2])
    return g.op("Squeeze", [h, g.ints([2], "axes")]), C


def max_pool_indices(g: _Graph, t: str) -> tuple[str, int]:
    """The Indices output flattens (n, c, l): modulo ``C * L`` it no longer depends on the batch row."""
    values, indices = g.op("MaxPool", [t], n_outputs=2, kernel_shape=[3], pads=[1, 1])
    within = g.op("Mod", [indices, g.const(np.int64(C * L), "size", np.int64)])
    return g.op("Add", [values, g.op("Mul", [to_float(g, within), scalar(g, 0.01)])]), C


def layer_norm_channels_last(g: _Graph, t: str) -> tuple[str, int]:
    scale = g.const(1.0 + 0.1 * g.rng.standard_normal(C), "ln_scale")
    bias = g.const(0.1 * g.rng.standard_normal(C), "ln_bias")
    return transposed(g, g.op("LayerNormalization", [transposed(g, t), scale, bias], axis=-1, epsilon=1e-5)), C


def layer_norm_rank4(g: _Graph, t: str) -> tuple[str, int]:
    """(N, L, 2, C/2) normalised over the last two axes, with its Mean output used too."""
    h = g.op("Reshape", [transposed(g, t), g.ints([0, L, 2, C // 2])])
    y, mean, _ = g.op("LayerNormalization", [h, g.const(np.ones((2, C // 2)), "s")], n_outputs=3, axis=2)
    y = g.op("Add", [y, mean])
    return transposed(g, g.op("Reshape", [y, g.ints([0, L, C])])), C


def transpose_rank4(g: _Graph, t: str) -> tuple[str, int]:
    h = g.op("Transpose", [unsqueeze(g, t, [1])], perm=[0, 3, 2, 1])  # (N, L, C, 1)
    h = g.op("Transpose", [g.op("Relu", [h])], perm=[0, 3, 2, 1])  # (N, 1, C, L)
    return g.op("Squeeze", [h, g.ints([1], "axes")]), C


def reshape_split_channels(g: _Graph, t: str) -> tuple[str, int]:
    h = g.op("Reshape", [t, g.ints([0, 2, C // 2, L])])
    h = g.op("Softmax", [h], axis=1)
    return g.op("Reshape", [h, g.ints([-1, C, L])]), C


def reshape_merging_length(g: _Graph, t: str) -> tuple[str, int]:
    return g.op("Reshape", [g.op("Reshape", [t, g.ints([0, C * L])]), g.ints([0, C, L])]), C


def flatten_one_channel(g: _Graph, t: str) -> tuple[str, int]:
    one = g.conv(t, C, 1, 3, pads=[1, 1])
    return unsqueeze(g, g.op("Flatten", [one], axis=1), [1]), 1


def flatten_merging_length(g: _Graph, t: str) -> tuple[str, int]:
    return g.op("Reshape", [g.op("Flatten", [t], axis=1), g.ints([0, C, L])]), C


def split_blocks(g: _Graph, t: str, k: int) -> str:
    """``(N, C, L') -> (N, C, L'/k, k)``: blocks of ``k`` neighbouring positions."""
    return g.op("Reshape", [t, g.ints([0, C, -1, k])])


def attention_pool(g: _Graph, t: str, k: int) -> tuple[str, int]:
    """Enformer's attention pooling: a softmax-weighted sum over blocks of ``k`` positions,
    the logits from a 1×1 Conv2d over ``(N, C, L/k, k)``."""
    x = split_blocks(g, t, k)
    logits = g.conv(x, C, C, (1, 1), bias=False)
    weights = g.op("Softmax", [logits], axis=-1)
    return reduce(g, "ReduceSum", g.op("Mul", [x, weights]), [-1], 0), C


def block_centred(g: _Graph, t: str, k: int) -> tuple[str, int]:
    """Each position minus its block's mean, merged back to ``(N, C, L)``."""
    x = split_blocks(g, t, k)
    centred = g.op("Sub", [x, reduce(g, "ReduceMean", x, [3], 1)])
    return g.op("Reshape", [centred, g.ints([0, C, L])]), C


def block_softmax_conv(g: _Graph, t: str, u: str) -> tuple[str, int]:
    """Softmax within blocks of 4, merged back, a conv, and the same again on another branch."""
    x = g.op("Reshape", [g.op("Softmax", [split_blocks(g, t, 4)], axis=3), g.ints([-1, C, L])])
    x = g.op("Add", [g.conv(x, C, C, 3, pads=[1, 1]), u])
    y = g.op("Reshape", [g.op("Softmax", [g.op("Reshape", [x, g.ints([0, C, L // 4, 4])])], axis=-1),
                         g.ints([0, C, L])])
    return y, C


def split_transposed_max(g: _Graph, t: str) -> tuple[str, int]:
    """``(N, C, L) -> (N, C, L/2, 2) -> (N, L/2, 2, C)``, max over the pair, back to ``(N, C, L/2)``."""
    x = g.op("Transpose", [split_blocks(g, t, 2)], perm=[0, 2, 3, 1])
    return transposed(g, reduce(g, "ReduceMax", x, [2], 0)), C


def merge_transposed(g: _Graph, t: str) -> tuple[str, int]:
    """``(N, C, L/2, 2)``, softmax over the pair, ``-> (N, L/2, 2, C) -> (N, L, C) -> (N, C, L)``."""
    x = g.op("Softmax", [split_blocks(g, t, 2)], axis=-1)
    x = g.op("Reshape", [g.op("Transpose", [x], perm=[0, 2, 3, 1]), g.ints([0, L, C])])
    return transposed(g, x), C


def attention_pool_channels_last(g: _Graph, t: str) -> tuple[str, int]:
    """Attention pooling on ``(N, L, C) -> (N, L/2, 2, C)``, pooled over axis 2."""
    x = g.op("Reshape", [transposed(g, t), g.ints([0, L // 2, 2, C])])
    logits = g.op("MatMul", [x, g.const(g.weight([C, C], C), "W")])
    pooled = reduce(g, "ReduceSum", g.op("Mul", [x, g.op("Softmax", [logits], axis=2)]), [2], 0)
    return transposed(g, pooled), C


def space_to_depth(g: _Graph, t: str) -> tuple[str, int]:
    """``(N, L, C) -> (N, L/2, 2·C)`` and a dense layer over each pair of positions."""
    x = g.op("Reshape", [transposed(g, t), g.ints([0, L // 2, 2 * C])])
    return transposed(g, g.op("MatMul", [x, g.const(g.weight([2 * C, C], 2 * C), "W")])), C


def split_sizes(g: _Graph, t: str) -> tuple[str, int]:
    a, b = g.op("Split", [t, g.ints([1, 3])], n_outputs=2, axis=1)
    return g.op("Add", [a, b]), 3


def split_num_outputs(g: _Graph, t: str) -> tuple[str, int]:
    a, b = g.op("Split", [t], n_outputs=2, axis=-2, num_outputs=2)
    return g.op("Concat", [b, g.op("Tanh", [a])], axis=1), C


def split_attribute(g: _Graph, t: str) -> tuple[str, int]:
    a, b = g.op("Split", [t], n_outputs=2, axis=1, split=[2, 2])
    return g.op("Mul", [a, b]), 2


# -- the harness ---------------------------------------------------------------------------


def build_case(case: Case, *, deep: bool = False) -> tuple[onnx.ModelProto, list[onnx.NodeProto]]:
    """The case's model and the nodes its body built.

    ``deep``: one more convolution before the body and two dilated ones after it, so the
    plan cuts the region into stages and the body's tensors are re-packed between them.
    """
    g = _Graph(case.id, layout=case.layout, seq_len=L, seed=0, opset=case.opset)
    seq = g.seq()
    t = g.conv(seq, 4, C, 3, pads=[1, 1])
    u = g.conv(seq, 4, C, 5, pads=[1, 3])
    if deep:
        t = g.op("Relu", [g.conv(g.op("Relu", [t]), C, C, 5, pads=[2, 2])])
    before = len(g.nodes)
    out, channels = case.body(g, t, u)
    body = list(g.nodes[before:])
    if deep:
        out = g.op("Relu", [g.conv(out, channels, 6, 9, dilation=2, pads=[8, 8])])
        out, channels = g.op("Relu", [g.conv(out, 6, 6, 9, dilation=4, pads=[16, 16])]), 6
    g.profile_output(g.conv(out, channels, 2, 3, pads=[1, 1]))
    return g.build(), body


WINDOW = (11, 19)  # crops every stage to the positions a mutation in the window changes

# The emitter builds its re-packs, crops and frontier decodes with float arithmetic
# (``GraphBuilder.select``, the tail ``Loop``'s scan outputs, window sums), so a boolean or
# integer tensor that a windowed stage crops makes an invalid model. The rules are right.
NON_FLOAT_CROPS = frozenset({"Dropout-mask", "Cast-bool", "Where-local-condition", "Greater", "And", "Or"})
EMITTER_NON_FLOAT = "emitter: a cropped boolean or integer tensor goes through float arithmetic"


def check_case(case: Case, window: tuple[int, int] | None, *, deep: bool = False) -> None:
    """The case's ops sit inside the region (or end it, for ``stop``); the rewrite is exact."""
    model, body = build_case(case, deep=deep)
    X = random_batch(2, L, layout=case.layout, rng=np.random.default_rng(7), n_unknown=3)
    report = check_exactness(model, X, window=window, float64="never")
    assert report.conversion is not None, report.summary()
    graph = report.conversion.spec.model.graph
    region = report.conversion.region
    inside = {graph.node[i].name for i in region.region_nodes}
    for op in case.ops:
        nodes = [n.name for n in body if n.op_type == op]
        assert nodes, f"the case builds no {op} node"
        assert set(nodes) <= inside, f"{op} is not inside the local region; stops: {region.stops}"
    if case.stop is not None:
        nodes = [n.name for n in body if n.op_type == case.stop]
        assert nodes, f"the case builds no {case.stop} node"
        stopped = {stop.node for stop in region.stops}
        assert not set(nodes) & inside and set(nodes) & stopped, f"{case.stop} should end the region: {region.stops}"
        assert not region.is_empty
    assert report.ok, report.summary()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_inside_the_region_matches_the_oracle(case: Case) -> None:
    check_case(case, None)


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[case.id for case in CASES],
)
def test_op_inside_the_region_matches_the_oracle_in_a_window(case: Case) -> None:
    check_case(case, WINDOW)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_inside_a_staged_region_matches_the_oracle(case: Case) -> None:
    check_case(case, None, deep=True)


def stop_reasons(model: onnx.ModelProto) -> dict[str, str]:
    """The region stops of ``model``: op type → reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", YuzuWarning)
        region = analyse_region(load_model(model))
    return {stop.op_type: stop.reason for stop in region.stops}


def model_around(body: Callable[[_Graph, str], str], opset: int = 17) -> onnx.ModelProto:
    g = _Graph("around", layout="ncl", seq_len=L, seed=0, opset=opset)
    t = g.conv(g.seq(), 4, C, 3, pads=[1, 1])
    g.output(g.conv(body(g, t), C, 2, 3, pads=[1, 1]), "y")
    return g.build()


# The two models below depend on the whole batch, so naive ISM itself depends on how the
# mutants are batched: only the analysis is checked.


def test_batch_norm_in_training_mode_is_not_local() -> None:
    def body(g: _Graph, t: str) -> str:
        stats = [g.const(v, "bn") for v in (np.ones(C), np.zeros(C), np.zeros(C), np.ones(C))]
        return g.op("BatchNormalization", [t, *stats], n_outputs=3, training_mode=1)[0]

    assert "training mode" in stop_reasons(model_around(body, opset=15))["BatchNormalization"]


def test_reduction_over_empty_axes_is_not_local() -> None:
    def body(g: _Graph, t: str) -> str:
        return g.op("Add", [t, g.op("ReduceMean", [t, g.const(np.zeros(0), "axes", np.int64)])])

    assert "every axis" in stop_reasons(model_around(body, opset=18))["ReduceMean"]


def bool_on_the_frontier(g: _Graph, t: str) -> str:
    """``Where(t > 0, t, mean over the length)``: the tail reads the local boolean."""
    return g.op("Where", [g.op("Greater", [t, scalar(g, 0.0)]), t, reduce(g, "ReduceMean", t, [2], 1)])


def int_on_the_frontier(g: _Graph, t: str) -> str:
    """An int32 tensor summed over the length: the tail (window sums) reads the local integers."""
    ints = g.op("Cast", [g.op("Mul", [t, scalar(g, 4.0)])], to=TensorProto.INT32)
    return g.op("Mul", [t, to_float(g, reduce(g, "ReduceSum", ints, [2], 1))])


def int64_on_the_frontier(g: _Graph, t: str) -> str:
    """An int64 tensor (and its maximum over the length) read by the tail."""
    ints = g.op("Cast", [g.op("Mul", [t, scalar(g, 4.0)])], to=TensorProto.INT64)
    return to_float(g, g.op("Sub", [ints, reduce(g, "ReduceMax", ints, [2], 1)]))


def float16_on_the_frontier(g: _Graph, t: str) -> str:
    """A float16 tensor scaled by its mean over the length: the tail reads the local float16."""
    h = half(g, t)
    return to_float(g, g.op("Mul", [h, reduce(g, "ReduceMean", h, [2], 1)]))


@pytest.mark.parametrize("window", [None, WINDOW], ids=["whole", "window"])
@pytest.mark.parametrize(
    "body, dtype",
    [(bool_on_the_frontier, np.bool_), (int_on_the_frontier, np.int32), (int64_on_the_frontier, np.int64),
     (float16_on_the_frontier, np.float16)],
    ids=["bool", "int32", "int64", "float16"],
)
def test_non_float_tensor_on_the_frontier(body: Callable[[_Graph, str], str], dtype: type,
                                          window: tuple[int, int] | None) -> None:
    X = random_batch(2, L, layout="ncl", rng=np.random.default_rng(7), n_unknown=3)
    report = check_exactness(model_around(body), X, window=window, float64="never")
    assert report.conversion is not None and not report.conversion.plan.fallback_reason, report.summary()
    spec, region = report.conversion.spec, report.conversion.region
    assert any(spec.dtypes[name] == dtype for name in region.frontier), "no such tensor on the frontier"
    assert report.ok, report.summary()


def half_layer(g: _Graph, x: str, c_in: int, c_out: int, k: int, **kw) -> str:
    """A float16 convolution and ReLU on a float16 ``x`` of eighths, its output rounded to eighths.

    Weights and bias are eighths too, so every product and sum is exact in float16 (see
    :func:`half`: ONNX Runtime may compute float16 ops in float32 and drop roundings).
    """
    out = g.conv(x, c_in, c_out, k, **kw)
    node = g.nodes[-1]
    for name in node.input[1:]:
        i = next(i for i, t in enumerate(g.initializers) if t.name == name)
        eighths = np.round(numpy_helper.to_array(g.initializers[i]) * 8) / 8
        g.initializers[i] = numpy_helper.from_array(eighths.astype(np.float16), name)
    eight = scalar(g, 8.0, np.float16)
    return g.op("Div", [g.op("Round", [g.op("Mul", [g.op("Relu", [out]), eight])]), eight])


@pytest.mark.parametrize("window", [None, WINDOW], ids=["whole", "window"])
def test_float16_tensors_cross_stage_boundaries(window: tuple[int, int] | None) -> None:
    """Float16 convolutions (one wide enough for the MatMul form of float32 ones) in a
    staged region: float16 tensors are re-packed between stages (and cropped in a window)."""
    length = 64  # long enough for two stages
    g = _Graph("half", layout="ncl", seq_len=length, seed=0, opset=17)
    t = g.op("Relu", [g.conv(g.seq(), 4, C, 3, pads=[1, 1])])
    h = half_layer(g, half(g, t), C, C, 5, pads=[2, 2])
    h = half_layer(g, h, C, 2, 17, pads=[8, 8])
    h = half_layer(g, h, 2, C, 5, dilation=4, pads=[8, 8])
    g.profile_output(g.conv(to_float(g, h), C, 2, 3, pads=[1, 1]))
    X = random_batch(2, length, layout="ncl", rng=np.random.default_rng(7), n_unknown=3)
    report = check_exactness(g.build(), X, window=window, float64="never")
    assert report.conversion is not None and not report.conversion.plan.fallback_reason, report.summary()
    spec, plan = report.conversion.spec, report.conversion.plan
    if window is None:
        assert any(spec.dtypes[name] == np.float16 for st in plan.stages[1:] for name in st.inputs), plan.stages
    assert report.ok, report.summary()


def test_every_registered_op_has_a_case() -> None:
    covered = {op for case in CASES for op in case.ops}
    missing = sorted(set(supported_ops()) - covered)
    assert not missing, f"registered ops that no case puts inside the local region: {missing}"


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
