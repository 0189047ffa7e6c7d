"""Affected-span cropping: compute each stage only where mutations can reach.

With a mutated window ``[start, end)`` narrower than the sequence, a local tensor differs
from the reference only on its *changed span*, the positions whose window meets the
mutated window. A stage copy then needs each tensor only on a span: the changed span for
what it hands on, widened backwards through the stage by each op's halo. The stage's
nodes are emitted on those spans, with their length-dependent parameters adjusted
(convolution and pooling pads, Slice bounds, Pad widths, Reshape targets, per-position
constants). Ops without a crop rule leave the stage uncropped; the result is identical
either way, cropping only removes work.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..analysis.positional import PositionalMap
from ..analysis.region import node_attributes
from ..analysis.rules import UNARY
from .probes import EmitContext

SAME_SPAN_OPS = frozenset(
    UNARY
    + "Add Sub Mul Div Pow Max Min Mean Sum Where Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Mod "
    "BatchNormalization LayerNormalization Softmax LogSoftmax Hardmax Concat Transpose Squeeze Unsqueeze "
    "Reshape Flatten Gather Split MatMul ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 "
    "ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin".split()
)
WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})
BROADCASTING_OPS = frozenset(
    "Add Sub Mul Div Pow Max Min Mean Sum Where Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Mod "
    "PRelu".split()
)


@dataclass(frozen=True)
class Span:
    """Positions ``lo..hi`` (inclusive) of a tensor's length axis."""

    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def union(self, other: Span | None) -> Span:
        return self if other is None else Span(min(self.lo, other.lo), max(self.hi, other.hi))


def changed_span(m: PositionalMap, start: int, end: int) -> Span:
    """Positions whose window meets the mutated positions ``[start, end)``."""
    return Span(*m.changed_span(start, end))


def _window_params(node: onnx.NodeProto, ctx: EmitContext, in_map: PositionalMap):
    """(spatial index, kernel span, stride, pad_begin) of a Conv/pool along the length."""
    attrs = node_attributes(node)
    i = in_map.axis - 2
    if node.op_type == "Conv":
        kernel = attrs.get("kernel_shape") or list(ctx.constants[node.input[1]].shape[2:])
    else:
        kernel = attrs["kernel_shape"]
    rank = len(kernel)
    strides = attrs.get("strides") or [1] * rank
    dilations = attrs.get("dilations") or [1] * rank
    span = (int(kernel[i]) - 1) * int(dilations[i]) + 1
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    in_len = in_map.length
    out_len = ctx.spec.shapes[node.output[0]][in_map.axis]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = max((out_len - 1) * int(strides[i]) + span - in_len, 0)
        pad_begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    elif auto_pad == "VALID":
        pad_begin = 0
    else:
        pad_begin = int((attrs.get("pads") or [0] * (2 * rank))[i])
    return i, rank, span, int(strides[i]), pad_begin


def required_spans(ctx: EmitContext, node: onnx.NodeProto, out_span: Span) -> dict[str, Span] | None:
    """Spans of the node's local inputs needed to compute ``out_span``; ``None``: no rule."""
    maps = ctx.region.maps
    data = [name for name in node.input if name in maps]
    op = node.op_type
    if any(name and ctx.region.kinds.get(name) == "meta" for name in node.input):
        return None
    if op in SAME_SPAN_OPS:
        return {name: out_span for name in data}
    if op in WINDOW_OPS:
        m = maps[node.input[0]]
        attrs = node_attributes(node)
        if op != "Conv" and attrs.get("ceil_mode", 0) and attrs.get("count_include_pad", 0):
            return None
        i, rank, span, stride, pad_begin = _window_params(node, ctx, m)
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        shape = ctx.spec.shapes[node.input[0]]
        if auto_pad != "NOTSET" and any(shape[a] != 1 for a in range(2, 2 + rank) if a != m.axis):
            return None
        first_read = stride * out_span.lo - pad_begin
        last_read = stride * out_span.hi - pad_begin + span - 1
        lo, hi = max(0, first_read), min(m.length - 1, last_read)
        if op != "Conv" and max(lo - first_read, last_read - hi) >= span:
            return None  # pooling pads must stay below the kernel
        return {node.input[0]: Span(lo, hi)}
    if op == "Slice":
        m = maps[node.input[0]]
        first, step = _slice_on_length(ctx, node, m)
        if first is None:
            return None
        return {node.input[0]: Span(first + step * out_span.lo, first + step * out_span.hi)}
    if op == "Pad":
        m = maps[node.input[0]]
        begin = _pad_begin(ctx, node, m)
        if begin is None:
            return None
        lo = max(0, out_span.lo - begin)
        hi = min(m.length - 1, out_span.hi - begin)
        return {node.input[0]: Span(lo, max(lo, hi))}
    return None


