"""Gaussian probes, the published Yuzu method (DESIGN §3a), emitted as plain ONNX ops.

Approximate ISM for sequential conv/activation/pool stacks: every Conv runs (without its
bias) on ``n_probes = ceil(α · n_nz)`` random Gaussian combinations of the mutants' input
deltas, and each output position's deltas are decoded by least squares over its known
support (pseudo-inverses precomputed in float64, applied as one batched MatMul). Other
local ops act on the decoded deltas: add the reference, apply the op, subtract the
reference. Layout of the tensors and tables: :mod:`yuzu_onnx.emit.gaussian_design`.

Graph per substitution-class branch (the ``If`` of :func:`yuzu_onnx.emit.model.emit_model`:
``A - 1`` shift classes for one-hot windows, all ``A`` bases otherwise)::

    input → residue rows of the input deltas ((rows·C·N, A, L), Where against X, minus X)
    per Conv:  MatMul(G, rows) → Conv without bias on (n_probes·N, ...) probes
               → Transpose (P, n_probes, rest) → MatMul(pinvs[q]) → Gather rows → residue rows
    per other local op: (reference + rows) → the op → (minus reference, when a Conv reads it)
    tail: the engine's tail (emit/tail.py) on reference + rows, as for spaced probes

The residue rows with reference added are exactly the value layout of spaced probes, so the
tail, the decode of global pooling heads and the ISM outputs reuse the spaced engine.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from ..analysis.region import DATA, LocalRegion
from ..errors import InputError, YuzuError, YuzuWarning
from ..importer import ModelSpec
from ..oracle import naive_ism
from ..plan import RewritePlan, Stage, node_flops, plan_rewrite
from .builder import PREFIX, copy_nodes
from .gaussian_design import (
    ConvSolve,
    GaussianDesign,
    GaussianUnsupportedError,
    SingularSystemError,
    check_sequential,
    design_layers,
    linear_part,
    solve_design,
)
from .model import emit_decoded_outputs, emit_ism_model
from .probes import EmitContext, emit_input_probes

__all__ = [
    "ALPHA_GRID",
    "ALPHA_RANGE",
    "MIN_PEARSON",
    "GaussianConversion",
    "GaussianUnsupportedError",
    "emit_gaussian",
    "gaussian_summary",
    "parse_alpha",
]

ALPHA_RANGE = (1.0, 1.5)
ALPHA_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(11))
MIN_PEARSON = 0.9999
META = "yuzu_onnx."


@dataclass(frozen=True)
class GaussianConversion:
    """A Gaussian-probe ISM model and how it was chosen.

    ``alpha``: the oversampling factor used; ``pearson_r``: the correlation of the model's
    ISM with naive ISM on the seeded check sequence; ``condition_number``: the worst
    condition number of the per-position least-squares systems; ``auto``: α was searched.
    """

    model: onnx.ModelProto
    plan: RewritePlan
    alpha: float
    pearson_r: float
    condition_number: float
    seed: int
    auto: bool


def parse_alpha(alpha: str | float | None) -> float | None:
    """``"auto"``/``None`` → ``None`` (search); a number in :data:`ALPHA_RANGE` → that number."""
    if alpha is None or (isinstance(alpha, str) and alpha.strip().lower() == "auto"):
        return None
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"--alpha must be 'auto' or a number in [1.0, 1.5], got {alpha!r}") from None
    if not ALPHA_RANGE[0] <= value <= ALPHA_RANGE[1]:
        raise InputError(
            f"--alpha must be 'auto' or a number in [1.0, 1.5] (probes per unknown of each "
            f"least-squares system), got {alpha!r}"
        )
    return value


def _parse_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def emit_gaussian(
    spec: ModelSpec,
    region: LocalRegion,
    *,
    window=None,
    outputs: Sequence[str],
    reductions: Mapping[str, str],
    alpha: str | float | None = "auto",
    seed: int = 0,
) -> GaussianConversion:
    """Convert with Gaussian probes, choosing ``α`` against naive ISM when ``alpha="auto"``.

    Parameters
    ----------
    spec, region: the imported model and its local region.
    window: ``None``, ``(start, end)`` or ``"start:end"``: the mutated positions.
    outputs: model outputs to compute ISM for; reductions: one reduction per output.
    alpha: ``"auto"`` (default: the smallest α in 1.0, 1.05, ..., 1.5 whose ISM on a seeded
        random one-hot sequence correlates with naive ISM at Pearson r >= 0.9999) or a
        number in [1.0, 1.5].
    seed: seed of the Gaussian sensing matrices and of the check sequence; a fixed seed
        gives a bit-identical model.

    Raises
    ------
    GaussianUnsupportedError: no local region, or a region that joins branches.
    InputError: a bad ``alpha`` or ``seed``.
    YuzuError: a rank-deficient or badly conditioned system at a fixed α, or no α in
        the grid reaching r >= 0.9999.
    """
    fixed = parse_alpha(alpha)
    seed = _parse_seed(seed)
    check_sequential(spec, region)
    for out in outputs:
        if region.kinds.get(out) != DATA:
            raise GaussianUnsupportedError(f"output {out!r} does not depend on the sequence")
    base = plan_rewrite(spec, region, window=window, first_conv="probes")
    region = base.region  # stages too big for memory may have joined the tail
    a = spec.alphabet_size
    design = design_layers(spec, region, base.window, n_classes=a, alpha_max=fixed or ALPHA_RANGE[1])
    X = _check_sequence(spec, seed)
    oracle = naive_ism(spec, X, outputs=list(outputs), window=base.window, device="cpu")
    none = {o: "none" for o in outputs}
    tried: list[str] = []
    chosen = None
    for value in (fixed,) if fixed is not None else ALPHA_GRID:
        try:
            solves = solve_design(design, region, alphabet_size=a, alpha=value, seed=seed)
        except SingularSystemError as exc:
            if fixed is not None:
                raise YuzuError(f"gaussian probes at alpha {value:g}: {exc}") from None
            tried.append(f"{value:.2f}: {exc}")
            continue
        plan = _gaussian_plan(spec, region, base, design, solves[a - 1])
        check = _emit_model(spec, region, plan, design, solves, list(outputs), none)
        r = pearson_r(_run(check, spec, X, outputs), oracle)
        tried.append(f"{value:.2f}: r={r:.6f}")
        if fixed is not None or r >= MIN_PEARSON:
            chosen = (value, r, solves, plan, check)
            break
    if chosen is None:
        raise YuzuError(
            f"no alpha in [1.0, 1.5] makes gaussian probes correlate with naive ISM at r >= {MIN_PEARSON} "
            f"on a random sequence (tried {'; '.join(tried)}); use --probes spaced (exact)"
        )
    value, r, solves, plan, check = chosen
    if not r >= MIN_PEARSON:
        warnings.warn(
            f"gaussian probes with alpha {value:g} correlate with naive ISM at r={r:.6f} "
            f"(< {MIN_PEARSON}) on a random sequence; raise --alpha or use --probes spaced",
            YuzuWarning,
            stacklevel=3,
        )
    model = check if dict(reductions) == none else _emit_model(
        spec, region, plan, design, solves, list(outputs), dict(reductions)
    )
    condition = max((s.condition for per_c in solves.values() for s in per_c), default=1.0)
    _set_gaussian_metadata(model, design, region, solves, a, alpha=value, r=r, seed=seed,
                           condition=condition, auto=fixed is None)
    return GaussianConversion(model, plan, value, r, condition, seed, fixed is None)


def _check_sequence(spec: ModelSpec, seed: int) -> np.ndarray:
    """One random one-hot sequence in the model's layout, from ``(seed, 1)``."""
    rng = np.random.default_rng([seed, 1])
    x = np.eye(spec.alphabet_size, dtype=np.float32)[rng.integers(0, spec.alphabet_size, (1, spec.seq_len))]
    return x if spec.layout == "nlc" else np.ascontiguousarray(x.transpose(0, 2, 1))


