"""Extra inputs (control tracks, covariates) on the probes and mutants.

A tensor computed from the model's extra inputs only (a *fixed* tensor, see
``analysis/region.py``) is the same for every mutant of a sequence. The reference pass
computes it once per sequence, ``(N, ...)``; wherever a copied node (a probe stage, the
tail) reads it, it reads the reference value tiled over the copy's batch. Probe and
mutant batches are ordered with the sequence innermost (``(probe, class, sequence)``,
``(position, class, sequence)``), so tiling the ``N`` rows ``R`` times lines every probe
up with its sequence.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from ..analysis.region import node_inputs
from ..ops import Span
from .builder import GraphBuilder
from .probes import EmitContext


def tile_fixed(ctx: EmitContext, tensor: str, repeats: int, span: Span | None = None,
               builder: GraphBuilder | None = None) -> str:
    """``tensor``'s reference value repeated ``repeats`` times along the batch, cut to ``span``
    of its length axis when given (fixed tensors with a positional map only)."""
    b = builder or ctx.builder
    value = ctx.ref_names.get(tensor, tensor)
    m = ctx.region.maps.get(tensor)
    if span is not None and m is not None and span != Span(0, m.length - 1):
        value = b.slice(value, [span.lo], [span.hi + 1], [m.axis], hint="crop_fixed")
    if repeats == 1:
        return value
    rank = len(ctx.spec.shapes[tensor])
    return b.op("Tile", [value, b.ints([repeats] + [1] * (rank - 1), "repeats")], hint="fixed_tiled")


def fixed_inputs(ctx: EmitContext, nodes: Iterable[onnx.NodeProto]) -> list[str]:
    """The fixed tensors ``nodes`` read, directly or through the shape computations they need."""
    found: list[str] = []
    seen: set[str] = set()
    stack = [name for node in nodes for name in node_inputs(node)]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if ctx.region.is_fixed(name):
            found.append(name)
        elif ctx.is_meta(name) and name in ctx.producers:
            stack.extend(node_inputs(ctx.producers[name]))
    return sorted(found)
