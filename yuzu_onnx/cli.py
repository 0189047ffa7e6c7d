"""The ``yuzu-onnx`` command line: parse, then call the library.

Commands: ``inspect``, ``convert``, ``run``, ``ism``, ``naive``, ``verify``, ``plot``,
``demo``. Every :class:`~yuzu_onnx.errors.YuzuError` becomes one line
``yuzu-onnx: error: <message>`` on stderr and the exit code ``exc.exit_code`` (2 for bad
input or usage, 1 otherwise); every :class:`~yuzu_onnx.errors.YuzuWarning` one line
``yuzu-onnx: warning: <message>``. Other exceptions print one line and exit 1; ``--debug``
shows the traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError, ModelError, YuzuError, YuzuWarning

PROG = "yuzu-onnx"
TOLERANCE = 1e-5
META_PREFIX = "yuzu_onnx."


# --------------------------------------------------------------------------- argparse


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"{PROG}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _add_model_options(p: argparse.ArgumentParser, *, window: bool = True, outputs: bool = True,
                       reduce: bool = True, probes: bool = True) -> None:
    g = p.add_argument_group("model options")
    g.add_argument("--seq-len", type=int, metavar="L", help="sequence length (needed when the model's length is dynamic)")
    g.add_argument("--input", dest="input_name", metavar="NAME", help="the one-hot input, when several inputs qualify")
    g.add_argument("--layout", choices=("auto", "ncl", "nlc"), default="auto",
                   help="ncl = (N, A, L) PyTorch, nlc = (N, L, A) Keras/TF (default: auto)")
    g.add_argument("--alphabet", metavar="A", help="dna, rna, protein, a size or the letters (default: from the model)")
    if window:
        g.add_argument("--window", metavar="S:E", help="mutate only positions S..E-1 (default: all)")
    if outputs:
        g.add_argument("--outputs", metavar="a,b", help="model outputs to compute ISM for (default: all)")
    if reduce:
        g.add_argument("--reduce", metavar="R",
                       help="none (default), l2, sum or raw; or per output: name=l2,other=none")
    if probes:
        from .convert import PROBE_MODES

        g.add_argument("--probes", choices=PROBE_MODES, default="spaced",
                       help="spaced: exact spaced probes (default); naive: every mutant built in the graph; "
                            "gaussian: the published approximate method (sequential stacks only)")
        g.add_argument("--alpha", default="auto", metavar="A",
                       help="gaussian probes: oversampling factor 1.0-1.5, or auto (default)")
        g.add_argument("--probe-seed", type=int, default=0, metavar="S",
                       help="gaussian probes: seed of the random probes (default 0)")
        g.add_argument("--first-conv", choices=("auto", "shortcut", "probes"), default="auto",
                       help="spaced probes: convolutions of the sequence input as gathered kernel-column "
                            "differences (shortcut), convolved on the probes (probes), or whichever the "
                            "cost model finds cheaper (auto, default)")


def _add_run_options(p: argparse.ArgumentParser, *, naive: bool = False) -> None:
    g = p.add_argument_group("run options")
    g.add_argument("-o", "--output", dest="out", required=True, metavar="OUT",
                   help="result: OUT.npz, or a folder with --format npy")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when onnxruntime-gpu offers it (default)")
    if naive:
        g.add_argument("--batch-size", type=int, metavar="B", help="mutants per forward pass (default: from --max-memory)")
    else:
        g.add_argument("--batch-size", type=int, metavar="B", help="sequences per run (default: from --max-memory)")
        g.add_argument("--threads", type=int, metavar="T", help="CPU threads (default: YUZU_THREADS or all cores)")
    g.add_argument("--max-memory", metavar="SIZE", help="memory budget, e.g. 4G or 512M (default: a quarter of RAM)")
    g.add_argument("--genome", metavar="GENOME.fa", help="genome FASTA for BED input (needs pyfaidx)")
    g.add_argument("--strand", action="store_true", help="BED input: reverse-complement regions on the - strand")
    g.add_argument("--format", dest="fmt", choices=("npz", "npy"), default="npz",
                   help="npz: one archive (default); npy: a folder of .npy files written in constant memory")
    g.add_argument("--modisco", metavar="OUTPUT[:TARGET]",
                   help="also write TF-MoDISco inputs (one-hot, hypothetical and actual contributions) for OUTPUT")
    g.add_argument("--variants", metavar="OUT.tsv", help="also write a variant table (one row per substitution)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Fast exact in-silico saturation mutagenesis (ISM) for ONNX sequence models: "
                    "convert a model once, then run it on sequences.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_debug(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("inspect", help="describe a model: input, layout, local region, stages, expected speedup")
    p.add_argument("model", metavar="MODEL")
    _add_model_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_debug(p)

    p = sub.add_parser("convert", help="rewrite a model into an ISM model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-o", "--output", dest="out", required=True, metavar="ISM.onnx")
    _add_model_options(p)
    p.add_argument("--seed", dest="probe_seed", type=int, metavar="S",
                   help="gaussian probes: seed of the random probes (same as --probe-seed)")
    _add_debug(p)

    p = sub.add_parser("run", help="run a converted ISM model on sequences")
    p.add_argument("model", metavar="ISM.onnx")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz, FASTA (.gz) or BED (with --genome)")
    _add_run_options(p)
    p.add_argument("--check-source", metavar="MODEL",
                   help="refuse when MODEL is not the model the ISM model was converted from")
    _add_debug(p)

    p = sub.add_parser("ism", help="convert (cached) and run in one go")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz, FASTA (.gz) or BED (with --genome)")
    _add_model_options(p)
    _add_run_options(p)
    p.add_argument("--cache-dir", metavar="DIR", help="converted-model cache (default: YUZU_CACHE_DIR or ~/.cache/yuzu-onnx)")
    _add_debug(p)

    p = sub.add_parser("naive", help="naive ISM with the original model (the oracle)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz, FASTA (.gz) or BED (with --genome)")
    _add_model_options(p, probes=False)
    _add_run_options(p, naive=True)
    _add_debug(p)

    p = sub.add_parser("verify", help="check the converted model against naive ISM on random sequences")
    p.add_argument("model", metavar="MODEL")
    _add_model_options(p)
    p.add_argument("-n", type=int, default=4, metavar="N", help="random sequences (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_debug(p)

    p = sub.add_parser("plot", help="plot ISM of one sequence from a result file")
    p.add_argument("result", metavar="OUT.npz")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, metavar="I", help="sequence index (default 0)")
    which.add_argument("--name", metavar="NAME", help="sequence name")
    p.add_argument("--output", dest="output_name", metavar="NAME", help="which ISM output (default: the first)")
    p.add_argument("--target", type=int, metavar="T", help="output value to plot (default: the sum over values)")
    p.add_argument("--span", metavar="S:E", help="positions to show (default: all)")
    p.add_argument("-o", dest="out", required=True, metavar="FIG.png")
    _add_debug(p)

    p = sub.add_parser("demo", help="run the shipped example model on the shipped example sequences")
    p.add_argument("-o", "--output", dest="out", default="yuzu_demo", metavar="FOLDER",
                   help="where to write (default ./yuzu_demo)")
    p.add_argument("--quiet", action="store_true")
    _add_debug(p)
    return parser


# --------------------------------------------------------------------------- helpers


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _note(text: str, quiet: bool = False) -> None:
    if not quiet:
        sys.stderr.write(text + "\n")


def _model_kwargs(args) -> dict:
    kw = {"seq_len": args.seq_len, "input_name": args.input_name, "layout": args.layout, "alphabet": args.alphabet}
    for key in ("window", "outputs", "reduce"):
        value = getattr(args, key, None)
        if value is not None:
            kw[key] = value
    if getattr(args, "probes", None):
        kw["probes"] = args.probes
        if args.probes == "spaced":
            kw["first_conv"] = args.first_conv
        if args.probes == "gaussian":
            alpha = args.alpha
            if alpha != "auto":
                try:
                    alpha = float(alpha)
                except ValueError:
                    raise InputError(f"--alpha must be a number in [1.0, 1.5] or auto, got {alpha!r}") from None
            kw["alpha"] = alpha
            kw["seed"] = args.probe_seed if args.probe_seed is not None else 0
    return kw


def _peek_props(path: str) -> dict[str, str]:
    """The metadata of an ONNX file, without loading external data (errors as ModelError)."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {path!r} does not exist")
    if not p.is_file():
        raise ModelError(f"model path {path!r} is not a file")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path!r} is not an ONNX model (cannot parse it: {type(exc).__name__}); "
                         "is the file truncated?") from None
    return {e.key: e.value for e in proto.metadata_props}


