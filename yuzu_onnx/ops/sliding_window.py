"""Convolutions and pooling: output position ``q`` reads a window of input positions
``[stride·q - pad_begin, stride·q - pad_begin + span - 1]`` along the length.
GlobalAveragePool mixes every position (no locality rule); in the tail it is a linear head,
a mean over the spatial axes decoded from window sums."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..analysis.positional import PositionalMap
from .registry import (
    CropContext,
    CropEdit,
    NotLocal,
    RuleContext,
    Span,
    WindowSum,
    elementwise_flops,
    node_attributes,
    numel,
    output_numel,
    register,
    text_attribute,
)


@dataclass(frozen=True)
class Window:
    """A Conv/pool's window along the length: ``spatial`` is the length's index among the
    op's ``rank`` spatial axes; ``span`` the input positions one output reads (dilation
    included), ``stride`` and ``pad_begin`` (``SAME`` padding resolved)."""

    spatial: int
    rank: int
    span: int
    stride: int
    pad_begin: int


def window_along(attrs: Mapping, kernel: Sequence[int], axis: int, in_len: int, out_len: int) -> Window:
    """The window of a node with attributes ``attrs`` and ``kernel`` along ``axis``."""
    i = axis - 2
    rank = len(kernel)
    strides = attrs.get("strides") or [1] * rank
    dilations = attrs.get("dilations") or [1] * rank
    span = (int(kernel[i]) - 1) * int(dilations[i]) + 1
    stride = int(strides[i])
    auto_pad = text_attribute(attrs.get("auto_pad"), "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = max((out_len - 1) * stride + span - in_len, 0)
        pad_begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    elif auto_pad == "VALID":
        pad_begin = 0
    else:
        pad_begin = int((attrs.get("pads") or [0] * (2 * rank))[i])
    return Window(i, rank, span, stride, pad_begin)


def _slide(ctx: RuleContext, m: PositionalMap, kernel: Sequence[int]) -> PositionalMap:
    if m.axis < 2:
        raise NotLocal("the sequence length is on the channel axis of this op")
    out_len = ctx.out_shape(0)[m.axis]
    w = window_along(node_attributes(ctx.node), kernel, m.axis, m.length, out_len)
    return m.sliding(kernel_span=w.span, stride=w.stride, pad_begin=w.pad_begin, length=out_len, axis=m.axis)


def conv(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    weight = ctx.const(1)
    if weight is None:
        raise NotLocal("its weights are not constant")
    kernel = ctx.attr("kernel_shape") or list(weight.shape[2:])
    return [_slide(ctx, m, kernel)]


def pool(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise NotLocal("its Indices output numbers elements across the whole tensor and the batch")
    out = _slide(ctx, m, ctx.attr("kernel_shape"))
    return [out] * len(ctx.node.output)


def _window_of(ctx: CropContext) -> Window:
    node, m = ctx.node, ctx.in_map(0)
    attrs = node_attributes(node)
    # pools always name their kernel; a Conv may leave it to its weights' shape
    kernel = attrs.get("kernel_shape") or list(ctx.const(1).shape[2:])
    return window_along(attrs, kernel, m.axis, m.length, ctx.shapes[node.output[0]][m.axis])


def _reads(w: Window, out_span: Span) -> tuple[int, int]:
    """First and last input position (unclipped) the outputs ``out_span`` read."""
    first = w.stride * out_span.lo - w.pad_begin
    return first, w.stride * out_span.hi - w.pad_begin + w.span - 1


def _window_spans(ctx: CropContext, out_span: Span, *, pooling: bool) -> dict[str, Span] | None:
    node, m = ctx.node, ctx.in_map(0)
    attrs = node_attributes(node)
    if pooling and attrs.get("ceil_mode", 0) and attrs.get("count_include_pad", 0):
        return None
    w = _window_of(ctx)
    shape = ctx.shapes[node.input[0]]
    auto_pad = text_attribute(attrs.get("auto_pad"), "NOTSET")
    if auto_pad != "NOTSET" and any(shape[a] != 1 for a in range(2, 2 + w.rank) if a != m.axis):
        return None
    first_read, last_read = _reads(w, out_span)
    lo, hi = max(0, first_read), min(m.length - 1, last_read)
    if pooling and max(lo - first_read, last_read - hi) >= w.span:
        return None  # pooling pads must stay below the kernel
    return {node.input[0]: Span(lo, hi)}


def conv_spans(ctx: CropContext, out_span: Span) -> dict[str, Span] | None:
    return _window_spans(ctx, out_span, pooling=False)


def pool_spans(ctx: CropContext, out_span: Span) -> dict[str, Span] | None:
    return _window_spans(ctx, out_span, pooling=True)


def window_crop(ctx: CropContext, out_span: Span, in_spans: Mapping[str, Span]) -> CropEdit:
    """Pads that make the window read exactly the cropped input (``SAME`` resolved)."""
    w = _window_of(ctx)
    have = in_spans[ctx.node.input[0]]
    first_read, last_read = _reads(w, out_span)
    attrs = node_attributes(ctx.node)
    pads = list(attrs.get("pads") or [0] * (2 * w.rank))
    if text_attribute(attrs.get("auto_pad"), "NOTSET") != "NOTSET":
        pads = [0] * (2 * w.rank)  # other spatial axes are unit-sized (checked in _window_spans)
    pads[w.spatial] = have.lo - first_read
    pads[w.spatial + w.rank] = last_read - have.hi
    return CropEdit(
        attributes=(helper.make_attribute("pads", [int(p) for p in pads]),),
        drop_attributes=("auto_pad", "ceil_mode"),
    )


def conv_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Two FLOPs per weight per output element."""
    if len(node.input) > 1 and node.input[1] in shapes:
        return 2.0 * output_numel(node, shapes) * numel(shapes[node.input[1]][1:])
    return elementwise_flops(node, shapes)


def pool_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """One FLOP per kernel tap per output element."""
    kernel = node_attributes(node).get("kernel_shape", [1])
    return float(output_numel(node, shapes) * int(np.prod(kernel)))


def without_bias(node: onnx.NodeProto) -> onnx.NodeProto:
    """A copy of a Conv node without its bias input (the linear part)."""
    linear = onnx.NodeProto()
    linear.CopyFrom(node)
    del linear.input[2:]
    return linear


def global_pool_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """One FLOP (an addition) per input element."""
    if node.input[0] in shapes:
        return float(numel(shapes[node.input[0]]))
    return elementwise_flops(node, shapes)


def spatial_axes(
    node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]], constants: Mapping[str, np.ndarray]
) -> list[int]:
    """The axes a global pool reduces: every axis after batch and channels."""
    return list(range(2, len(shapes[node.input[0]])))


register("Conv", locality=conv, flops=conv_flops, required_spans=conv_spans, crop=window_crop,
         gaussian_linear=without_bias, convolution=True)
register("MaxPool", "AveragePool", "LpPool", locality=pool, flops=pool_flops, required_spans=pool_spans,
         crop=window_crop)
register("ConvTranspose", flops=conv_flops)
register("GlobalAveragePool", flops=global_pool_flops, window_sum=WindowSum("mean", spatial_axes))
