"""Decode a local output by gathering its ISM rows from the probe deltas (DESIGN §3b).

Every ISM value of a local output is ``probe - reference`` at one position of the probe that
holds the mutation, in the class of its substitution (the shift ``(base - reference) mod A``,
or the base itself for sequences with unknown bases), or exactly +0: where the position does
not read the mutated position, and at the reference base. So the ISM tensor is one
``Gather`` over the rows of the probe deltas ``(n, C, N, *before, P + 1, *after)`` (one zero
position padded past the end of every probe and of the reference), with an int64 index
table ``(N, A, Lw, *before, W)`` built from the one-hot input: it lands in the ISM layout
directly, with no class-to-base product, layout transpose or ``Where`` on the values, which
are copied bit for bit.

* Multi-track outputs (Basenji2's, Borzoi's ``(N, bins, tracks)``) gather whole rows of
  ``tracks`` values over every bin: the dense ISM tensor in one pass
  (:func:`emit_dense_rows`).
* Banded outputs gather their band (``W`` = the band's width from each position's start),
  single values when the length axis is innermost; a dense output with short rows is that
  band written into zeros (:func:`yuzu_onnx.emit.bands.write_band_into_zeros`).
"""

from __future__ import annotations

import numpy as np

from ..importer import NCL
from ..ops import Span
from .builder import GraphBuilder
from .decode import probe_indices
from .probes import EmitContext
from .stages import probes_of

MIN_ROW_ELEMENTS = 16  # values per row after the length axis for a row gather to pay


def row_elements(ctx: EmitContext, output: str) -> int:
    """Values per position of ``output`` after its length axis (1 when it is innermost)."""
    m = ctx.region.maps[output]
    return int(np.prod(ctx.dims(output)[m.axis:], dtype=np.int64))


def decodes_by_rows(ctx: EmitContext, output: str, reduce: str, form: str) -> bool:
    """Whether ``output``'s ISM tensor is decoded by :func:`emit_dense_rows`: a dense,
    unreduced local output with at least :data:`MIN_ROW_ELEMENTS` values per row (the
    importer has made the model opset 11 or later, which ``Range`` needs)."""
    return (output in ctx.region.maps and reduce == "none" and form == "dense"
            and row_elements(ctx, output) >= MIN_ROW_ELEMENTS)


def emit_dense_rows(ctx: EmitContext, output: str, is_reference: str) -> str:
    """The dense ISM tensor of a local ``output``, one row gathered per output row.

    ``is_reference``: ``X == 1`` over the window, in the ISM tensor's first three axes.
    Returns ``(N, A, Lw, *dims)`` (ncl) or ``(N, Lw, A, *dims)`` (nlc).
    """
    length = ctx.dims(output)[ctx.region.maps[output].axis - 1]
    return emit_row_gather(ctx, output, is_reference, np.zeros(ctx.plan.window_length, dtype=np.int64), length)


def emit_row_gather(ctx: EmitContext, output: str, is_reference: str, starts: np.ndarray, width: int) -> str:
    """The ISM tensor of a local ``output`` on ``width`` positions of its length axis from
    ``starts[k]`` for mutated position ``k`` (a band, or the whole length from 0), gathered
    from the probe deltas in one pass: ``(N, A, Lw, *dims)`` (ncl) or ``(N, Lw, A, *dims)``
    (nlc), the length axis cut to ``width``. Positions that do not read the mutated
    position, and the reference base, are exactly +0.
    """
    b, plan = ctx.builder, ctx.plan
    m = ctx.region.maps[output]
    dims = ctx.dims(output)
    t = m.axis - 1  # the length axis among dims
    length, before, after = dims[t], dims[:t], dims[t + 1:]
    stage = plan.producer_stage[output]
    # (n, C, N, *before, P + 1, *after): one zero position past the end of every probe and of the reference
    probes = probes_of(ctx, output, stage, want=Span(0, length))
    pads = [0] * (2 * (len(dims) + 1))
    pads[len(dims) + 1 + m.axis] = 1
    reference = b.pad(ctx.ref_names[output], pads, dtype=ctx.dtype(output), hint="zero_bin")
    delta = b.op("Sub", [probes, reference], hint="row_delta")
    rows = b.reshape(delta, [-1, *after], hint="rows")
    n_before = int(np.prod(before, dtype=np.int64))
    zero_block = uses_zero_block(ctx, output, width)
    if zero_block:  # one block of zero rows past the last probe's, which the reference reads
        pads = [0] * (2 * (1 + len(after)))
        pads[1 + len(after)] = n_before * (length + 1)
        rows = b.pad(rows, pads, dtype=ctx.dtype(output), hint="zero_block")
    index = _row_index(ctx, output, is_reference, before=before, length=length, starts=starts, width=width,
                       zero_block=zero_block)
    return b.op("Gather", [rows, index], axis=0, hint="dense_rows" if width == length else "band_rows")


