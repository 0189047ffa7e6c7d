"""Convert: import → analyse → plan → emit, with the naive fallback."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx

from .analysis.positional import input_map
from .analysis.region import DATA, LocalRegion, analyse_region
from .atomic import atomic_file
from .bands import OUTPUT_FORMS
from .emit.decode import REDUCTIONS
from .emit.model import emit_model
from .errors import InputError, UnsupportedError, YuzuWarning, option
from .format import set_output_fields
from .importer import NCL, ModelSpec, load_model
from .memory import DEFAULT_CONVERT_MEMORY, parse_memory
from .plan import (
    NO_CHUNKING_FITS,
    PlanOptions,
    RewritePlan,
    choose_output_forms,
    fixed_bytes,
    plan_rewrite,
)
from .targets import AggregateArg, OutputTargets, SelectArg, targeted_spec

PROBE_MODES = ("spaced", "naive", "gaussian")
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


@dataclass(frozen=True)
class Conversion:
    """A converted model with what led to it (for ``inspect`` and ``verify``)."""

    model: onnx.ModelProto
    spec: ModelSpec
    region: LocalRegion
    plan: RewritePlan
    outputs: tuple[str, ...]
    reductions: Mapping[str, str]
    targets: Mapping[str, OutputTargets] = field(default_factory=dict)


def resolve_reductions(reduce: str | Mapping[str, str] | None, outputs: Sequence[str]) -> dict[str, str]:
    """One reduction per output from ``"l2"``, ``{"profile": "sum"}`` or ``"profile=sum,counts=l2"``."""
    if reduce is None:
        reduce = "none"
    if isinstance(reduce, str) and "=" in reduce:
        pairs = {}
        for item in reduce.split(","):
            name, _, how = item.partition("=")
            pairs[name.strip()] = how.strip()
        reduce = pairs
    if isinstance(reduce, str):
        result = {o: reduce for o in outputs}
    else:
        unknown = set(reduce) - set(outputs)
        if unknown:
            raise InputError(f"{option('reduce')} names unknown outputs {sorted(unknown)}; outputs: {', '.join(outputs)}")
        result = {o: reduce.get(o, "none") for o in outputs}
    for name, how in result.items():
        if how not in REDUCTIONS:
            raise InputError(f"reduction {how!r} for output {name!r} is not one of {', '.join(REDUCTIONS)}")
    return result


def resolve_outputs(spec: ModelSpec, outputs: str | Sequence[str] | None) -> tuple[str, ...]:
    """The outputs to compute ISM for: all float outputs by default, or the named ones."""
    types = {o.name: o.type.tensor_type.elem_type for o in spec.model.graph.output}
    if outputs is None:
        chosen = [name for name in spec.output_names if types.get(name) == onnx.TensorProto.FLOAT]
        skipped = [name for name in spec.output_names if name not in chosen]
        if skipped and chosen:
            warnings.warn(f"outputs {skipped} are not float32 and get no ISM", YuzuWarning, stacklevel=3)
        if not chosen:
            raise InputError("the model has no float32 output to compute ISM for")
        return tuple(chosen)
    if isinstance(outputs, str):
        outputs = [o.strip() for o in outputs.split(",") if o.strip()]
    if not outputs:
        raise InputError(f"{option('outputs')} selects no output")
    for name in outputs:
        spec.output(name)
        if types.get(name) != onnx.TensorProto.FLOAT:
            kind = onnx.TensorProto.DataType.Name(types.get(name, 0))
            raise InputError(f"output {name!r} has type {kind}; ISM needs float32 outputs (choose with {option('outputs')})")
    return tuple(outputs)


def naive_region(spec: ModelSpec, region: LocalRegion) -> LocalRegion:
    """The degenerate region of the naive path: the whole graph is the tail."""
    graph = spec.model.graph
    tail = tuple(i for i, node in enumerate(graph.node) if any(region.kinds.get(o) == DATA for o in node.output))
    axis = 2 if spec.layout == NCL else 1
    return LocalRegion(
        maps={spec.input_name: input_map(axis, spec.seq_len)},
        kinds=region.kinds,
        region_nodes=(),
        tail_nodes=tail,
        frontier=(spec.input_name,),
        stops=region.stops,
    )


def warn_if_over_budget(plan: RewritePlan, budget: int) -> None:
    """Warn when even the narrowest chunking needs more memory for one sequence (the fixed
    part included) than ``budget``."""
    need = plan.peak_bytes_per_sequence + plan.fixed_bytes
    if plan.streaming_reason.startswith(NO_CHUNKING_FITS):
        how = (f"streamed in {len(plan.chunks)} chunks of {plan.chunk_width} positions, " if plan.chunks else "")
        warnings.warn(
            f"the converted model needs about {need / 2**30:.2f} GiB for one sequence "
            f"({how}the least this conversion can do), more than the {budget / 2**30:.2f} GiB of "
            f"{option('max_memory')}; runs need at least that much",
            YuzuWarning, stacklevel=3,
        )


def warn_if_no_speedup(plan: RewritePlan) -> None:
    """Warn when the rewritten model is expected to be slower than naive ISM, saying why.

    The usual cause: a receptive field as long as the window (a short sequence), so a probe
    cannot carry two substitutions of the same base and there is one probe per position,
    as many forward passes as naive ISM plus the overhead of the rewrite.
    """
    if plan.fallback_reason or not plan.stages or plan.expected_speedup >= 1.0:
        return
    lw = plan.window_length
    crowded = [st for st in plan.stages if st.spacing >= lw]
    if crowded:
        rf = max(st.receptive_field for st in crowded)
        why = (f"the receptive field ({rf} positions) is not shorter than the "
               f"{lw}-position window, so every position needs its own probe and the probes cost "
               "as much as the mutants")
    else:
        why = "the probes and the recomputed tail cost more than running every mutant"
    warnings.warn(
        f"the rewrite does not pay for this model: expected speedup {plan.expected_speedup:.2f}x over "
        f"naive ISM, because {why}; naive ISM is faster at this length ({option('probes', 'naive')}), "
        "and longer sequences gain from the rewrite",
        YuzuWarning, stacklevel=3,
    )


def convert_model(
    model: str | os.PathLike | onnx.ModelProto | ModelSpec,
    *,
    seq_len: int | None = None,
    input_name: str | None = None,
    layout: str = "auto",
    alphabet: str | int | None = None,
    window=None,
    reduce: str | Mapping[str, str] | None = None,
    outputs: str | Sequence[str] | None = None,
    probes: str = "spaced",
    alpha: str | float = "auto",
    seed: int = 0,
    first_conv: str = "auto",
    plan_options: PlanOptions | None = None,
    output_form: str = "dense",
    select: SelectArg = None,
    aggregate: AggregateArg = None,
    max_memory: str | int | None = None,
) -> Conversion:
    """Like :func:`convert`, but also returns the spec, region and plan behind the model.

    The returned ``spec`` is the targeted model's (its outputs already selected and
    aggregated, see :mod:`yuzu_onnx.targets`); ``targets`` holds the parsed targets.
    """
    spec = model if isinstance(model, ModelSpec) else load_model(
        model, seq_len=seq_len, input_name=input_name, layout=layout, alphabet=alphabet
    )
    spec, targets = targeted_spec(spec, select, aggregate)
    conv = _convert_spec(spec, window=window, reduce=reduce, outputs=outputs, probes=probes, alpha=alpha,
                         seed=seed, first_conv=first_conv, plan_options=plan_options, output_form=output_form,
                         max_memory=max_memory)
    if not targets:
        return conv
    set_output_fields(conv.model, {name: {"targets": t.to_json()} for name, t in targets.items()
                                   if name in conv.outputs})
    return replace(conv, targets={name: t for name, t in targets.items() if name in conv.outputs})


def _convert_spec(spec: ModelSpec, *, window, reduce, outputs, probes, alpha, seed, first_conv, plan_options,
                  output_form, max_memory) -> Conversion:
    """Convert an imported (and targeted) model: analyse, plan, emit, or fall back to naive."""
    if probes not in PROBE_MODES:
        raise InputError(f"{option('probes', probes)} is not one of {', '.join(PROBE_MODES)}")
    if output_form not in OUTPUT_FORMS:
        raise InputError(f"{option('output_form', output_form)} is not one of {', '.join(OUTPUT_FORMS)}")
    if probes == "gaussian" and output_form == "banded":
        raise InputError(f"{option('output_form', 'banded')} needs exact probes ({option('probes', 'spaced')}); "
                         f"use {option('output_form', 'dense')}")
    names = resolve_outputs(spec, outputs)
    reductions = resolve_reductions(reduce, names)
    budget = DEFAULT_CONVERT_MEMORY if max_memory is None else parse_memory(max_memory)
    region = analyse_region(spec)
    if probes == "gaussian" and spec.extra_inputs:
        raise InputError(
            f"{option('probes', 'gaussian')} handles models whose only input is the sequence, but this one also "
            f"takes {', '.join(e.name for e in spec.extra_inputs)}; use {option('probes', 'spaced')} (exact)"
        )
    if probes == "gaussian":  # approximate, never falls back (convert_gaussian.py)
        from .convert_gaussian import convert_gaussian

        g = convert_gaussian(spec, region, window=window, outputs=names, reductions=reductions, alpha=alpha,
                             seed=seed, options=plan_options)
        return Conversion(g.model, spec, region, g.plan, names, reductions)
    reason = None
    if probes == "naive":
        reason = "naive ISM was requested"
    elif region.is_empty:
        stop = f" (the first op after the input is {region.stops[0]})" if region.stops else ""
        reason = f"the model has no local region{stop}"
    if reason is None:
        plan = plan_rewrite(spec, region, window=window, first_conv=first_conv, outputs=names, options=plan_options,
                            max_memory=budget, reductions=reductions, output_form=output_form)
        try:
            ism_model = emit_model(spec, plan.region, plan, outputs=list(names), reductions=reductions)
            plan = replace(plan, fixed_bytes=fixed_bytes(ism_model))
            warn_if_no_speedup(plan)
            warn_if_over_budget(plan, budget)
            return Conversion(ism_model, spec, plan.region, plan, names, reductions)
        except UnsupportedError as exc:
            reason = str(exc)
    if probes != "naive":
        warnings.warn(f"falling back to exact naive ISM: {reason}", YuzuWarning, stacklevel=2)
    fallback = naive_region(spec, region)
    plan = plan_rewrite(spec, fallback, window=window, naive=True, fallback_reason=reason, outputs=names,
                        options=plan_options)
    plan = choose_output_forms(spec, plan, reductions, output_form)
    ism_model = emit_model(spec, fallback, plan, outputs=list(names), reductions=reductions, probes="naive")
    return Conversion(ism_model, spec, fallback, replace(plan, fixed_bytes=fixed_bytes(ism_model)), names, reductions)


def convert(
    model: str | os.PathLike | onnx.ModelProto | ModelSpec,
    *,
    seq_len: int | None = None,
    input_name: str | None = None,
    layout: str = "auto",
    alphabet: str | int | None = None,
    window=None,
    reduce: str | Mapping[str, str] | None = None,
    outputs: str | Sequence[str] | None = None,
    probes: str = "spaced",
    alpha: str | float = "auto",
    seed: int = 0,
    first_conv: str = "auto",
    plan_options: PlanOptions | None = None,
    output_form: str = "dense",
    select: SelectArg = None,
    aggregate: AggregateArg = None,
    max_memory: str | int | None = None,
) -> onnx.ModelProto:
    """Rewrite a sequence model into a self-contained ISM model.

    Parameters
    ----------
    model: an ONNX file, a ``ModelProto`` or a :class:`ModelSpec` from :func:`load_model`.
    seq_len, input_name, layout, alphabet: as for :func:`load_model`.
    window: ``None`` (every position), ``(start, end)`` or ``"start:end"``: mutate only
        those positions; the ISM's length axis is ``end - start``.
    reduce: ``none`` (default), ``l2``, ``sum`` or ``raw``; one for all outputs, or per
        output as a mapping or ``"name=l2,other=none"``.
    outputs: model outputs to compute ISM for (default all).
    probes: ``spaced`` (exact, default), ``naive`` (mutants built in the graph) or
        ``gaussian`` (the published approximate Yuzu method, sequential stacks only).
    alpha, seed: gaussian only: the oversampling factor (``"auto"`` or 1.0-1.5) and the
        seed of the random probes (a fixed seed gives a bit-identical model).
    first_conv: spaced probes only: convolutions of the sequence input run as ``shortcut``
        (reference output plus gathered kernel-column differences, no convolution on the
        probes), as ``probes`` (convolved like every other layer), or ``auto`` (default:
        the cheaper one by the planner's cost model).
    plan_options: the planner's knobs (:class:`~yuzu_onnx.plan.PlanOptions`: cost-model
        weights, memory budgets, the Gaussian thresholds); default ``PlanOptions()``.
    output_form: ``dense`` (default: every output has its full length axis), ``banded``
        (outputs that keep a length axis — profile heads decoded in the local region,
        reduction ``none`` — hold only the positions each mutation reaches: the length
        axis becomes a band of ``width`` positions starting at the recorded offset of each
        mutated position; see :func:`yuzu_onnx.densify`) or ``auto`` (banded where that
        saves at least 4x the output's memory, else dense). The form of each output is
        recorded in the metadata.
    max_memory: the memory one sequence of the converted model may use (``"4G"``,
        ``"512M"`` or bytes; default 4 GiB). A plan that needs more streams its window:
        the mutated positions run in chunks, one after the other, each within the budget
        (the chunking is fixed in the file and recorded in its metadata).
    select: output targets: ``{"out": {1: [0, 5]}}`` keeps entries 0 and 5 (in this order)
        of axis 1 of output ``out`` (axes as in the model output: batch = 0 is refused,
        negative axes count from the end); also ``"out:1=0,5"`` or a list of such strings.
    aggregate: ``{"out": {2: (90, 100, "sum")}}`` sums (or ``"mean"``) entries 90..99 of
        axis 2 of ``out``; the axis stays, with size 1 (also ``"out:2=90:100:sum"``). Targets
        are applied to the reference's and every mutant's output before the difference, so
        the ISM output holds the targeted shape and time and memory shrink with it; they
        are recorded per output in the metadata (``targets``). See :mod:`yuzu_onnx.targets`.

    Returns
    -------
    onnx.ModelProto whose input is the original one-hot input and whose outputs, named
    like the model outputs, hold ``ism`` of shape ``(N, A, Lw, ...)`` (ncl) or
    ``(N, Lw, A, ...)`` (nlc); a banded output has its band's width in place of its length.
    """
    return convert_model(
        model, seq_len=seq_len, input_name=input_name, layout=layout, alphabet=alphabet,
        window=window, reduce=reduce, outputs=outputs, probes=probes, alpha=alpha, seed=seed,
        first_conv=first_conv, plan_options=plan_options, output_form=output_form, max_memory=max_memory,
        select=select, aggregate=aggregate,
    ).model


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` atomically (temporary file in the same folder, then rename).

    Models over protobuf's 2 GB limit keep their weights in ``<name>.data`` beside the file.
    """
    target = Path(path)
    if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(target), save_as_external_data=True, location=target.name + ".data")
        return target
    data = model.SerializeToString()
    with atomic_file(target) as fh:
        fh.write(data)
    return target