def _run(model: onnx.ModelProto, spec: ModelSpec, X: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    from ..runtime import make_session

    session = make_session(model, providers=["CPUExecutionProvider"])
    return dict(zip(outputs, session.run(list(outputs), {spec.input_name: X})))


def pearson_r(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
    """Pearson r over all outputs' ISM values, flattened (NaN when ``got`` is not finite)."""
    a = np.concatenate([np.asarray(got[k], dtype=np.float64).ravel() for k in expected])
    b = np.concatenate([np.asarray(expected[k], dtype=np.float64).ravel() for k in expected])
    if not np.isfinite(a).all():
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if denominator == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b) / denominator


# ---------------------------------------------------------------------------- emission


def _emit_model(
    spec: ModelSpec,
    region: LocalRegion,
    plan: RewritePlan,
    design: GaussianDesign,
    solves: Mapping[int, list[ConvSolve]],
    outputs: list[str],
    reductions: dict[str, str],
) -> onnx.ModelProto:
    """The self-contained ISM model: reference pass, then an ``If`` over the class branches."""

    def branch(ctx: EmitContext, is_reference: str) -> list[str]:
        return _Branch(ctx, design, solves[ctx.n_classes]).emit(outputs, reductions, is_reference)

    return emit_ism_model(spec, region, plan, outputs=outputs, reductions=reductions, probes="gaussian",
                          branch=branch)


class _Branch:
    """The region of one class branch in residue layout, then the engine's decode and tail.

    Every region tensor is kept as ``values`` (reference + residue rows, the spaced-probe
    layout other ops and the tail read) and/or ``deltas`` (the rows alone, what a Conv's
    encode reads), each ``(rows · C · N, *dims)``; the other form is made on demand.
    """

    def __init__(self, ctx: EmitContext, design: GaussianDesign, solves: list[ConvSolve]) -> None:
        self.ctx = ctx
        self.design = design
        self.solves = {conv.node: (conv, solve) for conv, solve in zip(design.convs, solves)}
        self.values: dict[str, str] = {}
        self.deltas: dict[str, str] = {}
        self.prefix = f"{PREFIX}{ctx.builder.scope}gaussian/"

    def rows(self, tensor: str) -> int:
        return self.design.rows(self.design.segment_of[tensor]) * self.ctx.n_classes

    def value(self, tensor: str) -> str:
        if tensor not in self.values:
            b, dims = self.ctx.builder, self.ctx.dims(tensor)
            rows = b.reshape(self.deltas[tensor], [self.rows(tensor), -1, *dims], hint="rows")
            added = b.op("Add", [rows, self.ctx.ref_names[tensor]], hint="add_reference")
            self.values[tensor] = b.reshape(added, [-1, *dims], hint="values")
        return self.values[tensor]

    def delta(self, tensor: str) -> str:
        if tensor not in self.deltas:
            b, dims = self.ctx.builder, self.ctx.dims(tensor)
            rows = b.reshape(self.values[tensor], [self.rows(tensor), -1, *dims], hint="rows")
            less = b.op("Sub", [rows, self.ctx.ref_names[tensor]], hint="sub_reference")
            self.deltas[tensor] = b.reshape(less, [-1, *dims], hint="deltas")
        return self.deltas[tensor]

    def emit(self, outputs: list[str], reductions: dict[str, str], is_reference: str) -> list[str]:
        ctx, design = self.ctx, self.design
        graph = ctx.spec.model.graph
        self.values[ctx.x] = emit_input_probes(ctx, design.moduli[0])
        for i in sorted(i for nodes in design.segment_nodes for i in nodes):
            node = graph.node[i]
            if i in self.solves:
                self._conv(*self.solves[i])
            else:
                source = next(n for n in node.input if n in design.segment_of)
                rename = {source: self.value(source)}
                self._copy(node, rename)
                for out in node.output:
                    if out:
                        self.values[out] = rename[out]
        ctx.stage_names = [{} for _ in design.moduli]
        ctx.stage_spans = [None for _ in design.moduli]  # every position is computed
        local_outputs = [o for o in outputs if o in ctx.region.maps]
        for tensor in dict.fromkeys([*ctx.region.frontier, *local_outputs]):
            if tensor != ctx.x:
                ctx.stage_names[design.segment_of[tensor]][tensor] = self.value(tensor)
        return emit_decoded_outputs(ctx, outputs, reductions, is_reference)

    def _copy(self, node: onnx.NodeProto, rename: dict[str, str]) -> None:
        ctx = self.ctx
        copy_nodes([node], rename, prefix=self.prefix, available=ctx.is_available_outside,
                   producers=ctx.producers, is_meta=ctx.is_meta, sink=ctx.builder.nodes)

    def _conv(self, conv, solve: ConvSolve) -> None:
        """Encode the input rows into probes, run the conv without bias, decode by least squares."""
        b, ctx = self.ctx.builder, self.ctx
        m = ctx.region.maps[conv.output]
        in_dims, dims = ctx.dims(conv.input), ctx.dims(conv.output)
        n = solve.n_probes
        rows = b.reshape(self.delta(conv.input), [self.rows(conv.input), -1], hint="input_rows")
        probes = b.op("MatMul", [b.const(solve.sensing, "sensing"), rows], hint="encode")
        probes = b.reshape(probes, [-1, *in_dims], hint="probes")
        rename = {conv.input: probes}
        self._copy(linear_part(ctx.spec.model.graph.node[conv.node]), rename)
        # (n, N, *dims) → (P, n, N · other dims)
        length = m.axis  # index in dims is m.axis - 1, axis 1 + m.axis of (n, N, *dims)
        others = [2 + k for k in range(len(dims)) if k != length - 1]
        y = b.reshape(rename[conv.output], [n, -1, *dims], hint="probe_outputs")
        y = b.transpose(y, [1 + length, 0, 1, *others], hint="position_major")
        y = b.reshape(y, [m.length, n, -1], hint="position_major")
        pinvs = b.const(solve.pinvs, "pinvs")
        if solve.shares_pinvs:
            pinvs = b.op("Gather", [pinvs, b.const(solve.position_pinv, "pinv_of_position")], axis=0,
                         hint="position_pinvs")
        decoded = b.op("MatMul", [pinvs, y], hint="decode")  # (P, RF·C + 1, rest)
        block = m.receptive_field * ctx.n_classes + 1
        decoded = b.reshape(decoded, [m.length * block, -1], hint="decoded_rows")
        placed = b.op("Gather", [decoded, b.const(solve.relayout, "relayout")], axis=0, hint="residue_rows")
        other_dims = [d for k, d in enumerate(dims) if k != length - 1]
        rows_out = self.rows(conv.output)
        placed = b.reshape(placed, [rows_out, m.length, -1, *other_dims], hint="residue_rows")
        perm = [0, 2] + [1 if k == length - 1 else 3 + sum(1 for kk in range(k) if kk != length - 1)
                         for k in range(len(dims))]
        placed = b.transpose(placed, perm, hint="residue_rows")
        self.deltas[conv.output] = b.reshape(placed, [-1, *dims], hint="deltas")


def _gaussian_plan(spec: ModelSpec, region: LocalRegion, base: RewritePlan, design: GaussianDesign,
                   solves: list[ConvSolve]) -> RewritePlan:
    """The spaced plan's window and tail, with one stage per segment (its modulus and rows)."""
    graph = spec.model.graph
    c = spec.alphabet_size - 1
    numel = {name: int(np.prod([d for d in spec.shapes[name] if d != -1], dtype=np.int64))
             for name in design.segment_of}
    stages, producer_stage = [], {}
    flops = sum(node_flops(graph.node[i], spec) for i in range(len(graph.node))
                if any(region.kinds.get(o) == DATA for o in graph.node[i].output))
    peak = 0.0
    by_node = {conv.node: (conv, solve) for conv, solve in zip(design.convs, solves)}
    for s, nodes in enumerate(design.segment_nodes):
        rows = design.rows(s)
        stage_flops = 0.0
        for i in nodes:
            for out in graph.node[i].output:
                if out:
                    producer_stage[out] = s
            if i in by_node:
                conv, solve = by_node[i]
                m = region.maps[conv.output]
                block = m.receptive_field * c + 1
                work = (solve.n_probes * node_flops(graph.node[i], spec)
                        + 2.0 * solve.n_probes * design.rows(conv.in_segment) * c * numel[conv.input]
                        + 2.0 * block * solve.n_probes * numel[conv.output])
                held = (solve.n_probes * (numel[conv.input] + numel[conv.output]) + m.length * block * solve.n_probes
                        + 2 * rows * c * numel[conv.output])
                flops += work
                stage_flops += work / max(rows * c, 1)
                peak = max(peak, 4.0 * held)
            else:
                work = node_flops(graph.node[i], spec)
                flops += rows * c * work
                stage_flops += work
                peak = max(peak, 8.0 * rows * c * sum(numel.get(o, 0) for o in graph.node[i].output))
        rf = max(region.maps[t].receptive_field for t, seg in design.segment_of.items() if seg == s)
        stages.append(Stage(nodes=nodes, spacing=design.moduli[s], n_probes=rows, receptive_field=rf,
                            inputs=(), flops_per_probe=stage_flops))
    tail = sum(node_flops(graph.node[i], spec) for i in region.tail_nodes
               if any(region.kinds.get(o) == DATA for o in graph.node[i].output))
    flops += base.window_length * c * tail
    return replace(base, stages=tuple(stages), producer_stage=producer_stage, rewritten_flops=flops,
                   peak_bytes_per_sequence=base.peak_bytes_per_sequence + peak)


def _set_gaussian_metadata(model, design: GaussianDesign, region: LocalRegion, solves, a: int, *, alpha: float,
                           r: float, seed: int, condition: float, auto: bool) -> None:
    layers = []
    for k, conv in enumerate(design.convs):
        shift, bases = solves[a - 1][k], solves[a][k]
        layers.append({
            "conv": conv.name,
            "nodes": len(design.segment_nodes[conv.out_segment]),
            "spacing": design.moduli[conv.in_segment],
            "receptive_field": region.maps[conv.output].receptive_field,
            "support": shift.support,
            "probes": shift.n_probes,
            "support_all_bases": bases.support,
            "probes_all_bases": bases.n_probes,
            "condition_number": float(f"{max(shift.condition, bases.condition):.4g}"),
        })
    props = {
        "probes": "gaussian",
        "stages": json.dumps(layers),
        "alpha": f"{alpha:.2f}",
        "alpha_mode": "auto" if auto else "fixed",
        "pearson_r": f"{r:.8f}",
        "seed": str(seed),
        "condition_number": f"{condition:.4g}",
    }
    kept = [p for p in model.metadata_props if p.key.removeprefix(META) not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=META + key, value=value))


def gaussian_summary(model: onnx.ModelProto) -> str | None:
    """One line on a Gaussian-probe model's α, r, condition number and seed (else ``None``)."""
    props = {p.key.removeprefix(META): p.value for p in model.metadata_props}
    if props.get("probes") != "gaussian":
        return None
    try:
        layers = json.loads(props.get("stages", "[]"))
    except ValueError:
        layers = []
    probes = ", ".join(str(layer.get("probes")) for layer in layers)
    return (
        f"gaussian probes: alpha {props.get('alpha')} ({props.get('alpha_mode', 'auto')}), "
        f"Pearson r {props.get('pearson_r')} vs naive ISM on a random sequence, "
        f"worst condition number {props.get('condition_number')}, seed {props.get('seed')}; "
        f"{len(layers)} convs ({probes} probes)"
    )