ZERO_BLOCK_GAIN = 8  # zero rows copied per index element spared a broadcast select (~0.15 vs ~8 ns each)


def uses_zero_block(ctx: EmitContext, output: str, width: int) -> bool:
    """Whether the reference base of :func:`emit_row_gather` reads a block of zero rows
    appended to the probe deltas (a copy of them), rather than the zero bin through a
    select over the whole ``(N, A, Lw, width)`` index: when the copy is smaller than
    :data:`ZERO_BLOCK_GAIN` times that index. (ToyNet profile, banded: the select, 0.6 ms
    per sequence of a 12 ms run; the copy of its 78 K rows, 0.03 ms.)"""
    m = ctx.region.maps[output]
    dims = ctx.dims(output)
    stage = ctx.plan.stages[ctx.plan.producer_stage[output]]
    rows = stage.n_probes * ctx.n_classes * int(np.prod(dims, dtype=np.int64)) // dims[m.axis - 1] * (dims[m.axis - 1] + 1)
    return rows <= ZERO_BLOCK_GAIN * ctx.spec.alphabet_size * ctx.plan.window_length * width


def batch_sequences(b: GraphBuilder, shape: str, *, rank: int) -> tuple[str, str]:
    """From the ``shape`` of a batch-first tensor: the batch size (an int64 scalar) and the
    sequence numbers ``0 .. N - 1`` as ``(N, 1, ..., 1)`` of ``rank`` axes."""
    batch = b.op("Gather", [shape, b.const(np.array(0, np.int64), "batch_axis")], axis=0, hint="batch_size")
    sequence = b.op("Range", [b.const(np.array(0, np.int64), "zero"), batch, b.const(np.array(1, np.int64), "one")],
                    hint="sequence")
    return batch, b.reshape(sequence, [-1] + [1] * (rank - 1), hint="sequence")


