"""Plan: cut the local region into probe stages and estimate costs.

Stage ``s`` runs ``A · n_s`` spaced probes with spacing ``d_s`` (``n_s = min(d_s, Lw)``),
where ``d_s`` is at least the receptive field of every tensor the stage hands on. Spacings
form a divisibility chain (``d_s`` divides ``d_{s+1}``), so re-packing a tensor from an
earlier stage's probes is a plain Gather over whole probes plus one Where against the
reference (probe ``c`` of the later stage takes probe ``c mod d_s``). The cut points and
spacings are chosen by dynamic programming over the region's topological order with a
cost model (FLOPs of the stage's nodes times its probe count, plus re-pack traffic).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from .analysis.input_convs import InputConv, find_input_convs
from .analysis.region import (
    CONST,
    DATA,
    LocalRegion,
    constant_values,
    node_inputs,
    truncated_region,
)
from .analysis.wide_convs import is_wide_conv, wide_conv_bytes
from .errors import InputError
from .importer import ModelSpec
from .ops import flops_of

REPACK_WEIGHT = 50.0  # cost of one re-packed element, in FLOP-equivalents (memory-bound; measured)
STAGE_MEMORY_LIMIT = 2 * 2**30  # bytes per sequence of one stage's live probe tensors
TAIL_CHUNK_BYTES = 256 * 2**20  # per sequence: live tensors of one chunk of the materialised tail
# cost of one output element of the first-convolution shortcut in FLOP-equivalents, against
# the convolution's 2·A·K (measured on CPU, 2 threads: the block Gather, the Transpose that
# puts positions last and the table build take ~2.7 ns per element; the convolution
# runs at ~100-130 GFLOP/s, fused with its ReLU): the shortcut pays for protein-size
# alphabets or very wide kernels, not for a DNA layer of width 8-25
SHORTCUT_WEIGHT = 300.0
FIRST_CONV_MODES = ("auto", "shortcut", "probes")


@dataclass(frozen=True)
class Stage:
    """One probe stage: region nodes run on ``A · n_probes`` spaced probes."""

    nodes: tuple[int, ...]
    spacing: int
    n_probes: int
    receptive_field: int
    inputs: tuple[str, ...]
    flops_per_probe: float


@dataclass(frozen=True)
class RewritePlan:
    """Everything ``emit`` needs besides the model: the region it plans for, the stages..."""

    region: LocalRegion
    window: tuple[int, int]
    stages: tuple[Stage, ...]
    producer_stage: dict[str, int] = field(repr=False)
    input_convs: tuple[InputConv, ...] = ()
    tail_chunk: int = 1
    naive_flops: float = 0.0
    rewritten_flops: float = 0.0
    bound_flops: float = 0.0
    peak_bytes_per_sequence: float = 0.0
    fallback_reason: str | None = None
    # the parts of the peak that a materialised tail adds: its chunk of mutant frontier
    # tensors, and the whole chunk (frontier plus the tail's own tensors)
    tail_frontier_bytes: float = 0.0
    tail_chunk_bytes: float = 0.0

    def realised(self, tail: str) -> RewritePlan:
        """The plan with the peak of the tail the emitter built: ``materialised`` (mutant
        frontier tensors in chunks, as planned), ``vectors`` (only decoded head outputs run
        in the chunked tail) or ``none`` (every output decoded without a tail)."""
        drop = {"materialised": 0.0, "vectors": self.tail_frontier_bytes, "none": self.tail_chunk_bytes}[tail]
        return replace(self, peak_bytes_per_sequence=self.peak_bytes_per_sequence - drop,
                       tail_frontier_bytes=0.0 if tail != "materialised" else self.tail_frontier_bytes,
                       tail_chunk_bytes=self.tail_chunk_bytes - drop)

    @property
    def window_length(self) -> int:
        return self.window[1] - self.window[0]

    @property
    def expected_speedup(self) -> float:
        return self.naive_flops / max(self.rewritten_flops, 1.0)

    @property
    def bound_speedup(self) -> float:
        return self.naive_flops / max(self.bound_flops, 1.0)


def parse_window(window, seq_len: int) -> tuple[int, int]:
    """``None`` → the whole sequence; ``(start, end)`` or ``"start:end"`` checked against ``L``."""
    if window is None:
        return 0, seq_len
    if isinstance(window, str):
        try:
            start_text, end_text = window.split(":")
            start = int(start_text) if start_text else 0
            end = int(end_text) if end_text else seq_len
        except ValueError:
            raise InputError(f"window must be START:END (e.g. 100:200), got {window!r}") from None
    else:
        start, end = (int(v) for v in window)
    if not 0 <= start < end <= seq_len:
        raise InputError(f"window {start}:{end} must satisfy 0 <= start < end <= {seq_len} (the sequence length)")
    return start, end


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod([d for d in shape if d != -1], dtype=np.int64)) if shape else 1


def node_flops(node: onnx.NodeProto, spec: ModelSpec) -> float:
    """FLOPs of one node for one sequence (multiply-adds count 2), from the op table."""
    return flops_of(node, spec.shapes)


def plan_rewrite(
    spec: ModelSpec,
    region: LocalRegion,
    *,
    window=None,
    naive: bool = False,
    fallback_reason: str | None = None,
    first_conv: str = "auto",
) -> RewritePlan:
    """Choose stages and spacings for ``region`` (no stages at all when ``naive``).

    ``first_conv``: how convolutions of the sequence input run on the probes: ``shortcut``
    (kernel-column differences gathered onto the reference output, no convolution),
    ``probes`` (the convolution runs on every probe) or ``auto`` (the cheaper by the
    cost model).

    Stages that would need more than ``STAGE_MEMORY_LIMIT`` bytes per sequence while
    saving little (at least half as many probes as mutants) join the materialised tail,
    which runs in memory-bounded chunks of mutants; the plan records the region it used.
    """
    if first_conv not in FIRST_CONV_MODES:
        raise InputError(f"--first-conv must be one of {', '.join(FIRST_CONV_MODES)}, got {first_conv!r}")
    start, end = parse_window(window, spec.seq_len)
    constants = {} if naive else constant_values(spec.model)
    for _ in range(len(region.region_nodes) + 1):
        convs = find_input_convs(spec, region, constants) if first_conv != "probes" and not naive else []
        plan = _plan_for_region(spec, region, start, end, naive, fallback_reason, convs, first_conv, constants)
        keep = _stages_within_memory(spec, plan, constants)
        if keep is None:
            return plan
        region = truncated_region(
            spec, region, keep,
            "later stages would need more memory than probes save; they run on materialised mutants",
        )
    return plan


def _stages_within_memory(spec: ModelSpec, plan: RewritePlan, constants) -> list[int] | None:
    """Nodes of the stages before the first one that is too big for little gain (else None).

    Little gain: at least half as many probes as mutants, and not cropped to a narrow
    window (the materialised tail computes every position of every mutant).
    """
    a = spec.alphabet_size
    start, end = plan.window
    for s, stage in enumerate(plan.stages):
        too_big = _stage_bytes(spec, plan.region, stage, a, plan.window, constants) > STAGE_MEMORY_LIMIT
        little_gain = stage.n_probes * 2 >= plan.window_length and _stage_changed_share(
            spec, plan.region, stage, start, end) > 0.9
        if too_big and little_gain:
            return [i for st in plan.stages[:s] for i in st.nodes]
    return None


def _stage_outputs(spec: ModelSpec, region: LocalRegion, stage: Stage) -> list[str]:
    graph = spec.model.graph
    return [o for i in stage.nodes for o in graph.node[i].output if o in region.maps]


def _stage_changed_share(spec: ModelSpec, region: LocalRegion, stage: Stage, start: int, end: int) -> float:
    """Share of the stage's tensor positions that the window can change (cropping keeps only those)."""
    total = changed = 0
    for name in _stage_outputs(spec, region, stage):
        m = region.maps[name]
        lo, hi = m.changed_span(start, end)
        total += m.length
        changed += hi - lo + 1
    return changed / total if total else 1.0


