"""Stage copies: each stage's nodes run on its probes, its inputs re-packed from the
stages that produced them (DESIGN §3b), optionally cropped to the affected span."""

from __future__ import annotations

import numpy as np
import onnx

from .builder import PREFIX, copy_nodes
from .crop import Span, emit_cropped_node, fit_span, required_spans, stage_spans
from .extra import fixed_inputs, tile_fixed
from .input_conv import emit_input_conv
from .probes import EmitContext, emit_input_probes, valid_positions
from .softplus import emit_softplus, is_softplus
from .wide_conv import emit_wide_conv, is_wide_conv


def full_span(ctx: EmitContext, tensor: str) -> Span:
    return Span(0, ctx.region.maps[tensor].length - 1)


def computed_span(ctx: EmitContext, tensor: str, stage: int) -> Span:
    """The positions of ``tensor`` that stage ``stage``'s copy computes."""
    spans = ctx.stage_spans[stage]
    return spans[tensor] if spans is not None and tensor in spans else full_span(ctx, tensor)


def probes_of(ctx: EmitContext, tensor: str, stage: int, want: Span | None = None, take: str | None = None) -> str:
    """Stage ``stage``'s probes of ``tensor`` as ``(n_probes, C, N, *dims)`` over ``want``.

    ``want`` defaults to the full length; positions the stage did not compute are
    zero-filled (callers only read them where the reference is taken instead). ``take``:
    int64 probe indices ``(K,)``: only those probes, ``(K, C, N, *dims)``, gathered before
    the zero fill so that it runs on ``K`` probes, not all of them.
    """
    b = ctx.builder
    m = ctx.region.maps[tensor]
    want = want or full_span(ctx, tensor)
    have = computed_span(ctx, tensor, stage)
    dims = ctx.dims(tensor)
    dims[m.axis - 1] = have.size
    n = ctx.plan.stages[stage].n_probes
    values = b.reshape(ctx.stage_names[stage][tensor], [n, ctx.n_classes, -1, *dims], hint="probe_axis")
    if take is not None:
        values = b.op("Gather", [values, take], axis=0, hint="decode")
    axis = m.axis + 2
    inner = Span(max(want.lo, have.lo), min(want.hi, have.hi))
    if inner != have:
        values = b.slice(values, [inner.lo - have.lo], [inner.hi - have.lo + 1], [axis], hint="probe_span")
    if inner != want:
        pads = [0] * (2 * (len(dims) + 3))
        pads[axis] = inner.lo - want.lo
        pads[len(dims) + 3 + axis] = want.hi - inner.hi
        values = b.pad(values, pads, dtype=ctx.dtype(tensor), hint="probe_span")
    return values


def emit_repack(ctx: EmitContext, tensor: str, to_stage: int, want: Span | None = None) -> str:
    """``tensor``'s values for stage ``to_stage``'s probes over ``want``, from its producing stage."""
    b, plan = ctx.builder, ctx.plan
    stage = plan.stages[to_stage]
    m = ctx.region.maps[tensor]
    want = want or full_span(ctx, tensor)
    if ctx.region.is_fixed(tensor):  # the same for every probe of a sequence
        return tile_fixed(ctx, tensor, stage.n_probes * ctx.n_classes, want)
    if tensor == ctx.x:
        probes = emit_input_probes(ctx, stage.spacing)
        if want == full_span(ctx, tensor):
            return probes
        return b.slice(probes, [want.lo], [want.hi + 1], [m.axis], hint="crop_input_probes")
    source = plan.producer_stage[tensor]
    start, end = plan.window
    n = stage.n_probes
    n_source = plan.stages[source].n_probes
    probe_axis = probes_of(ctx, tensor, source, want)
    valid = valid_positions(m, start, end, stage.spacing, n)[:, want.lo : want.hi + 1]
    rank = len(ctx.spec.shapes[tensor])
    positions = [want.size if axis == m.axis else 1 for axis in range(1, rank)]
    if n % n_source == 0:
        # probe c takes source probe c mod n_source: broadcast over a (repeat, source) split
        repeat = n // n_source
        if repeat > 1:
            probe_axis = b.unsqueeze(probe_axis, [0], hint="repack_repeat")
        shape = ([repeat] if repeat > 1 else []) + [n_source, 1, 1] + positions
    else:
        taken = np.arange(n, dtype=np.int64) % plan.stages[source].spacing
        probe_axis = b.op("Gather", [probe_axis, b.const(taken, "repack_index")], axis=0, hint="repack_gather")
        shape = [n, 1, 1] + positions
    reference = ctx.ref_names[tensor]
    if want != full_span(ctx, tensor):
        reference = b.slice(reference, [want.lo], [want.hi + 1], [m.axis], hint="crop_reference")
    mixed = b.select(valid.reshape(shape), probe_axis, reference, hint="repack", dtype=ctx.dtype(tensor))
    dims = ctx.dims(tensor)
    dims[m.axis - 1] = want.size
    return b.reshape(mixed, [-1, *dims], hint=f"repacked_s{to_stage}")


