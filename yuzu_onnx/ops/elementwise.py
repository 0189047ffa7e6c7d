"""Unary elementwise ops: each output position reads the same position of the input."""

from __future__ import annotations

from ..analysis.positional import PositionalMap
from .broadcasting import broadcasting, cut_per_position_constants
from .registry import NotLocal, RuleContext, always_rearranges, register, same_span

UNARY = (
    "Relu LeakyRelu Sigmoid HardSigmoid Tanh Softsign Exp Log Gelu Erf Sqrt Abs "
    "Neg Clip Dropout Cast CastLike Elu Selu Celu Mish HardSwish Reciprocal Floor Ceil "
    "Round Sign Sin Cos Not IsNaN IsInf ThresholdedRelu Shrink Swish"
).split()


def _first_input(ctx: RuleContext) -> PositionalMap:
    m = ctx.input_maps[0]
    if m is None:
        raise NotLocal("its first input is not a local tensor")
    return m


def _same_shape(ctx: RuleContext, m: PositionalMap) -> list[PositionalMap]:
    if ctx.out_shape(0) != ctx.in_shape(0):
        raise NotLocal("its output shape differs from its input shape")
    return [m] * len(ctx.node.output)


def elementwise_unary(ctx: RuleContext) -> list[PositionalMap]:
    """The input's map, for every output; every other input must be a constant."""
    m = _first_input(ctx)
    for i, other in enumerate(ctx.input_maps[1:], start=1):
        if other is not None:
            raise NotLocal(f"input {i} is computed from the sequence")
    return _same_shape(ctx, m)


def prelu(ctx: RuleContext) -> list[PositionalMap]:
    """Unary with a constant slope; a slope computed from the sequence makes it broadcasting."""
    m = _first_input(ctx)
    if ctx.input_maps[1] is not None:
        return broadcasting(ctx)
    return _same_shape(ctx, m)


register(*UNARY, locality=elementwise_unary, required_spans=same_span)
# ONNX Runtime's CPU Softplus is ~45 times slower than Relu: the tail runs a stable composite
register("Softplus", locality=elementwise_unary, required_spans=same_span, tail_form="stable_softplus")
register("PRelu", locality=prelu, required_spans=same_span, crop=cut_per_position_constants)
register("Identity", locality=elementwise_unary, required_spans=same_span, rearranges=always_rearranges)