def _is_converted(props: dict[str, str]) -> bool:
    return META_PREFIX + "format" in props


def _flops(value: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"


def _shape_text(shape) -> str:
    return "(" + ", ".join("batch" if (d is None or d == -1 or isinstance(d, str)) else str(d) for d in shape) + ")"


def _graph_output_shapes(model) -> dict[str, list]:
    shapes = {}
    for o in model.graph.output:
        dims = []
        for d in o.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else None)
        shapes[o.name] = dims
    return shapes


def _write_json_atomic(path: Path, doc: dict) -> None:
    from .pipeline import _atomic_write

    text = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    _atomic_write(path, lambda fh: fh.write(text))


# --------------------------------------------------------------------------- inspect


def _linear_heads(conv) -> list | None:
    """The tail's linear heads that the emitter decodes from window sums (None: unknown)."""
    try:
        from .analysis.region import constant_values
        from .emit.builder import GraphBuilder
        from .emit.probes import EmitContext
        from .emit.window_sums import find_linear_heads

        spec, region = conv.spec, conv.region
        producers = {o: node for node in spec.model.graph.node for o in node.output if o}
        ctx = EmitContext(spec, region, conv.plan, GraphBuilder(spec.opset), {}, producers,
                          constant_values(spec.model))
        return list(find_linear_heads(ctx, list(region.tail_nodes)))
    except Exception:  # the description is best effort; the conversion itself already succeeded
        return None


