"""Reductions over non-length axes (ReduceMean..., ArgMax/ArgMin): every position keeps
its window; a reduction over the length or batch ends the region."""

from __future__ import annotations

import numpy as np

from ..analysis.positional import PositionalMap
from .registry import NotLocal, RuleContext, norm_axis, register, same_span

REDUCTIONS = (
    "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare"
).split()


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
    return [norm_axis(int(a), rank) for a in np.atleast_1d(axes)]


def _reduced(ctx: RuleContext, m: PositionalMap, axes: list[int]) -> list[PositionalMap]:
    if m.axis in axes or 0 in axes:
        raise NotLocal("it reduces over the sequence (or batch) axis")
    if ctx.attr("keepdims", 1):
        return [m]
    return [m.moved(m.axis - sum(1 for a in axes if a < m.axis))]


def reduce(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    axes = _axes_of(ctx, len(ctx.in_shape(0)), 1)
    if axes is None:
        if ctx.attr("noop_with_empty_axes", 0):
            return [m]
        raise NotLocal("it reduces over every axis, the sequence included")
    return _reduced(ctx, m, axes)


def arg_reduce(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    return _reduced(ctx, m, [norm_axis(int(ctx.attr("axis", 0)), len(ctx.in_shape(0)))])


register(*REDUCTIONS, locality=reduce, required_spans=same_span)
register("ArgMax", "ArgMin", locality=arg_reduce, required_spans=same_span)
