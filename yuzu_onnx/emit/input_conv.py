"""The first-convolution shortcut: a convolution of the sequence input on spaced probes
without running it (DESIGN §3b).

Substituting a base at ``j`` changes the convolution's output at ``p`` by the kernel
column difference at the tap that reads ``j``. Per sequence and class, a table holds
every such difference, ``T[k, o, t, j] = Σ_a W[o, a, t] · (new_k(j) - x(j))[a]`` (one
small MatMul over the mutated columns). Probe ``c`` of a stage with spacing ``d`` sees,
at output position ``p``, at most one of its mutations (``d`` is at least the kernel's
span), so its output is the reference output plus one table entry, or plus nothing: a
Gather with a constant ``(probe, position)`` index into the table (a zero column stands
for "no mutation here").
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ..analysis.input_convs import InputConv
from ..errors import UnsupportedError
from ..importer import NCL
from .crop import Span
from .probes import EmitContext, substituted_columns


def input_conv_index(conv: InputConv, span: Span, window: tuple[int, int], spacing: int, n_probes: int) -> np.ndarray:
    """``index[c, q]`` into the table rows for probe ``c`` at output position ``span.lo + q``.

    Rows ``(j - start)·K + t`` hold the output after substituting at ``j``, read by tap
    ``t``; rows ``Lw·K + q`` hold the reference (no mutation of probe ``c`` reaches there).
    """
    start, end = window
    lw = end - start
    p = np.arange(span.lo, span.hi + 1)
    index = np.broadcast_to(lw * conv.kernel + np.arange(p.size), (n_probes, p.size)).copy()
    hits = np.zeros((n_probes, p.size), dtype=np.int64)
    for t in range(conv.kernel):
        j = conv.stride * p + conv.offset + t * conv.dilation
        inside = (j >= start) & (j < end)
        c = (j - start) % spacing
        q = np.flatnonzero(inside & (c < n_probes))  # one (probe, position) pair per q for this tap
        index[c[q], q] = (j[q] - start) * conv.kernel + t
        hits[c[q], q] += 1
    if hits.max(initial=0) > 1:
        raise UnsupportedError(
            f"spacing {spacing} is narrower than the span of convolution output {conv.output!r}; "
            "the first-convolution shortcut needs one mutation per window"
        )
    return index


def _read_by(conv: InputConv, span: Span, window: tuple[int, int]) -> np.ndarray:
    """``q[j - start, t]``: the output position (within ``span``) that reads ``j`` at tap ``t``
    (0 where none does; those rows are never gathered)."""
    start, end = window
    j = np.arange(start, end)[:, None]
    t = np.arange(conv.kernel)[None, :]
    numerator = j - conv.offset - t * conv.dilation
    p = numerator // conv.stride
    ok = (numerator % conv.stride == 0) & (p >= span.lo) & (p <= span.hi)
    return np.where(ok, p - span.lo, 0).astype(np.int64)


def emit_input_conv(ctx: EmitContext, conv: InputConv, stage: int, span: Span, out: str) -> None:
    """Write stage ``stage``'s probe values of ``conv.output`` over ``span`` into ``out``,
    shaped like the stage copy of the convolution would be: ``(n·C·N, Cout, ..)``.

    Every gathered row is a block of ``C·N·Cout`` values (ONNX Runtime copies those
    fast); one Transpose then puts the positions last.
    """
    b, spec = ctx.builder, ctx.spec
    start, end = ctx.plan.window
    n = ctx.plan.stages[stage].n_probes
    cout, a, k = conv.weight.shape
    classes = ctx.n_classes
    length_axis = 3 if spec.layout == NCL else 2  # of the (C, N, ·, ·) column tensors
    delta = b.op("Sub", [substituted_columns(ctx), ctx.x], hint="column_delta")
    delta = b.slice(delta, [start], [end], [length_axis], hint="window_delta")
    # (Lw, C, N, A) @ (A, K·Cout) -> (Lw, C, N, K, Cout) -> (Lw, K, C, N, Cout)
    delta = b.transpose(delta, [3, 0, 1, 2] if spec.layout == NCL else [2, 0, 1, 3], hint="column_delta")
    columns = conv.weight.transpose(1, 2, 0).reshape(a, k * cout)
    table = b.op("MatMul", [delta, b.const(columns, "kernel_columns")], hint="column_differences")
    table = b.reshape(table, [end - start, classes, -1, k, cout], hint="column_differences")
    table = b.transpose(table, [0, 3, 1, 2, 4], hint="column_differences")
    # the reference output at each (j, t) row's position, and once more per position
    m = ctx.region.maps[conv.output]
    reference = ctx.ref_names[conv.output]
    if span != Span(0, m.length - 1):
        reference = b.slice(reference, [span.lo], [span.hi + 1], [m.axis], hint="crop_reference")
    reference = b.reshape(reference, [-1, cout, span.size], hint="first_conv_reference")
    reference = b.transpose(reference, [2, 0, 1], hint="first_conv_reference")  # (P, N, Cout)
    read_by = b.const(_read_by(conv, span, (start, end)), "first_conv_read_by")
    under = b.unsqueeze(b.op("Gather", [reference, read_by], axis=0, hint="reference_under_taps"), [2])
    mutated = b.reshape(b.op("Add", [table, under], hint="mutated_rows"), [(end - start) * k, classes, -1, cout], hint="mutated_rows")
    rows = b.unsqueeze(reference, [1], hint="reference_rows")
    rows = b.op("Expand", [rows, b.ints([1, classes, 1, 1], "classes")], hint="reference_rows")
    rows = b.op("Concat", [mutated, rows], axis=0, hint="first_conv_rows")
    index = input_conv_index(conv, span, (start, end), ctx.plan.stages[stage].spacing, n)
    values = b.op("Gather", [rows, b.const(index, "first_conv_index")], axis=0, hint="first_conv_probes")
    values = b.transpose(values, [0, 2, 3, 4, 1], hint="first_conv_probes")
    dims = ctx.dims(conv.output)
    dims[m.axis - 1] = span.size
    b.nodes.append(helper.make_node("Reshape", [values, b.ints([-1, *dims], "shape")], [out], name=out))
