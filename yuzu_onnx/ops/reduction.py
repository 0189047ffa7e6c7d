"""Reductions over non-length axes (ReduceMean..., ArgMax/ArgMin): every position keeps
its window; a reduction over the length or batch ends the region. In the tail, a
ReduceMean/ReduceSum over the length is a linear head decoded from window sums."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..analysis.positional import PositionalMap
from .registry import (
    NotLocal,
    RuleContext,
    WindowSum,
    node_attributes,
    norm_axis,
    register,
    same_span,
)

# the reductions besides ReduceSum and ReduceMean (which are also linear heads)
NONLINEAR_REDUCTIONS = (
    "ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare"
).split()


def listed_axes(node: onnx.NodeProto, rank: int, constants: Mapping[str, np.ndarray]) -> list[int] | None:
    """Axes from an ``axes`` attribute or (newer opsets) from a constant input 1, counted
    from the front; ``None`` when the node lists none (an empty list included).

    Raises :class:`NotLocal` when the axes input is computed at run time.
    """
    axes = node_attributes(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        if value is None:
            raise NotLocal("its axes are computed at run time")
        axes = value.tolist()
    if axes is None or np.size(axes) == 0:  # empty axes: every axis (or none, with noop_with_empty_axes)
        return None
    return [norm_axis(int(a), rank) for a in np.atleast_1d(axes)]


def reduced_axes(
    node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]], constants: Mapping[str, np.ndarray]
) -> list[int] | None:
    """The sorted axes a ReduceMean/ReduceSum reduces; ``None`` when it lists none (every
    axis) or computes them at run time."""
    try:
        axes = listed_axes(node, len(shapes[node.input[0]]), constants)
    except NotLocal:
        return None
    return None if axes is None else sorted(axes)


def _reduced(ctx: RuleContext, m: PositionalMap, axes: list[int]) -> list[PositionalMap]:
    if m.axis in axes or 0 in axes:
        raise NotLocal("it reduces over the sequence (or batch) axis")
    if ctx.attr("keepdims", 1):
        return [m]
    return [m.moved(m.axis - sum(1 for a in axes if a < m.axis))]


def reduce(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    axes = listed_axes(ctx.node, len(ctx.in_shape(0)), ctx.constants)
    if axes is None:
        if ctx.attr("noop_with_empty_axes", 0):
            return [m]
        raise NotLocal("it reduces over every axis, the sequence included")
    return _reduced(ctx, m, axes)


def arg_reduce(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    return _reduced(ctx, m, [norm_axis(int(ctx.attr("axis", 0)), len(ctx.in_shape(0)))])


# ReduceSum reads its axes from input 1 since opset 13, the other reductions since opset 18
register("ReduceSum", locality=reduce, required_spans=same_span, window_sum=WindowSum("sum", reduced_axes),
         axes_input_since=13)
register("ReduceMean", locality=reduce, required_spans=same_span, window_sum=WindowSum("mean", reduced_axes),
         axes_input_since=18)
register(*NONLINEAR_REDUCTIONS, locality=reduce, required_spans=same_span, axes_input_since=18)
register("ArgMax", "ArgMin", locality=arg_reduce, required_spans=same_span)