def emit_stage(ctx: EmitContext, s: int) -> None:
    """Copy stage ``s``'s nodes onto its probes (re-packing its inputs first)."""
    spans = stage_spans(ctx, s)
    if spans is None:
        _emit_full_stage(ctx, s)
    else:
        _emit_cropped_stage(ctx, s, spans)


def _emit_full_stage(ctx: EmitContext, s: int) -> None:
    stage = ctx.plan.stages[s]
    rename = {name: emit_repack(ctx, name, s) for name in stage.inputs}
    graph = ctx.spec.model.graph
    for name in fixed_inputs(ctx, [graph.node[i] for i in stage.nodes]):
        if name not in rename:
            rename[name] = tile_fixed(ctx, name, stage.n_probes * ctx.n_classes)

    shortcuts = {conv.output: conv for conv in ctx.plan.input_convs}

    def faster_form(original: onnx.NodeProto, renamed: onnx.NodeProto) -> bool:
        conv = shortcuts.get(original.output[0])
        if conv is not None:
            emit_input_conv(ctx, conv, s, full_span(ctx, conv.output), renamed.output[0])
            return True
        if is_softplus(original, ctx.dtype(original.output[0])):
            emit_softplus(ctx.builder, renamed.input[0], renamed.output[0])
            return True
        if not is_wide_conv(original, ctx.spec.shapes, ctx.constants):
            return False
        emit_wide_conv(ctx.builder, original, renamed.input[0], renamed.output[0], ctx.spec.shapes, ctx.constants)
        return True

    copy_nodes(
        [graph.node[i] for i in stage.nodes],
        rename,
        prefix=f"{PREFIX}{ctx.builder.scope}s{s}/",
        available=ctx.is_available_outside,
        producers=ctx.producers,
        is_meta=ctx.is_meta,
        sink=ctx.builder.nodes,
        replace=faster_form,
    )
    ctx.stage_names.append(rename)
    ctx.stage_spans.append(None)


def _emit_cropped_stage(ctx: EmitContext, s: int, spans: dict[str, Span]) -> None:
    stage = ctx.plan.stages[s]
    graph = ctx.spec.model.graph
    maps = ctx.region.maps
    prefix = f"{PREFIX}{ctx.builder.scope}s{s}/"
    names = {name: emit_repack(ctx, name, s, spans[name]) for name in stage.inputs}
    have = {name: spans[name] for name in stage.inputs}
    for name in fixed_inputs(ctx, [graph.node[i] for i in stage.nodes]):
        if name not in maps:  # per-sequence values without a length axis: tiled, never cut
            names[name] = tile_fixed(ctx, name, stage.n_probes * ctx.n_classes)
    shortcuts = {conv.output: conv for conv in ctx.plan.input_convs}
    for i in stage.nodes:
        node = graph.node[i]
        needed = [o for o in node.output if o in spans]
        if not needed:
            continue
        out_span = spans[needed[0]]
        if node.output[0] in shortcuts:
            out = prefix + node.output[0]
            emit_input_conv(ctx, shortcuts[node.output[0]], s, out_span, out)
            names[node.output[0]], have[node.output[0]] = out, out_span
            continue
        required = required_spans(ctx, node, out_span)
        inputs = [
            fit_span(ctx, names[name], name, have[name], required[name], stage.n_probes) if name in maps
            else names.get(name, name) if ctx.region.is_fixed(name) else name
            for name in node.input
        ]
        outputs = [prefix + o if o else "" for o in node.output]
        new = emit_cropped_node(ctx, node, inputs, outputs, out_span, required)
        if is_softplus(node, ctx.dtype(node.output[0])):
            emit_softplus(ctx.builder, new.input[0], new.output[0])
        elif is_wide_conv(node, ctx.spec.shapes, ctx.constants):
            shapes = {
                new.input[0]: (-1, ctx.spec.shapes[node.input[0]][1], required[node.input[0]].size),
                new.output[0]: (-1, ctx.spec.shapes[node.output[0]][1], out_span.size),
            }
            emit_wide_conv(ctx.builder, new, new.input[0], new.output[0], shapes, ctx.constants)
        else:
            ctx.builder.nodes.append(new)
        for o, renamed in zip(node.output, outputs):
            if o:
                names[o] = renamed
                have[o] = out_span
    ctx.stage_names.append(names)
    ctx.stage_spans.append(have)
