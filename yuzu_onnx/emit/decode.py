"""Decode: every mutant's tensor from the probes, and the ISM outputs (DESIGN §1, §3b).

Mutant ``(j, a)``'s value of a local tensor at position ``p`` is the probe holding
``j``'s mutation when ``p``'s window contains ``j``, and the reference elsewhere: one
Gather over whole probes and one Where. Mutant tensors are laid out ``(K, A, N, *dims)``
for ``K`` mutated positions.
"""

from __future__ import annotations

import numpy as np

from ..importer import NCL
from .probes import EmitContext, substituted_columns, window_mask
from .stages import probes_of

REDUCTIONS = ("none", "l2", "sum", "raw")


def emit_mutants(ctx: EmitContext, tensor: str, positions: str, probe_index: dict[int, str]) -> str:
    """Mutant values of ``tensor`` for the mutated positions ``positions`` (int64 ``(K,)``).

    ``probe_index[spacing]`` holds each position's probe index ``(j - start) mod spacing``.
    """
    b, spec = ctx.builder, ctx.spec
    rank = len(spec.shapes[tensor])
    m = ctx.region.maps[tensor]
    mask = window_mask(b, positions, m, rank)
    if tensor == ctx.x:
        return b.op("Where", [mask, substituted_columns(ctx), ctx.x], hint="input_mutants")
    stage = ctx.plan.producer_stage[tensor]
    spacing = ctx.plan.stages[stage].spacing
    gathered = probes_of(ctx, tensor, stage, take=probe_index[spacing])
    return b.select(mask, gathered, ctx.ref_names[tensor], hint="mutants", dtype=ctx.dtype(tensor))


def probe_indices(ctx: EmitContext, positions: np.ndarray) -> dict[int, np.ndarray]:
    """Probe index of each mutated position, for every stage spacing."""
    start = ctx.plan.window[0]
    return {st.spacing: (positions - start) % st.spacing for st in ctx.plan.stages}


def reference_base_mask(ctx: EmitContext) -> str:
    """``X == 1`` over the window, laid out like the ISM output's first three axes."""
    b, spec = ctx.builder, ctx.spec
    start, end = ctx.plan.window
    axis = 2 if spec.layout == NCL else 1
    window = b.slice(ctx.x, [start], [end], [axis], hint="window_input")
    return b.op("Equal", [window, b.const(np.array(1.0, dtype=np.float32), "one")], hint="is_reference")


def emit_output(ctx: EmitContext, output: str, mutants: str, reduce: str, is_reference: str, *,
                odims: list[int] | None = None, is_delta: bool = False) -> str:
    """Turn mutant values ``(Lw, C, N, *odims)`` of a model output into its ISM tensor.

    ``odims`` defaults to the output's dims; a banded decode passes its band's (the length
    axis cut to the band) with ``is_delta``: ``mutants`` are then already the changes
    ``mutant - reference`` (reductions other than ``raw``).
    """
    b = ctx.builder
    odims = ctx.dims(output) if odims is None else list(odims)
    ref = ctx.ref_names[output]
    if is_delta and reduce == "raw":
        raise ValueError("raw values need the mutants, not their changes")
    if ctx.shift:
        delta = mutants if is_delta else b.op("Sub", [mutants, ref], hint="delta")
        delta = classes_to_bases(ctx, delta, odims)
        values = b.op("Add", [delta, ref], hint="raw") if reduce == "raw" else delta
    elif reduce == "raw" or is_delta:
        values = mutants
    else:
        values = b.op("Sub", [mutants, ref], hint="delta")
    if reduce == "l2":
        axes = list(range(3, 3 + len(odims)))
        if axes:
            values = b.op("Sqrt", [b.reduce("ReduceSumSquare", values, axes, keepdims=0)], hint="l2")
        else:
            values = b.op("Abs", [values], hint="l2")
        odims = []
    elif reduce == "sum":
        axis = sum_axis(ctx, output)
        values = b.reduce("ReduceSum", values, [3 + axis - 1], keepdims=0, hint="sum")
        odims = odims[: axis - 1] + odims[axis:]
    return _laid_out(ctx, values, len(odims), is_reference, reference=ref if reduce == "raw" else None)


def emit_l2_output(ctx: EmitContext, sums: str, is_reference: str) -> str:
    """The ``l2`` ISM output from per-class sums of squared changes ``(Lw, C, N)``: shift
    classes become bases on the sums (a 0/1 selection that copies each sum exactly), then
    the root and the layout run on ``(Lw, A, N)`` values only."""
    if ctx.shift:
        sums = classes_to_bases(ctx, sums, [])
    return _laid_out(ctx, ctx.builder.op("Sqrt", [sums], hint="l2"), 0, is_reference)


