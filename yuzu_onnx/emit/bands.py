"""Decode a local output on its band only (DESIGN §3b; :mod:`yuzu_onnx.bands`).

Mutant ``(j, a)`` of a local output differs from the reference only at the positions
whose window contains ``j``: the band ``starts[k] .. starts[k] + width - 1`` of the plan's
:class:`~yuzu_onnx.bands.Band`. A banded output is that band gathered straight into the ISM
layout (:func:`yuzu_onnx.emit.dense_rows.emit_row_gather`); a dense one is that band
written into zeros of the output's shape by one ``MaxUnpool`` (:func:`write_band_into_zeros`),
so no full-size ``Where``, ``Transpose``, mask multiplication or copy runs. (Measured on
ONNX Runtime 1.32 CPU, the ToyNet profile, 32 MB per sequence: MaxUnpool 1.3 ms; zeros +
``ScatterElements`` 5.4-6.8 ms, the scatter copying its zero input because its output is a
graph output; Pad of the skewed band + a Gather of row chunks 6.2-7.9 ms; a single Pad,
the floor of any 32 MB write, 1.1-1.4 ms; a row gather of the whole rows + a mask Mul
3.4 ms but a second pass, and ``Where`` instead of the Mul ~11 ms.) Reductions (``l2``,
``sum``) run on the band deltas of :func:`emit_band_delta`, ``l2`` summing squares per
class before anything else.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..bands import Band, reached
from .builder import GraphBuilder
from .decode import emit_l2_output, emit_output, probe_indices
from .dense_rows import batch_sequences, emit_row_gather
from .probes import EmitContext
from .stages import probes_of


def emit_band_delta(ctx: EmitContext, output: str, band: Band) -> tuple[str, list[int]]:
    """Each mutated position's change of ``output`` on its band, gathered in one pass.

    The probes' deltas ``probes - reference`` are taken where the length axis is
    innermost (a broadcast over whole rows), padded with one zero position per probe, and
    laid out as rows ``(probe, position)``; one Gather over a ``(Lw, B)`` index table then
    reads, for band position ``b`` of mutated position ``k``, the row of the probe holding
    ``k`` at ``starts[k] + b`` when that position reads ``k``, and the probe's zero row
    when it does not. No mask multiplication or select runs on the band, and a position
    that a mutation does not reach is exactly +0.

    Returns
    -------
    (delta, dims): ``delta`` shape=(Lw, B, C, N, *rest) (``rest``: the output's dims
    without its length axis) and the output's dims with its length axis cut to the band's
    ``width``.
    """
    b, plan = ctx.builder, ctx.plan
    m = ctx.region.maps[output]
    start, end = plan.window
    width, length = band.width, band.length
    dims = ctx.dims(output)
    rest = [d for i, d in enumerate(dims) if i != m.axis - 1]
    stage = plan.producer_stage[output]
    spacing = plan.stages[stage].spacing
    n = plan.stages[stage].n_probes
    starts = np.asarray(band.starts, dtype=np.int64)
    positions = starts[:, None] + np.arange(width, dtype=np.int64)[None, :]  # (Lw, B)
    probe = probe_indices(ctx, np.arange(start, end, dtype=np.int64))[spacing][:, None]
    mask = reached(band, stride=m.stride, lo=m.lo, hi=m.hi, window_start=start)
    index = probe * (length + 1) + np.where(mask, positions, length)  # position `length`: the zero row
    # probes (n, C, N, *dims) - reference (N, *dims): the length axis stays innermost-contiguous
    delta = b.op("Sub", [probes_of(ctx, output, stage), ctx.ref_names[output]], hint="band_delta")
    axis = m.axis + 2
    rank = len(dims) + 3
    pads = [0] * (2 * rank)
    pads[rank + axis] = 1
    delta = b.pad(delta, pads, dtype=ctx.dtype(output), hint="band_zero_row")
    # (n, C, N, *dims) → (n, P + 1, C, N, *rest) → rows (n·(P + 1), C, N, *rest)
    order = [0, axis] + [i for i in range(1, rank) if i != axis]
    rows = b.reshape(b.transpose(delta, order, hint="band_rows"), [n * (length + 1), ctx.n_classes, -1, *rest],
                     hint="band_rows")
    gathered = b.op("Gather", [rows, b.const(index, "band_index")], axis=0, hint="band_decode")
    band_dims = list(dims)
    band_dims[m.axis - 1] = width
    return gathered, band_dims


def emit_band_output(ctx: EmitContext, output: str, reduce: str, form: str, is_reference: str, band: Band) -> str:
    """The ISM output of a local ``output`` decoded on its band: banded (one row gather,
    :func:`~yuzu_onnx.emit.dense_rows.emit_row_gather`), dense (that band scattered into
    zeros), or reduced (``l2``, ``sum``) from the band deltas of :func:`emit_band_delta`."""
    if reduce == "none":
        # the band itself, gathered in the ISM layout (then written into zeros when dense)
        values = emit_row_gather(ctx, output, is_reference, np.asarray(band.starts, dtype=np.int64), band.width)
        if form == "banded" or band.width == band.length:
            return values
        return write_band_into_zeros(ctx, values, band, banded_dims(ctx, output, band))
    b = ctx.builder
    delta, band_dims = emit_band_delta(ctx, output, band)  # (Lw, B, C, N, *rest)
    if reduce == "l2":
        return band_l2(ctx, delta, len(band_dims) - 1, is_reference)
    m = ctx.region.maps[output]
    # (Lw, B, C, N, *rest) → (Lw, C, N, *dims with B on the length axis)
    back = [0, 2, 3] + [1 if i == m.axis - 1 else 4 + i - (i > m.axis - 1) for i in range(len(band_dims))]
    delta = b.transpose(delta, back, hint="band_layout")
    return emit_output(ctx, output, delta, reduce, is_reference, odims=band_dims, is_delta=True)  # sum


def band_l2(ctx: EmitContext, delta: str, n_rest: int, is_reference: str) -> str:
    """The ``l2`` reduction straight from the band deltas ``(Lw, B, C, N, *rest)``.

    The squares are summed per class first (over the band and the other output dims);
    shift classes then become bases on those sums, ``(Lw, A-1, N)`` → ``(Lw, A, N)``, a
    0/1 selection that copies each sum exactly; the root and the layout run on
    ``(Lw, A, N)`` values only.
    """
    sums = ctx.builder.reduce("ReduceSumSquare", delta, [1] + list(range(4, 4 + n_rest)), keepdims=0,
                              hint="l2")  # (Lw, C, N)
    return emit_l2_output(ctx, sums, is_reference)


def banded_dims(ctx: EmitContext, output: str, band: Band) -> list[int]:
    """The per-sequence dims of ``output``'s banded ISM tensor: ``(A, Lw, *dims)`` (ncl) or
    ``(Lw, A, *dims)`` (nlc), the length axis cut to the band's width."""
    ism = [ctx.spec.alphabet_size, ctx.plan.window_length]
    if band.window_axis == 1:
        ism.reverse()
    dims = ism + ctx.dims(output)
    dims[band.axis - 1] = band.width
    return dims


