"""Gather and Split along a channel-like axis: every position keeps its window."""

from __future__ import annotations

from ..analysis.positional import PositionalMap
from .registry import NotLocal, RuleContext, norm_axis, register, same_span


def gather(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    indices = ctx.const(1)
    if indices is None:
        raise NotLocal("its indices are computed at run time")
    rank = len(ctx.in_shape(0))
    axis = norm_axis(int(ctx.attr("axis", 0)), rank)
    if axis in (0, m.axis):
        raise NotLocal("it gathers along the batch or sequence axis")
    new_axis = m.axis + indices.ndim - 1 if axis < m.axis else m.axis
    return [m.moved(new_axis)]


def split(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    axis = norm_axis(int(ctx.attr("axis", 0)), len(ctx.in_shape(0)))
    if axis in (0, m.axis):
        raise NotLocal("it splits along the batch or sequence axis")
    return [m] * len(ctx.node.output)


register("Gather", locality=gather, required_spans=same_span)
register("Split", locality=split, required_spans=same_span)
