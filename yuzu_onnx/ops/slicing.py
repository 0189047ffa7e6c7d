"""Slice and Pad along the length: a window of width one that shifts (and for Slice,
strides) the positions."""

from __future__ import annotations

from collections.abc import Mapping

from ..analysis.positional import PositionalMap
from .registry import (
    CropContext,
    CropEdit,
    NotLocal,
    RuleContext,
    Span,
    norm_axis,
    register,
    text_attribute,
)


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
        axis = norm_axis(int(axis), rank)
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


def pad(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    rank = len(ctx.in_shape(0))
    mode = text_attribute(ctx.attr("mode"), "constant")
    if ctx.opset < 11:
        pads = ctx.attr("pads")
        axes = list(range(rank))
    else:
        pads = ctx.const(1)
        if pads is None:
            raise NotLocal("its pads are computed at run time")
        pads = pads.tolist()
        axes_value = ctx.const(3) if len(ctx.node.input) > 3 and ctx.node.input[3] else None
        axes = list(range(rank)) if axes_value is None else [norm_axis(int(a), rank) for a in axes_value]
    count = len(axes)
    begin = dict(zip(axes, pads[:count]))
    end = dict(zip(axes, pads[count:]))
    if begin.get(0, 0) or end.get(0, 0):
        raise NotLocal("it pads the batch axis")
    pb, pe = int(begin.get(m.axis, 0)), int(end.get(m.axis, 0))
    if (pb or pe) and mode != "constant":
        raise NotLocal(f"{mode} padding along the sequence reads positions far from the edge")
    return [m.sliding(kernel_span=1, stride=1, pad_begin=pb, length=ctx.out_shape(0)[m.axis], axis=m.axis)]


def _constant_axes(ctx: CropContext, index: int, default_count: int) -> list[int]:
    """Axes from constant input ``index`` (every axis ``0..default_count-1`` when absent)."""
    rank = ctx.rank(0)
    value = ctx.const(index)
    return list(range(default_count)) if value is None else [a + rank if a < 0 else a for a in value.tolist()]


def _slice_on_length(ctx: CropContext) -> tuple[int | None, int]:
    """(first position, step) of the slice along the length; ``(None, 1)``: not constant."""
    m = ctx.in_map(0)
    starts = ctx.const(1)
    if starts is None:
        return None, 1
    axes = _constant_axes(ctx, 3, len(starts))
    steps = ctx.const(4)
    steps = [1] * len(starts) if steps is None else steps.tolist()
    for start, axis, step in zip(starts.tolist(), axes, steps):
        if axis == m.axis:
            first = start + m.length if start < 0 else start
            return min(max(first, 0), m.length), int(step)
    return 0, 1


def slice_spans(ctx: CropContext, out_span: Span) -> dict[str, Span] | None:
    first, step = _slice_on_length(ctx)
    if first is None:
        return None
    return {ctx.node.input[0]: Span(first + step * out_span.lo, first + step * out_span.hi)}


def slice_crop(ctx: CropContext, out_span: Span, in_spans: Mapping[str, Span]) -> CropEdit:
    """Bounds reading the whole cropped input from its start."""
    m = ctx.in_map(0)
    _, step = _slice_on_length(ctx)
    starts = ctx.constants[ctx.node.input[1]].copy()
    ends = ctx.constants[ctx.node.input[2]].copy()
    for k, axis in enumerate(_constant_axes(ctx, 3, len(starts))):
        if axis == m.axis:
            starts[k] = 0
            ends[k] = step * (out_span.size - 1) + 1
    return CropEdit(inputs=((1, starts, "crop_starts"), (2, ends, "crop_ends")))


def _pad_begin(ctx: CropContext) -> int | None:
    """Positions padded before the length axis; ``None``: the pads are not constant."""
    pads = ctx.const(1)
    if pads is None:
        return None
    axes = _constant_axes(ctx, 3, ctx.rank(0))
    begin = dict(zip(axes, pads.tolist()[: len(axes)]))
    return int(begin.get(ctx.in_map(0).axis, 0))


def pad_spans(ctx: CropContext, out_span: Span) -> dict[str, Span] | None:
    m = ctx.in_map(0)
    begin = _pad_begin(ctx)
    if begin is None:
        return None
    lo = max(0, out_span.lo - begin)
    hi = min(m.length - 1, out_span.hi - begin)
    return {ctx.node.input[0]: Span(lo, max(lo, hi))}


def pad_crop(ctx: CropContext, out_span: Span, in_spans: Mapping[str, Span]) -> CropEdit:
    """Pads that fill the span's positions outside the cropped input."""
    m = ctx.in_map(0)
    begin = _pad_begin(ctx)
    have = in_spans[ctx.node.input[0]]
    pads = ctx.constants[ctx.node.input[1]].copy()
    axes = _constant_axes(ctx, 3, ctx.rank(0))
    k = axes.index(m.axis)
    pads[k] = have.lo - (out_span.lo - begin)
    pads[len(axes) + k] = (out_span.hi - begin) - have.hi
    return CropEdit(inputs=((1, pads, "crop_pads"),))


register("Slice", locality=slice_, required_spans=slice_spans, crop=slice_crop, takes_shape_inputs=True)
register("Pad", locality=pad, required_spans=pad_spans, crop=pad_crop, takes_shape_inputs=True)