def _stage_bytes(spec: ModelSpec, region: LocalRegion, stage: Stage, a: int, window: tuple[int, int],
                 constants=None) -> float:
    """Live bytes of one stage's probe tensors for one sequence (cropped to the changed spans):
    ``LIVE_TENSORS`` of its largest tensor, or a wide convolution's MatMul form (its products
    and their skewed copy, emit/wide_conv.py) beside two of them."""
    largest = 0.0
    for name in _stage_outputs(spec, region, stage):
        m = region.maps[name]
        lo, hi = m.changed_span(*window)
        largest = max(largest, 4 * _numel(spec.shapes.get(name, ())) * (hi - lo + 1) / m.length)
    wide = max((wide_conv_bytes(node, spec.shapes, constants) for node in (spec.model.graph.node[i] for i in stage.nodes)
                if constants and is_wide_conv(node, spec.shapes, constants)), default=0)
    return float(a * stage.n_probes * max(largest * LIVE_TENSORS, wide + 2 * largest))


def _plan_for_region(spec, region, start, end, naive, fallback_reason, convs=(), first_conv="auto",
                     constants=None) -> RewritePlan:
    lw = end - start
    a = spec.alphabet_size
    graph = spec.model.graph
    nodes = [] if naive else list(region.region_nodes)
    raw_flops = [node_flops(graph.node[i], spec) for i in nodes]
    flops = [f * _changed_fraction(graph.node[i], region, start, end) for f, i in zip(raw_flops, nodes)]
    shortcuts = []
    for conv in convs:
        pos = nodes.index(conv.node)
        cheaper = SHORTCUT_WEIGHT < conv.flops_per_output()
        if first_conv == "shortcut" or cheaper:
            shortcuts.append(conv)
            flops[pos] *= SHORTCUT_WEIGHT / conv.flops_per_output()
    produced_at: dict[str, int] = {}
    for pos, i in enumerate(nodes, start=1):
        for out in graph.node[i].output:
            if out:
                produced_at[out] = pos
    last_use: dict[str, int] = {}
    for pos, i in enumerate(nodes, start=1):
        for name in node_inputs(graph.node[i]):
            if name in produced_at or name == spec.input_name:
                last_use[name] = max(last_use.get(name, 0), pos)
    frontier = set(region.frontier)
    stages = _choose_stages(nodes, flops, produced_at, last_use, frontier, region, spec, (start, end))
    producer_stage: dict[str, int] = {}
    for s, stage in enumerate(stages):
        for i in stage.nodes:
            for out in graph.node[i].output:
                if out:
                    producer_stage[out] = s
    # the shortcut reads one mutation per output window: the stage's spacing must cover it
    shortcuts = [conv for conv in shortcuts if stages[producer_stage[conv.output]].spacing >= conv.span]
    all_nodes = range(len(graph.node))
    total = sum(node_flops(graph.node[i], spec) for i in all_nodes if _is_data(graph.node[i], region))
    tail_nodes = list(all_nodes) if naive else list(region.tail_nodes)
    tail_flops = sum(node_flops(graph.node[i], spec) for i in tail_nodes if _is_data(graph.node[i], region))
    naive_flops = lw * (a - 1) * total
    # one-hot input: A - 1 shift classes per probe index (all A bases only with N columns)
    classes = a - 1
    rewritten = total + sum(classes * st.n_probes * st.flops_per_probe for st in stages) + lw * classes * tail_flops
    bound = total + lw * (a - 1) * tail_flops
    for pos, i in enumerate(nodes):
        node = graph.node[i]
        out = next((o for o in node.output if o in region.maps), None)
        if out is None:
            continue
        m = region.maps[out]
        changed = min(m.length, -(-m.receptive_field // m.stride) + 1)
        bound += lw * (a - 1) * raw_flops[pos] * changed / max(m.length, 1)
    tail_bytes = _tail_bytes_per_mutant(spec, region, tail_nodes, naive, constants)
    chunk = max(1, min(lw, int(TAIL_CHUNK_BYTES // max(1, a * tail_bytes))))
    peak = _peak_bytes(spec, region, stages, (start, end), a, chunk, tail_bytes, constants)
    frontier_bytes = _frontier_bytes_per_mutant(spec, region, naive)
    return RewritePlan(
        region=region,
        window=(start, end),
        stages=tuple(stages),
        producer_stage=producer_stage,
        input_convs=tuple(shortcuts),
        tail_chunk=chunk,
        naive_flops=naive_flops,
        rewritten_flops=rewritten,
        bound_flops=bound,
        peak_bytes_per_sequence=peak,
        fallback_reason=fallback_reason,
        tail_frontier_bytes=float(chunk * a * frontier_bytes * 2),
        tail_chunk_bytes=float(chunk * a * tail_bytes * 2),
    )


def _changed_fraction(node: onnx.NodeProto, region: LocalRegion, start: int, end: int) -> float:
    """Share of a node's output positions that a narrow window can change (stages are
    cropped to it, see emit/crop.py); 1 for the whole sequence."""
    out = next((o for o in node.output if o in region.maps), None)
    if out is None:
        return 1.0
    m = region.maps[out]
    lo, hi = m.changed_span(start, end)
    return (hi - lo + 1) / m.length


def _is_data(node: onnx.NodeProto, region: LocalRegion) -> bool:
    return any(region.kinds.get(o) == DATA for o in node.output if o)


def _tail_bytes_per_mutant(spec: ModelSpec, region: LocalRegion, tail_nodes, naive: bool, constants=None) -> int:
    """Live bytes of one mutant in the tail: its frontier tensors plus a few tail tensors
    (or a wide convolution's MatMul form beside two of them)."""
    graph = spec.model.graph
    sizes = [4 * _numel(spec.shapes.get(o, ())) for i in tail_nodes for o in graph.node[i].output
             if o and region.kinds.get(o, CONST) != CONST]
    largest = max(sizes, default=0)
    wide = max((wide_conv_bytes(graph.node[i], spec.shapes, constants) for i in tail_nodes
                if constants and is_wide_conv(graph.node[i], spec.shapes, constants)), default=0)
    return _frontier_bytes_per_mutant(spec, region, naive) + max(LIVE_TENSORS * largest, wide + 2 * largest)


def _frontier_bytes_per_mutant(spec: ModelSpec, region: LocalRegion, naive: bool) -> int:
    frontier = {spec.input_name} if naive else set(region.frontier)
    return sum(4 * _numel(spec.shapes.get(n, ())) for n in frontier)


LIVE_TENSORS = 4  # tensors of a stage alive at once (input, output, a skip connection, a temporary)


def _peak_bytes(spec, region, stages, window, a, chunk, tail_bytes, constants=None) -> float:
    """Peak memory of one sequence: the largest stage's live probe tensors, the tail chunk,
    and the ISM outputs (values, deltas and the laid-out result)."""
    biggest = max((_stage_bytes(spec, region, st, a, window, constants) for st in stages), default=0.0)
    lw = window[1] - window[0]
    outputs = sum(4 * _numel(o.shape) for o in spec.outputs) * lw * a * 3
    return float(biggest + chunk * a * tail_bytes * 2 + outputs + 4 * a * spec.seq_len * 8)


def _choose_stages(nodes, flops, produced_at, last_use, frontier, region, spec, window) -> list[Stage]:
    """Dynamic programming over cut points and spacings (a divisibility chain)."""
    m = len(nodes)
    if m == 0:
        return []
    graph = spec.model.graph
    maps = region.maps
    lw = window[1] - window[0]
    # re-packed elements: only the changed span travels when a narrow window crops stages
    numel = {}
    for name, pmap in maps.items():
        lo, hi = pmap.changed_span(*window)
        numel[name] = _numel(spec.shapes.get(name, ())) * (hi - lo + 1) / pmap.length
    outs_at = [[o for o in graph.node[i].output if o in maps] for i in nodes]
    ins_at = [[n for n in node_inputs(graph.node[i]) if n in maps] for i in nodes]
    prefix = np.concatenate([[0.0], np.cumsum(flops)])

    def need(i: int, k: int) -> int:
        rf = 1
        for pos in range(i, k):
            for out in outs_at[pos]:
                if last_use.get(out, 0) > k or out in frontier:
                    rf = max(rf, maps[out].receptive_field)
        return rf

    def inputs_of(i: int, k: int) -> list[str]:
        names: list[str] = []
        for pos in range(i, k):
            for name in ins_at[pos]:
                if produced_at.get(name, 0) <= i and name not in names:
                    names.append(name)
        return names

    def probes(d: int) -> int:
        return min(d, lw)

    best: dict[tuple[int, int], tuple[float, tuple[int, int] | None]] = {}
    for k in range(1, m + 1):
        rf = need(0, k)
        candidates = {rf} | {-(-rf // q) * q for q in (2, 4, 8, 16, 32)}
        for d in candidates:
            cost = probes(d) * (prefix[k] - prefix[0])
            if (k, d) not in best or cost < best[(k, d)][0]:
                best[(k, d)] = (cost, None)
    for i in range(1, m):
        states = [(d, v) for (kk, d), v in best.items() if kk == i]
        if not states:
            continue
        repack_inputs_cache: dict[int, float] = {}
        for k in range(i + 1, m + 1):
            rf = need(i, k)
            if k not in repack_inputs_cache:
                repack_inputs_cache[k] = sum(numel[n] for n in inputs_of(i, k) if n != spec.input_name)
            repack = repack_inputs_cache[k]
            for d_prev, (cost_prev, _) in states:
                d = max(d_prev, -(-rf // d_prev) * d_prev)
                n = probes(d)
                cost = cost_prev + n * (prefix[k] - prefix[i]) + REPACK_WEIGHT * n * repack
                if (k, d) not in best or cost < best[(k, d)][0]:
                    best[(k, d)] = (cost, (i, d_prev))
    end_states = [(v[0], d) for (k, d), v in best.items() if k == m]
    _, d = min(end_states)
    cuts: list[tuple[int, int, int]] = []
    k = m
    while True:
        _, back = best[(k, d)]
        i, d_prev = back if back is not None else (0, 0)
        cuts.append((i, k, d))
        if back is None:
            break
        k, d = i, d_prev
    cuts.reverse()
    stages: list[Stage] = []
    for i, k, d in cuts:
        stages.append(
            Stage(
                nodes=tuple(nodes[i:k]),
                spacing=d,
                n_probes=probes(d),
                receptive_field=need(i, k),
                inputs=tuple(inputs_of(i, k)),
                flops_per_probe=float(prefix[k] - prefix[i]),
            )
        )
    return stages