def tail_strategy(conv, output: str, heads: list | None = None) -> str:
    """How ``output``'s ISM is computed: in the region, from window sums, or a materialised tail."""
    plan, region = conv.plan, conv.region
    if plan.fallback_reason:
        return f"naive fallback ({plan.fallback_reason})"
    if output in region.maps:
        return "decoded directly in the local region"
    heads = _linear_heads(conv) if heads is None else heads
    graph = conv.spec.model.graph
    producers = {o: node for node in graph.node for o in node.output if o}
    head_by_output = {h.output: h for h in heads or []}
    used_heads, materialised, tail_nodes = [], False, set()
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
        node = producers.get(name)
        if node is None or region.kinds.get(name) != "data":
            continue
        tail_nodes.add(id(node))
        stack.extend(i for i in node.input if i)
    chunked = f"run on mutant tensors in chunks of {plan.tail_chunk} positions"
    if materialised or heads is None:
        return f"materialised tail ({len(tail_nodes)} nodes, {chunked})"
    ops = ", ".join(sorted({graph.node[h.nodes[-1]].op_type for h in used_heads}))
    rest = len(tail_nodes)
    if rest == 0:
        return f"decoded from window sums ({ops} of a local tensor; no materialisation)"
    return f"{ops} decoded from window sums, then {rest} tail nodes on per-mutant vectors"


def describe_conversion(conv, model_path: str | None = None) -> dict:
    """What ``inspect`` prints for an original model, as a JSON-ready dict."""
    spec, plan, region = conv.spec, conv.plan, conv.region
    graph = spec.model.graph
    a = spec.alphabet_size
    ops = Counter(node.op_type for node in graph.node)
    tails = {o: tail_strategy(conv, o) for o in conv.outputs}
    return {
        "model": model_path,
        "kind": "original",
        "source_sha256": spec.source_sha256,
        "input": spec.input_name,
        "layout": spec.layout,
        "input_shape": ["batch", *spec.input_shape],
        "alphabet": spec.alphabet,
        "seq_len": spec.seq_len,
        "opset": spec.opset,
        "ir_version": int(spec.model.ir_version),
        "outputs": {o.name: ["batch", *o.shape[1:]] for o in spec.outputs},
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
        "tails": tails,
        "first_conv_shortcut": [graph.node[c.node].name or c.output for c in plan.input_convs],
        "reductions": dict(conv.reductions),
        "fallback_reason": plan.fallback_reason,
        "naive_flops": plan.naive_flops,
        "rewritten_flops": plan.rewritten_flops,
        "bound_flops": plan.bound_flops,
        "expected_speedup": plan.expected_speedup,
        "bound_speedup": plan.bound_speedup,
        "peak_bytes_per_sequence": int(plan.peak_bytes_per_sequence),
    }


def _first_conv_names(conv) -> str:
    graph = conv.spec.model.graph
    return ", ".join(repr(graph.node[c.node].name or c.output) for c in conv.plan.input_convs)


