"""Matrix products: MatMul with one local operand keeps its length axis when it does not
contract over it; Gemm (2-D) always mixes positions and only counts FLOPs here."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from ..analysis.positional import PositionalMap
from .registry import (
    NotLocal,
    RuleContext,
    elementwise_flops,
    node_attributes,
    output_numel,
    register,
    same_span,
)


def matmul(ctx: RuleContext) -> list[PositionalMap]:
    a, b = ctx.input_maps[0], ctx.input_maps[1]
    out_rank = len(ctx.out_shape(0))
    if a is not None and b is not None:
        raise NotLocal("it multiplies two sequence-dependent tensors (attention-like)")
    if a is not None:
        rank = len(ctx.in_shape(0))
        if rank < 2 or a.axis == rank - 1:
            raise NotLocal("it contracts over the sequence axis")
        return [a.moved(a.axis + out_rank - rank)]
    rank = len(ctx.in_shape(1))
    if rank < 2 or b.axis == rank - 2:
        raise NotLocal("it contracts over the sequence axis")
    return [b.moved(b.axis + out_rank - rank)]


def _product_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]], transposed: bool) -> float:
    if node.input[0] not in shapes:
        return elementwise_flops(node, shapes)
    a = shapes[node.input[0]]
    k = a[-2] if transposed else a[-1]
    return 2.0 * output_numel(node, shapes) * max(k, 1)


def matmul_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Two FLOPs per term of the contraction per output element."""
    return _product_flops(node, shapes, transposed=False)


def gemm_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Two FLOPs per term of the contraction per output element (``transA`` respected)."""
    return _product_flops(node, shapes, transposed=bool(node_attributes(node).get("transA", 0)))


register("MatMul", locality=matmul, flops=matmul_flops, required_spans=same_span)
register("Gemm", flops=gemm_flops)
