"""Per-op locality rules, one small function per op family, registered by decorator.

A rule receives a :class:`RuleContext` (the node, the positional maps of its data
inputs, measured shapes and constant values) and returns the positional map of each
output, or raises :class:`NotLocal` with the reason the op ends the local region.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .positional import PositionalMap


class NotLocal(Exception):
    """The op mixes positions (or cannot be placed); the local region ends here."""


@dataclass(frozen=True)
class RuleContext:
    node: onnx.NodeProto
    input_maps: Sequence[PositionalMap | None]
    shapes: Mapping[str, tuple[int, ...]]
    constants: Mapping[str, np.ndarray]
    opset: int

    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def const(self, index: int) -> np.ndarray | None:
        """The constant value of input ``index`` (``None`` if absent or not constant)."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.constants.get(self.node.input[index])

    def in_shape(self, index: int) -> tuple[int, ...]:
        return self.shapes[self.node.input[index]]

    def out_shape(self, index: int = 0) -> tuple[int, ...]:
        name = self.node.output[index]
        if name not in self.shapes:
            raise NotLocal(f"the shape of {name!r} is unknown")
        return self.shapes[name]

    def only_data_input(self, index: int = 0) -> PositionalMap:
        """The map of input ``index``; every other input must be a constant."""
        for i, m in enumerate(self.input_maps):
            if i != index and m is not None:
                raise NotLocal(f"input {i} ({self.node.input[i]!r}) is computed from the sequence")
        m = self.input_maps[index] if index < len(self.input_maps) else None
        if m is None:
            raise NotLocal(f"input {index} is not a local tensor")
        return m


Rule = Callable[[RuleContext], list[PositionalMap]]
RULES: dict[str, Rule] = {}