def describe_converted(path: str) -> dict:
    """What ``inspect`` prints for a converted model, as a JSON-ready dict."""
    import onnx

    from .session import read_converted_info

    model = onnx.load(path, load_external_data=False)
    info = read_converted_info(model, source=repr(path))
    props = info.props

    def prop_json(key, default):
        try:
            return json.loads(props.get(META_PREFIX + key, ""))
        except ValueError:
            return default

    shapes = _graph_output_shapes(model)
    opset = next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    return {
        "model": path,
        "kind": "converted",
        "format": props.get(META_PREFIX + "format"),
        "yuzu_onnx_version": props.get(META_PREFIX + "version"),
        "input": info.input_name,
        "layout": info.layout,
        "alphabet": info.alphabet,
        "seq_len": info.seq_len,
        "window": list(info.window),
        "probes": info.probes,
        "outputs": {name: {"reduce": spec.get("reduce", "none"), "shape": shapes.get(name)}
                    for name, spec in info.outputs.items()},
        "stages": prop_json("stages", []),
        "region_stops": prop_json("region_stops", []),
        "fallback_reason": props.get(META_PREFIX + "fallback") or None,
        "naive_flops": float(props.get(META_PREFIX + "naive_flops", "0") or 0),
        "rewritten_flops": float(props.get(META_PREFIX + "rewritten_flops", "0") or 0),
        "peak_bytes_per_sequence": info.peak_bytes_per_sequence,
        "opset": opset,
        "ir_version": int(model.ir_version),
        "source_sha256": info.source_sha256,
    }


def _print_original(d: dict) -> None:
    from .progress import format_bytes

    _say(f"model: {d['model']} (original; sha256 {d['source_sha256'][:16]}...)")
    _say(f"input: {d['input']} {_shape_text(d['input_shape'])}, layout {d['layout']}, "
         f"alphabet {d['alphabet']}, length {d['seq_len']}")
    _say(f"opset {d['opset']}, IR version {d['ir_version']}")
    _say("outputs:")
    for name, shape in d["outputs"].items():
        _say(f"  {name} {_shape_text(shape)}")
    _say("ops: " + ", ".join(f"{op} x{n}" for op, n in d["op_counts"].items()))
    r = d["local_region"]
    _say(f"local region: {r['nodes']} of {r['total_nodes']} nodes; {r['tail_nodes']} nodes after it")
    if r["stops"]:
        for s in r["stops"][:5]:
            reason = s["reason"].split(" (ops with rules:")[0]
            _say(f"  stops at {s['op']} node {s['node']!r}: {reason}")
        if len(r["stops"]) > 5:
            _say(f"  ... and {len(r['stops']) - 5} more stops")
    else:
        _say("  the whole graph is local")
    _say(f"window: positions {d['window'][0]}:{d['window'][1]}")
    _say_stages(d["stages"])
    if d.get("first_conv_shortcut"):
        _say("first convolution: kernel-column differences gathered onto the reference output ("
             + ", ".join(repr(n) for n in d["first_conv_shortcut"]) + "), not convolved on the probes")
    _say("tail per output:")
    for name, how in d["tails"].items():
        _say(f"  {name} [{d['reductions'][name]}]: {how}")
    _say("cost per sequence:")
    _say(f"  naive ISM          {_flops(d['naive_flops'])}")
    _say(f"  rewritten          {_flops(d['rewritten_flops'])}  (expected speedup {d['expected_speedup']:.1f}x)")
    _say(f"  sparse bound       {_flops(d['bound_flops'])}  (bound speedup {d['bound_speedup']:.1f}x)")
    _say(f"  peak memory        {format_bytes(d['peak_bytes_per_sequence'])} per sequence")


def _say_stages(stages: list[dict]) -> None:
    """The stage list of ``inspect`` (from a plan, or from a converted model's metadata,
    where files written before ``probes_with_unknown_bases`` existed lack that key)."""
    if not stages:
        _say("stages: none")
        return
    _say("stages:")
    for i, st in enumerate(stages, 1):
        with_n = st.get("probes_with_unknown_bases")
        extra = f" ({with_n} for sequences with N)" if with_n is not None else ""
        _say(f"  {i}: {st.get('nodes')} nodes, spacing {st.get('spacing')}, "
             f"receptive field {st.get('receptive_field')}, {st.get('probes')} probes{extra}")


def _print_converted(d: dict) -> None:
    from .progress import format_bytes

    _say(f"model: {d['model']} (converted ISM model, format {d['format']}, yuzu-onnx {d['yuzu_onnx_version']})")
    _say(f"input: {d['input']}, layout {d['layout']}, alphabet {d['alphabet']}, length {d['seq_len']}")
    _say(f"window: positions {d['window'][0]}:{d['window'][1]}; probes: {d['probes']}")
    _say("outputs:")
    for name, o in d["outputs"].items():
        _say(f"  {name} {_shape_text(o['shape'] or [])} reduce={o['reduce']}")
    _say_stages(d["stages"])
    if d["fallback_reason"]:
        _say(f"naive fallback: {d['fallback_reason']}")
    if d["naive_flops"]:
        speed = d["naive_flops"] / max(d["rewritten_flops"], 1.0)
        _say(f"cost per sequence: naive {_flops(d['naive_flops'])}, rewritten {_flops(d['rewritten_flops'])} "
             f"(expected speedup {speed:.1f}x); peak memory {format_bytes(d['peak_bytes_per_sequence'])}")
    _say(f"opset {d['opset']}, IR version {d['ir_version']}")
    _say(f"source sha256: {d['source_sha256']}")


