"""Linear heads decoded from window sums (DESIGN §4): global mean/sum over the length,
and dense layers on flattened features.

A mutant changes a local tensor only inside its window, so its change of a linear
function of that tensor is the sum, over the window, of per-position contributions of
its probe deltas: for a mean/sum, the deltas themselves (over the reduced axes, divided
by the count); for ``Flatten → Gemm/MatMul``, ``U[p] = D[:, p] · W_p`` computed as one
MatMul batched over positions. Within one probe the windows of its mutants are disjoint,
so one MatMul with a 0/1 ownership matrix ``B[c, p, t]`` (position ``p`` of probe ``c``
belongs to the probe's ``t``-th mutant) gives every mutant's window sum at once — no
``(A·L)``-row materialisation of the tensor.

Which tail nodes are heads is the planner's decision (``RewritePlan.tail.heads``, found by
:func:`yuzu_onnx.analysis.linear_heads.find_linear_heads`); this module builds them.
"""

from __future__ import annotations

import numpy as np

from ..analysis.linear_heads import LinearHead
from ..analysis.positional import PositionalMap
from ..ops import op_spec
from .probes import EmitContext
from .stages import probes_of


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


def emit_head_mutants(ctx: EmitContext, head: LinearHead) -> str:
    """Mutant values ``(Lw, C, N, *out_dims)`` of ``head.output``, from window sums."""
    b = ctx.builder
    graph = ctx.spec.model.graph
    source = head.source
    m = ctx.region.maps[source]
    stage_index = ctx.plan.producer_stage[source]
    stage = ctx.plan.stages[stage_index]
    dims = ctx.dims(source)
    deltas = b.op("Sub", [probes_of(ctx, source, stage_index), ctx.ref_names[source]], hint="probe_delta")
    # (n, C, N, *dims) with the length axis moved first: (P, n, C, N, *other dims)
    length_at = 2 + m.axis
    rank = 3 + len(dims)
    moved = b.transpose(deltas, [length_at] + [i for i in range(rank) if i != length_at], hint="length_first")
    rest = int(np.prod(dims, dtype=np.int64)) // m.length
    last = graph.node[head.nodes[-1]]
    role = op_spec(last.op_type)
    if role.window_sum is not None:
        axes = role.window_sum.reduced_axes(last, ctx.spec.shapes, ctx.constants)
        other_axes = [k for k in range(1, len(dims) + 1) if k != m.axis]
        reduce_at = [4 + other_axes.index(k) for k in axes if k != m.axis]
        contributions = b.reduce("ReduceSum", moved, reduce_at, keepdims=0, hint="other_axes") if reduce_at else moved
        if role.window_sum.kind == "mean":
            count = float(np.prod([ctx.spec.shapes[source][k] for k in axes]))
            contributions = b.op("Div", [contributions, b.const(np.array(count, np.float32), "count")], hint="mean")
        kept = [dims[k - 1] for k in other_axes if k not in axes]
        width = int(np.prod(kept, dtype=np.int64)) if kept else 1
    else:
        weight = role.dense_weight(last, ctx.constants)
        per_position_weight = np.moveaxis(weight.reshape(*dims, -1), m.axis - 1, 0).reshape(m.length, rest, -1)
        per_position = b.reshape(moved, [m.length, -1, rest], hint="per_position")
        contributions = b.op("MatMul", [per_position, b.const(per_position_weight, "dense_per_position")],
                             hint="dense_per_position")
        width = per_position_weight.shape[2]
    return _window_summed(ctx, head, contributions, m, stage, width)


def _window_summed(ctx: EmitContext, head: LinearHead, contributions: str, m: PositionalMap, stage, width: int) -> str:
    """``contributions`` (P, n·C·N·width) summed over each mutant's window, plus the reference."""
    b = ctx.builder
    start, end = ctx.plan.window
    owner, rows = ownership(m, start, end, stage.spacing, stage.n_probes)
    per_probe = owner.shape[2]
    by_probe = b.reshape(contributions, [m.length, stage.n_probes, -1], hint="by_probe")
    by_probe = b.transpose(by_probe, [1, 2, 0], hint="positions_last")  # (n, C·N·width, P)
    sums = b.op("MatMul", [by_probe, b.const(owner, "ownership")], hint="window_sums")  # (n, C·N·width, J)
    sums = b.transpose(sums, [0, 2, 1], hint="mutant_major")  # (n, J, C·N·width)
    sums = b.reshape(sums, [stage.n_probes * per_probe, ctx.n_classes, -1, width], hint="mutant_rows")
    per_mutant = b.op("Gather", [sums, b.const(rows, "mutant_rows")], axis=0, hint="window_sum")
    delta = b.reshape(per_mutant, [end - start, ctx.n_classes, -1, *ctx.dims(head.output)], hint="head_delta")
    return b.op("Add", [delta, ctx.ref_names[head.output]], hint="head_mutants")
