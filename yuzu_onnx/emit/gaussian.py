"""Gaussian probes, the published Yuzu method (DESIGN §3a), emitted as plain ONNX ops.

Approximate ISM for sequential conv/activation/pool stacks: every Conv runs (without its
bias) on ``n_probes = ceil(α · n_nz)`` random Gaussian combinations of the mutants' input
deltas, and each output position's deltas are decoded by least squares over its known
support (pseudo-inverses precomputed in float64, applied as one batched MatMul). Other
local ops act on the decoded deltas: add the reference, apply the op, subtract the
reference. Layout of the tensors and tables: :mod:`yuzu_onnx.emit.gaussian_design`.

Graph per substitution-class branch (the ``If`` of :func:`yuzu_onnx.emit.model.emit_model`:
``A - 1`` shift classes for one-hot windows, all ``A`` bases otherwise)::

    input → residue rows of the input deltas ((rows·C·N, A, L), Where against X, minus X)
    per Conv:  MatMul(G, rows) → Conv without bias on (n_probes·N, ...) probes
               → Transpose (P, n_probes, rest) → MatMul(pinvs[q]) → Gather rows → residue rows
    per other local op: (reference + rows) → the op → (minus reference, when a Conv reads it)
    tail: the engine's tail (emit/tail.py) on reference + rows, as for spaced probes

The residue rows with reference added are exactly the value layout of spaced probes, so the
tail, the decode of global pooling heads and the ISM outputs reuse the spaced engine.

This module only builds graphs; choosing ``α`` (solving the designs, checking each
candidate model against naive ISM) is :func:`yuzu_onnx.convert_gaussian.convert_gaussian`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import onnx

from ..analysis.region import LocalRegion
from ..format import GaussianInfo, metadata_of, read_converted_info, write_converted_info
from ..importer import ModelSpec
from ..plan import RewritePlan
from .builder import PREFIX, copy_nodes
from .gaussian_design import ConvSolve, GaussianDesign, linear_part
from .model import emit_decoded_outputs, emit_ism_model
from .probes import EmitContext, emit_input_probes


def emit_gaussian_model(
    spec: ModelSpec,
    region: LocalRegion,
    plan: RewritePlan,
    design: GaussianDesign,
    solves: Mapping[int, list[ConvSolve]],
    outputs: list[str],
    reductions: dict[str, str],
) -> onnx.ModelProto:
    """The self-contained ISM model: reference pass, then an ``If`` over the class branches."""

    def branch(ctx: EmitContext, is_reference: str) -> list[str]:
        return _Branch(ctx, design, solves[ctx.n_classes]).emit(outputs, reductions, is_reference)

    return emit_ism_model(spec, region, plan, outputs=outputs, reductions=reductions, probes="gaussian",
                          branch=branch)


class _Branch:
    """The region of one class branch in residue layout, then the engine's decode and tail.

    Every region tensor is kept as ``values`` (reference + residue rows, the spaced-probe
    layout other ops and the tail read) and/or ``deltas`` (the rows alone, what a Conv's
    encode reads), each ``(rows · C · N, *dims)``; the other form is made on demand.
    """

    def __init__(self, ctx: EmitContext, design: GaussianDesign, solves: list[ConvSolve]) -> None:
        self.ctx = ctx
        self.design = design
        self.solves = {conv.node: (conv, solve) for conv, solve in zip(design.convs, solves)}
        self.values: dict[str, str] = {}
        self.deltas: dict[str, str] = {}
        self.prefix = f"{PREFIX}{ctx.builder.scope}gaussian/"

    def rows(self, tensor: str) -> int:
        return self.design.rows(self.design.segment_of[tensor]) * self.ctx.n_classes

    def value(self, tensor: str) -> str:
        if tensor not in self.values:
            b, dims = self.ctx.builder, self.ctx.dims(tensor)
            rows = b.reshape(self.deltas[tensor], [self.rows(tensor), -1, *dims], hint="rows")
            added = b.op("Add", [rows, self.ctx.ref_names[tensor]], hint="add_reference")
            self.values[tensor] = b.reshape(added, [-1, *dims], hint="values")
        return self.values[tensor]

    def delta(self, tensor: str) -> str:
        if tensor not in self.deltas:
            b, dims = self.ctx.builder, self.ctx.dims(tensor)
            rows = b.reshape(self.values[tensor], [self.rows(tensor), -1, *dims], hint="rows")
            less = b.op("Sub", [rows, self.ctx.ref_names[tensor]], hint="sub_reference")
            self.deltas[tensor] = b.reshape(less, [-1, *dims], hint="deltas")
        return self.deltas[tensor]

    def emit(self, outputs: list[str], reductions: dict[str, str], is_reference: str) -> list[str]:
        ctx, design = self.ctx, self.design
        graph = ctx.spec.model.graph
        self.values[ctx.x] = emit_input_probes(ctx, design.moduli[0])
        for i in sorted(i for nodes in design.segment_nodes for i in nodes):
            node = graph.node[i]
            if i in self.solves:
                self._conv(*self.solves[i])
            else:
                source = next(n for n in node.input if n in design.segment_of)
                rename = {source: self.value(source)}
                self._copy(node, rename)
                for out in node.output:
                    if out:
                        self.values[out] = rename[out]
        ctx.stage_names = [{} for _ in design.moduli]
        ctx.stage_spans = [None for _ in design.moduli]  # every position is computed
        local_outputs = [o for o in outputs if o in ctx.region.maps]
        for tensor in dict.fromkeys([*ctx.region.frontier, *local_outputs]):
            if tensor != ctx.x:
                ctx.stage_names[design.segment_of[tensor]][tensor] = self.value(tensor)
        return emit_decoded_outputs(ctx, outputs, reductions, is_reference)

    def _copy(self, node: onnx.NodeProto, rename: dict[str, str]) -> None:
        ctx = self.ctx
        copy_nodes([node], rename, prefix=self.prefix, available=ctx.is_available_outside,
                   producers=ctx.producers, is_meta=ctx.is_meta, sink=ctx.builder.nodes)

    def _conv(self, conv, solve: ConvSolve) -> None:
        """Encode the input rows into probes, run the conv without bias, decode by least squares."""
        b, ctx = self.ctx.builder, self.ctx
        m = ctx.region.maps[conv.output]
        in_dims, dims = ctx.dims(conv.input), ctx.dims(conv.output)
        n = solve.n_probes
        rows = b.reshape(self.delta(conv.input), [self.rows(conv.input), -1], hint="input_rows")
        probes = b.op("MatMul", [b.const(solve.sensing, "sensing"), rows], hint="encode")
        probes = b.reshape(probes, [-1, *in_dims], hint="probes")
        rename = {conv.input: probes}
        self._copy(linear_part(ctx.spec.model.graph.node[conv.node]), rename)
        # (n, N, *dims) → (P, n, N · other dims)
        length = m.axis  # index in dims is m.axis - 1, axis 1 + m.axis of (n, N, *dims)
        others = [2 + k for k in range(len(dims)) if k != length - 1]
        y = b.reshape(rename[conv.output], [n, -1, *dims], hint="probe_outputs")
        y = b.transpose(y, [1 + length, 0, 1, *others], hint="position_major")
        y = b.reshape(y, [m.length, n, -1], hint="position_major")
        pinvs = b.const(solve.pinvs, "pinvs")
        if solve.shares_pinvs:
            pinvs = b.op("Gather", [pinvs, b.const(solve.position_pinv, "pinv_of_position")], axis=0,
                         hint="position_pinvs")
        decoded = b.op("MatMul", [pinvs, y], hint="decode")  # (P, RF·C + 1, rest)
        block = m.receptive_field * ctx.n_classes + 1
        decoded = b.reshape(decoded, [m.length * block, -1], hint="decoded_rows")
        placed = b.op("Gather", [decoded, b.const(solve.relayout, "relayout")], axis=0, hint="residue_rows")
        other_dims = [d for k, d in enumerate(dims) if k != length - 1]
        rows_out = self.rows(conv.output)
        placed = b.reshape(placed, [rows_out, m.length, -1, *other_dims], hint="residue_rows")
        perm = [0, 2] + [1 if k == length - 1 else 3 + sum(1 for kk in range(k) if kk != length - 1)
                         for k in range(len(dims))]
        placed = b.transpose(placed, perm, hint="residue_rows")
        self.deltas[conv.output] = b.reshape(placed, [-1, *dims], hint="deltas")


def set_gaussian_metadata(model: onnx.ModelProto, design: GaussianDesign, region: LocalRegion,
                          solves: Mapping[int, list[ConvSolve]], a: int, *, alpha: float, r: float, seed: int,
                          condition: float, auto: bool) -> None:
    """Record the Gaussian layers (support, probes, condition number), α, r and the seed in
    ``model``'s metadata, replacing the spaced engine's ``stages`` and ``probes``."""
    layers = []
    for k, conv in enumerate(design.convs):
        shift, bases = solves[a - 1][k], solves[a][k]
        layers.append({
            "conv": conv.name,
            "nodes": len(design.segment_nodes[conv.out_segment]),
            "spacing": design.moduli[conv.in_segment],
            "receptive_field": region.maps[conv.output].receptive_field,
            "support": shift.support,
            "probes": shift.n_probes,
            "support_all_bases": bases.support,
            "probes_all_bases": bases.n_probes,
            "condition_number": float(f"{max(shift.condition, bases.condition):.4g}"),
        })
    info = read_converted_info(metadata_of(model))
    gaussian = GaussianInfo(alpha=alpha, alpha_mode="auto" if auto else "fixed", pearson_r=r, seed=seed,
                            condition_number=condition)
    write_converted_info(model, replace(info, probes="gaussian", stages=tuple(layers), gaussian=gaussian))
