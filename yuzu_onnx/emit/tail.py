"""The tail (DESIGN §4): the graph after the local region, run on materialised mutants.

The plan decides what runs (``RewritePlan.tail``: the linear heads decoded from window
sums, the tail nodes and the frontier tensors of the chunked tail); this module builds it.

The mutated positions are processed in chunks inside an ONNX ``Loop`` so that memory
stays bounded: each iteration builds the chunk's mutant frontier tensors (Gather + Where
against the reference), runs a copy of the tail on them and scans out the model outputs
as ``(chunk, A, N, *odims)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .builder import PREFIX, GraphBuilder, copy_nodes
from .decode import emit_mutants, probe_indices
from .extra import fixed_inputs, tile_fixed
from .probes import EmitContext
from .softplus import emit_softplus, is_softplus
from .wide_conv import emit_wide_conv, is_wide_conv
from .window_sums import emit_head_mutants


def emit_tail(ctx: EmitContext, outputs: list[str], l2_outputs: frozenset[str] = frozenset()) -> dict[str, str]:
    """Run the tail for ``outputs``; returns each output's mutant values ``(Lw, C, N, *odims)``.

    Outputs in ``l2_outputs`` that the chunked tail computes are reduced chunk by chunk:
    their values are the per-class sums of squared changes ``(Lw, C, N)``
    (:func:`~yuzu_onnx.emit.decode.emit_l2_output` finishes them), so no full-size tensor
    of every mutant's output is ever built.
    """
    outer, spec, plan = ctx.builder, ctx.spec, ctx.plan
    graph = spec.model.graph
    precomputed = {head.output: emit_head_mutants(ctx, head) for head in plan.tail.heads}
    result = {out: precomputed[out] for out in outputs if out in precomputed}
    remaining = [out for out in outputs if out not in precomputed]
    assert (plan.tail.kind == "none") == (not remaining), "the plan's tail does not match the outputs emitted"
    if not remaining:
        return result
    tail_nodes = [graph.node[i] for i in plan.tail.nodes]
    start, end = plan.window
    lw = end - start
    chunk = plan.tail_chunk
    n_chunks = -(-lw // chunk)
    positions = np.arange(start, start + n_chunks * chunk, dtype=np.int64)
    positions = np.minimum(positions, end - 1).reshape(n_chunks, chunk)
    body = GraphBuilder(outer.opset, scope=outer.scope + "tail/", initializers=outer.initializers)
    iteration = body.name("iteration")
    cond_in = body.name("cond_in")
    chunk_positions = body.op(
        "Gather", [outer.const(positions, "tail_positions"), iteration], axis=0, hint="chunk_positions"
    )
    indices = {
        spacing: body.op("Gather", [outer.const(table.reshape(n_chunks, chunk), "tail_probe_index"), iteration],
                         axis=0, hint="chunk_probe_index")
        for spacing, table in probe_indices(ctx, positions.reshape(-1)).items()
    }
    frontier = plan.tail.frontier
    rename: dict[str, str] = {}
    if precomputed:
        offsets = body.op("Gather", [outer.const(positions - start, "tail_offsets"), iteration], axis=0,
                          hint="chunk_offsets")
        for name, values in precomputed.items():
            taken = body.op("Gather", [values, offsets], axis=0, hint="reduced_chunk")
            rename[name] = body.reshape(taken, [-1, *ctx.dims(name)], hint="reduced_mutants")
    saved_builder = ctx.builder
    ctx.builder = body
    try:
        for tensor in frontier:
            mutants = emit_mutants(ctx, tensor, chunk_positions, indices)
            rename[tensor] = body.reshape(mutants, [-1, *ctx.dims(tensor)], hint="frontier_mutants")
    finally:
        ctx.builder = saved_builder
    for name in fixed_inputs(ctx, tail_nodes):  # extra inputs: the same for every mutant of a sequence
        rename[name] = tile_fixed(ctx, name, chunk * ctx.n_classes, builder=body)

    def faster_form(original: onnx.NodeProto, renamed: onnx.NodeProto) -> bool:
        if is_softplus(original, ctx.dtype(original.output[0])):
            emit_softplus(body, renamed.input[0], renamed.output[0])
            return True
        if not is_wide_conv(original, spec.shapes, ctx.constants):
            return False
        emit_wide_conv(body, original, renamed.input[0], renamed.output[0], spec.shapes, ctx.constants)
        return True

    copy_nodes(
        tail_nodes,
        rename,
        prefix=f"{PREFIX}{outer.scope}tail/",
        available=ctx.is_available_outside,
        producers=ctx.producers,
        is_meta=ctx.is_meta,
        sink=body.nodes,
        replace=faster_form,
    )
    scans = []
    for out in remaining:
        values = body.reshape(rename[out], [chunk, ctx.n_classes, -1, *ctx.dims(out)], hint="scan")
        if out in l2_outputs:
            delta = body.op("Sub", [values, ctx.ref_names[out]], hint="tail_delta")
            axes = list(range(3, 3 + len(ctx.dims(out))))
            values = (body.reduce("ReduceSumSquare", delta, axes, keepdims=0, hint="tail_l2") if axes
                      else body.op("Mul", [delta, delta], hint="tail_l2"))
        scans.append(values)
    cond_out = body.op("Identity", [cond_in], hint="cond_out")
    body_graph = helper.make_graph(
        body.nodes,
        "yuzu_tail_chunk",
        [
            helper.make_tensor_value_info(iteration, TensorProto.INT64, []),
            helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(s, TensorProto.FLOAT, None) for s in scans],
    )
    trip = outer.const(np.array(n_chunks, dtype=np.int64), "tail_chunks")
    true = outer.const(np.array(True), "true")
    loop_outputs = [outer.name("tail_scan") for _ in remaining]
    outer.nodes.append(helper.make_node("Loop", [trip, true], loop_outputs, name=outer.name("tail_loop"), body=body_graph))
    for out, scanned in zip(remaining, loop_outputs):
        dims = [] if out in l2_outputs else ctx.dims(out)
        flat = outer.reshape(scanned, [n_chunks * chunk, ctx.n_classes, -1, *dims], hint="tail_values")
        if n_chunks * chunk != lw:
            flat = outer.slice(flat, [0], [lw], [0], hint="tail_values")
        result[out] = flat
    return result


def tail_outputs_needed(model: onnx.ModelProto, region, outputs: list[str]) -> list[str]:
    """The requested outputs that the tail computes (not local tensors)."""
    return [o for o in outputs if o not in region.maps]
