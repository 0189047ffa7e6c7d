"""Global mean/sum over the length decoded from window sums (DESIGN §4).

A mutant changes a local tensor only inside its window, so its change of a mean or sum
over the length is the sum of its probe deltas over the window (divided by the count).
For each probe, the windows of its mutants are disjoint: one MatMul of the probe deltas
with a 0/1 ownership matrix ``B[c, p, t]`` (position ``p`` of probe ``c`` belongs to the
probe's ``t``-th mutant) gives every mutant's window sum at once, with no ``(A·L)``-row
materialisation of the tensor.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..analysis.positional import PositionalMap
from .probes import EmitContext, as_probe_axis

REDUCE_OPS = ("GlobalAveragePool", "ReduceMean", "ReduceSum")
MAX_OWNERSHIP_ELEMENTS = 32 * 2**20


def reduced_axes(node: onnx.NodeProto, ctx: EmitContext) -> list[int] | None:
    """Axes (of the input) a mean/sum node reduces, or ``None`` if not decodable here."""
    rank = len(ctx.spec.shapes[node.input[0]])
    if node.op_type == "GlobalAveragePool":
        return list(range(2, rank))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = ctx.constants.get(node.input[1])
        if value is None:
            return None
        axes = value.tolist()
    if axes is None:
        return None
    return sorted(a + rank if a < 0 else a for a in np.atleast_1d(axes))


def decodable_reductions(ctx: EmitContext, tail_indices: list[int]) -> dict[int, str]:
    """Tail nodes ``{index: input}`` whose output can be decoded from window sums.

    The input must be a local tensor decoded from probes, reduced over its length axis
    and not over the batch, and read by no other tail node.
    """
    graph = ctx.spec.model.graph
    readers: dict[str, int] = {}
    for i in tail_indices:
        for name in graph.node[i].input:
            readers[name] = readers.get(name, 0) + 1
    found: dict[int, str] = {}
    lw = ctx.plan.window_length
    for i in tail_indices:
        node = graph.node[i]
        if node.op_type not in REDUCE_OPS or node.domain not in ("", "ai.onnx"):
            continue
        source = node.input[0]
        m = ctx.region.maps.get(source)
        if m is None or source == ctx.x or source not in ctx.plan.producer_stage or readers.get(source) != 1:
            continue
        if ctx.region.kinds.get(node.output[0]) != "data" or node.output[0] not in ctx.spec.shapes:
            continue
        axes = reduced_axes(node, ctx)
        if not axes or m.axis not in axes or 0 in axes:
            continue
        stage = ctx.plan.stages[ctx.plan.producer_stage[source]]
        mutants_per_probe = -(-lw // stage.spacing)
        if stage.n_probes * m.length * mutants_per_probe > MAX_OWNERSHIP_ELEMENTS:
            continue
        found[i] = source
    return found


def ownership(m: PositionalMap, start: int, end: int, spacing: int, n_probes: int) -> tuple[np.ndarray, np.ndarray]:
    """``B[c, p, t]`` (float32) and each mutated position's row ``c · J + t`` in the result."""
    per_probe = -(-(end - start) // spacing)
    owner = np.zeros((n_probes, m.length, per_probe), dtype=np.float32)
    p = np.arange(m.length)
    lo = np.maximum(m.stride * p + m.lo, start)
    hi = np.minimum(m.stride * p + m.hi, end - 1)
    for c in range(n_probes):
        first = lo + (c - (lo - start)) % spacing
        valid = first <= hi
        t = (first[valid] - start) // spacing
        owner[c, p[valid], t] = 1.0
    j = np.arange(start, end) - start
    rows = (j % spacing) * per_probe + j // spacing
    return owner, rows.astype(np.int64)


def emit_reduced_mutants(ctx: EmitContext, node: onnx.NodeProto, source: str) -> str:
    """Mutant values ``(Lw, A, N, *out_dims)`` of ``node``'s output, from window sums."""
    b, spec = ctx.builder, ctx.spec
    m = ctx.region.maps[source]
    start, end = ctx.plan.window
    stage_index = ctx.plan.producer_stage[source]
    stage = ctx.plan.stages[stage_index]
    dims = ctx.dims(source)
    a = ctx.n_classes
    owner, rows = ownership(m, start, end, stage.spacing, stage.n_probes)
    per_probe = owner.shape[2]
    deltas = b.op("Sub", [as_probe_axis(ctx, source, stage_index), ctx.ref_names[source]], hint="probe_delta")
    # (n, A, N, *dims) with the length axis (dims index m.axis - 1) moved last
    length_at = 2 + m.axis
    rank5 = 3 + len(dims)
    perm = [i for i in range(rank5) if i != length_at] + [length_at]
    others = [d for k, d in enumerate(dims) if k != m.axis - 1]
    moved = b.transpose(deltas, perm, hint="length_last")
    flat = b.reshape(moved, [stage.n_probes, -1, m.length], hint="positions_last")
    sums = b.op("MatMul", [flat, b.const(owner, "ownership")], hint="window_sums")
    sums = b.reshape(sums, [stage.n_probes, a, -1, *others, per_probe], hint="window_sums")
    sums = b.transpose(sums, [0, len(others) + 3, 1, 2, *range(3, 3 + len(others))], hint="mutant_major")
    sums = b.reshape(sums, [stage.n_probes * per_probe, a, -1, *others], hint="mutant_rows")
    per_mutant = b.op("Gather", [sums, b.const(rows, "mutant_rows")], axis=0, hint="window_sum")
    axes = reduced_axes(node, ctx)
    rest = [3 + (k - 1) - (1 if k > m.axis else 0) for k in axes if k != m.axis]
    if rest:
        per_mutant = b.reduce("ReduceSum", per_mutant, rest, keepdims=0, hint="other_axes")
    if node.op_type in ("GlobalAveragePool", "ReduceMean"):
        count = int(np.prod([spec.shapes[source][k] for k in axes]))
        per_mutant = b.op("Div", [per_mutant, b.const(np.array(count, dtype=np.float32), "count")], hint="mean")
    out = node.output[0]
    delta = b.reshape(per_mutant, [end - start, a, -1, *ctx.dims(out)], hint="reduced_delta")
    return b.op("Add", [delta, ctx.ref_names[out]], hint="reduced_mutants")
