"""Expand and Tile that leave a local tensor's shape unchanged (a broadcast along the
length or batch ends the region)."""

from __future__ import annotations

from ..analysis.positional import PositionalMap
from .registry import NotLocal, RuleContext, register


def expand(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.input_maps[0]
    if m is None or ctx.out_shape(0) != ctx.in_shape(0):
        raise NotLocal("it broadcasts along the sequence or batch")
    return [m]


register("Expand", "Tile", locality=expand, takes_shape_inputs=True)
