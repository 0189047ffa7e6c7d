"""Streaming: the window's chunks run one after the other, each in a subgraph.

See the README, "Memory: streaming the window".

A streamed plan (:func:`yuzu_onnx.plan.stream_window`) cuts the mutated window into
chunks planned on their own. Each chunk's probes, decode and tail are emitted into an
``If`` subgraph whose condition is always true but reads the previous chunk's output, so
ONNX Runtime runs the chunks in order and frees one chunk's probe tensors before the next
starts: peak memory is one chunk's working set plus the ISM outputs. The chunks' ISM
tensors are concatenated along the window axis. The file stays one self-contained ONNX
model that every ONNX Runtime host runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..importer import NCL
from .builder import PREFIX, GraphBuilder, prune_dead_nodes
from .probes import EmitContext


def emit_window_chunks(
    ctx: EmitContext,
    outputs: list[str],
    is_reference: str,
    emit_chunk: Callable[[EmitContext, str], list[str]],
) -> list[str]:
    """The ISM tensor of each of ``outputs``, computed chunk by chunk of ``ctx.plan.chunks``.

    ``emit_chunk(chunk_ctx, chunk_is_reference)`` emits one chunk's probes and decode into
    ``chunk_ctx.builder`` (whose plan is the chunk's) and returns its ISM tensors, in the
    order of ``outputs``.
    """
    b, plan = ctx.builder, ctx.plan
    window_axis = 2 if ctx.spec.layout == NCL else 1
    start = plan.window[0]
    parts: list[list[str]] = [[] for _ in outputs]
    previous: str | None = None
    for k, chunk in enumerate(plan.chunks):
        scope = GraphBuilder(b.opset, scope=f"{b.scope}chunk{k}/", initializers=b.initializers)
        sub = replace(ctx, plan=chunk, builder=scope, stage_names=[], stage_spans=[], _input_probes={},
                      _substituted=None)
        lo, hi = chunk.window
        chunk_is_reference = scope.slice(is_reference, [lo - start], [hi - start], [window_axis],
                                         hint="chunk_is_reference")
        finals = emit_chunk(sub, chunk_is_reference)
        body = helper.make_graph(
            prune_dead_nodes(scope.nodes, finals), f"window_chunk_{k}", [],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in finals],
        )
        names = [b.name(f"chunk{k}_ism") for _ in outputs]
        b.nodes.append(helper.make_node(
            "If", [_always_true(b, previous or ctx.x)], names, name=f"{PREFIX}{b.scope}window_chunk_{k}",
            then_branch=body, else_branch=_empty_branch(b, k, len(outputs)),
        ))
        for part, name in zip(parts, names):
            part.append(name)
        previous = names[0]
    if len(plan.chunks) == 1:
        return [p[0] for p in parts]
    return [b.op("Concat", p, axis=window_axis, hint="streamed_ism") for p in parts]


def _always_true(b: GraphBuilder, tensor: str) -> str:
    """A true condition that depends on ``tensor``'s values (one element of it), so the
    ``If`` it guards waits for ``tensor`` and cannot be folded away."""
    flat = b.reshape(tensor, [-1], hint="sequencing")
    value = b.reduce("ReduceMax", b.slice(flat, [0], [1], [0], hint="sequencing"), [0], keepdims=0,
                     hint="sequencing_value")
    return b.op("Or", [b.op("Equal", [value, value], hint="sequencing"), b.op("IsNaN", [value], hint="sequencing")],
                hint="chunk_in_order")


def _empty_branch(b: GraphBuilder, k: int, n_outputs: int) -> onnx.GraphProto:
    """The never-taken branch: empty float tensors (an ``If`` needs both branches)."""
    empty = b.const(np.zeros((0,), dtype=np.float32), "never")
    names = [f"{PREFIX}{b.scope}chunk{k}_never_{i}" for i in range(n_outputs)]
    nodes = [helper.make_node("Identity", [empty], [name], name=name) for name in names]
    return helper.make_graph(nodes, f"window_chunk_{k}_never", [],
                             [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names])