MAX_UNPOOL_RANK = 5  # ONNX Runtime's CPU MaxUnpool: batch, channel and at most three spatial axes


def write_band_into_zeros(ctx: EmitContext, banded: str, band: Band, dims: list[int]) -> str:
    """The dense ISM tensor of a banded one (per-sequence ``dims``): zeros of the dense
    shape with the band written in, each band value once.

    ISM tensors of rank <= 5 (float32, MaxUnpool's type) take one ``MaxUnpool``, which
    allocates the dense tensor as zeros and puts each band value at its flat index: a
    single pass over the output. ONNX Runtime 1.32, CPU, 2 threads, the ToyNet profile
    (32 MB per sequence): 1.3 ms, against 5.6-6.8 ms for zeros + ``ScatterElements``,
    which copies its zero input when its output is a graph output. Higher ranks take
    :func:`scatter_band`. (ONNX Runtime's CUDA provider has no ``MaxUnpool``: there this
    node runs on the CPU, where the output is copied to anyway.)
    """
    if len(dims) + 1 > MAX_UNPOOL_RANK:
        return scatter_band(ctx, banded, band, rank=len(dims) + 1)
    return unpool_band(ctx, banded, band, dims)


def unpool_band(ctx: EmitContext, banded: str, band: Band, dims: list[int]) -> str:
    """:func:`write_band_into_zeros` as one ``MaxUnpool``: every band value goes to its flat
    index in the dense batch, ``sequence · size + Σ index_k · stride_k`` with the band axis's
    index ``starts[window] + offset``. The index is summed per run from the sequence offsets
    and one small constant per axis (smallest axes first), so that no constant the size of a
    sequence's band exists for ONNX Runtime to fold and hold for the session's lifetime."""
    b = ctx.builder
    dense = list(dims)
    dense[band.axis - 1] = band.length
    strides = [int(np.prod(dense[k + 1:], dtype=np.int64)) for k in range(len(dense))]
    rank = len(dims) + 1

    def along(axes: list[int], values: np.ndarray) -> np.ndarray:  # batch-first shape, values on `axes`
        shape = [1] * rank
        for axis, size in zip(axes, values.shape):
            shape[axis] = size
        return values.reshape(shape)

    shape = b.op("Shape", [banded], hint="band_shape")
    _, sequence = batch_sequences(b, shape, rank=rank)
    index = b.op("Mul", [sequence, b.ints([int(np.prod(dense, dtype=np.int64))], "dense_size")], hint="sequence_offset")
    starts = np.asarray(band.starts, dtype=np.int64)
    window = np.arange(len(starts), dtype=np.int64)[:, None] * strides[band.window_axis - 1]
    position = window + (starts[:, None] + np.arange(band.width, dtype=np.int64)[None, :]) * strides[band.axis - 1]
    index = b.op("Add", [index, b.const(along([band.window_axis, band.axis], position), "band_flat_index")],
                 hint="band_flat_index")
    others = [axis for axis in range(1, rank) if axis not in (band.window_axis, band.axis) and dims[axis - 1] > 1]
    for axis in sorted(others, key=lambda axis: dims[axis - 1]):
        offsets = np.arange(dims[axis - 1], dtype=np.int64) * strides[axis - 1]
        index = b.op("Add", [index, b.const(along([axis], offsets), "band_flat_index")], hint="band_flat_index")
    return b.op("MaxUnpool", [banded, index, dense_shape_of(b, shape, band)], kernel_shape=[1] * (rank - 2),
                hint="dense_from_band")


