"""Gaussian probes (DESIGN §3a): choose the oversampling factor ``α`` and convert.

Beside :mod:`yuzu_onnx.convert`: plans the spaced stages, designs the Gaussian layers,
then for each candidate ``α`` solves the least-squares systems, plans the Gaussian stages,
has the emitter (:mod:`yuzu_onnx.emit.gaussian`) build the model and checks it against
naive ISM on a seeded random sequence with ONNX Runtime; the smallest ``α`` whose ISM
correlates well enough wins (or the fixed one).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from .analysis.region import DATA, LocalRegion, constant_values
from .emit.gaussian import emit_gaussian_model, set_gaussian_metadata
from .emit.gaussian_design import (
    ConvSolve,
    GaussianDesign,
    GaussianUnsupportedError,
    SingularSystemError,
    check_sequential,
    design_layers,
    solve_design,
)
from .encoding import random_one_hot
from .errors import InputError, YuzuError, YuzuWarning, option
from .importer import ModelSpec
from .oracle import naive_ism
from .plan import PlanOptions, RewritePlan, Stage, decide_tail, node_flops, plan_rewrite
from .reductions import pearson_r

__all__ = [
    "ALPHA_GRID",
    "ALPHA_RANGE",
    "GaussianConversion",
    "GaussianUnsupportedError",
    "convert_gaussian",
    "parse_alpha",
    "pearson_r",
    "plan_gaussian",
]

ALPHA_RANGE = (1.0, 1.5)
ALPHA_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(11))


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
        raise InputError(f"{option('alpha', alpha)} is not 'auto' or a number in [1.0, 1.5]") from None
    if not ALPHA_RANGE[0] <= value <= ALPHA_RANGE[1]:
        raise InputError(
            f"{option('alpha', alpha)} is not 'auto' or a number in [1.0, 1.5] (probes per unknown of each "
            "least-squares system)"
        )
    return value


def _parse_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{option('probe_seed', seed)} is not a non-negative integer")
    return int(seed)


def convert_gaussian(
    spec: ModelSpec,
    region: LocalRegion,
    *,
    window=None,
    outputs: Sequence[str],
    reductions: Mapping[str, str],
    alpha: str | float | None = "auto",
    seed: int = 0,
    options: PlanOptions | None = None,
) -> GaussianConversion:
    """Convert with Gaussian probes, choosing ``α`` against naive ISM when ``alpha="auto"``.

    Parameters
    ----------
    spec, region: the imported model and its local region.
    window: ``None``, ``(start, end)`` or ``"start:end"``: the mutated positions.
    outputs: model outputs to compute ISM for; reductions: one reduction per output.
    alpha: ``"auto"`` (default: the smallest α in 1.0, 1.05, ..., 1.5 whose ISM on a seeded
        random one-hot sequence correlates with naive ISM at Pearson r >=
        ``options.gaussian_min_pearson``, 0.9999 by default) or a number in [1.0, 1.5].
    seed: seed of the Gaussian sensing matrices and of the check sequence; a fixed seed
        gives a bit-identical model.
    options: the planner's knobs (the Gaussian ones bound the stored pseudo-inverses, the
        condition numbers and the correlation α must reach).

    Raises
    ------
    GaussianUnsupportedError: no local region, or a region that joins branches.
    InputError: a bad ``alpha`` or ``seed``.
    YuzuError: a rank-deficient or badly conditioned system at a fixed α, or no α in
        the grid reaching the correlation.
    """
    options = PlanOptions() if options is None else options
    min_pearson = options.gaussian_min_pearson
    fixed = parse_alpha(alpha)
    seed = _parse_seed(seed)
    check_sequential(spec, region)
    for out in outputs:
        if region.kinds.get(out) != DATA:
            raise GaussianUnsupportedError(f"output {out!r} does not depend on the sequence")
    base = plan_rewrite(spec, region, window=window, first_conv="probes", outputs=outputs, options=options)
    region = base.region  # stages too big for memory may have joined the tail
    a = spec.alphabet_size
    design = design_layers(spec, region, base.window, n_classes=a, alpha_max=fixed or ALPHA_RANGE[1],
                           pinv_budget_bytes=options.gaussian_pinv_budget_bytes)
    X = _check_sequence(spec, seed)
    oracle = naive_ism(spec, X, outputs=list(outputs), window=base.window, device="cpu")
    none = {o: "none" for o in outputs}
    tried: list[str] = []
    chosen = None
    for value in (fixed,) if fixed is not None else ALPHA_GRID:
        try:
            solves = solve_design(design, region, alphabet_size=a, alpha=value, seed=seed,
                                  max_condition=options.gaussian_max_condition)
        except SingularSystemError as exc:
            if fixed is not None:
                raise YuzuError(f"gaussian probes at alpha {value:g}: {exc}") from None
            tried.append(f"{value:.2f}: {exc}")
            continue
        plan = plan_gaussian(spec, base, design, solves[a - 1], outputs)
        check = emit_gaussian_model(spec, region, plan, design, solves, list(outputs), none)
        r = pearson_r(_run(check, spec, X, outputs), oracle)
        tried.append(f"{value:.2f}: r={r:.6f}")
        if fixed is not None or r >= min_pearson:
            chosen = (value, r, solves, plan, check)
            break
    if chosen is None:
        raise YuzuError(
            f"no alpha in [1.0, 1.5] makes gaussian probes correlate with naive ISM at r >= {min_pearson} "
            f"on a random sequence (tried {'; '.join(tried)}); use {option('probes', 'spaced')} (exact)"
        )
    value, r, solves, plan, check = chosen
    if not r >= min_pearson:
        warnings.warn(
            f"gaussian probes with alpha {value:g} correlate with naive ISM at r={r:.6f} "
            f"(< {min_pearson}) on a random sequence; raise {option('alpha')} or use {option('probes', 'spaced')}",
            YuzuWarning,
            stacklevel=3,
        )
    model = check if dict(reductions) == none else emit_gaussian_model(
        spec, region, plan, design, solves, list(outputs), dict(reductions)
    )
    condition = max((s.condition for per_c in solves.values() for s in per_c), default=1.0)
    set_gaussian_metadata(model, design, region, solves, a, alpha=value, r=r, seed=seed,
                          condition=condition, auto=fixed is None)
    return GaussianConversion(model, plan, value, r, condition, seed, fixed is None)


def _check_sequence(spec: ModelSpec, seed: int) -> np.ndarray:
    """One random one-hot sequence in the model's layout, from ``(seed, 1)``."""
    return random_one_hot(1, spec.seq_len, alphabet_size=spec.alphabet_size, layout=spec.layout, seed=[seed, 1])


def _run(model: onnx.ModelProto, spec: ModelSpec, X: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    from .runtime import make_session

    session = make_session(model, providers=["CPUExecutionProvider"])
    return dict(zip(outputs, session.run(list(outputs), {spec.input_name: X})))


def plan_gaussian(spec: ModelSpec, base: RewritePlan, design: GaussianDesign, solves: Sequence[ConvSolve],
                  outputs: Sequence[str]) -> RewritePlan:
    """The spaced plan ``base``'s region, window and tail chunk, with one stage per segment
    (its modulus and rows), the Gaussian layers' costs and the tail decided for these stages."""
    region = base.region
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
    plan = replace(base, stages=tuple(stages), producer_stage=producer_stage, rewritten_flops=flops)
    materialised_peak = base.peak_bytes_per_sequence + base.tail.unbuilt_bytes + peak
    return decide_tail(spec, plan, outputs, constants=constant_values(spec.model),
                       peak_with_materialised_tail=materialised_peak)