def cmd_inspect(args) -> int:
    from .convert import convert_model

    props = _peek_props(args.model)
    if _is_converted(props):
        d = describe_converted(args.model)
        printer = _print_converted
    else:
        d = describe_conversion(convert_model(args.model, **_model_kwargs(args)), args.model)
        printer = _print_original
    if args.json:
        _say(json.dumps(d, indent=2))
    else:
        printer(d)
    return 0


# --------------------------------------------------------------------------- convert


def sidecar_document(conv) -> dict:
    """The JSON sidecar ``ISM.onnx.json`` the browser host reads."""
    shapes = _graph_output_shapes(conv.model)
    return {
        "input": conv.spec.input_name,
        "layout": conv.spec.layout,
        "alphabet": conv.spec.alphabet,
        "seq_len": conv.spec.seq_len,
        "window": list(conv.plan.window),
        "outputs": {o: {"reduce": conv.reductions[o], "shape": shapes.get(o)} for o in conv.outputs},
    }


def save_conversion(conv, out: Path) -> Path:
    """Save the converted model and its JSON sidecar; returns the sidecar path."""
    from .convert import save_model

    save_model(conv.model, out)
    sidecar = out.with_name(out.name + ".json")
    _write_json_atomic(sidecar, sidecar_document(conv))
    return sidecar


def cmd_convert(args) -> int:
    from .convert import convert_model
    from .results import check_output_path

    out = check_output_path(args.out)
    if _is_converted(_peek_props(args.model)):
        raise ModelError(f"{args.model!r} is already a converted ISM model; convert the original model")
    conv = convert_model(args.model, **_model_kwargs(args))
    sidecar = save_conversion(conv, out)
    plan = conv.plan
    a = conv.spec.alphabet_size
    _say(f"converted {args.model} -> {out} (sidecar {sidecar})")
    from .emit.gaussian import gaussian_summary

    gaussian = gaussian_summary(conv.model)
    if gaussian:
        _say(f"  {gaussian}")
    elif plan.fallback_reason:
        _say(f"  naive ISM fallback: {plan.fallback_reason}")
    else:
        spacings = ", ".join(str(st.spacing) for st in plan.stages)
        probes = sum(st.n_probes * (a - 1) for st in plan.stages)
        _say(f"  {len(plan.stages)} stages (spacing {spacings}; {probes} probes in all, "
             f"{probes // (a - 1) * a} for sequences with N)")
        if plan.input_convs:
            _say(f"  first convolution from kernel-column differences: {_first_conv_names(conv)}")
    _say(f"  expected speedup {plan.expected_speedup:.1f}x over naive ISM (bound {plan.bound_speedup:.1f}x)")
    for name, shape in _graph_output_shapes(conv.model).items():
        _say(f"  output {name} {_shape_text(shape)} reduce={conv.reductions[name]}")
    return 0


# --------------------------------------------------------------------------- run / ism / naive


def _prepare_outputs(args) -> tuple[Path, Path | None]:
    """Check the result path and the --variants path before any work."""
    from .results import check_output_path

    out = check_output_path(args.out, folder=(args.fmt == "npy"))
    variants = check_output_path(args.variants) if args.variants else None
    return out, variants


def _run_pipeline(args, runner, model_path: str, model_sha256: str, *, batch_size, threads_note: str = "") -> int:
    from .pipeline import file_sha256, load_sequences, parse_modisco, run_to_files, write_followups
    from .progress import Progress, summary_line

    out, variants = _prepare_outputs(args)
    modisco = parse_modisco(args.modisco, runner.output_names)
    batch = load_sequences(args.input, runner.sequence_spec, genome=args.genome, strand=args.strand)
    progress = Progress(len(batch), quiet=args.quiet, label=runner.kind)
    options = {"genome": args.genome, "strand": bool(args.strand)}
    metadata = {"command": args.command, "model": model_path, "input": args.input}
    report = run_to_files(
        runner, batch, out, fmt=args.fmt, batch_size=batch_size, max_memory=args.max_memory,
        resume=args.resume, model_sha256=model_sha256, input_sha256=file_sha256(args.input),
        options=options, metadata=metadata, progress=progress, keep_arrays=True,
    )
    progress.summary(summary_line(n_sequences=report.n_sequences, seconds=report.seconds, path=report.path,
                                  provider=report.provider, resumed=report.resumed, what=runner.kind))
    for line in write_followups(report, batch, fmt=args.fmt, modisco=modisco, variants=variants):
        _note(line, args.quiet)
    return 0