def _slice_on_length(ctx: EmitContext, node: onnx.NodeProto, m: PositionalMap) -> tuple[int | None, int]:
    starts = ctx.constants.get(node.input[1])
    axes = ctx.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    steps = ctx.constants.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None:
        return None, 1
    rank = len(ctx.spec.shapes[node.input[0]])
    axes = list(range(len(starts))) if axes is None else [a + rank if a < 0 else a for a in axes.tolist()]
    steps = [1] * len(starts) if steps is None else steps.tolist()
    for start, axis, step in zip(starts.tolist(), axes, steps):
        if axis == m.axis:
            first = start + m.length if start < 0 else start
            return min(max(first, 0), m.length), int(step)
    return 0, 1


def _pad_begin(ctx: EmitContext, node: onnx.NodeProto, m: PositionalMap) -> int | None:
    pads = ctx.constants.get(node.input[1])
    if pads is None:
        return None
    rank = len(ctx.spec.shapes[node.input[0]])
    axes_value = ctx.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    axes = list(range(rank)) if axes_value is None else [a + rank if a < 0 else a for a in axes_value.tolist()]
    begin = dict(zip(axes, pads.tolist()[: len(axes)]))
    return int(begin.get(m.axis, 0))


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
    ``have`` lie outside the tensor's changed span, so they take the reference."""
    b = ctx.builder
    m = ctx.region.maps[original]
    axis = m.axis
    inner = Span(max(want.lo, have.lo), min(want.hi, have.hi))
    if inner == want:
        if have == want:
            return tensor_name
        return b.slice(tensor_name, [want.lo - have.lo], [want.hi - have.lo + 1], [axis], hint="crop")
    empty = inner.lo > inner.hi
    if empty:  # no computed position is wanted: everything comes from the reference
        part = b.slice(tensor_name, [0], [1], [axis], hint="crop")
        before, after = 0, want.size - 1
    else:
        part = b.slice(tensor_name, [inner.lo - have.lo], [inner.hi - have.lo + 1], [axis], hint="crop")
        before, after = inner.lo - want.lo, want.hi - inner.hi
    rank = len(ctx.spec.shapes[original])
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    padded = b.op("Pad", [part, b.ints(pads, "pads")], hint="reference_halo")
    dims = ctx.dims(original)
    dims[axis - 1] = want.size
    by_sequence = b.reshape(padded, [n_probes * ctx.n_classes, -1, *dims], hint="reference_halo")
    inside = np.zeros(want.size, dtype=bool)
    if not empty:
        inside[inner.lo - want.lo : inner.hi - want.lo + 1] = True
    mask = inside.reshape([1, 1] + [want.size if a == axis else 1 for a in range(1, rank)])
    reference = b.slice(ctx.ref_names[original], [want.lo], [want.hi + 1], [axis], hint="reference_halo")
    mixed = b.select(mask, by_sequence, reference, hint="reference_halo")
    return b.reshape(mixed, [-1, *dims], hint="reference_halo")


def pad_to_full(ctx: EmitContext, tensor_name: str, original: str, have: Span) -> str:
    """Zero-pad a cropped copy back to the full length (positions outside are reference)."""
    m = ctx.region.maps[original]
    if have == Span(0, m.length - 1):
        return tensor_name
    rank = len(ctx.spec.shapes[original])
    pads = [0] * (2 * rank)
    pads[m.axis] = have.lo
    pads[rank + m.axis] = m.length - 1 - have.hi
    return ctx.builder.op("Pad", [tensor_name, ctx.builder.ints(pads, "pads")], hint="uncrop")


