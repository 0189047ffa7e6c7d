"""Probe construction, stage copies and re-packing between stages (DESIGN §3b).

Probe tensors are laid out with the batch axis ordered ``(probe c, base a, sequence n)``,
so ``reshape(Y, [n_probes, A, -1, *dims])`` exposes the probe axis. Probe ``c`` of a
stage with spacing ``d`` carries, for every base ``a``, the mutations ``j -> a`` at every
mutated position ``j`` with ``(j - start) mod d == c``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..analysis.positional import PositionalMap
from ..analysis.region import CONST, META, LocalRegion
from ..importer import NCL, ModelSpec
from ..plan import RewritePlan
from .builder import PREFIX, GraphBuilder, copy_nodes
from .wide_conv import emit_wide_conv, is_wide_conv


@dataclass
class EmitContext:
    """Shared state of one emission: inputs, the builder and the names made so far."""

    spec: ModelSpec
    region: LocalRegion
    plan: RewritePlan
    builder: GraphBuilder
    ref_names: dict[str, str]
    producers: Mapping[str, onnx.NodeProto]
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    stage_names: list[dict[str, str]] = field(default_factory=list)
    _input_probes: dict[int, str] = field(default_factory=dict)

    @property
    def alphabet_size(self) -> int:
        return self.spec.alphabet_size

    @property
    def x(self) -> str:
        return self.spec.input_name

    def dims(self, tensor: str) -> list[int]:
        """Per-sequence dims of a batch-first tensor."""
        return list(self.spec.shapes[tensor][1:])

    def is_available_outside(self, name: str) -> bool:
        return self.region.kinds.get(name, CONST) == CONST

    def is_meta(self, name: str) -> bool:
        return self.region.kinds.get(name) == META


def probe_mask(start: int, end: int, spacing: int, n_probes: int, length: int) -> np.ndarray:
    """``mask[c, j]``: probe ``c`` mutates position ``j``."""
    j = np.arange(length)
    inside = (j >= start) & (j < end)
    return inside[None, :] & (((j - start) % spacing)[None, :] == np.arange(n_probes)[:, None])


def emit_input_probes(ctx: EmitContext, spacing: int) -> str:
    """Spaced probes of the sequence input: shape ``(n·A·N, A, L)`` (ncl) or ``(n·A·N, L, A)``."""
    if spacing in ctx._input_probes:
        return ctx._input_probes[spacing]
    b, spec = ctx.builder, ctx.spec
    start, end = ctx.plan.window
    a, length = spec.alphabet_size, spec.seq_len
    n = min(spacing, end - start)
    mask = probe_mask(start, end, spacing, n, length)
    eye = np.eye(a, dtype=np.float32)
    if spec.layout == NCL:
        mask5, base5 = mask.reshape(n, 1, 1, 1, length), eye.reshape(1, a, 1, a, 1)
    else:
        mask5, base5 = mask.reshape(n, 1, 1, length, 1), eye.reshape(1, a, 1, 1, a)
    probes = b.op("Where", [b.const(mask5, "probe_mask"), b.const(base5, "bases"), ctx.x], hint=f"probes_d{spacing}")
    name = b.reshape(probes, [-1, *spec.input_shape], hint=f"input_probes_d{spacing}")
    ctx._input_probes[spacing] = name
    return name


def as_probe_axis(ctx: EmitContext, tensor: str, stage: int) -> str:
    """Stage ``stage``'s probes of ``tensor`` reshaped to ``(n_probes, A, N, *dims)``."""
    n = ctx.plan.stages[stage].n_probes if stage >= 0 else 1
    return ctx.builder.reshape(
        ctx.stage_names[stage][tensor], [n, ctx.alphabet_size, -1, *ctx.dims(tensor)], hint="probe_axis"
    )


def window_mask(b: GraphBuilder, positions: str, m: PositionalMap, rank: int) -> str:
    """``mask[k, p]``: output position ``p`` of a tensor with map ``m`` depends on input
    position ``positions[k]``; shaped ``(K, 1, 1, *dims)`` with ``P`` on the length axis."""
    p = np.arange(m.length, dtype=np.int64)
    lo = b.const((m.stride * p + m.lo)[None, :], "window_lo")
    hi = b.const((m.stride * p + m.hi)[None, :], "window_hi")
    col = b.unsqueeze(positions, [1], hint="positions")
    inside = b.op("And", [b.op("Not", [b.op("Less", [col, lo])]), b.op("Not", [b.op("Greater", [col, hi])])])
    shape = [-1, 1, 1] + [m.length if axis == m.axis else 1 for axis in range(1, rank)]
    return b.reshape(inside, shape, hint="window_mask")


def emit_repack(ctx: EmitContext, tensor: str, to_stage: int) -> str:
    """``tensor``'s values for stage ``to_stage``'s probes, taken from its producing stage."""
    b, plan = ctx.builder, ctx.plan
    stage = plan.stages[to_stage]
    if tensor == ctx.x:
        return emit_input_probes(ctx, stage.spacing)
    source = plan.producer_stage[tensor]
    d_source = plan.stages[source].spacing
    m = ctx.region.maps[tensor]
    start, end = plan.window
    n = stage.n_probes
    probe_axis = as_probe_axis(ctx, tensor, source)
    taken = np.arange(n, dtype=np.int64) % d_source
    if n != plan.stages[source].n_probes or np.any(taken != np.arange(n)):
        probe_axis = b.op("Gather", [probe_axis, b.const(taken, "repack_index")], axis=0, hint="repack_gather")
    valid = _valid_positions(m, start, end, stage.spacing, n)
    rank = len(ctx.spec.shapes[tensor])
    shape = [n, 1, 1] + [m.length if axis == m.axis else 1 for axis in range(1, rank)]
    mixed = b.op(
        "Where", [b.const(valid.reshape(shape), "repack_valid"), probe_axis, ctx.ref_names[tensor]], hint="repack"
    )
    return b.reshape(mixed, [-1, *ctx.dims(tensor)], hint=f"repacked_s{to_stage}")


def _valid_positions(m: PositionalMap, start: int, end: int, spacing: int, n: int) -> np.ndarray:
    """``valid[c, p]``: position ``p`` sees one of probe ``c``'s mutations."""
    p = np.arange(m.length)
    lo = np.maximum(m.stride * p + m.lo, start)
    hi = np.minimum(m.stride * p + m.hi, end - 1)
    c = np.arange(n)[:, None]
    first = lo[None, :] + (c - (lo[None, :] - start)) % spacing
    return first <= hi[None, :]


def emit_stage(ctx: EmitContext, s: int) -> None:
    """Copy stage ``s``'s nodes onto its probes (re-packing its inputs first)."""
    stage = ctx.plan.stages[s]
    rename = {name: emit_repack(ctx, name, s) for name in stage.inputs}
    graph = ctx.spec.model.graph

    def faster_form(original: onnx.NodeProto, renamed: onnx.NodeProto) -> bool:
        if not is_wide_conv(original, ctx.spec.shapes, ctx.constants):
            return False
        emit_wide_conv(ctx.builder, original, renamed.input[0], renamed.output[0], ctx.spec.shapes, ctx.constants)
        return True

    copy_nodes(
        [graph.node[i] for i in stage.nodes],
        rename,
        prefix=f"{PREFIX}s{s}/",
        available=ctx.is_available_outside,
        producers=ctx.producers,
        is_meta=ctx.is_meta,
        sink=ctx.builder.nodes,
        replace=faster_form,
    )
    ctx.stage_names.append(rename)
