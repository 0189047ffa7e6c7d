"""Describe a conversion or a converted model (what ``inspect`` and ``convert`` print).

Everything here reads what the plan decided (:class:`~yuzu_onnx.plan.RewritePlan`, its
per-output :class:`~yuzu_onnx.plan.OutputPlan`) or what a converted model's metadata
records; nothing is re-derived. The functions return JSON-ready dicts or text lines.
"""

from __future__ import annotations

from collections import Counter

import onnx

from .bands import AUTO_MIN_SAVING
from .convert import Conversion
from .format import FORMAT, metadata_of, read_converted_info
from .plan import OutputPlan, RewritePlan
from .progress import plural
from .sidecar import graph_output_shapes


def describe_tail(plan: RewritePlan, output: str) -> str:
    """How ``output``'s ISM is computed, in words: in the region, from window sums, or a
    materialised tail (from the plan's :class:`~yuzu_onnx.plan.OutputPlan`)."""
    how: OutputPlan = plan.outputs[output]
    chunked = f"run on mutant tensors in chunks of {how.chunk} positions"
    ops = ", ".join(how.head_ops)
    if how.strategy == "naive_fallback":
        return f"naive fallback ({plan.fallback_reason})"
    if how.strategy == "decoded_in_region":
        return "decoded directly in the local region"
    if how.strategy == "materialised":
        return f"materialised tail ({how.tail_nodes} nodes, {chunked})"
    if how.strategy == "window_sums":
        return f"decoded from window sums ({ops} of a local tensor; no materialisation)"
    return f"{ops} decoded from window sums, then {how.tail_nodes} tail nodes on per-mutant vectors"


def describe_form(plan: RewritePlan, output: str) -> dict:
    """An output's form: ``form`` (``dense``/``banded``), ``band_width``, ``length``,
    ``saving`` (``length / band_width``; absent without a band) and ``note``, a sentence
    saying which form was chosen and whether banded is worthwhile."""
    how = plan.outputs.get(output)
    form = how.form if how is not None else "dense"
    band = how.band if how is not None else None
    if band is None:
        return {"form": form, "note": f"{form} (no length axis decoded in the local region: banded does not apply)"}
    size = f"{band.width} of {band.length} positions"
    if form == "banded":
        note = f"banded ({size}, {band.saving:.1f}x smaller than dense)"
    elif band.saving >= AUTO_MIN_SAVING:
        note = f"dense (a mutation reaches {size}: --output-form banded or auto stores {band.saving:.1f}x less)"
    else:
        note = f"dense (a mutation reaches {size}: banded would save only {band.saving:.1f}x)"
    return {"form": form, "band_width": band.width, "length": band.length, "saving": band.saving, "note": note}


def first_conv_names(conv: Conversion) -> list[str]:
    """Names of the convolutions that run as the first-convolution shortcut."""
    graph = conv.spec.model.graph
    return [graph.node[c.node].name or c.output for c in conv.plan.input_convs]


def describe_conversion(conv: Conversion, model_path: str | None = None) -> dict:
    """What ``inspect`` prints for an original model, as a JSON-ready dict."""
    spec, plan, region = conv.spec, conv.plan, conv.region
    graph = spec.model.graph
    a = spec.alphabet_size
    ops = Counter(node.op_type for node in graph.node)
    return {
        "model": model_path,
        "kind": "original",
        "source_sha256": spec.source_sha256,
        "input": spec.input_name,
        "layout": spec.layout,
        "input_shape": ["batch", *spec.input_shape],
        "extra_inputs": {e.name: e.to_json() for e in spec.extra_inputs},
        "alphabet": spec.alphabet,
        "seq_len": spec.seq_len,
        "opset": spec.opset,
        "ir_version": int(spec.model.ir_version),
        "outputs": {o.name: ["batch", *o.shape[1:]] for o in spec.outputs},
        "targets": {name: t.to_json() for name, t in conv.targets.items()},
        "op_counts": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "local_region": {
            "nodes": len(region.region_nodes),
            "total_nodes": len(graph.node),
            "tail_nodes": len(region.tail_nodes),
            "stops": [{"op": s.op_type, "node": s.node, "reason": s.reason} for s in region.stops],
        },
        "window": list(plan.window),
        "stages": [
            {"nodes": len(st.nodes), "spacing": st.spacing, "receptive_field": st.receptive_field,
             "probes": st.n_probes * (a - 1), "probes_with_unknown_bases": st.n_probes * a}
            for st in plan.stages
        ],
        "tails": {o: describe_tail(plan, o) for o in conv.outputs},
        "forms": {o: describe_form(plan, o) for o in conv.outputs},
        "first_conv_shortcut": first_conv_names(conv),
        "reductions": dict(conv.reductions),
        "fallback_reason": plan.fallback_reason,
        "naive_flops": plan.naive_flops,
        "rewritten_flops": plan.rewritten_flops,
        "bound_flops": plan.bound_flops,
        "expected_speedup": plan.expected_speedup,
        "bound_speedup": plan.bound_speedup,
        "peak_bytes_per_sequence": int(plan.peak_bytes_per_sequence),
        "fixed_bytes": int(plan.fixed_bytes),
        "streaming": plan.window_chunks or None,
    }


