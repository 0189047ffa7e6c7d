"""Layout ops: Transpose moves the length axis; Reshape, Flatten, Squeeze and Unsqueeze
keep it while each position's data stays one contiguous block. A Reshape may also split
the length into blocks of ``k`` neighbouring positions, ``(L, ...) -> (L/k, k, ...)``
(attention pooling, space-to-depth), or merge such blocks back: the block is then one
position of stride ``k``, and ops over the block axis (softmax, sums, max) are ops over a
channel-like axis. In the tail, a Flatten or Reshape to ``(N, features)`` may start a
linear head (``flattens``)."""

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


def _prod(dims) -> int:
    return int(np.prod(dims, dtype=np.int64))


def reshape(ctx: RuleContext) -> list[PositionalMap]:
    """Keep the length axis when the data of each position stays one contiguous block.

    A ``Reshape`` to rank 3 or more may also split the length into neighbour blocks
    (:func:`split_blocks`) or merge such blocks back (:func:`merge_blocks`).
    """
    m = ctx.only_data_input(0)
    src, dst = ctx.in_shape(0), ctx.out_shape(0)
    if src[0] != -1 or not dst or dst[0] != -1:
        raise NotLocal("it moves the batch axis")
    before = _prod(src[1 : m.axis])
    after = _prod(src[m.axis + 1 :])
    for b in range(1, len(dst)):
        if dst[b] == m.length and _prod(dst[1:b]) == before and _prod(dst[b + 1 :]) == after:
            return [m.moved(b)]
    if ctx.node.op_type == "Reshape" and len(dst) >= 3:
        blocks = _block_axis(m, src, dst)
        if blocks is not None:
            b, n = blocks
            if n < m.length:
                return [split_blocks(m, b, m.length // n)]
            return [merge_blocks(m, b, n // m.length)]
    raise NotLocal(_why_not_local(m, src, dst, ctx.node.op_type))


def _block_axis(m: PositionalMap, src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, int] | None:
    """``(axis, length)`` of the output axis holding whole neighbour blocks of the input's
    length axis (a split: ``length`` divides ``L``, ``L / length`` positions per block) or
    whole input positions (a merge: ``L`` divides ``length``), where every axis before it
    is kept; the finest such axis, ``None`` when there is none."""
    before = _prod(src[1 : m.axis])
    after = _prod(src[m.axis + 1 :])
    found = []
    for b in range(1, len(dst)):
        if _prod(dst[1:b]) != before:
            continue
        n, rest = dst[b], _prod(dst[b + 1 :])
        if 1 < n < m.length and m.length % n == 0 and rest == (m.length // n) * after:
            found.append((b, n))
        elif n > m.length and n % m.length == 0 and after == (n // m.length) * rest:
            found.append((b, n))
    return max(found, key=lambda bn: bn[1]) if found else None


def split_blocks(m: PositionalMap, axis: int, k: int) -> PositionalMap:
    """The map of ``(L, ...) -> (L/k, k, ...)``: block ``q`` holds positions ``k·q .. k·q+k-1``."""
    return m.sliding(kernel_span=k, stride=k, pad_begin=0, length=m.length // k, axis=axis)


def merge_blocks(m: PositionalMap, axis: int, k: int) -> PositionalMap:
    """The map of ``(n, k, ...) -> (n·k, ...)``: position ``p`` holds part of block ``p // k``.

    Position ``p = k·q + r`` depends on block ``q``'s window; with the blocks ``S`` input
    positions apart (``S`` a multiple of ``k``), the window
    ``[S/k·p + lo - S/k·(k-1), S/k·p + hi]`` contains it for every ``r``.

    Raises :class:`NotLocal` when ``S`` is not a multiple of ``k``.
    """
    if m.stride % k:
        raise NotLocal(
            f"it spreads each of the {m.length} positions of the sequence axis over {k} positions, but they "
            f"are {m.stride} input position(s) apart, not a multiple of {k}: the new positions fall "
            "between input positions"
        )
    step = m.stride // k
    return PositionalMap(axis=axis, length=m.length * k, stride=step, lo=m.lo - step * (k - 1), hi=m.hi)


def _why_not_local(m: PositionalMap, src: tuple[int, ...], dst: tuple[int, ...], op_type: str) -> str:
    """Why a reshape of the length axis is not local: split or merge, and with what."""
    shapes = f"({', '.join(map(str, src))}) -> ({', '.join(map(str, dst))})"
    before = _prod(src[1 : m.axis])
    bounds = [b for b in range(1, len(dst)) if _prod(dst[1:b]) == before and dst[b] != 1]
    if not bounds:
        return f"it merges the sequence axis with the axes before it {shapes}"
    n = dst[bounds[0]]
    if len(dst) < 3 and n > m.length:
        return f"it flattens the sequence axis with the axes after it into features {shapes}"
    if n > m.length:
        return f"it merges the sequence axis with the axes after it, not in whole positions {shapes}"
    if len(dst) < 3:
        return f"it splits the sequence axis into features {shapes}"
    return f"it splits the sequence axis into pieces that are not blocks of neighbouring positions {shapes}"


def reshape_spans(ctx: CropContext, out_span: Span) -> dict[str, Span] | None:
    """The input positions an output span needs: the same (length kept), whole blocks (a
    split: ``k`` positions per output position), or the blocks holding the span (a merge;
    ``None`` unless the span is made of whole blocks)."""
    name = ctx.node.input[0]
    n_in, n_out = ctx.in_map(0).length, ctx.out_map.length
    if n_out == n_in:
        return {name: out_span}
    if n_out < n_in:
        k = n_in // n_out
        return {name: Span(k * out_span.lo, k * out_span.hi + k - 1)}
    k = n_out // n_in
    if out_span.lo % k or (out_span.hi + 1) % k:
        return None
    return {name: Span(out_span.lo // k, out_span.hi // k)}


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
register("Reshape", locality=reshape, required_spans=reshape_spans, crop=reshape_target_crop,
         takes_shape_inputs=True, rearranges=reshape_keeps_order, flattens=True)
