"""Gaussian probes (DESIGN §3a): layer structure, sensing matrices and per-position solves.

Everything here is numpy at convert time; :mod:`yuzu_onnx.emit.gaussian` writes it as ONNX.

**Residue layout.** Between convolutions every local tensor ``T`` is held as the deltas
of all mutants ``(j, k)`` (position ``j`` in the window, substitution class ``k``) in the
*residue layout* of a modulus ``d >= RF_T``: row ``(c, k)`` holds, at each position ``p``,
the delta of the one mutant ``(j, k)`` inside ``p``'s window with ``(j - start) mod d == c``
(zero if there is none). ``reference + row`` is then a real sequence's tensor (a spaced
probe, DESIGN §3b), so pooling, activations and batch norm act on it exactly: add the
reference, apply the op, subtract the reference.

**Encode.** The sensing matrix ``Φ`` of a convolution is periodic in the position with
period ``d_in`` (the modulus of its input): ``Φ[:, (j, k)] = G[:, ((j - start) mod d_in, k)]``.
The probes ``P = Φ Δ`` are then one MatMul, ``G`` times the residue rows of the input.
``d_in`` is at least the receptive field of the conv *output*, so the columns of the
mutants that reach one output position are distinct.

**Decode.** Output position ``q`` sees the mutants ``S_q`` (a run of consecutive positions
``j`` in its window, times the classes): ``D_q = pinv(Φ[:, S_q]) · Y_q``, stored as a
``(RF·C + 1, n_probes)`` matrix whose rows are the window offsets ``r = j - first(q)`` (the
last row is zero, a source of exact zeros). ``pinv(Φ[:, S_q])`` depends only on the run's
first offset, its length and ``(first j - start) mod d_in``, so positions with equal keys
share one matrix (a Gather of rows at run time). A Gather of rows then moves the offsets
into the residue layout of the output's modulus.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from ..analysis.region import LocalRegion, node_inputs
from ..errors import InputError, UnsupportedError, YuzuError, option
from ..importer import ModelSpec
from ..ops import STANDARD_DOMAINS, op_spec
from ..plan import PlanOptions


class GaussianUnsupportedError(UnsupportedError, InputError):
    """The model's local region is not a sequential stack that Gaussian probes handle."""

    exit_code = 2


class SingularSystemError(YuzuError):
    """A per-position least-squares system is rank-deficient or too badly conditioned."""


@dataclass(frozen=True)
class GaussianConv:
    """One Conv of the region, decoded with Gaussian probes."""

    node: int
    name: str
    input: str
    output: str
    in_segment: int
    out_segment: int


@dataclass(frozen=True)
class GaussianDesign:
    """Segments (the sequence input, then one per Conv output) and their moduli.

    ``segment_of`` maps every region tensor (the input included) to its segment;
    ``segment_nodes[s]`` are the region node indices whose outputs lie in segment ``s``.
    """

    window: tuple[int, int]
    convs: tuple[GaussianConv, ...]
    segment_of: Mapping[str, int]
    segment_nodes: tuple[tuple[int, ...], ...]
    moduli: tuple[int, ...]

    @property
    def window_length(self) -> int:
        return self.window[1] - self.window[0]

    def rows(self, segment: int) -> int:
        """Residue rows per class of a segment: ``min(d, Lw)`` (residues ``>= Lw`` hold no mutant)."""
        return min(self.moduli[segment], self.window_length)


@dataclass(frozen=True)
class ConvSolve:
    """A conv's sensing matrix and decode tables for ``n_classes`` classes.

    ``sensing``: ``G``, ``(n_probes, rows_in · C)``. ``pinvs``: the distinct decode
    matrices, ``(U, RF·C + 1, n_probes)``; ``position_pinv[q]`` picks position ``q``'s.
    ``relayout``: ``(rows_out · C · P,)`` rows of the flattened ``(P · (RF·C + 1), ...)``
    decode that form the output's residue layout, ordered ``(residue, class, position)``.
    """

    n_probes: int
    support: int
    sensing: np.ndarray
    pinvs: np.ndarray
    position_pinv: np.ndarray
    relayout: np.ndarray
    condition: float

    @property
    def shares_pinvs(self) -> bool:
        return len(self.pinvs) != len(self.position_pinv) or bool(
            np.any(self.position_pinv != np.arange(len(self.position_pinv)))
        )


def check_sequential(spec: ModelSpec, region: LocalRegion) -> None:
    """Refuse regions that join branches (residual Add, Concat, gating Mul...)."""
    if region.is_empty:
        stop = f" (the first op after the input is {region.stops[0]})" if region.stops else ""
        raise GaussianUnsupportedError(
            f"gaussian probes need a local convolutional region, and the model has none{stop}; "
            f"use {option('probes', 'spaced')} (exact, falls back to naive ISM) or {option('probes', 'naive')}"
        )
    graph = spec.model.graph
    for i in region.region_nodes:
        node = graph.node[i]
        local = list(dict.fromkeys(n for n in node_inputs(node) if n in region.maps))
        if len(local) > 1:
            joined = ", ".join(repr(n) for n in local)
            raise GaussianUnsupportedError(
                f"gaussian probes support only sequential conv/activation/pool stacks, and the model "
                f"{_branch_pattern(node.op_type)} (node {node.name or node.output[0]!r}, {node.op_type} of "
                f"{joined}); use {option('probes', 'spaced')}"
            )