def describe_converted(path: str) -> dict:
    """What ``inspect`` prints for a converted model, as a JSON-ready dict."""
    model = onnx.load(path, load_external_data=False)
    info = read_converted_info(model, source=repr(path))
    shapes = graph_output_shapes(model)
    opset = next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    return {
        "model": path,
        "kind": "converted",
        "format": FORMAT,
        "yuzu_onnx_version": info.version,
        "input": info.input_name,
        "extra_inputs": {e.name: e.to_json() for e in info.extra_inputs},
        "layout": info.layout,
        "alphabet": info.alphabet,
        "seq_len": info.seq_len,
        "window": list(info.window),
        "probes": info.probes,
        "outputs": {name: {"reduce": spec.get("reduce", "none"), "form": spec.get("form", "dense"),
                           "shape": shapes.get(name), "band": _band_summary(spec.get("band")),
                           **({"targets": list(spec["targets"])} if spec.get("targets") else {})}
                    for name, spec in info.outputs.items()},
        "stages": [dict(stage) for stage in info.stages],
        "region_stops": list(info.region_stops),
        "fallback_reason": info.fallback_reason,
        "naive_flops": info.naive_flops,
        "rewritten_flops": info.rewritten_flops,
        "peak_bytes_per_sequence": info.peak_bytes_per_sequence,
        "fixed_bytes": info.fixed_bytes,
        "streaming": dict(info.window_chunks) or None,
        "opset": opset,
        "ir_version": int(model.ir_version),
        "source_sha256": info.source_sha256,
    }


def _band_summary(record: dict | None) -> dict | None:
    """A banded output's band without its per-position starts (for ``inspect``)."""
    if not record:
        return None
    return {"width": record["width"], "length": record["length"], "axis": record["axis"]}


def conversion_summary(conv: Conversion) -> list[str]:
    """What ``convert`` says about the method: Gaussian α and r, the naive fallback, or
    the stages and the first-convolution shortcut; then the expected speedup."""
    plan = conv.plan
    a = conv.spec.alphabet_size
    lines = []
    gaussian = gaussian_summary(conv.model)
    if gaussian:
        lines.append(gaussian)
    elif plan.fallback_reason:
        lines.append(f"naive ISM fallback: {plan.fallback_reason}")
    else:
        spacings = ", ".join(str(st.spacing) for st in plan.stages)
        probes = sum(st.n_probes * (a - 1) for st in plan.stages)
        lines.append(f"{plural(len(plan.stages), 'stage')} (spacing {spacings}; {plural(probes, 'probe')} in all, "
                     f"{probes // (a - 1) * a} for sequences with N)")
        if plan.input_convs:
            names = ", ".join(repr(name) for name in first_conv_names(conv))
            lines.append(f"first convolution from kernel-column differences: {names}")
    lines.append(f"expected speedup {plan.expected_speedup:.1f}x over naive ISM (bound {plan.bound_speedup:.1f}x)")
    for name in conv.outputs:
        form = describe_form(plan, name)
        if "band_width" in form:
            lines.append(f"output {name}: {form['note']}")
    return lines


def gaussian_summary(model: onnx.ModelProto) -> str | None:
    """One line on a Gaussian-probe model's α, r, condition number and seed (else ``None``)."""
    info = read_converted_info(metadata_of(model))
    g = info.gaussian
    if info.probes != "gaussian" or g is None:
        return None
    shown = g.to_props()
    probes = ", ".join(str(layer.get("probes")) for layer in info.stages)
    return (
        f"gaussian probes: alpha {shown['alpha']} ({g.alpha_mode}), "
        f"Pearson r {shown['pearson_r']} vs naive ISM on a random sequence, "
        f"worst condition number {shown['condition_number']}, seed {g.seed}; "
        f"{plural(len(info.stages), 'conv')} ({probes} probes)"
    )