def scatter_band(ctx: EmitContext, banded: str, band: Band, *, rank: int) -> str:
    """The dense ISM tensor of a banded one: zeros of the dense shape, the band scattered
    in along ``band.axis`` (each dense element written once, besides the zero fill);
    ``rank``: the rank of ``banded``."""
    b = ctx.builder
    shape = b.op("Shape", [banded], hint="band_shape")
    zero = onnx.helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0.0])
    zeros = b.op("ConstantOfShape", [dense_shape_of(b, shape, band)], value=zero, hint="dense_zeros")
    index = np.asarray(band.starts, dtype=np.int64)[:, None] + np.arange(band.width, dtype=np.int64)[None, :]
    index_shape = [1] * rank
    index_shape[band.window_axis] = len(band.starts)
    index_shape[band.axis] = band.width
    index = b.op("Expand", [b.const(index.reshape(index_shape), "band_scatter_index"), shape], hint="band_index")
    return b.op("ScatterElements", [zeros, index, banded], axis=band.axis, hint="dense_from_band")


def dense_shape_of(b: GraphBuilder, shape: str, band: Band) -> str:
    """The dense ISM tensor's shape from its banded one's ``shape``: the band axis at the
    output's whole length."""
    return b.op("Concat", [b.slice(shape, [0], [band.axis], [0], hint="band_shape"), b.ints([band.length], "band_length"),
                           b.slice(shape, [band.axis + 1], [np.iinfo(np.int64).max], [0], hint="band_shape")],
                axis=0, hint="dense_shape")