def emit_cropped_node(ctx: EmitContext, node: onnx.NodeProto, inputs: list[str], outputs: list[str],
                      out_span: Span, in_spans: dict[str, Span]) -> onnx.NodeProto:
    """A copy of ``node`` computing ``out_span`` from inputs already cut to ``in_spans``."""
    b = ctx.builder
    maps = ctx.region.maps
    new = copy.deepcopy(node)
    del new.input[:]
    new.input.extend(inputs)
    del new.output[:]
    new.output.extend(outputs)
    new.name = outputs[0]
    op = node.op_type
    out_map = maps[node.output[0]]
    if op in SAME_SPAN_OPS:
        _crop_constant_inputs(ctx, node, new, out_map, out_span)
        if op == "Reshape":
            target = ctx.constants[node.input[1]].copy()
            if target[out_map.axis] == out_map.length:
                target[out_map.axis] = out_span.size
            new.input[1] = b.ints(target.tolist(), "crop_target")
    elif op in WINDOW_OPS:
        m = maps[node.input[0]]
        i, rank, span, stride, pad_begin = _window_params(node, ctx, m)
        have = in_spans[node.input[0]]
        first_read = stride * out_span.lo - pad_begin
        last_read = stride * out_span.hi - pad_begin + span - 1
        attrs = node_attributes(node)
        pads = list(attrs.get("pads") or [0] * (2 * rank))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad != "NOTSET":
            pads = [0] * (2 * rank)  # other spatial axes are unit-sized (checked in required_spans)
        pads[i] = have.lo - first_read
        pads[i + rank] = last_read - have.hi
        kept = [a for a in new.attribute if a.name not in ("pads", "auto_pad", "ceil_mode")]
        del new.attribute[:]
        new.attribute.extend(kept)
        new.attribute.append(helper.make_attribute("pads", [int(p) for p in pads]))
    elif op == "Slice":
        m = maps[node.input[0]]
        first, step = _slice_on_length(ctx, node, m)
        starts = ctx.constants[node.input[1]].copy()
        ends = ctx.constants[node.input[2]].copy()
        rank = len(ctx.spec.shapes[node.input[0]])
        axes_value = ctx.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        axes = list(range(len(starts))) if axes_value is None else [a + rank if a < 0 else a for a in axes_value]
        for k, axis in enumerate(axes):
            if axis == m.axis:
                starts[k] = 0
                ends[k] = step * (out_span.size - 1) + 1
        new.input[1] = b.const(starts, "crop_starts")
        new.input[2] = b.const(ends, "crop_ends")
    elif op == "Pad":
        m = maps[node.input[0]]
        begin = _pad_begin(ctx, node, m)
        have = in_spans[node.input[0]]
        pads = ctx.constants[node.input[1]].copy()
        rank = len(ctx.spec.shapes[node.input[0]])
        axes_value = ctx.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        axes = list(range(rank)) if axes_value is None else [a + rank if a < 0 else a for a in axes_value]
        k = axes.index(m.axis)
        pads[k] = have.lo - (out_span.lo - begin)
        pads[len(axes) + k] = (out_span.hi - begin) - have.hi
        new.input[1] = b.const(pads, "crop_pads")
    return new


def _crop_constant_inputs(ctx: EmitContext, node, new, out_map: PositionalMap, out_span: Span) -> None:
    """Per-position constants (broadcast along the length) are cut to the span too."""
    if node.op_type not in BROADCASTING_OPS:
        return
    out_rank = len(ctx.spec.shapes[node.output[0]])
    for k, name in enumerate(node.input):
        value = ctx.constants.get(name)
        if value is None or value.ndim == 0:
            continue
        axis = out_map.axis - (out_rank - value.ndim)
        if 0 <= axis < value.ndim and value.shape[axis] == out_map.length and out_map.length > 1:
            cut = np.take(value, np.arange(out_span.lo, out_span.hi + 1), axis=axis)
            new.input[k] = ctx.builder.const(cut, "crop_const")
