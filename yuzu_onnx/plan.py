"""Plan: cut the local region into probe stages and estimate costs.

Stage ``s`` runs ``A · n_s`` spaced probes with spacing ``d_s`` (``n_s = min(d_s, Lw)``),
where ``d_s`` is at least the receptive field of every tensor the stage hands on. Spacings
form a divisibility chain (``d_s`` divides ``d_{s+1}``), so re-packing a tensor from an
earlier stage's probes is a plain Gather over whole probes plus one Where against the
reference (probe ``c`` of the later stage takes probe ``c mod d_s``). The cut points and
spacings are chosen by dynamic programming over the region's topological order with a
cost model (FLOPs of the stage's nodes times its probe count, plus re-pack traffic).

The plan also decides the tail (DESIGN §4) for the requested outputs: which linear heads
are decoded from window sums, which tail nodes run in memory-bounded chunks on
materialised mutants or on decoded vectors, and the peak memory of exactly that. The
emitter builds what the plan says; ``inspect`` and the model metadata describe it. The
cost-model weights and memory budgets are a :class:`PlanOptions` value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from .analysis.input_convs import InputConv, find_input_convs
from .analysis.linear_heads import LinearHead, find_linear_heads
from .analysis.region import (
    CONST,
    DATA,
    LocalRegion,
    constant_values,
    node_inputs,
)
from .analysis.wide_convs import is_wide_conv, wide_conv_bytes
from .bands import AUTO_MIN_SAVING, OUTPUT_FORMS, Band, band_positions
from .errors import InputError, option
from .importer import ModelSpec
from .ops import flops_of, is_meta
from .progress import format_bytes
from .window import parse_window

FIRST_CONV_MODES = ("auto", "shortcut", "probes")
TAIL_KINDS = ("none", "vectors", "materialised")
OUTPUT_STRATEGIES = ("decoded_in_region", "window_sums", "window_sums_then_vectors", "materialised",
                     "naive_fallback")
#: the strategies whose values come out of the chunked tail loop
TAIL_LOOP_STRATEGIES = ("materialised", "window_sums_then_vectors", "naive_fallback")


@dataclass(frozen=True)
class PlanOptions:
    """The planner's knobs: cost-model weights and memory budgets (defaults measured on CPU).

    ``repack_weight``: cost of one re-packed element, in FLOP-equivalents (memory-bound).
    ``tail_chunk_bytes``: bytes per sequence of the live tensors of one chunk of the
    materialised tail (sets the chunk size).
    ``shortcut_weight``: cost of one output element of the first-convolution shortcut in
    FLOP-equivalents, against the convolution's ``2·A·K`` (the block Gather, the Transpose
    that puts positions last and the table build take ~2.7 ns per element on 2 CPU threads;
    the convolution runs at ~100-130 GFLOP/s fused with its ReLU): the shortcut pays for
    protein-size alphabets or very wide kernels, not for a DNA layer of width 8-25.
    ``live_tensors``: tensors of a stage alive at once (input, output, a skip connection,
    a temporary).
    ``gaussian_pinv_budget_bytes``: Gaussian probes: stored pseudo-inverses above which
    moduli are rounded to stride multiples so that positions share them.
    ``gaussian_max_condition``: Gaussian probes: the largest condition number accepted for
    a per-position least-squares system.
    ``gaussian_min_pearson``: Gaussian probes: the correlation with naive ISM on a random
    sequence that the automatic choice of α must reach.
    ``max_chunks``: the most window chunks a streamed plan may cut the window into (each
    chunk is a copy of the probe graph in the converted file).
    ``chunk_overhead_flops``: the cost of one window chunk beside its arithmetic (its
    subgraph's launch and small-tensor overheads, ~0.3 ms per sequence), in
    FLOP-equivalents.
    ``window_chunk``: stream the window in chunks of this many positions whatever the
    budget (``None``: chunks only when the budget asks for them).
    """

    repack_weight: float = 50.0
    tail_chunk_bytes: float = 256 * 2**20
    shortcut_weight: float = 300.0
    live_tensors: int = 4
    gaussian_pinv_budget_bytes: float = 64 * 2**20
    gaussian_max_condition: float = 1e8
    gaussian_min_pearson: float = 0.9999
    max_chunks: int = 64
    chunk_overhead_flops: float = 3e7
    window_chunk: int | None = None


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
class TailPlan:
    """What runs after the local region for the requested outputs.

    ``kind``: ``none`` (every output decoded, no chunked tail), ``vectors`` (the chunked
    tail runs on decoded head outputs only) or ``materialised`` (it also builds the mutant
    frontier tensors). ``heads``: the linear heads decoded from window sums. ``nodes``:
    the tail nodes the chunked tail runs; ``frontier``: the local tensors it materialises
    per mutant. ``frontier_chunk_bytes``: one chunk of mutant frontier tensors;
    ``materialised_chunk_bytes``: one chunk of a fully materialised tail (frontier plus
    the tail's own tensors), both per sequence.
    """

    kind: str = "materialised"
    heads: tuple[LinearHead, ...] = ()
    nodes: tuple[int, ...] = ()
    frontier: tuple[str, ...] = ()
    frontier_chunk_bytes: float = 0.0
    materialised_chunk_bytes: float = 0.0

    @property
    def unbuilt_bytes(self) -> float:
        """The part of a fully materialised tail's chunk that this tail does not build."""
        return {"materialised": 0.0, "vectors": self.frontier_chunk_bytes,
                "none": self.materialised_chunk_bytes}[self.kind]

    @property
    def chunk_bytes(self) -> float:
        """Bytes per sequence of one chunk of this tail (0 when there is none)."""
        return self.materialised_chunk_bytes - self.unbuilt_bytes


@dataclass(frozen=True)
class OutputPlan:
    """How one output's ISM is computed: ``strategy`` is one of :data:`OUTPUT_STRATEGIES`;
    ``heads``: the linear heads it is decoded from; ``tail_nodes``: the tail nodes that run
    on mutants (materialised) or on decoded vectors; ``chunk``: mutated positions per chunk
    of that tail (0 when none runs).

    ``band``: for an output decoded in the region, the output positions each mutation
    reaches (:class:`~yuzu_onnx.bands.Band`); the decode computes only those, whatever the
    form. ``form``: ``dense`` (the band written into the full output) or ``banded`` (the
    band itself is the ISM output), set by :func:`choose_output_forms`.
    """

    strategy: str
    heads: tuple[LinearHead, ...] = ()
    tail_nodes: int = 0
    chunk: int = 0
    band: Band | None = None
    form: str = "dense"

    @property
    def head_ops(self) -> tuple[str, ...]:
        """The op types of its heads, sorted, each once."""
        return tuple(sorted({head.op_type for head in self.heads}))


@dataclass(frozen=True)
class RewritePlan:
    """Everything ``emit`` needs besides the model: the region it plans for, the stages,
    the tail, and what each output's ISM is computed by."""

    region: LocalRegion
    window: tuple[int, int]
    stages: tuple[Stage, ...]
    producer_stage: dict[str, int] = field(repr=False)
    input_convs: tuple[InputConv, ...] = ()
    tail_chunk: int = 1
    naive_flops: float = 0.0
    rewritten_flops: float = 0.0
    bound_flops: float = 0.0
    # peak memory of one sequence with the tail as planned in ``tail``
    peak_bytes_per_sequence: float = 0.0
    fallback_reason: str | None = None
    tail: TailPlan = TailPlan()
    outputs: Mapping[str, OutputPlan] = field(default_factory=dict, repr=False)
    # streaming (README "Memory: streaming the window"): the window cut into chunks, each
    # planned (and emitted) on its own
    chunks: tuple[RewritePlan, ...] = field(default=(), repr=False)
    streaming_reason: str = ""
    # bytes held once per process whatever the batch: the runtime and the weights
    fixed_bytes: float = 0.0

    @property
    def chunk_width(self) -> int:
        """Mutated positions per window chunk (the whole window when not streamed)."""
        return max((c.window_length for c in self.chunks), default=self.window_length)

    @property
    def window_chunks(self) -> dict:
        """The streaming record of the metadata and ``inspect``: ``{"width", "count",
        "reason"}``; empty when the budget never asked (a plan that no chunking fits and
        runs whole has count 1)."""
        if not self.streaming_reason:
            return {}
        return {"width": self.chunk_width, "count": max(1, len(self.chunks)), "reason": self.streaming_reason}

    @property
    def window_length(self) -> int:
        return self.window[1] - self.window[0]

    @property
    def expected_speedup(self) -> float:
        return self.naive_flops / max(self.rewritten_flops, 1.0)

    @property
    def bound_speedup(self) -> float:
        return self.naive_flops / max(self.bound_flops, 1.0)


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
    outputs: Sequence[str] | None = None,
    options: PlanOptions | None = None,
    max_memory: float | None = None,
    reductions: Mapping[str, str] | None = None,
    output_form: str = "dense",
) -> RewritePlan:
    """Choose stages and spacings for ``region`` (no stages at all when ``naive``), then the
    tail for ``outputs`` (default: every model output).

    ``first_conv``: how convolutions of the sequence input run on the probes: ``shortcut``
    (kernel-column differences gathered onto the reference output, no convolution),
    ``probes`` (the convolution runs on every probe) or ``auto`` (the cheaper by the
    cost model).

    ``reductions`` (``{output: how}``) and ``output_form``: given, each output's form is
    chosen too (:func:`choose_output_forms`) and the memory estimate follows them.
    ``max_memory``: bytes one sequence of the converted model may use, the process's fixed
    part included (:func:`planned_fixed_bytes`); when the plan needs more, the window is
    streamed in chunks (:func:`stream_window`). ``None``: no limit.
    """
    if first_conv not in FIRST_CONV_MODES:
        raise InputError(f"{option('first_conv', first_conv)} is not one of {', '.join(FIRST_CONV_MODES)}")
    options = PlanOptions() if options is None else options
    start, end = parse_window(window, spec.seq_len)
    constants = {} if naive else constant_values(spec.model)
    names = spec.output_names if outputs is None else outputs

    def plan_window(lo: int, hi: int) -> RewritePlan:
        convs = find_input_convs(spec, region, constants) if first_conv != "probes" and not naive else []
        plan = _plan_for_region(spec, region, lo, hi, naive, fallback_reason, convs, first_conv, constants, options)
        plan = decide_tail(spec, plan, names, constants=constants, naive=naive,
                           peak_with_materialised_tail=plan.peak_bytes_per_sequence)
        return plan if reductions is None else choose_output_forms(spec, plan, reductions, output_form)

    plan = plan_window(start, end)
    if naive or not plan.stages:
        return plan
    if options.window_chunk is not None and options.window_chunk < end - start:
        return streamed_plan(spec, plan, plan_window, options.window_chunk, reductions or {},
                             f"{option('plan_options', 'PlanOptions(window_chunk=...)')} asks for chunks of "
                             f"{options.window_chunk} positions")
    if max_memory is None or plan.peak_bytes_per_sequence + planned_fixed_bytes(spec) <= max_memory:
        return plan
    return stream_window(spec, plan, plan_window, max_memory=float(max_memory), options=options,
                         reductions=reductions or {})


#: how the streaming reason of a plan that no chunking fits begins
NO_CHUNKING_FITS = "no chunking fits"
#: the chunk counts a streamed plan tries (up to ``PlanOptions.max_chunks``)
CHUNK_COUNTS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 56, 64)
#: with no chunking within the budget, chunkings needing at most this times the least
#: memory count as the least, and the cheapest of them wins
NEAR_LEAST_MEMORY = 1.25