def cmd_run(args) -> int:
    from .pipeline import ConvertedRunner, file_sha256
    from .session import ISMSession

    _prepare_outputs(args)
    session = ISMSession(args.model, device=args.device, threads=args.threads)
    if args.check_source:
        if not Path(args.check_source).is_file():
            raise InputError(f"--check-source model {args.check_source!r} does not exist")
        sha = file_sha256(args.check_source)
        if sha != session.info.source_sha256:
            raise InputError(
                f"{args.check_source!r} (sha256 {sha[:12]}...) is not the model {args.model!r} was converted from "
                f"(sha256 {session.info.source_sha256[:12] or 'unknown'}...); convert it again"
            )
    runner = ConvertedRunner(session)
    return _run_pipeline(args, runner, args.model, file_sha256(args.model), batch_size=args.batch_size)


def cmd_ism(args) -> int:
    from .pipeline import ConvertedRunner, file_sha256
    from .session import ISMSession, cached_conversion

    _prepare_outputs(args)
    kwargs = _model_kwargs(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = cached_conversion(args.model, cache_dir=args.cache_dir, **kwargs)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    session = ISMSession(path, device=args.device, threads=args.threads)
    reason = session.info.props.get(META_PREFIX + "fallback")
    if reason and kwargs.get("probes") != "naive" and not any("naive" in str(w.message) for w in caught):
        warnings.warn(f"falling back to exact naive ISM: {reason}", YuzuWarning, stacklevel=1)
    runner = ConvertedRunner(session)
    return _run_pipeline(args, runner, args.model, file_sha256(path), batch_size=args.batch_size)


def cmd_naive(args) -> int:
    from .importer import load_model
    from .pipeline import NaiveRunner

    _prepare_outputs(args)
    spec = load_model(args.model, seq_len=args.seq_len, input_name=args.input_name, layout=args.layout,
                      alphabet=args.alphabet)
    runner = NaiveRunner(spec, outputs=args.outputs, window=args.window, reductions=args.reduce,
                         device=args.device)
    return _run_pipeline(args, runner, args.model, spec.source_sha256, batch_size=args.batch_size)


# --------------------------------------------------------------------------- verify


def random_sequences(n: int, spec, *, seed: int = 0, n_unknown: int = 3) -> np.ndarray:
    """``n`` random one-hot sequences for ``spec``; the last gets ``n_unknown`` all-zero (N) columns."""
    rng = np.random.default_rng(seed)
    a, length = spec.alphabet_size, spec.seq_len
    x = np.eye(a, dtype=np.float32)[rng.integers(0, a, (n, length))]  # (n, L, A)
    if n:
        k = min(n_unknown, length)
        x[n - 1, rng.choice(length, size=k, replace=False)] = 0.0
    return x if spec.layout == "nlc" else np.ascontiguousarray(x.transpose(0, 2, 1))


def verify_conversion(conv, X: np.ndarray, *, device: str = "auto") -> dict[str, dict]:
    """Converted vs naive ISM on ``X``: per output max abs error, scale and relative error."""
    from .oracle import reference_outputs
    from .pipeline import NaiveRunner
    from .session import ISMSession

    ism = ISMSession(conv.model, device=device).run(X)
    naive_runner = NaiveRunner(conv.spec, outputs=list(conv.outputs), window=conv.plan.window,
                               reductions=dict(conv.reductions), device=device)
    naive_runner.plan_batches(None, None)
    naive = naive_runner.run(X)
    refs = reference_outputs(naive_runner.session, X, spec=conv.spec, outputs=list(conv.outputs))
    report = {}
    for name in conv.outputs:
        got, want = ism[name], naive[name]
        if got.shape != want.shape:
            raise YuzuError(f"output {name!r}: converted ISM has shape {got.shape}, naive ISM {want.shape}")
        err = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
        scale = max(float(np.max(np.abs(refs[name]))) if refs[name].size else 0.0,
                    float(np.max(np.abs(got))) if got.size else 0.0)
        rel = err / scale if scale > 0 else err
        pearson = _pearson(got, want)
        ok = bool(np.isfinite(rel) and rel <= TOLERANCE)
        if _probes_of(conv.model) == "gaussian":  # approximate by design: judged by correlation
            ok = bool(np.isfinite(pearson) and pearson >= GAUSSIAN_MIN_PEARSON)
        report[name] = {"max_abs_error": err, "scale": scale, "relative_error": rel, "pearson_r": pearson, "ok": ok}
    return report


GAUSSIAN_MIN_PEARSON = 0.9999


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 1.0 if np.array_equal(a, b) else float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _probes_of(model) -> str:
    return {p.key: p.value for p in model.metadata_props}.get("yuzu_onnx.probes", "spaced")


def cmd_verify(args) -> int:
    from .convert import convert_model

    if args.n < 1:
        raise InputError(f"-n must be at least 1, got {args.n}")
    conv = convert_model(args.model, **_model_kwargs(args))
    X = random_sequences(args.n, conv.spec, seed=args.seed)
    report = verify_conversion(conv, X, device=args.device)
    method = "naive fallback" if conv.plan.fallback_reason else f"{len(conv.plan.stages)} probe stages"
    _say(f"verify {args.model}: {args.n} random sequences (seed {args.seed}, one with N positions), {method}")
    _say(f"  {'output':<20} {'max abs error':>14} {'scale':>12} {'relative':>12} {'pearson r':>12}")
    ok = True
    for name, r in report.items():
        flag = "ok" if r["ok"] else "FAIL"
        ok &= r["ok"]
        _say(f"  {name:<20} {r['max_abs_error']:>14.3e} {r['scale']:>12.4g} {r['relative_error']:>12.3e} "
             f"{r['pearson_r']:>12.8f}  {flag}")
    gaussian = _probes_of(conv.model) == "gaussian"
    if not ok:
        limit = f"Pearson r below {GAUSSIAN_MIN_PEARSON}" if gaussian else f"more than {TOLERANCE:g} x scale"
        sys.stderr.write(f"{PROG}: error: converted ISM differs from naive ISM by {limit}\n")
        return 1
    _say(f"all outputs with Pearson r >= {GAUSSIAN_MIN_PEARSON}" if gaussian else f"all outputs within {TOLERANCE:g} x scale")
    return 0


# --------------------------------------------------------------------------- plot


def _parse_span(text: str | None):
    if text is None:
        return None
    try:
        s, e = text.split(":")
        return int(s), int(e)
    except ValueError:
        raise InputError(f"--span must be START:END, got {text!r}") from None


def cmd_plot(args) -> int:
    from .plot import plot_from_npz
    from .results import check_output_path

    out = check_output_path(args.out)
    path = plot_from_npz(args.result, index=args.index, name=args.name, output=args.output_name,
                         target=args.target, span=_parse_span(args.span), path=out)
    _say(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- demo


DEMO_MODEL = Path("models") / "demo_motifs.onnx"
DEMO_SEQUENCES = Path("examples") / "demo_sequences.fa"
DEMO_SITES = Path("examples") / "demo_motifs.tsv"


def find_demo_files() -> tuple[Path, Path, Path | None]:
    """The demo model and sequences: beside the package (source checkout), else in the working folder."""
    roots = [Path(__file__).resolve().parent.parent, Path.cwd()]
    for root in roots:
        model, seqs = root / DEMO_MODEL, root / DEMO_SEQUENCES
        if model.is_file() and seqs.is_file():
            sites = root / DEMO_SITES
            return model, seqs, sites if sites.is_file() else None
    raise InputError(
        f"the demo needs {DEMO_MODEL} and {DEMO_SEQUENCES} from the yuzu-onnx repository; run `yuzu-onnx demo` "
        "from the repository root (or install it with pip install -e .)"
    )


def _read_sites(path: Path | None) -> dict[str, list[tuple[str, int, int]]]:
    sites: dict[str, list[tuple[str, int, int]]] = {}
    if path is None:
        return sites
    lines = path.read_text("utf-8").splitlines()
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) >= 4:
            sites.setdefault(fields[0], []).append((fields[1], int(fields[2]), int(fields[3])))
    return sites


def cmd_demo(args) -> int:
    from .convert import convert_model
    from .pipeline import ConvertedRunner, file_sha256, load_sequences, run_to_files
    from .progress import Progress, summary_line
    from .session import ISMSession

    model, seqs, sites_path = find_demo_files()
    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"demo output {str(folder)!r} exists and is not a folder")
    if not folder.parent.is_dir() and str(folder.parent):
        raise InputError(f"folder {str(folder.parent)!r} does not exist (for the demo output {str(folder)!r})")
    folder.mkdir(exist_ok=True)
    conv = convert_model(model)
    ism_path = folder / "demo_motifs.ism.onnx"
    save_conversion(conv, ism_path)
    _note(f"converted {model} -> {ism_path} (expected speedup {conv.plan.expected_speedup:.1f}x over naive ISM)",
          args.quiet)
    runner = ConvertedRunner(ISMSession(ism_path))
    batch = load_sequences(seqs, runner.sequence_spec)
    out = folder / "demo_ism.npz"
    partial = out.with_name(out.name + ".partial")
    if partial.exists():  # a demo run is cheap: start over instead of asking for --resume
        import shutil

        shutil.rmtree(partial)
    progress = Progress(len(batch), quiet=args.quiet, label=runner.kind)
    report = run_to_files(runner, batch, out, model_sha256=file_sha256(ism_path), input_sha256=file_sha256(seqs),
                          metadata={"command": "demo", "model": str(model), "input": str(seqs)},
                          progress=progress, keep_arrays=True)
    progress.summary(summary_line(n_sequences=report.n_sequences, seconds=report.seconds, path=report.path,
                                  provider=report.provider, what=runner.kind))
    name = runner.output_names[0]
    ism = report.arrays[name].reshape(len(batch), *report.arrays[name].shape[1:3], -1).sum(axis=3)
    if runner.layout == "nlc":
        ism = ism.transpose(0, 2, 1)
    # importance of a position: how much the output drops, on average, when it is mutated
    importance = -ism.sum(axis=1) / (ism.shape[1] - 1)  # (N, Lw)
    sites = _read_sites(sites_path)
    start = runner.window[0]
    _say(f"results: {out}")
    _say(f"ISM of output {name!r}: the most important position of each sequence "
         "(largest mean drop of the output when mutated)")
    for i, seq_name in enumerate(batch.names):
        j = int(np.argmax(importance[i]))
        pos = start + j
        planted = sites.get(seq_name, [])
        inside = [f"{m} site {s}-{e}" for m, s, e in planted if s <= pos < e]
        where = f"inside the planted {inside[0]}" if inside else (
            "planted: " + ", ".join(f"{m} {s}-{e}" for m, s, e in planted) if planted else "")
        _say(f"  {seq_name}: position {pos} (mean drop {importance[i, j]:.3f})" + (f"  [{where}]" if where else ""))
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        warnings.warn("no plot: matplotlib is missing; pip install 'yuzu-onnx[plot]'", YuzuWarning, stacklevel=1)
        return 0
    from .plot import plot_from_npz

    fig = folder / "demo_ism.png"
    plot_from_npz(out, index=0, path=fig)
    _say(f"plot of {batch.names[0]}: {fig}")
    return 0


