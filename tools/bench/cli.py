"""The command line of the benchmark (``python tools/bench.py`` or ``python -m tools.bench``).

Parses the options, checks that the packages the run needs are installed (before any
work), runs the benchmark or the profile, and writes the results.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .benchmark import BenchConfig, every_model_failed, failed_measurements, run_benchmark
from .environment import REPO_ROOT
from .errors import BenchError
from .isolation import run_worker_files
from .models import (
    BENCH_CACHE_ENV,
    MODELS,
    QUICK_LENGTH,
    QUICK_MODELS,
    BenchModel,
    default_cache_dir,
    models_without_export,
    resolve_models,
)
from .peers import PEER_PACKAGES, PEERS
from .profile import profile_markdown, run_profile
from .records import merge_results
from .report import RESULTS_JSON, markdown_report, write_results

PROG = "tools/bench.py"
DEFAULT_OUT = REPO_ROOT / "tools" / "bench_results"
TORCH_INSTALL = "pip install torch==2.13.0 (or pip install -e '.[torch]')"


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark yuzu-onnx against naive ISM on ONNX Runtime (and peers with --peers). "
                    "Named models are built and exported with PyTorch; .onnx files need no PyTorch.",
    )
    parser.add_argument("--models", help=f"comma-separated: {', '.join(MODELS)}, or .onnx paths; NAME:l2 or "
                        "NAME:KEY=VALUE+KEY=VALUE converts NAME with those convert options (e.g. deepsea:reduce=l2) "
                        f"(default: all; with --quick: {', '.join(QUICK_MODELS)} at L={QUICK_LENGTH})")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every method (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up (default 3; 1 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="sequences for the throughput run (default 32; 4 with --quick)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--peers", action="store_true", help="also run tangermeme and the original Yuzu when installed")
    parser.add_argument("--gaussian", action="store_true",
                        help="also run --probes gaussian (the published approximate method; sequential models only)")
    parser.add_argument("--first-conv-compare", action="store_true",
                        help="also time the model converted with --first-conv shortcut and with --first-conv probes")
    parser.add_argument("--forms", action="store_true",
                        help="also time --output-form banded and --reduce l2 (output memory and file size reported)")
    parser.add_argument("--peer", action="append", choices=sorted(PEERS), help="run only these peers (repeatable)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (default tools/bench_results)")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {', '.join(QUICK_MODELS)} at L={QUICK_LENGTH}")
    parser.add_argument("--window", help="START:END: mutate only these positions (all models)")
    parser.add_argument("--naive-sample", type=int, metavar="K",
                        help="time naive ISM on K positions spread over the window and extrapolate to the whole "
                        "window (0: every position; default: the model's own, e.g. 32 for chrombpnet, "
                        "every position for the small models)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sequences")
    parser.add_argument("--model-seed", type=int, default=0, help="seed of the PyTorch weights (as the export)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed runs per measurement (default 120; 20 with --quick); at least one run")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a measurement is killed")
    parser.add_argument("--peer-timeout", type=float, default=900.0, help="the same for a peer (default 900)")
    parser.add_argument("--max-memory", help="memory budget of a batch run, like 12G (default half the RAM); each "
                        "measurement's address space is limited to 1.5 times this (CPU only)")
    parser.add_argument("--cache-dir", help=f"where exports are cached (default ${BENCH_CACHE_ENV} or "
                        "~/.cache/yuzu-onnx/bench)")
    parser.add_argument("--reuse-exports", action="append", default=[],
                        help="a folder of existing exports to reuse when they match (read-only; repeatable)")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (no per-method peak RSS; for debugging)")
    parser.add_argument("--work-dir", help="keep intermediate files here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep intermediate files")
    parser.add_argument("--update", action="store_true",
                        help="merge into the existing results in --out: the models run now are replaced, except "
                        "their peer and Gaussian records when those were not run again")
    parser.add_argument("--profile", metavar="MODEL", help="profile one converted model instead of benchmarking")
    parser.add_argument("--render", action="store_true",
                        help="only write the Markdown again from the JSON in --out (no measurements)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def parse_window(text: str | None) -> tuple[int, int] | None:
    """``"START:END"`` as a tuple (None for None), read by the library's window parser; the
    bounds are checked against each model's length when it is converted."""
    from yuzu_onnx.errors import InputError
    from yuzu_onnx.window import parse_window as parse_library_window

    if not text:
        return None
    unbounded = sys.maxsize
    try:
        start, end = parse_library_window(text, unbounded)
    except InputError as exc:
        raise BenchError(f"--window: {exc}") from None
    if end == unbounded:
        raise BenchError(f"--window needs both START and END, got {text!r}")
    return start, end


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The benchmark's options from the parsed command line; :class:`BenchError` for a bad one."""
    from yuzu_onnx.session import parse_memory

    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else (
        list(QUICK_MODELS) if args.quick else list(MODELS))
    if not names:
        raise BenchError(f"--models names no model: {args.models!r}")
    if args.threads < 1:
        raise BenchError(f"--threads must be at least 1, got {args.threads}")
    config = BenchConfig(
        models=resolve_models(names, quick=args.quick, window=parse_window(args.window)),
        threads=args.threads,
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else 3),
        batch=args.batch if args.batch is not None else (4 if args.quick else 32),
        device=args.device,
        peers=bool(args.peers or args.peer),
        gaussian=args.gaussian,
        first_conv_compare=args.first_conv_compare,
        forms=args.forms,
        peer_names=tuple(args.peer) if args.peer else tuple(PEERS),
        out=Path(args.out),
        seed=args.seed,
        model_seed=args.model_seed,
        budget_s=args.budget if args.budget is not None else (20.0 if args.quick else 120.0),
        timeout_s=args.timeout,
        peer_timeout_s=args.peer_timeout,
        max_memory=parse_memory(args.max_memory) if args.max_memory else 0,
        cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
        reuse_dirs=tuple(args.reuse_exports),
        isolate=not args.in_process,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        keep=args.keep,
        quick=args.quick,
        naive_sample=args.naive_sample,
    )
    if config.repeats < 1 or config.batch < 1:
        raise BenchError("--repeats and --batch must be at least 1")
    if config.naive_sample is not None and config.naive_sample < 0:
        raise BenchError(f"--naive-sample must be 0 (every position) or a number of positions, got {args.naive_sample}")
    return config