def rule(*op_types: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the locality rule of ``op_types``."""

    def register(fn: Rule) -> Rule:
        for op in op_types:
            RULES[op] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(RULES)


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _axes_of(ctx: RuleContext, rank: int, input_index: int) -> list[int] | None:
    """Axes from an ``axes`` attribute or (newer opsets) from a constant input."""
    axes = ctx.attr("axes")
    if axes is None and input_index < len(ctx.node.input) and ctx.node.input[input_index]:
        value = ctx.const(input_index)
        if value is None:
            raise NotLocal("its axes are computed at run time")
        axes = value.tolist()
    if axes is None or np.size(axes) == 0:  # empty axes: every axis (or none, with noop_with_empty_axes)
        return None
    return [_norm_axis(int(a), rank) for a in np.atleast_1d(axes)]


UNARY = (
    "Relu LeakyRelu PRelu Sigmoid HardSigmoid Tanh Softplus Softsign Exp Log Gelu Erf Sqrt Abs "
    "Neg Clip Identity Dropout Cast CastLike Elu Selu Celu Mish HardSwish Reciprocal Floor Ceil "
    "Round Sign Sin Cos Not IsNaN IsInf ThresholdedRelu Shrink Swish"
).split()


@rule(*UNARY)
def elementwise_unary(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.input_maps[0]
    if m is None:
        raise NotLocal("its first input is not a local tensor")
    for i, other in enumerate(ctx.input_maps[1:], start=1):
        if other is not None and ctx.node.op_type != "PRelu":
            raise NotLocal(f"input {i} is computed from the sequence")
    if ctx.node.op_type == "PRelu" and ctx.input_maps[1] is not None:
        return broadcasting(ctx)
    if ctx.out_shape(0) != ctx.in_shape(0):
        raise NotLocal("its output shape differs from its input shape")
    return [m] * len(ctx.node.output)


@rule("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where", "Equal", "Less",
      "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift")
def broadcasting(ctx: RuleContext) -> list[PositionalMap]:
    out_rank = len(ctx.out_shape(0))
    out_len_axis: int | None = None
    merged: PositionalMap | None = None
    for i, m in enumerate(ctx.input_maps):
        if m is None:
            continue
        axis = m.axis + out_rank - len(ctx.in_shape(i))
        if out_len_axis is not None and axis != out_len_axis:
            raise NotLocal("its inputs carry the length on different axes")
        if merged is not None and (merged.stride != m.stride or merged.length != m.length):
            raise NotLocal("its inputs have different strides or lengths along the sequence")
        out_len_axis = axis
        merged = m if merged is None else merged.union(m)
    assert merged is not None and out_len_axis is not None
    if ctx.out_shape(0)[out_len_axis] != merged.length:
        raise NotLocal("it broadcasts a local tensor along the length")
    return [merged.moved(out_len_axis)]


def _spatial(ctx: RuleContext, m: PositionalMap) -> int:
    if m.axis < 2:
        raise NotLocal("the sequence length is on the channel axis of this op")
    return m.axis - 2


def _same_pad_begin(auto_pad: str, in_len: int, out_len: int, stride: int, span: int) -> int:
    total = max((out_len - 1) * stride + span - in_len, 0)
    return total // 2 if auto_pad == "SAME_UPPER" else total - total // 2


def _sliding_window(ctx: RuleContext, m: PositionalMap, kernel: Sequence[int]) -> PositionalMap:
    i = _spatial(ctx, m)
    rank = len(kernel)
    strides = ctx.attr("strides") or [1] * rank
    dilations = ctx.attr("dilations") or [1] * rank
    pads = ctx.attr("pads") or [0] * (2 * rank)
    auto_pad = ctx.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    span = (int(kernel[i]) - 1) * int(dilations[i]) + 1
    out_len = ctx.out_shape(0)[m.axis]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pad_begin = _same_pad_begin(auto_pad, m.length, out_len, int(strides[i]), span)
    elif auto_pad == "VALID":
        pad_begin = 0
    else:
        pad_begin = int(pads[i])
    return m.sliding(kernel_span=span, stride=int(strides[i]), pad_begin=pad_begin, length=out_len, axis=m.axis)


@rule("Conv")
def conv(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    weight = ctx.const(1)
    if weight is None:
        raise NotLocal("its weights are not constant")
    kernel = ctx.attr("kernel_shape") or list(weight.shape[2:])
    return [_sliding_window(ctx, m, kernel)]


@rule("MaxPool", "AveragePool", "LpPool")
def pool(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise NotLocal("its Indices output numbers elements across the whole tensor and the batch")
    out = _sliding_window(ctx, m, ctx.attr("kernel_shape"))
    return [out] * len(ctx.node.output)


@rule("BatchNormalization")
def batch_norm(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    if m.axis == 1:
        raise NotLocal("it normalises over the sequence axis")
    if ctx.attr("training_mode", 0):
        raise NotLocal("in training mode it normalises with statistics over the batch and the sequence")
    return [m] * len(ctx.node.output)


@rule("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax")
def normalise_over_axis(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    rank = len(ctx.in_shape(0))
    op = ctx.node.op_type
    default = -1 if (op == "LayerNormalization" or ctx.opset >= 13) else 1
    axis = _norm_axis(int(ctx.attr("axis", default)), rank)
    covers_following = op == "LayerNormalization" or ctx.opset < 13
    mixed = range(axis, rank) if covers_following else [axis]
    if m.axis in mixed:
        raise NotLocal("it normalises over the sequence axis")
    if op == "LayerNormalization":
        return [m] + [m] * (len(ctx.node.output) - 1)
    return [m]


@rule("Concat")
def concat(ctx: RuleContext) -> list[PositionalMap]:
    rank = len(ctx.out_shape(0))
    axis = _norm_axis(int(ctx.attr("axis")), rank)
    maps = [m for m in ctx.input_maps]
    if any(m is None for m in maps):
        raise NotLocal("it concatenates a constant with a local tensor")
    if any(m.axis == axis for m in maps):
        raise NotLocal("it concatenates along the sequence axis")
    return broadcasting(ctx)


@rule("Transpose")
def transpose(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    rank = len(ctx.in_shape(0))
    perm = ctx.attr("perm") or list(reversed(range(rank)))
    return [m.moved(list(perm).index(m.axis))]


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: RuleContext) -> list[PositionalMap]:
    """Keep the length axis when the data of each position stays one contiguous block."""
    m = ctx.only_data_input(0)
    src, dst = ctx.in_shape(0), ctx.out_shape(0)
    if src[0] != -1 or not dst or dst[0] != -1:
        raise NotLocal("it moves the batch axis")
    before = int(np.prod(src[1 : m.axis], dtype=np.int64))
    after = int(np.prod(src[m.axis + 1 :], dtype=np.int64))
    for b in range(1, len(dst)):
        if (
            dst[b] == m.length
            and int(np.prod(dst[1:b], dtype=np.int64)) == before
            and int(np.prod(dst[b + 1 :], dtype=np.int64)) == after
        ):
            return [m.moved(b)]
    raise NotLocal(f"it merges the sequence axis with other axes ({src} -> {dst})")


@rule("Slice")
def slice_(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    rank = len(ctx.in_shape(0))
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes = ctx.attr("axes") or list(range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts, ends = ctx.const(1), ctx.const(2)
        if starts is None or ends is None:
            raise NotLocal("its bounds are computed at run time")
        axes = ctx.const(3) if len(ctx.node.input) > 3 and ctx.node.input[3] else None
        steps = ctx.const(4) if len(ctx.node.input) > 4 and ctx.node.input[4] else None
        if (len(ctx.node.input) > 3 and ctx.node.input[3] and axes is None) or (
            len(ctx.node.input) > 4 and ctx.node.input[4] and steps is None
        ):
            raise NotLocal("its axes or steps are computed at run time")
        axes = list(range(len(starts))) if axes is None else axes.tolist()
        steps = [1] * len(starts) if steps is None else steps.tolist()
        starts, ends = starts.tolist(), ends.tolist()
    out = m
    for start, axis, step in zip(starts, axes, steps):
        axis = _norm_axis(int(axis), rank)
        if axis == 0:
            raise NotLocal("it slices the batch axis")
        if axis != m.axis:
            continue
        if step <= 0:
            raise NotLocal("it reverses the sequence axis")
        first = int(start) + m.length if int(start) < 0 else int(start)
        first = min(max(first, 0), m.length)
        out = m.sliding(kernel_span=1, stride=int(step), pad_begin=-first, length=ctx.out_shape(0)[axis], axis=axis)
    return [out]


@rule("Pad")
def pad(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    rank = len(ctx.in_shape(0))
    mode = ctx.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if ctx.opset < 11:
        pads = ctx.attr("pads")
        axes = list(range(rank))
    else:
        pads = ctx.const(1)
        if pads is None:
            raise NotLocal("its pads are computed at run time")
        pads = pads.tolist()
        axes_value = ctx.const(3) if len(ctx.node.input) > 3 and ctx.node.input[3] else None
        axes = list(range(rank)) if axes_value is None else [_norm_axis(int(a), rank) for a in axes_value]
    count = len(axes)
    begin = dict(zip(axes, pads[:count]))
    end = dict(zip(axes, pads[count:]))
    if begin.get(0, 0) or end.get(0, 0):
        raise NotLocal("it pads the batch axis")
    pb, pe = int(begin.get(m.axis, 0)), int(end.get(m.axis, 0))
    if (pb or pe) and mode != "constant":
        raise NotLocal(f"{mode} padding along the sequence reads positions far from the edge")
    return [m.sliding(kernel_span=1, stride=1, pad_begin=pb, length=ctx.out_shape(0)[m.axis], axis=m.axis)]


@rule("MatMul")
def matmul(ctx: RuleContext) -> list[PositionalMap]:
    a, b = ctx.input_maps[0], ctx.input_maps[1]
    out_rank = len(ctx.out_shape(0))
    if a is not None and b is not None:
        raise NotLocal("it multiplies two sequence-dependent tensors (attention-like)")
    if a is not None:
        rank = len(ctx.in_shape(0))
        if rank < 2 or a.axis == rank - 1:
            raise NotLocal("it contracts over the sequence axis")
        return [a.moved(a.axis + out_rank - rank)]
    rank = len(ctx.in_shape(1))
    if rank < 2 or b.axis == rank - 2:
        raise NotLocal("it contracts over the sequence axis")
    return [b.moved(b.axis + out_rank - rank)]


@rule("Gather")
def gather(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    indices = ctx.const(1)
    if indices is None:
        raise NotLocal("its indices are computed at run time")
    rank = len(ctx.in_shape(0))
    axis = _norm_axis(int(ctx.attr("axis", 0)), rank)
    if axis in (0, m.axis):
        raise NotLocal("it gathers along the batch or sequence axis")
    new_axis = m.axis + indices.ndim - 1 if axis < m.axis else m.axis
    return [m.moved(new_axis)]


@rule("Split")
def split(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    axis = _norm_axis(int(ctx.attr("axis", 0)), len(ctx.in_shape(0)))
    if axis in (0, m.axis):
        raise NotLocal("it splits along the batch or sequence axis")
    return [m] * len(ctx.node.output)


REDUCTIONS = (
    "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare ArgMax ArgMin"
).split()


@rule(*REDUCTIONS)
def reduce(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    rank = len(ctx.in_shape(0))
    if ctx.node.op_type in ("ArgMax", "ArgMin"):
        axes = [_norm_axis(int(ctx.attr("axis", 0)), rank)]
    else:
        axes = _axes_of(ctx, rank, 1)
        if axes is None:
            if ctx.attr("noop_with_empty_axes", 0):
                return [m]
            raise NotLocal("it reduces over every axis, the sequence included")
    if m.axis in axes or 0 in axes:
        raise NotLocal("it reduces over the sequence (or batch) axis")
    if ctx.attr("keepdims", 1):
        return [m]
    return [m.moved(m.axis - sum(1 for a in axes if a < m.axis))]


@rule("Expand", "Tile")
def expand(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.input_maps[0]
    if m is None or ctx.out_shape(0) != ctx.in_shape(0):
        raise NotLocal("it broadcasts along the sequence or batch")
    return [m]
