"""Affected-span cropping: compute each stage only where mutations can reach.

With a mutated window ``[start, end)`` narrower than the sequence, a local tensor differs
from the reference only on its *changed span*, the positions whose window meets the
mutated window. A stage copy then needs each tensor only on a span: the changed span for
what it hands on, widened backwards through the stage by each op's halo. The stage's
nodes are emitted on those spans, with their length-dependent parameters adjusted
(convolution and pooling pads, Slice bounds, Pad widths, Reshape targets, per-position
constants). The op table (``yuzu_onnx.ops``) says, per op, which input spans an output
span needs (``required_spans``) and how the node changes (``crop``); this module applies
them. Ops without a span function leave the stage uncropped; the result is identical
either way, cropping only removes work.
"""

from __future__ import annotations

import copy

import onnx

from ..analysis.positional import PositionalMap
from ..ops import CropContext, CropEdit, Span, op_spec
from .probes import EmitContext


def changed_span(m: PositionalMap, start: int, end: int) -> Span:
    """Positions whose window meets the mutated positions ``[start, end)``."""
    return Span(*m.changed_span(start, end))


def _crop_context(ctx: EmitContext, node: onnx.NodeProto) -> CropContext:
    return CropContext(node=node, maps=ctx.region.maps, shapes=ctx.spec.shapes, constants=ctx.constants)


def required_spans(ctx: EmitContext, node: onnx.NodeProto, out_span: Span) -> dict[str, Span] | None:
    """Spans of the node's local inputs needed to compute ``out_span``; ``None``: no rule."""
    if any(name and ctx.region.kinds.get(name) == "meta" for name in node.input):
        return None
    spans = op_spec(node.op_type).required_spans
    return None if spans is None else spans(_crop_context(ctx, node), out_span)


def stage_spans(ctx: EmitContext, stage_index: int) -> dict[str, Span] | None:
    """The span each tensor of a stage copy is computed on, or ``None`` (no cropping)."""
    plan = ctx.plan
    start, end = plan.window
    if (start, end) == (0, ctx.spec.seq_len):
        return None
    stage = plan.stages[stage_index]
    graph = ctx.spec.model.graph
    maps = ctx.region.maps
    later = set(ctx.region.frontier)
    for st in plan.stages[stage_index + 1 :]:
        later.update(st.inputs)
    need: dict[str, Span] = {}
    for i in stage.nodes:
        for out in graph.node[i].output:
            if out in later and out in maps:
                need[out] = changed_span(maps[out], start, end)
    for i in reversed(stage.nodes):
        node = graph.node[i]
        out_span = None
        for out in node.output:
            if out in need:
                out_span = need[out].union(out_span)
        if out_span is None:
            continue
        # outside its changed span a tensor equals the reference in every probe: compute only
        # the changed part; consumers reading further get reference values (fit_span)
        changed = changed_span(maps[node.output[0]], start, end)
        inner = Span(max(out_span.lo, changed.lo), min(out_span.hi, changed.hi))
        if inner.lo <= inner.hi:
            out_span = inner
        for out in node.output:
            if out in maps:
                need[out] = out_span
        required = required_spans(ctx, node, out_span)
        if required is None:
            return None
        for name, span in required.items():
            need[name] = span.union(need.get(name))
    full = sum(maps[name].length for name in need)
    cropped = sum(span.size for span in need.values())
    return need if cropped < 0.9 * full else None


def fit_span(ctx: EmitContext, tensor_name: str, original: str, have: Span, want: Span, n_probes: int) -> str:
    """``original``'s stage copy (computed on ``have``) over ``want``; positions outside
    ``have`` lie outside the tensor's changed span, so they take the reference: the
    reference's halos, repeated for every probe, concatenated around the computed part
    (one pass over the tensor)."""
    from .extra import tile_fixed

    b = ctx.builder
    m = ctx.region.maps[original]
    axis = m.axis
    inner = Span(max(want.lo, have.lo), min(want.hi, have.hi))
    if inner == want:
        if have == want:
            return tensor_name
        return b.slice(tensor_name, [want.lo - have.lo], [want.hi - have.lo + 1], [axis], hint="crop")
    repeats = n_probes * ctx.n_classes
    if inner.lo > inner.hi:  # no computed position is wanted: everything comes from the reference
        return tile_fixed(ctx, original, repeats, want)
    pieces = []
    if inner.lo > want.lo:
        pieces.append(tile_fixed(ctx, original, repeats, Span(want.lo, inner.lo - 1)))
    pieces.append(tensor_name if inner == have else
                  b.slice(tensor_name, [inner.lo - have.lo], [inner.hi - have.lo + 1], [axis], hint="crop"))
    if want.hi > inner.hi:
        pieces.append(tile_fixed(ctx, original, repeats, Span(inner.hi + 1, want.hi)))
    return b.op("Concat", pieces, axis=axis, hint="reference_halo")


def pad_to_full(ctx: EmitContext, tensor_name: str, original: str, have: Span) -> str:
    """Zero-pad a cropped copy back to the full length (positions outside are reference)."""
    m = ctx.region.maps[original]
    if have == Span(0, m.length - 1):
        return tensor_name
    rank = len(ctx.spec.shapes[original])
    pads = [0] * (2 * rank)
    pads[m.axis] = have.lo
    pads[rank + m.axis] = m.length - 1 - have.hi
    return ctx.builder.pad(tensor_name, pads, dtype=ctx.dtype(original), hint="uncrop")


def emit_cropped_node(ctx: EmitContext, node: onnx.NodeProto, inputs: list[str], outputs: list[str],
                      out_span: Span, in_spans: dict[str, Span]) -> onnx.NodeProto:
    """A copy of ``node`` computing ``out_span`` from inputs already cut to ``in_spans``."""
    new = copy.deepcopy(node)
    del new.input[:]
    new.input.extend(inputs)
    del new.output[:]
    new.output.extend(outputs)
    new.name = outputs[0]
    crop = op_spec(node.op_type).crop
    if crop is not None:
        _apply(ctx, new, crop(_crop_context(ctx, node), out_span, in_spans))
    return new


def _apply(ctx: EmitContext, new: onnx.NodeProto, edit: CropEdit) -> None:
    """Write a crop edit into the node copy: new constant inputs, then attributes."""
    for index, value, hint in edit.inputs:
        new.input[index] = ctx.builder.const(value, hint)
    if edit.attributes or edit.drop_attributes:
        removed = set(edit.drop_attributes) | {a.name for a in edit.attributes}
        kept = [a for a in new.attribute if a.name not in removed]
        del new.attribute[:]
        new.attribute.extend(kept)
        new.attribute.extend(edit.attributes)
