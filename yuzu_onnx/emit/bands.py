"""Decode a local output on its band only (DESIGN §3b; :mod:`yuzu_onnx.bands`).

Mutant ``(j, a)`` of a local output differs from the reference only at the positions
whose window contains ``j``: the band ``starts[k] .. starts[k] + width - 1`` of the plan's
:class:`~yuzu_onnx.bands.Band`. The decode gathers exactly those positions out of the
probe that holds ``j`` (one Gather over a ``(probe, position)`` index table), takes the
reference where a band position does not read ``j``, and runs the reductions and the
layout on band-sized tensors. A dense output is then written once: a zero tensor of the
output's shape with the band scattered into it (``ScatterElements``), so no full-size
``Where``, ``Transpose`` or mask multiplication runs.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..bands import Band, reached
from .decode import emit_output, probe_indices
from .probes import EmitContext
from .stages import probes_of


def emit_band_mutants(ctx: EmitContext, output: str, band: Band) -> tuple[str, str, list[int]]:
    """Mutant values of ``output`` on each mutated position's band.

    Returns
    -------
    (mutants, reference, dims): ``mutants`` shape=(Lw, C, N, *dims) and the matching
    reference ``(Lw, 1, N, *dims)``, where ``dims`` are the output's dims with its length
    axis replaced by the band's ``width``.
    """
    b, plan = ctx.builder, ctx.plan
    m = ctx.region.maps[output]
    start, end = plan.window
    lw, width, length = end - start, band.width, band.length
    dims = ctx.dims(output)
    rest = [d for i, d in enumerate(dims) if i != m.axis - 1]
    stage = plan.producer_stage[output]
    spacing = plan.stages[stage].spacing
    n = plan.stages[stage].n_probes
    starts = np.asarray(band.starts, dtype=np.int64)
    positions = starts[:, None] + np.arange(width, dtype=np.int64)[None, :]  # (Lw, B)
    probe = probe_indices(ctx, np.arange(start, end, dtype=np.int64))[spacing]
    # probes (n, C, N, *dims) → (n, P, C, N, *rest) → rows (n·P, C, N, *rest)
    probes = probes_of(ctx, output, stage)
    axis = m.axis + 2
    order = [0, axis] + [i for i in range(1, len(dims) + 3) if i != axis]
    rows = b.reshape(b.transpose(probes, order, hint="band_rows"), [n * length, ctx.n_classes, -1, *rest],
                     hint="band_rows")
    gathered = b.op("Gather", [rows, b.const(probe[:, None] * length + positions, "band_index")], axis=0,
                    hint="band_decode")  # (Lw, B, C, N, *rest)
    ref = ctx.ref_names[output]  # (N, *dims) → (P, N, *rest)
    ref_rows = b.transpose(ref, [m.axis] + [i for i in range(len(dims) + 1) if i != m.axis], hint="band_reference")
    ref_band = b.op("Gather", [ref_rows, b.const(positions, "band_positions")], axis=0, hint="band_reference")
    ref_band = b.unsqueeze(ref_band, [2], hint="band_reference")  # (Lw, B, 1, N, *rest)
    mask = reached(band, stride=m.stride, lo=m.lo, hi=m.hi, window_start=start)
    mask = mask.reshape(lw, width, *([1] * (len(rest) + 2)))
    mutants = b.select(mask, gathered, ref_band, hint="band_mutants", dtype=ctx.dtype(output))
    # (Lw, B, C|1, N, *rest) → (Lw, C|1, N, *dims with B on the length axis)
    back = [0, 2, 3] + [1 if i == m.axis - 1 else 4 + i - (i > m.axis - 1) for i in range(len(dims))]
    band_dims = list(dims)
    band_dims[m.axis - 1] = width
    return (b.transpose(mutants, back, hint="band_layout"), b.transpose(ref_band, back, hint="band_layout"),
            band_dims)


def emit_band_output(ctx: EmitContext, output: str, reduce: str, form: str, is_reference: str, band: Band) -> str:
    """The ISM output of a local ``output`` decoded on its band: banded, dense (the band
    scattered into zeros), or reduced (``l2``, ``sum``) from the band."""
    mutants, ref, band_dims = emit_band_mutants(ctx, output, band)
    values = emit_output(ctx, output, mutants, reduce, is_reference, ref=ref, odims=band_dims)
    if reduce != "none" or form == "banded" or band.width == band.length:
        return values
    return scatter_band(ctx, values, band, rank=3 + len(band_dims))


def scatter_band(ctx: EmitContext, banded: str, band: Band, *, rank: int) -> str:
    """The dense ISM tensor of a banded one: zeros of the dense shape, the band scattered
    in along ``band.axis`` (each dense element written once, besides the zero fill);
    ``rank``: the rank of ``banded``."""
    b = ctx.builder
    shape = b.op("Shape", [banded], hint="band_shape")
    dense_shape = b.op("Concat", [b.slice(shape, [0], [band.axis], [0], hint="band_shape"),
                                  b.ints([band.length], "band_length"),
                                  b.slice(shape, [band.axis + 1], [np.iinfo(np.int64).max], [0], hint="band_shape")],
                       axis=0, hint="dense_shape")
    zero = onnx.helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0.0])
    zeros = b.op("ConstantOfShape", [dense_shape], value=zero, hint="dense_zeros")
    index = np.asarray(band.starts, dtype=np.int64)[:, None] + np.arange(band.width, dtype=np.int64)[None, :]
    index_shape = [1] * rank
    index_shape[band.window_axis] = len(band.starts)
    index_shape[band.axis] = band.width
    index = b.op("Expand", [b.const(index.reshape(index_shape), "band_scatter_index"), shape], hint="band_index")
    return b.op("ScatterElements", [zeros, index, banded], axis=band.axis, hint="dense_from_band")