def stream_window(spec: ModelSpec, plan: RewritePlan, plan_window, *, max_memory: float, options: PlanOptions,
                  reductions: Mapping[str, str]) -> RewritePlan:
    """``plan`` with its window cut into chunks that each fit ``max_memory`` (README:
    "Memory: streaming the window").

    Each chunk of ``W`` mutated positions is planned like a window of its own
    (``plan_window(lo, hi)``): its stages need ``min(d, W)`` probes cropped to the chunk's
    changed span, so memory falls with ``W`` while the arithmetic stays close to the
    unchunked plan's (it tends to the sparse-recompute bound for stages whose spacing
    exceeds ``W``). Of the chunk widths that fit, the cheapest by the cost model (with
    ``options.chunk_overhead_flops`` per chunk) wins. When none fits (the ISM outputs
    themselves may not), the cheapest of those needing about the least memory
    (:data:`NEAR_LEAST_MEMORY`), the whole window included, and the reason says so.
    """
    start, end = plan.window
    lw = end - start
    reference = _reference_flops(spec, plan.region)
    outputs = _ism_bytes(spec, plan, reductions)
    counts = [k for k in CHUNK_COUNTS if k <= options.max_chunks] + [options.max_chunks]
    candidates = sorted({-(-lw // k) for k in counts if k >= 2}, reverse=True)
    # (cost, peak, width): the whole window is width lw
    tried: list[tuple[float, float, int]] = [
        (plan.rewritten_flops, plan.peak_bytes_per_sequence + planned_fixed_bytes(spec), lw)]
    for width in candidates:
        windows = _chunk_windows(start, end, width)
        # interior chunks cost the same: plan the first, a middle and the last one only
        sample = {w: plan_window(*w) for w in {windows[0], windows[len(windows) // 2], windows[-1]}}
        middle = sample[windows[len(windows) // 2]]
        cost = reference + sum(sample.get(w, middle).rewritten_flops - reference + options.chunk_overhead_flops
                               for w in windows)
        peak = (_streamed_peak(sample.values(), outputs)
                + _session_bytes_of_chunks(plan, len(windows)) + planned_fixed_bytes(spec))
        tried.append((cost, peak, width))
        fitting = [t for t in tried if t[1] <= max_memory]
        if fitting and cost > 2 * min(fitting)[0]:
            break  # narrower chunks only cost more from here on
    fitting = [t for t in tried if t[1] <= max_memory]
    least = min(t[1] for t in tried)
    whole = (f"one sequence of the whole window needs about {format_bytes(tried[0][1])} (runtime and weights "
             "included)")
    if fitting:
        _, _, width = min(fitting)
        why = f"{whole}, more than the {format_bytes(max_memory)} budget"
    else:
        _, _, width = min(t for t in tried if t[1] <= NEAR_LEAST_MEMORY * least)
        why = (f"{NO_CHUNKING_FITS} the {format_bytes(max_memory)} budget: {whole} and the least any chunking "
               f"needs is {format_bytes(least)}")
    if width == lw:
        return replace(plan, streaming_reason=why)
    return streamed_plan(spec, plan, plan_window, width, reductions, why)


def streamed_plan(spec: ModelSpec, plan: RewritePlan, plan_window, width: int, reductions: Mapping[str, str],
                  why: str) -> RewritePlan:
    """``plan`` with its window cut into chunks of ``width`` positions, each planned by
    ``plan_window``; costs and memory are the chunks' (the reference pass counted once)."""
    start, end = plan.window
    reference = _reference_flops(spec, plan.region)
    chunks = tuple(_with_window_bands(plan_window(*w), plan) for w in _chunk_windows(start, end, width))
    middle = chunks[len(chunks) // 2]
    return replace(
        plan,
        stages=middle.stages,
        producer_stage=middle.producer_stage,
        input_convs=middle.input_convs,
        tail_chunk=middle.tail_chunk,
        rewritten_flops=reference + sum(c.rewritten_flops - reference for c in chunks),
        peak_bytes_per_sequence=_streamed_peak(chunks, _ism_bytes(spec, plan, reductions)),
        tail=middle.tail,
        chunks=chunks,
        streaming_reason=why,
    )


def _chunk_windows(start: int, end: int, width: int) -> list[tuple[int, int]]:
    return [(lo, min(end, lo + width)) for lo in range(start, end, width)]


def _streamed_peak(chunks, outputs_bytes: float) -> float:
    """Peak memory of one sequence of a streamed plan: the largest chunk's working set and
    three copies of the whole window's ISM outputs (``outputs_bytes``, as emitted): the
    chunks' parts, their concatenation and the caller's copy."""
    return max(c.peak_bytes_per_sequence for c in chunks) + 3 * outputs_bytes


def _dense_ism_bytes(spec: ModelSpec, output: str, window_length: int) -> float:
    """Bytes of one copy of ``output``'s dense, unreduced ISM for one sequence."""
    return 4.0 * _numel(spec.output(output).shape[1:]) * window_length * spec.alphabet_size


def _ism_bytes(spec: ModelSpec, plan: RewritePlan, reductions: Mapping[str, str]) -> float:
    """Bytes of one copy of the ISM outputs of one sequence, as emitted: dense, banded or reduced."""
    total = 0.0
    for name, how in plan.outputs.items():
        full = _dense_ism_bytes(spec, name, plan.window_length)
        reduce = reductions.get(name, "none")
        if reduce == "l2":
            total += 4.0 * plan.window_length * spec.alphabet_size
        elif reduce == "sum" and how.band is not None:
            total += full / how.band.length
        elif how.form == "banded" and how.band is not None:
            total += full / how.band.saving
        else:
            total += full
    return total


def _with_window_bands(chunk: RewritePlan, plan: RewritePlan) -> RewritePlan:
    """A chunk's output bands cut out of the whole window's, so chunk outputs concatenate."""
    offset = chunk.window[0] - plan.window[0]
    outputs = {}
    for name, how in chunk.outputs.items():
        full = plan.outputs[name].band if name in plan.outputs else None
        band = how.band if full is None else replace(
            full, starts=full.starts[offset : offset + chunk.window_length])
        form = plan.outputs[name].form if name in plan.outputs else how.form
        outputs[name] = replace(how, band=band, form=form)
    return replace(chunk, outputs=outputs)


def decide_tail(
    spec: ModelSpec,
    plan: RewritePlan,
    outputs: Sequence[str],
    *,
    constants: Mapping[str, np.ndarray],
    naive: bool = False,
    peak_with_materialised_tail: float,
) -> RewritePlan:
    """``plan`` with the tail for ``outputs`` decided and the peak memory of that tail.

    ``plan``'s stages, region and ``tail`` byte figures (one chunk of a fully materialised
    tail) are used as they are; ``peak_with_materialised_tail`` is the peak memory of one
    sequence if the whole tail ran on materialised mutants. Tail outputs that a linear
    head computes are decoded from window sums; the others run in the chunked tail, on
    mutant frontier tensors where a remaining tail node (or a Shape/Size anywhere) reads
    one, else only on decoded head outputs.
    """
    region = plan.region
    graph = spec.model.graph
    tail_outputs = [o for o in outputs if o not in region.maps]
    heads: tuple[LinearHead, ...] = ()
    if tail_outputs:
        probe_layout = {name: (plan.stages[s].spacing, plan.stages[s].n_probes)
                        for name, s in plan.producer_stage.items()}
        heads = find_linear_heads(spec, region, constants, list(region.tail_nodes), probe_layout=probe_layout,
                                  window=plan.window)
    head_outputs = {head.output for head in heads}
    kind, nodes, frontier = "none", (), ()
    if any(o not in head_outputs for o in tail_outputs):
        decoded = {i for head in heads for i in head.nodes}
        nodes = tuple(i for i in region.tail_nodes if i not in decoded)
        frontier = tuple(t for t in region.frontier
                         if any(t in graph.node[i].input for i in nodes) or _read_by_meta(spec, t))
        kind = "materialised" if frontier else "vectors"
    tail = replace(plan.tail, kind=kind, heads=heads, nodes=nodes, frontier=frontier)
    per_output = {o: _output_plan(spec, plan, o, heads, naive) for o in outputs}
    return replace(plan, tail=tail, outputs=per_output,
                   peak_bytes_per_sequence=peak_with_materialised_tail - tail.unbuilt_bytes)


def _read_by_meta(spec: ModelSpec, tensor: str) -> bool:
    return any(is_meta(node) and tensor in node.input for node in spec.model.graph.node)


def _output_plan(spec: ModelSpec, plan: RewritePlan, output: str, heads: Sequence[LinearHead],
                 naive: bool) -> OutputPlan:
    """What computes ``output``: walk back from it to the heads and local tensors it reads."""
    region = plan.region
    if naive:
        return OutputPlan("naive_fallback", chunk=plan.tail_chunk)
    if output in region.maps:
        return OutputPlan("decoded_in_region", band=output_band(spec, region, output, plan.window))
    producers = {o: i for i, node in enumerate(spec.model.graph.node) for o in node.output if o}
    head_by_output = {head.output: head for head in heads}
    used_heads: list[LinearHead] = []
    materialised = False
    tail_nodes: set[int] = set()
    stack, seen = [output], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in head_by_output:
            used_heads.append(head_by_output[name])
            continue
        if name in region.maps:
            materialised = True
            continue
        index = producers.get(name)
        if index is None or region.kinds.get(name) != DATA:
            continue
        tail_nodes.add(index)
        stack.extend(i for i in spec.model.graph.node[index].input if i)
    if materialised:
        return OutputPlan("materialised", tail_nodes=len(tail_nodes), chunk=plan.tail_chunk)
    if not tail_nodes:
        return OutputPlan("window_sums", heads=tuple(used_heads))
    return OutputPlan("window_sums_then_vectors", heads=tuple(used_heads), tail_nodes=len(tail_nodes),
                      chunk=plan.tail_chunk)


def output_band(spec: ModelSpec, region: LocalRegion, output: str, window: tuple[int, int]) -> Band | None:
    """The band of a local output (``None`` for the sequence input itself): from its
    positional map, the positions each mutated position's receptive field reaches."""
    m = region.maps[output]
    if output == spec.input_name:
        return None
    width, starts = band_positions(stride=m.stride, lo=m.lo, hi=m.hi, length=m.length, window=window)
    return Band(axis=m.axis + 2, window_axis=2 if spec.layout == "ncl" else 1, width=width, length=m.length,
                starts=tuple(int(s) for s in starts))


def choose_output_forms(spec: ModelSpec, plan: RewritePlan, reductions: Mapping[str, str],
                        output_form: str) -> RewritePlan:
    """``plan`` with each output's form: ``banded`` where ``output_form`` asks for it and
    the output keeps its length axis (decoded in the region, reduction ``none``), else
    ``dense``. ``auto`` bands an output when that saves at least
    :data:`~yuzu_onnx.bands.AUTO_MIN_SAVING` times its memory.

    The peak memory drops accordingly: a banded decode keeps band-sized temporaries and
    writes the dense output (if any) once, where the estimate of :func:`plan_rewrite`
    counts three full-size copies of every output.

    Raises
    ------
    InputError: ``output_form`` is unknown, or ``banded`` was asked for and no output can be.
    """
    if output_form not in OUTPUT_FORMS:
        raise InputError(f"{option('output_form', output_form)} is not one of {', '.join(OUTPUT_FORMS)}")
    if plan.chunks:
        chunks = tuple(choose_output_forms(spec, c, reductions, output_form) for c in plan.chunks)
        whole = choose_output_forms(spec, replace(plan, chunks=()), reductions, output_form)
        return replace(whole, chunks=chunks,
                       peak_bytes_per_sequence=_streamed_peak(chunks, _ism_bytes(spec, whole, reductions)))
    forms = {}
    saved = 0.0
    for name, how in plan.outputs.items():
        reduce = reductions.get(name, "none")
        eligible = how.band is not None and reduce == "none"
        banded = eligible and (output_form == "banded" or (output_form == "auto" and how.band.saving >= AUTO_MIN_SAVING))
        forms[name] = replace(how, form="banded" if banded else "dense")
        full = _dense_ism_bytes(spec, name, plan.window_length)
        if how.band is not None and reduce != "raw":
            # decoded on the band: band-sized temporaries, the dense output (if any) written once
            band = full / how.band.saving
            kept = 3 * band + (0.0 if reduce in ("l2", "sum") else band if banded else full)
        elif reduce == "l2" and how.strategy in TAIL_LOOP_STRATEGIES:
            kept = 0.0  # reduced chunk by chunk in the tail (counted in its chunk)
        elif how.strategy in TAIL_LOOP_STRATEGIES:
            kept = 4 * full  # the tail loop's chunks and their concatenation, then the decode's copies
        else:
            kept = 3 * full
        saved += 3 * full - kept
    if output_form == "banded" and not any(how.form == "banded" for how in forms.values()):
        why = "; ".join(f"{name}: " + (f"reduced with {reductions.get(name)}" if how.band is not None
                                       else f"computed by {how.strategy.replace('_', ' ')}")
                        for name, how in plan.outputs.items())
        raise InputError(
            f"{option('output_form', 'banded')} needs an output that keeps its length axis (a profile decoded in "
            f"the local region, with {option('reduce', 'none')}); this conversion has none ({why}): use "
            f"{option('output_form', 'dense')} or {option('output_form', 'auto')}"
        )
    chosen = replace(plan, outputs=forms)
    # the caller's copy of the results (ONNX Runtime's arena keeps its own peak meanwhile)
    returned = _ism_bytes(spec, chosen, reductions)
    return replace(chosen, peak_bytes_per_sequence=max(plan.peak_bytes_per_sequence - saved, 0.0) + returned)


def _stage_outputs(spec: ModelSpec, region: LocalRegion, stage: Stage) -> list[str]:
    graph = spec.model.graph
    return [o for i in stage.nodes for o in graph.node[i].output if o in region.maps]


def _stage_bytes(spec: ModelSpec, region: LocalRegion, stage: Stage, a: int, window: tuple[int, int],
                 constants=None, live_tensors: int = PlanOptions.live_tensors) -> float:
    """Live bytes of one stage's probe tensors for one sequence (cropped to the changed spans):
    ``live_tensors`` of its largest tensor, or a wide convolution's MatMul form (its products
    and their skewed copy, emit/wide_conv.py) beside two of them."""
    largest = 0.0
    for name in _stage_outputs(spec, region, stage):
        m = region.maps[name]
        lo, hi = m.changed_span(*window)
        largest = max(largest, 4 * _numel(spec.shapes.get(name, ())) * (hi - lo + 1) / m.length)
    wide = max((wide_conv_bytes(node, spec.shapes, constants) for node in (spec.model.graph.node[i] for i in stage.nodes)
                if constants and is_wide_conv(node, spec.shapes, constants)), default=0)
    return float(a * stage.n_probes * max(largest * live_tensors, wide + 2 * largest))


def _plan_for_region(spec, region, start, end, naive, fallback_reason, convs, first_conv, constants,
                     options: PlanOptions) -> RewritePlan:
    """Stages, costs and the peak with a fully materialised tail (the tail is decided later)."""
    lw = end - start
    a = spec.alphabet_size
    graph = spec.model.graph
    nodes = [] if naive else list(region.region_nodes)
    raw_flops = [node_flops(graph.node[i], spec) for i in nodes]
    flops = [f * _changed_fraction(graph.node[i], region, start, end) for f, i in zip(raw_flops, nodes)]
    shortcuts = []
    for conv in convs:
        pos = nodes.index(conv.node)
        cheaper = options.shortcut_weight < conv.flops_per_output()
        if first_conv == "shortcut" or cheaper:
            shortcuts.append(conv)
            flops[pos] *= options.shortcut_weight / conv.flops_per_output()
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
    stages = _choose_stages(nodes, flops, produced_at, last_use, frontier, region, spec, (start, end),
                            options.repack_weight)
    producer_stage: dict[str, int] = {}
    for s, stage in enumerate(stages):
        for i in stage.nodes:
            for out in graph.node[i].output:
                if out:
                    producer_stage[out] = s
    # the shortcut reads one mutation per output window: the stage's spacing must cover it
    shortcuts = [conv for conv in shortcuts if stages[producer_stage[conv.output]].spacing >= conv.span]
    all_nodes = range(len(graph.node))
    total = _reference_flops(spec, region)
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
    chunk = max(1, min(lw, int(options.tail_chunk_bytes // max(1, a * tail_bytes))))
    peak = _peak_bytes(spec, region, stages, (start, end), a, chunk, tail_bytes, constants, options.live_tensors)
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
        tail=TailPlan(frontier_chunk_bytes=float(chunk * a * frontier_bytes * 2),
                      materialised_chunk_bytes=float(chunk * a * tail_bytes * 2)),
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


def _tail_bytes_per_mutant(spec: ModelSpec, region: LocalRegion, tail_nodes, naive: bool, constants) -> int:
    """Bytes of one mutant in the tail: its frontier tensors plus every tail tensor (ONNX
    Runtime's plan for a loop body keeps much of it alive at once: measured on a
    transformer and U-net tail, far more than a few of its largest tensors), or a wide
    convolution's MatMul form beside two of them."""
    graph = spec.model.graph
    sizes = [_itemsize(spec, o) * _numel(spec.shapes.get(o, ())) for i in tail_nodes for o in graph.node[i].output
             if o and region.kinds.get(o, CONST) != CONST]
    largest = max(sizes, default=0)
    wide = max((wide_conv_bytes(graph.node[i], spec.shapes, constants) for i in tail_nodes
                if constants and is_wide_conv(graph.node[i], spec.shapes, constants)), default=0)
    return _frontier_bytes_per_mutant(spec, region, naive) + max(sum(sizes), wide + 2 * largest)


def _frontier_bytes_per_mutant(spec: ModelSpec, region: LocalRegion, naive: bool) -> int:
    frontier = {spec.input_name} if naive else set(region.frontier)
    return sum(4 * _numel(spec.shapes.get(n, ())) for n in frontier)


def _peak_bytes(spec, region, stages, window, a, chunk, tail_bytes, constants, live_tensors: int) -> float:
    """Peak memory of one sequence: the largest stage's live probe tensors, the tail chunk,
    the ISM outputs (values, deltas and the laid-out result), the reference pass and the
    input probes."""
    biggest = max((_stage_bytes(spec, region, st, a, window, constants, live_tensors) for st in stages),
                  default=0.0)
    lw = window[1] - window[0]
    return float(biggest + chunk * a * tail_bytes * 2 + 3 * _output_bytes(spec, lw) + _reference_bytes(spec)
                 + 4 * a * spec.seq_len * 8)


def _output_bytes(spec: ModelSpec, window_length: int) -> float:
    """Bytes of one copy of every output's ISM for one sequence (dense, unreduced)."""
    return sum(_dense_ism_bytes(spec, o.name, window_length) for o in spec.outputs)


def _reference_bytes(spec: ModelSpec) -> float:
    """Bytes of every tensor of the reference pass of one sequence (an upper bound of what
    ONNX Runtime keeps alive for the probes, which read reference tensors throughout)."""
    graph = spec.model.graph
    names = {o for node in graph.node for o in node.output if o}
    return float(sum(_itemsize(spec, n) * _numel(spec.shapes[n]) for n in names if n in spec.shapes))


def _itemsize(spec: ModelSpec, name: str) -> int:
    dtype = spec.dtypes.get(name)
    return max(4, np.dtype(dtype).itemsize) if dtype is not None else 4


RUNTIME_BYTES = 160 * 2**20  # a Python process with numpy and ONNX Runtime loaded and a session made
NODE_BYTES = 16 * 2**10  # what ONNX Runtime holds per node of a session (kernel and plan), measured ~13 KiB


def fixed_bytes(model: onnx.ModelProto) -> float:
    """Memory held once per process, whatever the batch: the runtime, two copies of the
    converted model's weights (the loaded model and the session's) and the session's
    per-node state (nodes of subgraphs included)."""
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    return float(RUNTIME_BYTES + 2 * weights + NODE_BYTES * _node_count(model.graph))


def planned_fixed_bytes(spec: ModelSpec) -> float:
    """:func:`fixed_bytes` of the converted model before it exists: the runtime, two copies
    of the source's weights and the session state of its probe graph (about twelve emitted
    nodes per source node, in two substitution-class branches)."""
    weights = sum(t.ByteSize() for t in spec.model.graph.initializer)
    return float(RUNTIME_BYTES + 2 * weights + NODE_BYTES * 12 * len(spec.model.graph.node))


def _node_count(graph: onnx.GraphProto) -> int:
    return sum(1 + sum(_node_count(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
               for node in graph.node)


def _session_bytes_of_chunks(plan: RewritePlan, n_chunks: int) -> float:
    """The session memory the chunks' subgraphs add: each chunk copies the probe graph,
    once per substitution-class branch (about six emitted nodes per region node, measured),
    and its constants (a tenth more, counted roughly)."""
    return 1.1 * NODE_BYTES * 2 * n_chunks * (6 * len(plan.region.region_nodes) + 40)


def _reference_flops(spec: ModelSpec, region: LocalRegion) -> float:
    """FLOPs of one forward pass of the sequence-dependent nodes (the reference pass)."""
    graph = spec.model.graph
    return sum(node_flops(node, spec) for node in graph.node if _is_data(node, region))


def _without_equivalent_spacings(states: dict[int, tuple], window_length: int) -> list[tuple[int, tuple]]:
    """``states`` with the spacings of at least the window's length merged into the cheapest
    of them: every such stage has one probe per mutated position, and so has every later
    stage (spacings only grow), so they differ only in cost."""
    kept = [(d, v) for d, v in states.items() if d < window_length]
    wide = [(v[0], d, v) for d, v in states.items() if d >= window_length]
    if wide:
        _, d, v = min(wide)
        kept.append((d, v))
    return kept


def _choose_stages(nodes, flops, produced_at, last_use, frontier, region, spec, window,
                   repack_weight: float) -> list[Stage]:
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

    # best[k][d]: the cheapest plan of the first k nodes whose last stage has spacing d
    best: list[dict[int, tuple[float, tuple[int, int] | None]]] = [{} for _ in range(m + 1)]
    for k in range(1, m + 1):
        rf = need(0, k)
        candidates = {rf} | {-(-rf // q) * q for q in (2, 4, 8, 16, 32)}
        for d in candidates:
            cost = probes(d) * (prefix[k] - prefix[0])
            if d not in best[k] or cost < best[k][d][0]:
                best[k][d] = (cost, None)
    for i in range(1, m):
        states = _without_equivalent_spacings(best[i], lw)
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
                cost = cost_prev + n * (prefix[k] - prefix[i]) + repack_weight * n * repack
                if d not in best[k] or cost < best[k][d][0]:
                    best[k][d] = (cost, (i, d_prev))
    _, d = min((v[0], d) for d, v in best[m].items())
    cuts: list[tuple[int, int, int]] = []
    k = m
    while True:
        _, back = best[k][d]
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