def _laid_out(ctx: EmitContext, values: str, n_odims: int, is_reference: str, *, reference: str | None = None) -> str:
    """Per-base values ``(Lw, A, N, *odims)`` as the ISM tensor: the input's layout
    (``(N, A, Lw, ...)`` or ``(N, Lw, A, ...)``), and at each reference base 0, or the
    ``reference`` output itself (``raw``)."""
    b = ctx.builder
    perm = [2, 1, 0] if ctx.spec.layout == NCL else [2, 0, 1]
    trailing = list(range(3, 3 + n_odims))
    values = b.transpose(values, perm + trailing, hint="to_layout")
    is_ref = b.unsqueeze(is_reference, trailing, hint="is_reference") if trailing else is_reference
    if reference is not None:
        return b.op("Where", [is_ref, b.unsqueeze(reference, [1, 2], hint="reference"), values], hint="raw")
    zero = b.const(np.array(0.0, dtype=np.float32), "zero")
    return b.op("Where", [is_ref, zero, values], hint="ism")


def classes_to_bases(ctx: EmitContext, delta: str, odims: list[int]) -> str:
    """Shift-class deltas ``(Lw, A-1, N, *odims)`` → per-base deltas ``(Lw, A, N, *odims)``.

    Base ``a`` at position ``j`` is class ``k`` where ``(ref + k) mod A == a``: a 0/1
    selection (built from the one-hot input) applied as one batched MatMul; the
    reference base gets no class and so exactly 0.
    """
    b, spec = ctx.builder, ctx.spec
    a = spec.alphabet_size
    start, end = ctx.plan.window
    lw = end - start
    window = b.slice(ctx.x, [start], [end], [3 - ctx.alphabet_axis], hint="window_input")
    picks = np.array([[(base - k) % a for k in range(1, a)] for base in range(a)], dtype=np.int64)
    selection = b.op("Gather", [window, b.const(picks, "class_of_base")], axis=ctx.alphabet_axis, hint="selection")
    # ncl: (N, A, A-1, Lw) → (Lw, N, A, A-1); nlc: (N, Lw, A, A-1) → (Lw, N, A, A-1)
    selection = b.transpose(selection, [3, 0, 1, 2] if spec.layout == NCL else [1, 0, 2, 3], hint="selection")
    rest = int(np.prod(odims, dtype=np.int64)) if odims else 1
    if rest == 1:  # one value per class (e.g. l2 sums): a broadcast product and a 3-term sum, no batched MatMul
        per_class = b.unsqueeze(b.transpose(b.reshape(delta, [lw, a - 1, -1], hint="class_rows"), [0, 2, 1],
                                            hint="class_rows"), [2], hint="class_rows")  # (Lw, N, 1, A-1)
        per_base = b.reduce("ReduceSum", b.op("Mul", [selection, per_class], hint="per_base"), [3], keepdims=0,
                            hint="per_base")  # (Lw, N, A)
        return b.reshape(b.transpose(per_base, [0, 2, 1], hint="per_base"), [lw, a, -1, *odims], hint="per_base")
    per_class = b.reshape(delta, [lw, a - 1, -1, rest], hint="class_rows")
    per_class = b.transpose(per_class, [0, 2, 1, 3], hint="class_rows")
    per_base = b.op("MatMul", [selection, per_class], hint="per_base")
    per_base = b.transpose(per_base, [0, 2, 1, 3], hint="per_base")
    return b.reshape(per_base, [lw, a, -1, *odims], hint="per_base")


def sum_axis(ctx: EmitContext, output: str) -> int:
    """The positional axis of ``output`` that ``--reduce sum`` sums over."""
    from ..errors import InputError, option

    m = ctx.region.maps.get(output)
    if m is None:
        raise InputError(
            f"{option('reduce', 'sum')} needs a positional output axis, but output {output!r} is computed after "
            "the local region (it has no length axis); use none or l2"
        )
    return m.axis


def ism_dims(ctx: EmitContext, output: str, reduce: str) -> list[int]:
    """Trailing dims of the ISM output (after the batch, alphabet and window axes); a
    banded output has its band's width on the length axis."""
    odims = ctx.dims(output)
    how = ctx.plan.outputs.get(output)
    if how is not None and how.form == "banded" and how.band is not None:
        odims[how.band.axis - 3] = how.band.width
    if reduce == "l2":
        return []
    if reduce == "sum":
        axis = sum_axis(ctx, output)
        return odims[: axis - 1] + odims[axis:]
    return odims
