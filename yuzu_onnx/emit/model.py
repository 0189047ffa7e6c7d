"""Emit the self-contained ISM model: reference pass, probe stages, decode, tail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..analysis.region import LocalRegion, constant_values
from ..errors import UnsupportedError
from ..format import ConvertedModelInfo, write_converted_info
from ..importer import ModelSpec
from ..plan import RewritePlan, fixed_bytes
from ..version import __version__
from .bands import emit_band_output
from .builder import PREFIX, GraphBuilder, prune_dead_nodes, referenced_names
from .decode import (
    REDUCTIONS,
    emit_l2_output,
    emit_mutants,
    emit_output,
    ism_dims,
    probe_indices,
    reference_base_mask,
)
from .dense_rows import decodes_by_rows, emit_dense_rows
from .probes import EmitContext
from .stages import emit_stage
from .streaming import emit_window_chunks
from .tail import emit_tail


def emit_model(
    spec: ModelSpec,
    region: LocalRegion,
    plan: RewritePlan,
    *,
    outputs: list[str],
    reductions: dict[str, str],
    probes: str = "spaced",
) -> onnx.ModelProto:
    """Write the ISM model for ``outputs`` of ``spec`` following ``plan``.

    The emitted model's input is the original one-hot input; each output is named like
    the model output it belongs to and holds ISM values in the input's layout.
    """
    for name, how in reductions.items():
        if how not in REDUCTIONS:
            raise ValueError(f"unknown reduction {how!r} for {name!r}")
    for out in outputs:
        if region.kinds.get(out) != "data":
            raise UnsupportedError(f"output {out!r} does not depend on the sequence")

    def branch(ctx: EmitContext, is_reference: str) -> list[str]:
        for s in range(len(ctx.plan.stages)):
            emit_stage(ctx, s)
        return emit_decoded_outputs(ctx, outputs, reductions, is_reference)

    def streamed(ctx: EmitContext, is_reference: str) -> list[str]:
        if not plan.chunks:
            return branch(ctx, is_reference)
        return emit_window_chunks(ctx, outputs, is_reference, branch)

    return emit_ism_model(spec, region, plan, outputs=outputs, reductions=reductions, probes=probes, branch=streamed)


def emit_ism_model(
    spec: ModelSpec,
    region: LocalRegion,
    plan: RewritePlan,
    *,
    outputs: list[str],
    reductions: dict[str, str],
    probes: str,
    branch: Callable[[EmitContext, str], list[str]],
) -> onnx.ModelProto:
    """The model around a probe method: the reference pass, then an ``If`` choosing between
    ``branch`` emitted with shift classes (every mutated column one-hot) and with all bases.

    ``branch(ctx, is_reference)`` emits the probes and decode into ``ctx.builder`` and
    returns the ISM tensor of each output.
    """
    graph = spec.model.graph
    builder = GraphBuilder(spec.opset)
    ref_names = _emit_reference(spec, builder)
    producers = {o: node for node in graph.node for o in node.output if o}
    constants = constant_values(spec.model)
    outer = EmitContext(spec, region, plan, builder, ref_names, producers, constants)
    is_reference = reference_base_mask(outer)
    branches = {}
    for shift in (False, True):
        scope = GraphBuilder(spec.opset, scope="shift/" if shift else "bases/", initializers=builder.initializers)
        ctx = EmitContext(spec, region, plan, scope, ref_names, producers, constants, shift=shift)
        finals = branch(ctx, is_reference)
        branches[shift] = helper.make_graph(
            prune_dead_nodes(scope.nodes, finals),
            "ism_shift_classes" if shift else "ism_all_bases",
            [],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in finals],
        )
    builder.nodes.append(
        helper.make_node(
            "If",
            [_window_is_one_hot(outer)],
            list(outputs),
            name=f"{PREFIX}classes",
            then_branch=branches[True],
            else_branch=branches[False],
        )
    )
    final_outputs = []
    for out in outputs:
        shape = ["batch", *_ism_axes(spec, plan)] + ism_dims(outer, out, reductions[out])
        final_outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, shape))
    seq_input = next(i for i in graph.input if i.name == spec.input_name)
    extra_names = {e.name for e in spec.extra_inputs}
    extra_inputs = [i for i in graph.input if i.name in extra_names]  # kept, in the model's order
    nodes = prune_dead_nodes(builder.nodes, outputs)
    used = referenced_names(nodes)
    new_graph = helper.make_graph(
        nodes,
        f"{graph.name or 'model'}_ism",
        [seq_input, *extra_inputs],
        final_outputs,
        list(graph.initializer) + [t for t in builder.initializers if t.name in used],
    )
    model = helper.make_model(new_graph, opset_imports=list(spec.model.opset_import), producer_name="yuzu-onnx",
                              producer_version=__version__)
    # the lowest IR version the opsets need, never newer than the source's
    model.ir_version = min(spec.model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    info = converted_info(spec, region, plan, outputs, reductions, probes, plan.tail.kind)
    write_converted_info(model, replace(info, fixed_bytes=int(fixed_bytes(model))))
    return model


def emit_decoded_outputs(ctx: EmitContext, outputs: list[str], reductions: dict[str, str], is_reference: str) -> list[str]:
    """After the probes: decode local outputs, run the tail, lay out the ISM tensors."""
    builder, plan = ctx.builder, ctx.plan
    start, end = plan.window
    positions = np.arange(start, end, dtype=np.int64)
    forms = {o: plan.outputs[o].form if o in plan.outputs else "dense" for o in outputs}
    by_rows = {o for o in outputs if decodes_by_rows(ctx, o, reductions[o], forms[o])}
    banded = {o: plan.outputs[o] for o in outputs if o in plan.outputs and plan.outputs[o].band is not None
              and reductions[o] != "raw" and o not in by_rows}
    local_outputs = [o for o in outputs if o in ctx.region.maps and o not in banded and o not in by_rows]
    tail_outputs = [o for o in outputs if o not in ctx.region.maps]
    values: dict[str, str] = {}
    if local_outputs:
        position_name = builder.const(positions, "positions")
        index = {d: builder.const(v, "probe_index") for d, v in probe_indices(ctx, positions).items()}
        for out in local_outputs:
            values[out] = emit_mutants(ctx, out, position_name, index)
    # l2 of outputs the chunked tail computes is reduced chunk by chunk (no full-size tensor)
    chunked = {o for o in tail_outputs if o not in {head.output for head in plan.tail.heads}}
    l2_sums = frozenset(o for o in chunked if reductions[o] == "l2")
    if tail_outputs:
        values.update(emit_tail(ctx, tail_outputs, l2_sums))
    return [emit_dense_rows(ctx, out, is_reference) if out in by_rows
            else emit_band_output(ctx, out, reductions[out], banded[out].form, is_reference, banded[out].band)
            if out in banded else emit_l2_output(ctx, values[out], is_reference) if out in l2_sums
            else emit_output(ctx, out, values[out], reductions[out], is_reference)
            for out in outputs]


def _window_is_one_hot(ctx: EmitContext) -> str:
    """True when every mutated column is one-hot, so the shift classes apply."""
    b = ctx.builder
    start, end = ctx.plan.window
    window = b.slice(ctx.x, [start], [end], [3 - ctx.alphabet_axis], hint="window_input")
    column_max = b.reduce("ReduceMax", window, [ctx.alphabet_axis], keepdims=0, hint="column_max")
    smallest = b.op("ReduceMin", [column_max], hint="smallest_column_max", keepdims=0)
    return b.op("Equal", [smallest, b.const(np.array(1.0, dtype=np.float32), "one")], hint="one_hot")


def _ism_axes(spec: ModelSpec, plan: RewritePlan) -> list[int]:
    a, lw = spec.alphabet_size, plan.window_length
    return [a, lw] if spec.layout == "ncl" else [lw, a]


def _emit_reference(spec: ModelSpec, builder: GraphBuilder) -> dict[str, str]:
    """The original graph on the reference sequences; graph outputs are renamed."""
    renamed = {o.name: f"{PREFIX}ref/{o.name}" for o in spec.model.graph.output}
    names: dict[str, str] = {}
    for node in spec.model.graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for k, name in enumerate(new.input):
            new.input[k] = renamed.get(name, name)
        for k, name in enumerate(new.output):
            new.output[k] = renamed.get(name, name)
        builder.nodes.append(new)
        for out in node.output:
            if out:
                names[out] = renamed.get(out, out)
    names[spec.input_name] = spec.input_name
    for extra in spec.extra_inputs:
        names[extra.name] = extra.name
    return names


def converted_info(
    spec: ModelSpec,
    region: LocalRegion,
    plan: RewritePlan,
    outputs: list[str],
    reductions: dict[str, str],
    probes: str,
    tail: str,
) -> ConvertedModelInfo:
    """The metadata record of a model emitted from ``plan`` (the plan the emitter realised)."""
    stages = [
        {"spacing": st.spacing, "probes": st.n_probes * (spec.alphabet_size - 1),
         "probes_with_unknown_bases": st.n_probes * spec.alphabet_size, "receptive_field": st.receptive_field,
         "nodes": len(st.nodes)}
        for st in plan.stages
    ]
    return ConvertedModelInfo(
        input_name=spec.input_name,
        extra_inputs=spec.extra_inputs,
        sequence=spec.sequence,
        window=plan.window,
        outputs={o: _output_record(plan, o, reductions[o]) for o in outputs},
        probes=probes,
        version=__version__,
        source_sha256=spec.source_sha256,
        stages=tuple(stages),
        first_conv_shortcut=tuple(spec.model.graph.node[c.node].name or c.output for c in plan.input_convs),
        tail=tail,
        tail_chunk=plan.tail_chunk,
        peak_bytes_per_sequence=int(plan.peak_bytes_per_sequence),
        window_chunks=plan.window_chunks,
        naive_flops=plan.naive_flops,
        rewritten_flops=plan.rewritten_flops,
        fallback_reason=plan.fallback_reason,
        region_stops=tuple(str(s) for s in region.stops),
    )


def _output_record(plan: RewritePlan, output: str, reduce: str) -> dict:
    """An output's metadata entry: its reduction, its form and, when banded, its band."""
    how = plan.outputs.get(output)
    record: dict = {"reduce": reduce, "form": how.form if how is not None else "dense"}
    if how is not None and how.form == "banded" and how.band is not None:
        record["band"] = how.band.to_json()
    return record
