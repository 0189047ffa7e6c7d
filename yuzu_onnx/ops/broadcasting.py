"""Ops reading their inputs position by position with NumPy broadcasting, and Concat
over another axis: the output's windows are the union of the local inputs' windows."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..analysis.positional import PositionalMap
from .registry import (
    CropContext,
    CropEdit,
    NotLocal,
    RuleContext,
    Span,
    norm_axis,
    register,
    same_span,
)

BROADCASTING = (
    "Add Sub Mul Div Pow Max Min Mean Sum Where Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Mod "
    "BitShift"
).split()


def broadcasting(ctx: RuleContext) -> list[PositionalMap]:
    """The union of the local inputs' windows, on the output's length axis."""
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


def cut_per_position_constants(ctx: CropContext, out_span: Span, in_spans: Mapping[str, Span]) -> CropEdit:
    """Per-position constants (broadcast along the length) are cut to the span too."""
    out_map = ctx.out_map
    out_rank = len(ctx.shapes[ctx.node.output[0]])
    inputs = []
    for k, name in enumerate(ctx.node.input):
        value = ctx.constants.get(name)
        if value is None or value.ndim == 0:
            continue
        axis = out_map.axis - (out_rank - value.ndim)
        if 0 <= axis < value.ndim and value.shape[axis] == out_map.length and out_map.length > 1:
            inputs.append((k, np.take(value, np.arange(out_span.lo, out_span.hi + 1), axis=axis), "crop_const"))
    return CropEdit(inputs=tuple(inputs))


def concat(ctx: RuleContext) -> list[PositionalMap]:
    rank = len(ctx.out_shape(0))
    axis = norm_axis(int(ctx.attr("axis")), rank)
    maps = list(ctx.input_maps)
    if any(m is None for m in maps):
        raise NotLocal("it concatenates a constant with a local tensor")
    if any(m.axis == axis for m in maps):
        raise NotLocal("it concatenates along the sequence axis")
    return broadcasting(ctx)


register(*BROADCASTING, locality=broadcasting, required_spans=same_span, crop=cut_per_position_constants)
register("Concat", locality=concat, required_spans=same_span)