def _row_index(ctx: EmitContext, output: str, is_reference: str, *, before: list[int], length: int,
               starts: np.ndarray, width: int, zero_block: bool) -> str:
    """int64 ``(N, A, Lw, *before, width)`` (ncl; ``(N, Lw, A, ...)`` nlc): the row of the
    probe deltas ``(n, C, N, *before, P + 1)`` each ISM row reads. With ``zero_block``,
    the reference base reads the block of zero rows appended past the last probe's
    (block ``n · C · N``); without, the zero bin of its own block."""
    b, plan, spec = ctx.builder, ctx.plan, ctx.spec
    m = ctx.region.maps[output]
    start, end = plan.window
    lw, a, n_classes = end - start, spec.alphabet_size, ctx.n_classes
    ncl = spec.layout == NCL
    ism_axis = {"base": 1, "window": 2} if ncl else {"base": 2, "window": 1}  # after the batch axis

    def along(axis: str, size: int) -> list[int]:  # the shape of a vector along the ISM's base or window axis
        shape = [1, 1, 1]
        shape[ism_axis[axis]] = size
        return shape

    def ism_shaped(values: np.ndarray, axis: str) -> np.ndarray:
        return values.reshape(along(axis, len(values)))

    stage = plan.stages[plan.producer_stage[output]]
    probe = probe_indices(ctx, np.arange(start, end, dtype=np.int64))[stage.spacing]
    base = ism_shaped(np.arange(a, dtype=np.int64), "base")
    if ctx.shift:  # class (base - reference) mod A, numbered from 0 for shift 1; the reference reads a zero row
        window = b.slice(ctx.x, [start], [end], [3 - ctx.alphabet_axis], hint="window_input")
        reference = b.op("ArgMax", [window], axis=ctx.alphabet_axis, keepdims=1, hint="reference_base")
        shift = b.op("Mod", [b.op("Sub", [b.const(base + a, "base_plus_a"), reference], hint="shift"),
                             b.ints([a], "alphabet_size")], hint="shift")
        # shift k >= 1 → class k - 1; shift 0 (the reference base, which reads the zero bin) → class A - 2
        klass = b.op("Mod", [b.op("Add", [shift, b.ints([a - 2], "a_minus_2")], hint="shift_class"),
                             b.ints([a - 1], "classes")], hint="shift_class")
    else:  # every base is its own class
        klass = b.const(base, "base_class")
    batch, sequence = batch_sequences(b, b.op("Shape", [ctx.x], hint="batch_size"), rank=3)
    # ((probe · C + class) · N + sequence): the (probe, class, sequence) block, (N, A, Lw) or (N, Lw, A)
    block = b.op("Add", [b.const(ism_shaped(probe * n_classes, "window"), "probe_rows"), klass], hint="row_block")
    block = b.op("Add", [b.op("Mul", [block, batch], hint="row_block"), sequence], hint="row_block")
    if zero_block:
        zeros_at = b.op("Mul", [b.ints([stage.n_probes * n_classes], "probe_blocks"), batch], hint="zero_block")
        block = b.op("Where", [is_reference, zeros_at, block], hint="row_block")
    n_before = int(np.prod(before, dtype=np.int64))
    block = b.unsqueeze(block, list(range(3, 4 + len(before))), hint="row_block")  # (..., *1 for before, 1)
    if before:
        inner = np.arange(n_before, dtype=np.int64).reshape([1, 1, 1, *before, 1])
        block = b.op("Add", [b.op("Mul", [block, b.ints([n_before], "before_size")], hint="row_block"),
                             b.const(inner, "before_rows")], hint="row_block")
    block = b.op("Mul", [block, b.ints([length + 1], "bins")], hint="row_block")
    # the position: starts[k] + i where it reads mutated position k, else (and at the reference) the zero one
    column = b.const(np.arange(start, end, dtype=np.int64)[:, None], "positions")
    position = b.op("Add", [b.const(np.asarray(starts, dtype=np.int64)[:, None], "band_starts"),
                            b.const(np.arange(width, dtype=np.int64)[None, :], "band_offsets")], hint="position")
    first = b.op("Add", [b.op("Mul", [position, b.ints([m.stride], "stride")], hint="window"),
                         b.ints([m.lo], "window_lo")], hint="window")
    last = b.op("Add", [first, b.ints([m.hi - m.lo], "window_width")], hint="window")
    reads = b.op("And", [b.op("Not", [b.op("Less", [column, first])]), b.op("Not", [b.op("Greater", [column, last])])],
                 hint="reads")  # (Lw, width)
    slot = b.op("Where", [reads, position, b.ints([length], "zero_bin")], hint="bin_of_row")
    slot = b.reshape(slot, along("window", lw) + [1] * len(before) + [width], hint="bin_of_row")
    if not zero_block:
        at_reference = b.unsqueeze(is_reference, list(range(3, 4 + len(before))), hint="is_reference")
        slot = b.op("Where", [at_reference, b.ints([length], "zero_bin"), slot], hint="bin_of_row")
    return b.op("Add", [block, slot], hint="row_index")
