"""The ``yuzu-onnx`` command line: parse, then call the library.

Commands: ``inspect``, ``convert``, ``run``, ``ism``, ``naive``, ``verify``, ``plot``,
``variants``, ``demo``. Every :class:`~yuzu_onnx.errors.YuzuError` becomes one line
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
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import InputError, ModelError, YuzuError, YuzuWarning, install_hint, interface
from .format import is_converted, metadata_of, read_converted_info
from .sidecar import graph_output_shapes

PROG = "yuzu-onnx"
ORIGINAL_MODEL_HELP = "the original ONNX model (as exported, not one written by convert)"


# --------------------------------------------------------------------------- argparse


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"{PROG}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


class _Renamed(argparse.Action):
    """An option that is not (or no longer) this command's: a usage error naming the right one."""

    def __init__(self, option_strings, dest, *, instead: str, **kwargs) -> None:
        kwargs.setdefault("nargs", "?")
        super().__init__(option_strings, argparse.SUPPRESS, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not an option of `{parser.prog}`; {self.instead}")


def _refuse_seed(p: argparse.ArgumentParser) -> None:
    """``--seed`` means verify's random sequences only; elsewhere it points to ``--probe-seed``."""
    p.add_argument("--seed", action=_Renamed,
                   instead="the seed of the Gaussian probes is --probe-seed (--seed is verify's seed of "
                           "the random sequences)")


def _add_model_options(p: argparse.ArgumentParser, *, window: bool = True, outputs: bool = True,
                       reduce: bool = True, probes: bool = True, memory: bool = False) -> None:
    g = p.add_argument_group("model options")
    g.add_argument("--seq-len", type=int, metavar="L",
                   help="sequence length (needed when the model's length is dynamic; ism and naive take it from INPUT)")
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
    g.add_argument("--select", action="append", default=[], metavar="OUTPUT:AXIS=I,J,...",
                   help="keep only these indices along an axis of a model output (axes as in the output: the batch "
                        "is axis 0 and refused, negative axes count from the end), before the ISM difference; "
                        "repeatable")
    g.add_argument("--aggregate", action="append", default=[], metavar="OUTPUT:AXIS=START:END:sum|mean",
                   help="sum or mean entries START..END-1 of an axis of a model output before the ISM difference; "
                        "the axis stays, with size 1 (after a --select on the same axis, the range counts the "
                        "selected entries); repeatable")
    if probes:
        from .convert import PROBE_MODES

        g.add_argument("--probes", choices=PROBE_MODES, default="spaced",
                       help="spaced: exact spaced probes (default); naive: every mutant built in the graph; "
                            "gaussian: the published approximate method (sequential stacks only)")
        g.add_argument("--alpha", default="auto", metavar="A",
                       help="gaussian probes: oversampling factor 1.0-1.5, or auto (default)")
        g.add_argument("--probe-seed", type=int, default=0, metavar="S",
                       help="gaussian probes: seed of the random probes (default 0)")
        g.add_argument("--output-form", choices=("dense", "banded", "auto"), default="dense",
                       help="dense: full output length per mutation (default); banded: profile outputs keep only "
                            "the positions each mutation reaches (see yuzu_onnx.densify); auto: banded where that "
                            "saves at least 4x")
        g.add_argument("--first-conv", choices=("auto", "shortcut", "probes"), default="auto",
                       help="spaced probes: convolutions of the sequence input as gathered kernel-column "
                            "differences (shortcut), convolved on the probes (probes), or whichever the "
                            "cost model finds cheaper (auto, default)")
    if memory:
        g.add_argument("--max-memory", metavar="SIZE",
                       help="memory one sequence of the converted model may use, e.g. 4G (default 4G); a plan that "
                            "needs more runs its window in chunks, one after the other")


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
    _add_threads(g)
    g.add_argument("--max-memory", metavar="SIZE", help="memory budget, e.g. 4G or 512M (default: a quarter of RAM)")
    g.add_argument("--genome", metavar="GENOME.fa", help="genome FASTA for BED input (needs pyfaidx)")
    g.add_argument("--strand", action="store_true", help="BED input: reverse-complement regions on the - strand")
    g.add_argument("--format", dest="fmt", choices=("npz", "npy", "shards"), default="npz",
                   help="npz: one archive (default); npy: a folder of .npy files written in constant memory; "
                        "shards: a folder of shards with manifest.json (genome-scale, resumable)")
    g.add_argument("--modisco", metavar="OUTPUT[:TARGET]",
                   help="also write TF-MoDISco inputs (one-hot, hypothetical and actual contributions) for OUTPUT")
    g.add_argument("--variants", metavar="OUT.tsv|OUT.parquet",
                   help="also write a variant table (one row per substitution): TSV, or Parquet (needs pyarrow; "
                        "a folder of per-shard parts with --engine ray)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    _add_extra_inputs(g)


def _add_extra_inputs(g) -> None:
    g.add_argument("--extra-input", action="append", dest="extra_inputs", default=[], metavar="NAME=FILE.npy",
                   help="values of a model input besides the sequence (control tracks, a covariate): one row per "
                        "sequence, or one row for all; held fixed for every mutant; repeat for several inputs")


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of threads, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_threads(g) -> None:
    g.add_argument("--threads", type=_threads, metavar="T", help="CPU threads (default: YUZU_THREADS or all cores)")


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine options (genome scale)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: an actor pool on Ray (needs Ray: "
                        + install_hint("'ray[data]' pyarrow", "ray") + ")")
    g.add_argument("--address", metavar="ADDR",
                   help="Ray: auto or ray://HOST:10001 to join a cluster (default: start a local Ray)")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="Ray: ISM actors (default 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="Ray: GPUs per actor; runs the CUDA provider and fails if an actor cannot (default 0)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                   help="Ray: CPUs per actor, also its ONNX Runtime threads (default 1)")
    g.add_argument("--shard-size", type=int, metavar="S",
                   help="sequences per shard with --format shards or --engine ray (default 256)")


def _engine_options(args):
    """The engine options of ``run``/``ism``, or ``None`` for the plain local run."""
    from .engines import EngineOptions

    engine = getattr(args, "engine", "local")
    if engine == "local" and args.fmt != "shards":
        return None
    return EngineOptions(engine=engine, address=getattr(args, "address", None), workers=getattr(args, "workers", 1),
                         gpus_per_worker=getattr(args, "gpus_per_worker", 0.0),
                         cpus_per_worker=getattr(args, "cpus_per_worker", 1.0),
                         shard_size=getattr(args, "shard_size", None))


def _run_sharded(args, job, runner, model_sha256: str, ray_model) -> int:
    from .shard_jobs import run_sharded_job

    for line in run_sharded_job(runner, job, _engine_options(args), model_path=args.model,
                                model_sha256=model_sha256, ray_model=ray_model):
        _note(line, args.quiet)
    return 0


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do; COMMAND --help for its options")
    sub.required = True

    p = sub.add_parser("inspect", help="describe a model: input, layout, local region, stages, expected speedup")
    p.add_argument("model", metavar="MODEL", help="an ONNX model: the original, or one written by convert")
    _add_model_options(p, memory=True)
    p.add_argument("--json", action="store_true", help="print JSON")
    _refuse_seed(p)
    _add_debug(p)

    p = sub.add_parser("convert", help="rewrite a model into an ISM model")
    p.add_argument("model", metavar="MODEL", help=ORIGINAL_MODEL_HELP)
    p.add_argument("-o", "--output", dest="out", required=True, metavar="ISM.onnx",
                   help="the converted ISM model to write (and its JSON sidecar ISM.onnx.json)")
    _add_model_options(p, memory=True)
    _refuse_seed(p)
    _add_debug(p)

    p = sub.add_parser("run", help="run a converted ISM model on sequences")
    p.add_argument("model", metavar="ISM.onnx", help="a model written by yuzu-onnx convert")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz, FASTA (.gz) or BED (with --genome)")
    _add_run_options(p)
    p.add_argument("--check-source", metavar="MODEL",
                   help="refuse when MODEL is not the model the ISM model was converted from")
    _add_engine_options(p)
    _add_debug(p)

    p = sub.add_parser("ism", help="convert (cached) and run in one go")
    p.add_argument("model", metavar="MODEL", help=ORIGINAL_MODEL_HELP)
    p.add_argument("input", metavar="INPUT", help=".npy, .npz, FASTA (.gz) or BED (with --genome)")
    _add_model_options(p)
    _add_run_options(p)
    p.add_argument("--cache-dir", metavar="DIR", help="converted-model cache (default: YUZU_CACHE_DIR or ~/.cache/yuzu-onnx)")
    _refuse_seed(p)
    _add_engine_options(p)
    _add_debug(p)

    p = sub.add_parser("naive", help="naive ISM with the original model (the oracle)")
    p.add_argument("model", metavar="MODEL", help=ORIGINAL_MODEL_HELP)
    p.add_argument("input", metavar="INPUT", help=".npy, .npz, FASTA (.gz) or BED (with --genome)")
    _add_model_options(p, probes=False)
    _add_run_options(p, naive=True)
    p.add_argument("--shard-size", type=int, metavar="S", help="sequences per shard with --format shards (default 256)")
    _add_debug(p)

    p = sub.add_parser("verify", help="check the converted model against naive ISM on random sequences")
    p.add_argument("model", metavar="MODEL", help=ORIGINAL_MODEL_HELP)
    _add_model_options(p, memory=True)
    p.add_argument("-n", type=int, default=4, metavar="N", help="random sequences (default 4)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the random sequences (default 0; the Gaussian probes' seed is --probe-seed)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where both runs compute; auto: CUDA when onnxruntime-gpu offers it (default)")
    _add_threads(p)
    _add_extra_inputs(p)
    _add_debug(p)

    p = sub.add_parser("plot", help="plot ISM of one sequence from a result (NPZ, NPY folder or shards)")
    p.add_argument("result", metavar="RESULT",
                   help="an ISM result written by run, ism or naive: an .npz, an NPY folder or a sharded folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, metavar="I", help="sequence index (default 0)")
    which.add_argument("--name", metavar="NAME", help="sequence name")
    p.add_argument("--output", dest="output_name", metavar="NAME", help="which ISM output (default: the first)")
    p.add_argument("--target", type=int, metavar="T", help="output value to plot (default: the sum over values)")
    p.add_argument("--span", metavar="S:E", help="positions to show (default: all)")
    p.add_argument("-o", dest="out", required=True, metavar="FIG.png", help="the figure to write (PNG)")
    _add_debug(p)

    p = sub.add_parser("variants", help="write the variant table of a result (NPZ, NPY folder or shards)")
    p.add_argument("result", metavar="RESULT",
                   help="an ISM result written by run, ism or naive: an .npz, an NPY folder or a sharded folder")
    p.add_argument("-o", dest="out", required=True, metavar="OUT.tsv|OUT.parquet",
                   help="the table: .tsv, .tsv.gz or .parquet (needs pyarrow)")
    _add_debug(p)

    p = sub.add_parser("demo", help="run the shipped example model on the shipped example sequences")
    p.add_argument("-o", "--output", dest="out", default="yuzu_demo", metavar="FOLDER",
                   help="where to write (default ./yuzu_demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no conversion line")
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
    for key in ("select", "aggregate"):
        if getattr(args, key, None):
            kw[key] = list(getattr(args, key))
    if getattr(args, "probes", None):
        kw["probes"] = args.probes
        if args.output_form != "dense":
            kw["output_form"] = args.output_form
        if args.probes == "spaced":
            kw["first_conv"] = args.first_conv
            if getattr(args, "max_memory", None):
                kw["max_memory"] = args.max_memory
        if args.probes == "gaussian":
            alpha = args.alpha
            if alpha != "auto":
                try:
                    alpha = float(alpha)
                except ValueError:
                    raise InputError(f"--alpha must be a number in [1.0, 1.5] or auto, got {alpha!r}") from None
            kw["alpha"] = alpha
            kw["seed"] = args.probe_seed
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
    return metadata_of(proto)


def _flops(value: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"


def _shape_text(shape) -> str:
    return "(" + ", ".join("batch" if (d is None or d == -1 or isinstance(d, str)) else str(d) for d in shape) + ")"


# --------------------------------------------------------------------------- inspect


def _print_original(d: dict) -> None:
    from .progress import format_bytes, plural
    from .targets import describe_operations

    _say(f"model: {d['model']} (original; sha256 {d['source_sha256'][:16]}...)")
    _say(f"input: {d['input']} {_shape_text(d['input_shape'])}, layout {d['layout']}, "
         f"alphabet {d['alphabet']}, length {d['seq_len']}")
    _say_extra_inputs(d.get("extra_inputs"))
    _say(f"opset {d['opset']}, IR version {d['ir_version']}")
    _say("outputs:")
    for name, shape in d["outputs"].items():
        target = d.get("targets", {}).get(name)
        _say(f"  {name} {_shape_text(shape)}" + (f" (targets: {describe_operations(target)})" if target else ""))
    _say("ops: " + ", ".join(f"{op} x{n}" for op, n in d["op_counts"].items()))
    r = d["local_region"]
    _say(f"local region: {r['nodes']} of {plural(r['total_nodes'], 'node')}; "
         f"{plural(r['tail_nodes'], 'node')} after it")
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
    _say_forms(d.get("forms", {}))
    _say("cost per sequence:")
    _say(f"  naive ISM          {_flops(d['naive_flops'])}")
    _say(f"  rewritten          {_flops(d['rewritten_flops'])}  (expected speedup {d['expected_speedup']:.1f}x)")
    _say(f"  sparse bound       {_flops(d['bound_flops'])}  (bound speedup {d['bound_speedup']:.1f}x)")
    _say(f"  peak memory        {format_bytes(d['peak_bytes_per_sequence'])} per sequence"
         + (f" (+ {format_bytes(d['fixed_bytes'])} once: runtime and weights)" if d.get("fixed_bytes") else ""))
    _say_streaming(d.get("streaming"))


def _say_streaming(streaming: dict | None) -> None:
    """How a streamed plan cuts its window, and why."""
    if streaming and streaming["count"] > 1:
        _say(f"streaming: the window runs in {streaming['count']} chunks of {streaming['width']} positions, one "
             f"after the other, because {streaming['reason']}")
    elif streaming:
        _say(f"streaming: none, the window runs whole: {streaming['reason']}, and chunks would not save "
             "enough to pay for their cost")


def _say_extra_inputs(extras: dict | None) -> None:
    """The inputs besides the sequence (``--extra-input NAME=FILE.npy`` at run time)."""
    for name, e in (extras or {}).items():
        _say(f"extra input: {name} {_shape_text(['batch', *e['shape']])} {e['dtype']}, held fixed for every "
             f"mutant (--extra-input {name}=FILE.npy)")


def _count(n, noun: str) -> str:
    """``plural`` for a count read from metadata (``None`` when an old file lacks it)."""
    from .progress import plural

    return plural(n, noun) if isinstance(n, int) else f"{n} {noun}s"


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
        _say(f"  {i}: {_count(st.get('nodes'), 'node')}, spacing {st.get('spacing')}, "
             f"receptive field {st.get('receptive_field')}, {_count(st.get('probes'), 'probe')}{extra}")


def _say_forms(forms: dict) -> None:
    """The output forms of ``inspect``: chosen form, band width and what banded saves."""
    if forms:
        _say("output form:")
    for name, f in forms.items():
        _say(f"  {name}: {f['note']}")


def _print_converted(d: dict) -> None:
    from .progress import format_bytes
    from .targets import describe_operations

    _say(f"model: {d['model']} (converted ISM model, format {d['format']}, yuzu-onnx {d['yuzu_onnx_version']})")
    _say(f"input: {d['input']}, layout {d['layout']}, alphabet {d['alphabet']}, length {d['seq_len']}")
    _say_extra_inputs(d.get("extra_inputs"))
    _say(f"window: positions {d['window'][0]}:{d['window'][1]}; probes: {d['probes']}")
    _say("outputs:")
    for name, o in d["outputs"].items():
        band = o.get("band")
        form = f", banded: {band['width']} of {band['length']} positions" if band else ""
        target = f", targets: {describe_operations(o['targets'])}" if o.get("targets") else ""
        _say(f"  {name} {_shape_text(o['shape'] or [])} reduce={o['reduce']}{form}{target}")
    _say_stages(d["stages"])
    if d["fallback_reason"]:
        _say(f"naive fallback: {d['fallback_reason']}")
    if d["naive_flops"]:
        speed = d["naive_flops"] / max(d["rewritten_flops"], 1.0)
        _say(f"cost per sequence: naive {_flops(d['naive_flops'])}, rewritten {_flops(d['rewritten_flops'])} "
             f"(expected speedup {speed:.1f}x); peak memory {format_bytes(d['peak_bytes_per_sequence'])}")
    _say_streaming(d.get("streaming"))
    _say(f"opset {d['opset']}, IR version {d['ir_version']}")
    _say(f"source sha256: {d['source_sha256']}")


def cmd_inspect(args) -> int:
    from .convert import convert_model
    from .describe import describe_conversion, describe_converted

    props = _peek_props(args.model)
    if is_converted(props):
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


def cmd_convert(args) -> int:
    from .convert import convert_model
    from .results import check_output_path
    from .sidecar import save_conversion

    out = check_output_path(args.out)
    from .describe import conversion_summary

    conv = convert_model(args.model, **_model_kwargs(args))
    sidecar = save_conversion(conv, out)
    _say(f"converted {args.model} -> {out} (sidecar {sidecar})")
    for line in conversion_summary(conv):
        _say(f"  {line}")
    for name, shape in graph_output_shapes(conv.model).items():
        target = conv.targets.get(name)
        _say(f"  output {name} {_shape_text(shape)} reduce={conv.reductions[name]}"
             + (f" targets: {target.describe()}" if target is not None else ""))
    return 0


# --------------------------------------------------------------------------- run / ism / naive


def _seq_len_from_input(args) -> int | None:
    """``--seq-len``, or for a dynamic-length model the length of the sequences in INPUT."""
    from .sequences import length_from_sequences

    return length_from_sequences(args.model, args.input, seq_len=args.seq_len, input_name=args.input_name,
                                 layout=args.layout, alphabet=args.alphabet)


def _job_options(args):
    """The ``run``/``ism``/``naive`` options as a :class:`~yuzu_onnx.pipeline.JobOptions`."""
    from .pipeline import JobOptions

    return JobOptions(
        input=args.input, out=args.out, command=args.command, fmt=args.fmt, batch_size=args.batch_size,
        max_memory=args.max_memory, genome=args.genome, strand=args.strand, resume=args.resume,
        modisco=args.modisco, variants=args.variants, quiet=args.quiet, extra_inputs=tuple(args.extra_inputs),
    )


def _run_job(args, job, runner, model_sha256: str) -> int:
    from .pipeline import run_job

    for line in run_job(runner, job, model_path=args.model, model_sha256=model_sha256):
        _note(line, args.quiet)
    return 0


def cmd_run(args) -> int:
    from .partial_store import file_sha256
    from .pipeline import check_job_outputs, check_source
    from .runners import ConvertedRunner
    from .session import ISMSession

    job = _job_options(args)
    ray = args.engine == "ray"
    if _engine_options(args) is None:
        check_job_outputs(job)
    session = ISMSession(args.model, device="cpu" if ray else args.device, threads=1 if ray else args.threads)
    if args.check_source:
        check_source(args.check_source, args.model, session.info.source_sha256)
    if _engine_options(args) is not None:
        return _run_sharded(args, job, ConvertedRunner(session), file_sha256(args.model), args.model if ray else None)
    return _run_job(args, job, ConvertedRunner(session), file_sha256(args.model))


def cmd_ism(args) -> int:
    from .partial_store import file_sha256
    from .pipeline import check_job_outputs
    from .runners import ConvertedRunner
    from .session import ISMSession, cached_conversion

    job = _job_options(args)
    ray = args.engine == "ray"
    if _engine_options(args) is None:
        check_job_outputs(job)
    kwargs = {**_model_kwargs(args), "seq_len": _seq_len_from_input(args)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = cached_conversion(args.model, cache_dir=args.cache_dir, **kwargs)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    session = ISMSession(path, device="cpu" if ray else args.device, threads=1 if ray else args.threads)
    reason = session.info.fallback_reason
    if reason and kwargs.get("probes") != "naive" and not any("naive" in str(w.message) for w in caught):
        warnings.warn(f"falling back to exact naive ISM: {reason}", YuzuWarning, stacklevel=1)
    if _engine_options(args) is not None:
        return _run_sharded(args, job, ConvertedRunner(session), file_sha256(path), path if ray else None)
    return _run_job(args, job, ConvertedRunner(session), file_sha256(path))


def cmd_naive(args) -> int:
    from .importer import load_model
    from .pipeline import check_job_outputs
    from .runners import NaiveRunner
    from .targets import targeted_spec, targets_digest

    job = _job_options(args)
    if args.fmt != "shards":
        check_job_outputs(job)
    spec = load_model(args.model, seq_len=_seq_len_from_input(args), input_name=args.input_name,
                      layout=args.layout, alphabet=args.alphabet)
    spec, targets = targeted_spec(spec, args.select or None, args.aggregate or None)
    runner = NaiveRunner(spec, outputs=args.outputs, window=args.window, reductions=args.reduce,
                         device=args.device, threads=args.threads, targets=targets)
    # the run's identity (resume, shards): the model and the targets it computes
    identity = spec.source_sha256 + (f"+targets:{targets_digest(targets)}" if targets else "")
    if args.fmt == "shards":
        return _run_sharded(args, job, runner, identity, None)
    return _run_job(args, job, runner, identity)


# --------------------------------------------------------------------------- verify


def _probes_of(model) -> str:
    return read_converted_info(model).probes


def cmd_verify(args) -> int:
    from .convert import convert_model
    from .progress import plural
    from .verify import GAUSSIAN_MIN_PEARSON, TOLERANCE, random_sequences, verify_conversion

    if args.n < 1:
        raise InputError(f"-n must be at least 1, got {args.n}")
    from .extra_inputs import load_extra_files

    conv = convert_model(args.model, **_model_kwargs(args))
    X = random_sequences(args.n, conv.spec, seed=args.seed)
    probes = _probes_of(conv.model)
    extra = load_extra_files(args.extra_inputs) or None
    report = verify_conversion(conv, X, probes=probes, device=args.device, threads=args.threads, extra=extra,
                               seed=args.seed)
    gaussian = probes == "gaussian"
    method = "naive fallback" if conv.plan.fallback_reason else plural(len(conv.plan.stages), "probe stage")
    _say(f"verify {args.model}: {plural(args.n, 'random sequence')} (seed {args.seed}, one with N positions), "
         f"{method}")
    if conv.spec.extra_inputs:
        given = "as given with --extra-input" if extra else "random values (give real ones with --extra-input)"
        _say(f"  extra inputs {', '.join(e.name for e in conv.spec.extra_inputs)}: {given}")
    _say(f"  {'output':<20} {'max abs error':>14} {'scale':>12} {'relative':>12} {'pearson r':>12}")
    for name, r in report.items():
        flag = "ok" if r["ok"] else "FAIL"
        _say(f"  {name:<20} {r['max_abs_error']:>14.3e} {r['scale']:>12.4g} {r['relative_error']:>12.3e} "
             f"{r['pearson_r']:>12.8f}  {flag}")
    if not all(r["ok"] for r in report.values()):
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


# --------------------------------------------------------------------------- variants


def cmd_variants(args) -> int:
    from .shard_jobs import write_variants_from_results

    rows = write_variants_from_results(args.result, args.out)
    _say(f"variant table: {rows} rows -> {args.out}")
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    from . import demo

    model, seqs, sites_path = demo.find_demo_files()
    folder = demo.demo_folder(args.out)
    conv, ism_path = demo.convert_demo(model, folder)
    _note(f"converted {model} -> {ism_path} (expected speedup {conv.plan.expected_speedup:.1f}x over naive ISM)",
          args.quiet)
    run = demo.run_demo(ism_path, model, seqs, folder, quiet=args.quiet)
    _say(f"results: {run.out}")
    _say(f"ISM of output {run.output!r}: the most important position of each sequence "
         "(largest mean drop of the output when mutated)")
    for hit in demo.important_positions(run, demo.read_sites(sites_path)):
        _say(f"  {hit.name}: position {hit.position} (mean drop {hit.drop:.3f})"
             + (f"  [{hit.note}]" if hit.note else ""))
    fig = demo.plot_demo(run, folder)
    if fig is not None:
        _say(f"plot of {run.names[0]}: {fig}")
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
    "variants": cmd_variants,
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


def _resume_hint(args) -> str:
    """What an interrupted ``run``/``ism``/``naive`` left: the partial store's real path."""
    from .partial_store import partial_path

    if args.command not in ("run", "ism", "naive"):
        return ""
    folder = partial_path(Path(args.out))
    if not folder.is_dir():
        return ""
    return f"; finished sequences are kept in {str(folder)!r}: rerun the same command with --resume to continue"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    with warnings.catch_warnings(), interface("cli"):  # option names in messages as --seq-len
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
            sys.stderr.write(f"{PROG}: interrupted{_resume_hint(args)}\n")
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