# --------------------------------------------------------------------------- main


COMMANDS = {
    "inspect": cmd_inspect,
    "convert": cmd_convert,
    "run": cmd_run,
    "ism": cmd_ism,
    "naive": cmd_naive,
    "verify": cmd_verify,
    "plot": cmd_plot,
    "demo": cmd_demo,
}


def _warning_printer():
    """A ``warnings.showwarning`` that prints one line per warning (each YuzuWarning once)."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        if issubclass(category, YuzuWarning):
            if text in seen:
                return
            seen.add(text)
            sys.stderr.write(f"{PROG}: warning: {text}\n")
        else:
            sys.stderr.write(f"{PROG}: warning: {category.__name__}: {text}\n")

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.simplefilter("always", YuzuWarning)
        warnings.showwarning = _warning_printer()
        try:
            return COMMANDS[args.command](args)
        except YuzuError as exc:
            if debug:
                traceback.print_exc()
            message = " ".join(str(exc).split("\n")).strip() or type(exc).__name__
            sys.stderr.write(f"{PROG}: error: {message}\n")
            return exc.exit_code
        except KeyboardInterrupt:
            hint = ""
            if args.command in ("run", "ism", "naive"):
                hint = "; finished chunks are kept in OUT.partial: rerun with --resume to continue"
            sys.stderr.write(f"{PROG}: interrupted{hint}\n")
            return 130
        except BrokenPipeError:
            return 1
        except Exception as exc:
            if debug:
                traceback.print_exc()
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = "" if debug else " (run with --debug for the traceback)"
            sys.stderr.write(f"{PROG}: error: unexpected {type(exc).__name__}: {text}{hint}\n")
            return 1


if __name__ == "__main__":
    sys.exit(main())
