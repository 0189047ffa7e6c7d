"""Layout ops: Transpose moves the length axis; Reshape, Flatten, Squeeze and Unsqueeze
keep it while each position's data stays one contiguous block. In the tail, a Flatten or
Reshape to ``(N, features)`` may start a linear head (``flattens``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..analysis.positional import PositionalMap
from .registry import (
    CropContext,
    CropEdit,
    NotLocal,
    RuleContext,
    Span,
    always_rearranges,
    register,
    same_span,
)


def transpose(ctx: RuleContext) -> list[PositionalMap]:
    m = ctx.only_data_input(0)
    rank = len(ctx.in_shape(0))
    perm = ctx.attr("perm") or list(reversed(range(rank)))
    return [m.moved(list(perm).index(m.axis))]


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


def reshape_target_crop(ctx: CropContext, out_span: Span, in_spans: Mapping[str, Span]) -> CropEdit:
    """The target shape with the span's length on the length axis."""
    out_map = ctx.out_map
    target = ctx.constants[ctx.node.input[1]].copy()
    if target[out_map.axis] == out_map.length:
        target[out_map.axis] = out_span.size
    return CropEdit(inputs=((1, np.asarray(target.tolist(), dtype=np.int64), "crop_target"),))


def _non_unit(shape: tuple[int, ...]) -> list[int]:
    return [d for d in shape[1:] if d != 1]


def reshape_keeps_order(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Only unit axes are added or removed: the non-unit axes keep their sizes and order."""
    before, after = shapes.get(node.input[0]), shapes.get(node.output[0])
    return before is not None and after is not None and _non_unit(before) == _non_unit(after)


register("Transpose", locality=transpose, required_spans=same_span, rearranges=always_rearranges)
# Squeeze and Unsqueeze read their axes from input 1 since opset 13
register("Squeeze", "Unsqueeze", locality=reshape, required_spans=same_span, rearranges=always_rearranges,
         axes_input_since=13)
register("Flatten", locality=reshape, required_spans=same_span, flattens=True)
register("Reshape", locality=reshape, required_spans=same_span, crop=reshape_target_crop,
         takes_shape_inputs=True, rearranges=reshape_keeps_order, flattens=True)
