"""Normalisations over the channels (or other non-length axes): BatchNormalization,
LayerNormalization and the softmax family keep every position's window."""

from __future__ import annotations

from ..analysis.positional import PositionalMap
from .registry import NotLocal, RuleContext, norm_axis, register, same_span


def batch_norm(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    if m.axis == 1:
        raise NotLocal("it normalises over the sequence axis")
    if ctx.attr("training_mode", 0):
        raise NotLocal("in training mode it normalises with statistics over the batch and the sequence")
    return [m] * len(ctx.node.output)


def _normalised_axes(ctx: RuleContext, axis: int, covers_following: bool) -> range | list[int]:
    rank = len(ctx.in_shape(0))
    first = norm_axis(axis, rank)
    return range(first, rank) if covers_following else [first]


def layer_norm(ctx: RuleContext) -> list[PositionalMap]:
    """Normalises over ``axis`` and every axis after it."""
    m = ctx.only_data_input(0)
    if m.axis in _normalised_axes(ctx, int(ctx.attr("axis", -1)), covers_following=True):
        raise NotLocal("it normalises over the sequence axis")
    return [m] * len(ctx.node.output)


def softmax(ctx: RuleContext) -> list[PositionalMap]:
    """Softmax, LogSoftmax, Hardmax: over ``axis`` (opset >= 13), or over ``axis`` and every
    axis after it, flattened (older opsets, default axis 1)."""
    m = ctx.only_data_input(0)
    modern = ctx.opset >= 13
    axis = int(ctx.attr("axis", -1 if modern else 1))
    if m.axis in _normalised_axes(ctx, axis, covers_following=not modern):
        raise NotLocal("it normalises over the sequence axis")
    return [m]


register("BatchNormalization", locality=batch_norm, required_spans=same_span)
register("LayerNormalization", locality=layer_norm, required_spans=same_span)
register("Softmax", "LogSoftmax", "Hardmax", locality=softmax, required_spans=same_span)