def torch_importable() -> bool:
    """Whether ``import torch`` works (a broken install counts as missing)."""
    try:
        importlib.import_module("torch")
    except Exception:
        return False
    return True


def missing_requirements(models: Sequence[BenchModel], *, cache_dir: Path, reuse_dirs: Sequence[str],
                         peers: bool = False, explicit_peers: Sequence[str] = ()) -> list[str]:
    """What must be installed before ``models`` can be benchmarked, one message per package.

    PyTorch builds and exports the named models that have no export on disk yet and runs
    the peers (``peers``); a peer asked for by name (``--peer``) also needs its own package.
    """
    problems = []
    unbuilt = models_without_export(models, cache_dir=cache_dir, reuse_dirs=reuse_dirs)
    if (unbuilt or peers) and not torch_importable():
        uses = [f"builds and exports {', '.join(m.name for m in unbuilt)} (or give .onnx files to --models)"
                ] if unbuilt else []
        uses += ["runs the peers"] if peers else []
        problems.append(f"needs PyTorch: {TORCH_INSTALL}; it {' and '.join(uses)}")
    for name in dict.fromkeys(explicit_peers):
        module, install = PEER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            problems.append(f"peer {name} needs {module}: {install}")
    return problems


def _say_error(text: str) -> None:
    print(f"{PROG}: error: {text}", file=sys.stderr)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _render(out: Path) -> int:
    """``--render``: the Markdown again from the JSON."""
    path = out / RESULTS_JSON
    if not path.is_file():
        _say_error(f"no {path} to render")
        return 2
    _, md_path = write_results(json.loads(path.read_text()), out)
    print(f"wrote {md_path}", file=sys.stderr)
    return 0


def _profile(config: BenchConfig, model: BenchModel) -> int:
    """``--profile MODEL``: profile one converted model, write ``profile_<model>.json`` and ``.md``."""
    profile = run_profile(config, model, log=_progress)
    config.out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)
    (config.out / f"profile_{stem}.json").write_text(json.dumps(profile, indent=1, default=str) + "\n")
    text = profile_markdown(profile)
    (config.out / f"profile_{stem}.md").write_text(text)
    print(text)
    return 0


def _benchmark(config: BenchConfig, *, update: bool) -> int:
    """Run the benchmark and write the results, unless every model failed; 1 if a measurement failed."""
    results = run_benchmark(config, log=_progress)
    failed = failed_measurements(results)
    if every_model_failed(results):
        _say_error(f"every model failed, no results written: {', '.join(failed) or 'no models'}")
        return 1
    if update and (config.out / RESULTS_JSON).is_file():
        results = merge_results(json.loads((config.out / RESULTS_JSON).read_text()), results)
    json_path, md_path = write_results(results, config.out)
    print(markdown_report(results))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    if failed:
        _say_error(f"measurements failed: {', '.join(failed)}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (2 for a usage error or a missing package, 1 if a model failed)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker:
        return run_worker_files(args.worker, args.result)
    if args.render:
        return _render(Path(args.out))
    try:
        config = config_from_args(args)
        if args.profile:
            (model,) = resolve_models([args.profile], quick=args.quick, window=parse_window(args.window))
            problems = missing_requirements([model], cache_dir=config.cache_dir, reuse_dirs=config.reuse_dirs)
        else:
            problems = missing_requirements(config.models, cache_dir=config.cache_dir, reuse_dirs=config.reuse_dirs,
                                            peers=config.peers, explicit_peers=args.peer or ())
        if problems:
            raise BenchError("; ".join(problems))
        return _profile(config, model) if args.profile else _benchmark(config, update=args.update)
    except BenchError as exc:
        _say_error(str(exc))
        return 2
