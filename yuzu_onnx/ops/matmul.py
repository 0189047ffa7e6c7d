"""Matrix products: MatMul with one local operand keeps its length axis when it does not
contract over it; Gemm (2-D) always mixes positions. In the tail, either with a constant
weight matrix on flattened features is a linear head's dense layer."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
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


def matmul_weight(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """``W`` (features × outputs, as float32) of ``x @ W`` with a constant 2-D ``W``."""
    if len(node.input) < 2 or node.input[1] not in constants:
        return None
    weight = constants[node.input[1]].astype(np.float32)
    return weight if weight.ndim == 2 else None


def gemm_weight(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """``alpha · B`` (``Bᵀ`` under ``transB``) of ``alpha · x @ B + beta · C``; ``None`` under
    ``transA`` or with a computed bias (only a constant bias cancels from mutant deltas)."""
    weight = matmul_weight(node, constants)
    if weight is None:
        return None
    attrs = node_attributes(node)
    if attrs.get("transA", 0):
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
        return None
    weight = weight.T if attrs.get("transB", 0) else weight
    return weight * np.float32(attrs.get("alpha", 1.0))


register("MatMul", locality=matmul, flops=matmul_flops, required_spans=same_span, dense_weight=matmul_weight)
register("Gemm", flops=gemm_flops, dense_weight=gemm_weight)
