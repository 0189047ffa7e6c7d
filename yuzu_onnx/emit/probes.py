"""Probe construction, stage copies and re-packing between stages (DESIGN §3b).

Probe tensors are laid out with the batch axis ordered ``(probe c, class k, sequence n)``,
so ``reshape(Y, [n_probes, C, -1, *dims])`` exposes the probe axis. Probe ``c`` of a
stage with spacing ``d`` carries, for every substitution class ``k``, the substitutions
at every mutated position ``j`` with ``(j - start) mod d == c``. Classes are either the
``A`` bases (exact for any input) or the ``A - 1`` shifts ``ref -> ref + k`` of a one-hot
reference (a quarter fewer probes for DNA; used when every mutated column is one-hot).
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
from .builder import GraphBuilder


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
    shift: bool = False
    stage_names: list[dict[str, str]] = field(default_factory=list)
    stage_spans: list[dict | None] = field(default_factory=list)
    _input_probes: dict[int, str] = field(default_factory=dict)
    _substituted: str | None = None

    @property
    def n_classes(self) -> int:
        """Substitution classes per probe index: ``A`` bases, or ``A - 1`` shifts of the reference."""
        return self.spec.alphabet_size - 1 if self.shift else self.spec.alphabet_size

    @property
    def alphabet_axis(self) -> int:
        return 1 if self.spec.layout == NCL else 2

    @property
    def x(self) -> str:
        return self.spec.input_name

    def dims(self, tensor: str) -> list[int]:
        """Per-sequence dims of a batch-first tensor."""
        return list(self.spec.shapes[tensor][1:])

    def dtype(self, tensor: str) -> np.dtype | None:
        """The measured element type of ``tensor`` (``None``: not measured)."""
        return self.spec.dtypes.get(tensor)

    def is_available_outside(self, name: str) -> bool:
        return self.region.kinds.get(name, CONST) == CONST

    def is_meta(self, name: str) -> bool:
        return self.region.kinds.get(name) == META


def probe_mask(start: int, end: int, spacing: int, n_probes: int, length: int) -> np.ndarray:
    """``mask[c, j]``: probe ``c`` mutates position ``j``."""
    j = np.arange(length)
    inside = (j >= start) & (j < end)
    return inside[None, :] & (((j - start) % spacing)[None, :] == np.arange(n_probes)[:, None])


def substituted_columns(ctx: EmitContext) -> str:
    """What a substitution writes into a column, per class: ``(C, 1|N, A, L)`` (ncl) or ``(C, 1|N, L, A)``.

    Absolute classes write base ``a`` (``e_a``); shift classes write the reference base
    moved ``k`` letters on (``(ref + k) mod A``, ``k = 1..A-1``), a roll of ``X`` itself.
    """
    if ctx._substituted is not None:
        return ctx._substituted
    b, spec = ctx.builder, ctx.spec
    a = spec.alphabet_size
    if not ctx.shift:
        eye = np.eye(a, dtype=np.float32)
        columns = eye.reshape(a, 1, a, 1) if spec.layout == NCL else eye.reshape(a, 1, 1, a)
        ctx._substituted = b.const(columns, "bases")
        return ctx._substituted
    rolls = np.array([[(base - k) % a for base in range(a)] for k in range(1, a)], dtype=np.int64)
    rolled = b.op("Gather", [ctx.x, b.const(rolls, "rolls")], axis=ctx.alphabet_axis, hint="shifted_bases")
    perm = [1, 0, 2, 3] if spec.layout == NCL else [2, 0, 1, 3]
    ctx._substituted = b.transpose(rolled, perm, hint="shifted_bases")
    return ctx._substituted


def emit_input_probes(ctx: EmitContext, spacing: int) -> str:
    """Spaced probes of the sequence input: shape ``(n·C·N, A, L)`` (ncl) or ``(n·C·N, L, A)``."""
    if spacing in ctx._input_probes:
        return ctx._input_probes[spacing]
    b, spec = ctx.builder, ctx.spec
    start, end = ctx.plan.window
    length = spec.seq_len
    n = min(spacing, end - start)
    mask = probe_mask(start, end, spacing, n, length)
    if spec.layout == NCL:
        mask5 = mask.reshape(n, 1, 1, 1, length)
    else:
        mask5 = mask.reshape(n, 1, 1, length, 1)
    columns = substituted_columns(ctx)
    probes = b.op("Where", [b.const(mask5, "probe_mask"), columns, ctx.x], hint=f"probes_d{spacing}")
    name = b.reshape(probes, [-1, *spec.input_shape], hint=f"input_probes_d{spacing}")
    ctx._input_probes[spacing] = name
    return name


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


def valid_positions(m: PositionalMap, start: int, end: int, spacing: int, n: int) -> np.ndarray:
    """``valid[c, p]``: position ``p`` sees one of probe ``c``'s mutations."""
    p = np.arange(m.length)
    lo = np.maximum(m.stride * p + m.lo, start)
    hi = np.minimum(m.stride * p + m.hi, end - 1)
    c = np.arange(n)[:, None]
    first = lo[None, :] + (c - (lo[None, :] - start)) % spacing
    return first <= hi[None, :]