#: what a node joining two branches of the local region is, in the user's terms
_BRANCH_PATTERNS = {
    "Mul": "takes an elementwise product of two branches, as a GELU written with Erf, a SiLU/Swish "
           "written with Sigmoid or a gated unit does",
    "Div": "divides one branch by another elementwise",
    "Add": "adds two branches, as a residual (skip) connection does",
    "Sub": "subtracts one branch from another",
    "Sum": "adds branches, as a residual (skip) connection does",
    "Concat": "concatenates branches (parallel convolutions)",
}


def _branch_pattern(op_type: str) -> str:
    """The user-level pattern behind a node of type ``op_type`` that joins two branches."""
    return _BRANCH_PATTERNS.get(op_type, "joins two branches")


def design_layers(spec: ModelSpec, region: LocalRegion, window: tuple[int, int], *,
                  n_classes: int, alpha_max: float,
                  pinv_budget_bytes: float = PlanOptions.gaussian_pinv_budget_bytes) -> GaussianDesign:
    """Segments and moduli; moduli sharing pinvs when the per-position ones would need more
    than ``pinv_budget_bytes``."""
    graph = spec.model.graph
    segment_of: dict[str, int] = {spec.input_name: 0}
    nodes: list[list[int]] = [[]]
    convs: list[GaussianConv] = []
    for i in region.region_nodes:
        node = graph.node[i]
        source = next(n for n in node_inputs(node) if n in region.maps)
        outs = [o for o in node.output if o]
        if op_spec(node.op_type).gaussian_linear is not None and node.domain in STANDARD_DOMAINS:
            nodes.append([i])
            segment = len(nodes) - 1
            convs.append(GaussianConv(i, node.name or outs[0], source, outs[0], segment_of[source], segment))
        else:
            segment = segment_of[source]
            nodes[segment].append(i)
        for out in outs:
            segment_of[out] = segment
    need = [1] * len(nodes)
    for name, segment in segment_of.items():
        need[segment] = max(need[segment], region.maps[name].receptive_field)
    strides = [1] * len(nodes)
    for conv in convs:
        m = region.maps[conv.output]
        need[conv.in_segment] = max(need[conv.in_segment], m.receptive_field)
        strides[conv.in_segment] = math.lcm(strides[conv.in_segment], m.stride)
    design = GaussianDesign(window, tuple(convs), segment_of, tuple(map(tuple, nodes)), tuple(need))
    if pinv_bytes(design, region, n_classes, alpha_max) <= pinv_budget_bytes:
        return design
    # a modulus that is a multiple of the output stride makes the pinvs periodic in q
    rounded = tuple(
        -(-d // s) * s if -(-d // s) * s <= 2 * d else d for d, s in zip(need, strides)
    )
    shared = GaussianDesign(window, tuple(convs), segment_of, tuple(map(tuple, nodes)), rounded)
    if pinv_bytes(shared, region, n_classes, alpha_max) < pinv_bytes(design, region, n_classes, alpha_max):
        return shared
    return design


def n_probes_for(alpha: float, support: int) -> int:
    """``ceil(α · n_nz)`` (at least 1), robust to the float rounding of ``α``."""
    return max(1, math.ceil(round(alpha * support, 9)))


def _position_keys(design: GaussianDesign, region: LocalRegion, conv: GaussianConv) -> np.ndarray:
    """Per output position: (first offset, run length, residue mod d_in of the first j)."""
    m = region.maps[conv.output]
    start, end = design.window
    q = np.arange(m.length)
    first = m.stride * q + m.lo
    lo = np.maximum(first, start)
    hi = np.minimum(first + m.receptive_field, end)  # exclusive
    count = np.maximum(hi - lo, 0)
    offset = np.where(count > 0, lo - first, 0)
    residue = np.where(count > 0, (lo - start) % design.moduli[conv.in_segment], 0)
    return np.stack([offset, count, residue], axis=1).astype(np.int64)


def pinv_bytes(design: GaussianDesign, region: LocalRegion, n_classes: int, alpha: float) -> int:
    """Bytes of the stored decode matrices (distinct ones only) for ``n_classes`` classes."""
    total = 0
    for conv in design.convs:
        keys = _position_keys(design, region, conv)
        support = n_classes * int(keys[:, 1].max(initial=0))
        rf = region.maps[conv.output].receptive_field
        total += 4 * len(np.unique(keys, axis=0)) * (rf * n_classes + 1) * n_probes_for(alpha, support)
    return total


def solve_conv(
    design: GaussianDesign, region: LocalRegion, conv: GaussianConv, *, n_classes: int, alpha: float,
    rng: np.random.Generator, max_condition: float = PlanOptions.gaussian_max_condition,
) -> ConvSolve:
    """Draw ``G`` and compute the per-position pseudo-inverses (float64, stored float32).

    Raises :class:`SingularSystemError` when a system has fewer probes than unknowns or a
    condition number above ``max_condition``.
    """
    c = n_classes
    m = region.maps[conv.output]
    rf = m.receptive_field
    rows_in = design.rows(conv.in_segment)
    keys = _position_keys(design, region, conv)
    support = c * int(keys[:, 1].max(initial=0))
    n_probes = n_probes_for(alpha, support)
    sensing = rng.standard_normal((n_probes, rows_in * c)) / np.sqrt(n_probes)
    unique, position_pinv = np.unique(keys, axis=0, return_inverse=True)
    pinvs = np.zeros((len(unique), rf * c + 1, n_probes), dtype=np.float64)
    d_in = design.moduli[conv.in_segment]
    worst = 1.0
    for count in np.unique(unique[:, 1]):
        if count == 0:
            continue
        group = np.nonzero(unique[:, 1] == count)[0]
        if n_probes < count * c:
            raise SingularSystemError(
                f"conv {conv.name!r}: {n_probes} probes for {count * c} unknowns at some positions "
                f"(rank-deficient); raise {option('alpha')}"
            )
        residues = (unique[group, 2][:, None] + np.arange(count)[None, :]) % d_in  # (G, count)
        columns = (residues[:, :, None] * c + np.arange(c)).reshape(len(group), -1)
        phi = np.moveaxis(sensing[:, columns], 1, 0)  # (G, n_probes, count · C)
        with _one_blas_thread():
            left, values, right = np.linalg.svd(phi, full_matrices=False)
            solved = (np.swapaxes(right, 1, 2) / values[:, None, :]) @ np.swapaxes(left, 1, 2)  # V Σ⁻¹ Uᵀ
        smallest = values[:, -1]
        condition = np.where(smallest > 0, values[:, 0] / np.where(smallest > 0, smallest, 1.0), np.inf)
        if not np.all(condition <= max_condition):
            raise SingularSystemError(
                f"conv {conv.name!r}: a least-squares system has condition number {condition.max():.3g} "
                f"(> {max_condition:.0e}); raise {option('alpha')} or change {option('probe_seed')}"
            )
        worst = max(worst, float(condition.max()))
        for g, u in enumerate(group):
            offset = unique[u, 0]
            pinvs[u, offset * c : (offset + count) * c] = solved[g]
    return ConvSolve(
        n_probes=n_probes,
        support=support,
        sensing=sensing.astype(np.float32),
        pinvs=pinvs.astype(np.float32),
        position_pinv=position_pinv.reshape(-1).astype(np.int32),
        relayout=_relayout(design, m, conv, c),
        condition=worst,
    )


def _one_blas_thread():
    """Single-threaded BLAS for the small solves: fast on busy machines, same bits everywhere."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the solves use the BLAS defaults
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _relayout(design: GaussianDesign, m, conv: GaussianConv, c: int) -> np.ndarray:
    """Rows of the flattened decode ``(P · (RF·C + 1), ...)`` in residue order ``(c', k, q)``."""
    start, end = design.window
    rf = m.receptive_field
    block = rf * c + 1
    d_out = design.moduli[conv.out_segment]
    rows_out = design.rows(conv.out_segment)
    q = np.arange(m.length)
    first = m.stride * q + m.lo
    index = np.full((rows_out, c, m.length), rf * c, dtype=np.int64)
    offsets = np.arange(rf)
    j = first[:, None] + offsets[None, :]  # (P, RF)
    valid = (j >= start) & (j < end)
    qq, rr = np.nonzero(valid)
    residue = (j[qq, rr] - start) % d_out
    for k in range(c):
        index[residue, k, qq] = rr * c + k
    flat = (index + (q * block)[None, None, :]).reshape(-1)
    return flat.astype(np.int32) if m.length * block < 2**31 else flat


def solve_design(
    design: GaussianDesign, region: LocalRegion, *, alphabet_size: int, alpha: float, seed: int,
    max_condition: float = PlanOptions.gaussian_max_condition,
) -> dict[int, list[ConvSolve]]:
    """Solves for the shift classes (``A - 1``) and for all bases (``A``), in that order."""
    rng = np.random.default_rng([seed, 0])
    return {
        c: [solve_conv(design, region, conv, n_classes=c, alpha=alpha, rng=rng, max_condition=max_condition)
            for conv in design.convs]
        for c in (alphabet_size - 1, alphabet_size)
    }


def linear_part(node: onnx.NodeProto) -> onnx.NodeProto:
    """The part of a sensed node (a Conv: without its bias) that Gaussian probes encode and decode."""
    return op_spec(node.op_type).gaussian_linear(node)
