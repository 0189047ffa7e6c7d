"""Benchmark yuzu-onnx against naive ISM, and optionally against peers, on classic models.

For every model the benchmark measures, on the same seeded random one-hot sequences:

* ``naive``: the exact oracle (:func:`yuzu_onnx.naive_ism`) on ONNX Runtime, same threads;
* ``convert``: :func:`yuzu_onnx.convert_model` (its time is reported on its own);
* ``yuzu``: the converted model on one sequence (median of the repeats after a warm-up run);
* ``yuzu_batch``: the converted model on a batch (sequences per second);
* peers with ``--peers``, when installed: tangermeme's ``saturation_mutagenesis`` (plain
  PyTorch ISM, ``fast=False``, and its fastISM path, ``fast=True``) and the original Yuzu
  (``yuzu-ism``: ``precompute`` + ``yuzu_ism``), on the PyTorch module the ONNX file was
  exported from (``tools/torch_models.py``, same seed).

Every measurement runs in its own child process (``python -m yuzu_onnx.bench --worker``),
so the peak RSS of a method is its own and a method that crashes or runs out of memory is
recorded instead of ending the benchmark. A peer that raises or returns NaN is a result,
never an abort.

Results: ``bench_results.json`` (one record per model and method) and
``bench_results.md`` (tables) in ``--out``. ``--profile MODEL`` instead profiles one
converted model with ONNX Runtime's profiler and aggregates kernel time by the emitted
node-name prefixes (``yuzu/<branch>/s<k>/`` = stage ``k``, re-pack, decode, tail, and the
reference pass), to show where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = "yuzu-onnx-bench/1"
RESULTS_JSON = "bench_results.json"
RESULTS_MD = "bench_results.md"
REPO_ROOT = Path(__file__).resolve().parent.parent
TORCH_MODELS_ENV = "YUZU_TORCH_MODELS"
BENCH_CACHE_ENV = "YUZU_BENCH_CACHE"

Peer = Callable[[dict], dict]


class BenchError(Exception):
    """A benchmark step cannot run (missing package, unsupported model, bad option)."""


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class BenchModel:
    """A model to benchmark: a ``tools/torch_models.py`` architecture, or an ONNX file.

    ``cache_name`` is the file name of the export in the cache folders; ``window`` limits
    the mutated positions (``(start, end)``), for models where naive ISM over every
    position would take hours.
    """

    name: str
    arch: str | None = None
    seq_len: int | None = None
    window: tuple[int, int] | None = None
    cache_name: str | None = None
    path: str | None = None
    options: Mapping[str, int] = field(default_factory=dict)
    note: str = ""


MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel("toynet", "toynet", 1000, cache_name="toynet_torchscript.onnx"),
        BenchModel("basset600", "basset", 600, cache_name="basset_torchscript.onnx"),
        BenchModel("basset1000", "basset", 1000, cache_name="basset1000.onnx"),
        BenchModel("deepsea", "deepsea", 1000, cache_name="deepsea_torchscript.onnx"),
        BenchModel("factorized_basset", "factorized_basset", 600, cache_name="factorized_basset_torchscript.onnx"),
        BenchModel("bpnet4", "bpnet4", 1000, cache_name="bpnet4_torchscript.onnx"),
        BenchModel("bpnet9", "bpnet9", 2114, cache_name="bpnet9_torchscript.onnx",
                   note="profile cropped to the central 1000 positions, plus counts"),
        BenchModel("spliceai10k", "spliceai10k", 11000, window=(5400, 5600), cache_name="spliceai10k_torchscript.onnx",
                   note="ISM of the 200 central positions only (--window), naive included"),
        BenchModel("protein_cnn", "protein_cnn", 500, cache_name="protein_cnn_torchscript.onnx",
                   note="20-letter protein alphabet; first convolution 20→128, width 15"),
    )
}

QUICK_LENGTH = 200
QUICK_MODELS = ("toynet", "bpnet4")


def quick_model(model: BenchModel) -> BenchModel:
    """The same architecture at ``QUICK_LENGTH`` positions (for smoke tests)."""
    if model.arch is None:
        return model
    return BenchModel(f"{model.name}@{QUICK_LENGTH}", model.arch, QUICK_LENGTH,
                      cache_name=f"{model.arch}_L{QUICK_LENGTH}.onnx", note="reduced length (--quick)")


def resolve_models(names: Sequence[str], *, quick: bool = False, window: tuple[int, int] | None = None) -> list[BenchModel]:
    """Bench models from names (see :data:`MODELS`) or paths of ``.onnx`` files."""
    models = []
    for name in names:
        if name.endswith(".onnx") or os.sep in name:
            path = Path(name)
            if not path.is_file():
                raise BenchError(f"model file {name!r} does not exist")
            model = BenchModel(path.stem, path=str(path.resolve()))
        elif name in MODELS:
            model = quick_model(MODELS[name]) if quick else MODELS[name]
        else:
            raise BenchError(f"unknown model {name!r}; choose from {', '.join(MODELS)} or give an .onnx path")
        if window is not None:
            model = BenchModel(model.name, model.arch, model.seq_len, window, model.cache_name, model.path,
                               model.options, model.note)
        models.append(model)
    return models


def find_torch_models():
    """Import ``tools/torch_models.py`` (the seeded PyTorch architectures); needs torch."""
    candidates = [os.environ.get(TORCH_MODELS_ENV), REPO_ROOT / "tools" / "torch_models.py",
                  Path.cwd() / "tools" / "torch_models.py"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            spec = importlib.util.spec_from_file_location("yuzu_bench_torch_models", candidate)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except SystemExit as exc:  # the tool exits with a message when torch is missing
                raise BenchError(str(exc)) from None
            return module
    raise BenchError("tools/torch_models.py was not found: run from a yuzu-onnx source checkout "
                     f"or set {TORCH_MODELS_ENV} to its path")


def default_cache_dir() -> Path:
    return Path(os.environ.get(BENCH_CACHE_ENV, Path.home() / ".cache" / "yuzu-onnx" / "bench"))


# --------------------------------------------------------------------------- helpers


def rss_mb() -> float:
    """Current resident set size of this process, in MB (from /proc; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def phase(text: str) -> None:
    """A progress line in the worker's log (its tail explains a timeout or a crash)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def timed_runs(fn: Callable[[], object], *, repeats: int, budget_s: float, warmup: bool = True) -> dict:
    """Time ``fn``: a warm-up run, then up to ``repeats`` runs within ``budget_s`` seconds.

    At least one timed run always happens; when the warm-up alone exceeds the budget, the
    warm-up is the only run (``runs_s`` holds it, ``warmup_s`` is None). Returns the
    median, the runs, and the last result.
    """
    first = time.perf_counter()
    result = fn()
    first_s = time.perf_counter() - first
    runs: list[float] = []
    if warmup and first_s < budget_s:
        n = max(1, min(repeats, int(budget_s // max(first_s, 1e-6))))
        for _ in range(n):
            t0 = time.perf_counter()
            result = fn()
            runs.append(time.perf_counter() - t0)
        warmup_s = first_s
    else:
        runs, warmup_s = [first_s], None
    return {"median_s": float(np.median(runs)), "runs_s": runs, "warmup_s": warmup_s, "result": result}


def random_onehot(n: int, seq_len: int, alphabet_size: int, layout: str, *, seed: int) -> np.ndarray:
    """Seeded random one-hot sequences (no unknown bases), in the model's layout."""
    rng = np.random.default_rng(seed)
    x = np.eye(alphabet_size, dtype=np.float32)[rng.integers(0, alphabet_size, (n, seq_len))]
    return x if layout == "nlc" else np.ascontiguousarray(x.transpose(0, 2, 1))


def relative_error(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray],
                   refs: Mapping[str, np.ndarray] | None = None) -> dict:
    """Max |got − want| per output, relative to ``max(max|reference output|, max|want|)``."""
    per_output = {}
    for name, w in want.items():
        if name not in got:
            raise BenchError(f"output {name!r} is missing (got {', '.join(got)})")
        g = np.asarray(got[name])
        if g.shape != w.shape:
            raise BenchError(f"output {name!r} has shape {g.shape}, the oracle {w.shape}")
        finite = bool(np.all(np.isfinite(g)))
        err = float(np.max(np.abs(g.astype(np.float64) - w))) if w.size else 0.0
        ref_scale = float(np.max(np.abs(refs[name]))) if refs is not None and name in refs and refs[name].size else 0.0
        scale = max(ref_scale, float(np.max(np.abs(w))) if w.size else 0.0)
        rel = err / scale if scale > 0 else err
        per_output[name] = {"max_abs_error": err if finite else None, "scale": scale,
                            "relative_error": rel if finite else None, "finite": finite}
    rels = [v["relative_error"] for v in per_output.values()]
    worst = None if any(r is None for r in rels) else max(rels, default=0.0)
    return {"relative_error": worst, "per_output": per_output}


def l2_reduce(ism: Mapping[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """``{"all": norm}``: the Euclidean norm of the change of all outputs, ``(N, A, Lw)`` (ncl layout).

    The convention of the original Yuzu (one norm over every output value).
    """
    total = 0.0
    for value in ism.values():
        v = value if layout == "ncl" else np.swapaxes(value, 1, 2)
        total = total + np.sum(v.reshape(*v.shape[:3], -1).astype(np.float64) ** 2, axis=3)
    return {"all": np.sqrt(total)}


def git_state(root: Path = REPO_ROOT) -> dict:
    """Short commit hash and the number of uncommitted changes of the source checkout."""
    def git(*args) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("log", "-1", "--format=%h")
    status = git("status", "--porcelain")
    changed = [line[3:] for line in status.splitlines()] if status else []
    return {"commit": commit, "uncommitted_changes": len(changed), "changed_files": changed[:50]}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    import onnxruntime as ort

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        total = None
    torch_version = None
    if importlib.util.find_spec("torch") is not None:
        from importlib.metadata import PackageNotFoundError, version

        with contextlib.suppress(PackageNotFoundError):
            torch_version = version("torch")
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "memory_gib": round(total, 1) if total else None,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "platform": platform.platform(),
        "load_average_start": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------- workers
#
# A worker runs in a child process: it reads a job (a dict), does one measurement and
# returns a JSON-able dict; arrays go to ``job["arrays_out"]`` (an .npz).


def _load_x(job: dict, n: int | None = None) -> np.ndarray:
    x = np.load(job["x_path"])
    return x if n is None else x[:n]


def _save_arrays(job: dict, arrays: Mapping[str, np.ndarray], refs: Mapping[str, np.ndarray] | None = None) -> None:
    if not job.get("arrays_out"):
        return
    data = {f"ism/{k}": np.asarray(v) for k, v in arrays.items()}
    if refs is not None:
        data.update({f"ref/{k}": np.asarray(v) for k, v in refs.items()})
    np.savez(job["arrays_out"], **data)


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(ism arrays, reference outputs)`` written by a worker."""
    with np.load(path) as data:
        ism = {k[4:]: data[k] for k in data.files if k.startswith("ism/")}
        refs = {k[4:]: data[k] for k in data.files if k.startswith("ref/")}
    return ism, refs


def _window(job: dict):
    w = job["model"].get("window")
    return tuple(w) if w else None


def worker_prepare(job: dict) -> dict:
    """Find or export the model, check the export against PyTorch, write the sequences."""
    from .importer import load_model

    model = job["model"]
    notes: list[str] = []
    if model.get("path"):
        path = Path(model["path"])
        verified = None
    else:
        path, verified, notes = _prepare_export(job)
    spec = load_model(path, seq_len=model.get("seq_len"))
    x = random_onehot(job["n_sequences"], spec.seq_len, spec.alphabet_size, spec.layout, seed=job["seed"])
    np.save(job["x_path"], x)
    return {
        "model_path": str(path),
        "layout": spec.layout,
        "alphabet_size": spec.alphabet_size,
        "seq_len": spec.seq_len,
        "outputs": list(spec.output_names),
        "model_mb": round(path.stat().st_size / 1e6, 2),
        "verified_against_torch": verified,
        "notes": notes,
    }


def _prepare_export(job: dict) -> tuple[Path, bool | None, list[str]]:
    """The model's ONNX export: a reused or cached file that matches PyTorch, or a new export."""
    model = job["model"]
    cache = Path(job["cache_dir"])
    candidates = [Path(d) / model["cache_name"] for d in job.get("reuse_dirs", [])] + [cache / model["cache_name"]]
    notes = []
    try:
        tm = find_torch_models()
    except BenchError as exc:
        for candidate in candidates:
            if candidate.is_file():
                return candidate, None, [f"export not checked against PyTorch ({exc})"]
        raise BenchError(f"no cached export of {model['name']} ({model['cache_name']}) and cannot build it: {exc}") from None
    module = tm.build(model["arch"], seed=job["model_seed"], seq_len=model["seq_len"], **model.get("options", {}))
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            tm.verify_export(module, candidate, seq_len=model["seq_len"])
            return candidate, True, notes
        except Exception as exc:  # a stale or foreign file: never overwrite it, export anew
            notes.append(f"ignored {candidate}: does not match the seeded PyTorch model ({str(exc)[:200]})")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / model["cache_name"]
    tmp = cache / f".{model['cache_name']}.{os.getpid()}.tmp.onnx"
    try:
        tm.export(module, tmp, seq_len=model["seq_len"], exporter="torchscript")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    notes.append(f"exported to {target}")
    return target, True, notes


def worker_naive(job: dict) -> dict:
    """The oracle on ONNX Runtime: naive ISM of one sequence, and the reference outputs."""
    from .importer import load_model
    from .oracle import naive_ism, reference_outputs

    spec = load_model(job["model_path"], seq_len=job.get("seq_len"))
    x = _load_x(job, 1)
    device = job["device"]
    phase("naive ISM runs")
    rss_before = rss_mb()
    timing = timed_runs(lambda: naive_ism(spec, x, window=_window(job), device=device),
                        repeats=job["repeats"], budget_s=job["budget_s"])
    refs = reference_outputs(spec, x, device=device)
    _save_arrays(job, timing["result"], refs)
    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
            "rss_before_mb": rss_before, "sequences": 1}


def worker_convert(job: dict) -> dict:
    """Convert the model; save it for the run workers; report the plan."""
    from .convert import convert_model, save_model

    rss_before = rss_mb()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        phase("converting")
        t0 = time.perf_counter()
        conv = convert_model(job["model_path"], seq_len=job.get("seq_len"), window=_window(job),
                             probes=job.get("probes", "spaced"), first_conv=job.get("first_conv", "auto"))
        convert_s = time.perf_counter() - t0
    save_model(conv.model, job["converted_path"])
    plan = conv.plan
    stages = [{"spacing": s.spacing, "n_probes": s.n_probes, "receptive_field": s.receptive_field,
               "nodes": len(s.nodes), "gflop_per_probe": s.flops_per_probe / 1e9} for s in plan.stages]
    return {
        "convert_s": convert_s,
        "rss_before_mb": rss_before,
        "converted_mb": round(Path(job["converted_path"]).stat().st_size / 1e6, 2),
        "plan": {
            "naive_gflop": plan.naive_flops / 1e9,
            "rewritten_gflop": plan.rewritten_flops / 1e9,
            "bound_gflop": plan.bound_flops / 1e9,
            "expected_speedup": plan.expected_speedup,
            "bound_speedup": plan.bound_speedup,
            "peak_bytes_per_sequence": float(plan.peak_bytes_per_sequence),
            "spacings": [s.spacing for s in plan.stages],
            "stages": stages,
            "tail_chunk": plan.tail_chunk,
            "window": list(plan.window),
            "fallback_reason": plan.fallback_reason,
            "first_conv_shortcut": [conv.spec.model.graph.node[c.node].name or c.output for c in plan.input_convs],
        },
        "notes": [str(w.message) for w in caught],
    }


def worker_yuzu(job: dict) -> dict:
    """The converted model on one sequence: warm-up, then the median of the repeats."""
    from .session import ISMSession

    rss_before = rss_mb()
    session = ISMSession(job["converted_path"], device=job["device"], threads=job["threads"])
    x = _load_x(job, 1)
    phase(f"runs on one sequence ({session.provider})")
    timing = timed_runs(lambda: session.run(x, batch_size=1), repeats=job["repeats"], budget_s=job["budget_s"])
    _save_arrays(job, timing["result"])
    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
            "rss_before_mb": rss_before, "provider": session.provider, "sequences": 1}


def worker_yuzu_batch(job: dict) -> dict:
    """The converted model on a batch of ``job["batch"]`` sequences: sequences per second.

    A batch that runs out of memory is halved, with a fresh session, until it fits
    (recorded in the notes).
    """
    import gc

    from .errors import InputError
    from .session import ISMSession

    rss_before = rss_mb()
    batch = job["batch"]
    x = _load_x(job, batch)
    notes = []
    while True:
        session = ISMSession(job["converted_path"], device=job["device"], threads=job["threads"])
        try:
            phase(f"warm-up on one sequence, then runs on a batch of {batch} ({session.provider})")
            session.run(x[:1], batch_size=1)  # a warm-up batch could take minutes
            timing = timed_runs(lambda s=session, b=batch: s.run(x[:b], batch_size=b), repeats=job["repeats"],
                                budget_s=job["budget_s"], warmup=False)
            break
        except (InputError, MemoryError) as exc:
            if (isinstance(exc, InputError) and "out of memory" not in str(exc)) or batch == 1:
                raise
            notes.append(f"a batch of {batch} ran out of memory (limit {_address_limit(job) / 2**30:.1f} GiB of "
                         "address space); halved")
            batch //= 2
            del session
            gc.collect()
    return {"batch_s": timing["median_s"], "runs_s": timing["runs_s"], "batch": batch,
            "sequences_per_s": batch / timing["median_s"], "time_per_sequence_s": timing["median_s"] / batch,
            "rss_before_mb": rss_before, "provider": session.provider, "sequences": batch, "notes": notes}


# --- peers ---------------------------------------------------------------------


def _torch_setup(job: dict):
    """torch with the benchmark's thread count, and the seeded module of the export."""
    try:
        import torch
    except ImportError:
        raise BenchError("torch is not installed (pip install torch)") from None
    torch.set_num_threads(job["threads"])
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)
    model = job["model"]
    if not model.get("arch"):
        raise BenchError("peers need the PyTorch module; this model is an ONNX file only")
    tm = find_torch_models()
    phase("building the PyTorch model")
    module = tm.build(model["arch"], seed=job["model_seed"], seq_len=model["seq_len"], **model.get("options", {}))
    device = "cuda" if job["device"] == "cuda" else "cpu"
    return torch, module, device


def _tangermeme(job: dict, *, fast: bool) -> dict:
    try:
        from tangermeme import saturation_mutagenesis as sm
    except ImportError:
        raise BenchError("tangermeme is not installed (pip install tangermeme)") from None
    torch, module, device = _torch_setup(job)
    saturation_mutagenesis = sm.saturation_mutagenesis
    used_fast: list[bool] = []
    notes = []
    if fast and hasattr(sm, "_fast_path") and hasattr(sm, "_FAST_MIN_SECONDS"):
        # tangermeme only tries fastISM on jobs that would take over 30 s with fast=False;
        # the benchmark always tries it, and records whether it was used
        sm._FAST_MIN_SECONDS = 0.0
        decide = sm._fast_path

        def recording_fast_path(*args, **kwargs):
            out = decide(*args, **kwargs)
            used_fast.append(out[0] is not None)
            return out

        sm._fast_path = recording_fast_path
        notes.append("fastISM attempted on every job (tangermeme's 30 s minimum lowered to 0); each call "
                     "captures and verifies the model again, and that time is included")
    x = torch.from_numpy(_load_x(job, 1))
    start, end = _window(job) or (0, x.shape[-1])
    batch_size = job.get("peer_batch_size", 32)

    def run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y0, y_hat = saturation_mutagenesis(module, x, start=start, end=end, batch_size=batch_size,
                                               raw_outputs=True, fast=fast, device=device)
        return y0, y_hat, [str(w.message).splitlines()[0] for w in caught]

    phase(f"saturation_mutagenesis(fast={fast})")
    timing = timed_runs(run, repeats=job["repeats"], budget_s=job["budget_s"])
    y0, y_hat, messages = timing["result"]
    names = job["outputs"]
    y0s = [y0] if isinstance(y0, torch.Tensor) else list(y0)
    y_hats = [y_hat] if isinstance(y_hat, torch.Tensor) else list(y_hat)
    arrays = {}
    for name, ref, mutants in zip(names, y0s, y_hats, strict=True):
        ref = ref.float().cpu().numpy()
        arrays[name] = mutants.float().cpu().numpy() - ref[:, None, None]
    _save_arrays(job, arrays)
    from importlib.metadata import version

    if used_fast:
        notes.append("fastISM path used" if all(used_fast) else "fastISM path NOT used: fell back to fast=False")
    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
            "compared_as": "none", "sequences": 1, "peer_batch_size": batch_size, "fast_path_used": all(used_fast)
            if used_fast else None, "package": f"tangermeme {version('tangermeme')}",
            "notes": notes + sorted(set(messages))}


def peer_tangermeme(job: dict) -> dict:
    """tangermeme ``saturation_mutagenesis(fast=False)``: every mutant through PyTorch."""
    return _tangermeme(job, fast=False)


def peer_tangermeme_fast(job: dict) -> dict:
    """tangermeme ``saturation_mutagenesis(fast=True)``: its fastISM path (falls back with a warning)."""
    return _tangermeme(job, fast=True)


def yuzu_sequential(module, seq_len: int, torch):
    """The module as the flat ``nn.Sequential`` the original Yuzu needs.

    The original Yuzu walks ``model.children()`` in order and decodes a dense layer with
    its own position-major ``Flatten``; a channel-major flatten (``x.view(N, -1)``) is
    matched by permuting the first dense layer's columns. Raises :class:`BenchError` for
    models that are not a convolutional body followed by a dense head (residual adds,
    several outputs).
    """
    from torch import nn
    from yuzu.models import Flatten

    body = getattr(module, "body", None)
    head = getattr(module, "head", None)
    if head is None and isinstance(getattr(module, "fc", None), nn.Linear):
        head = nn.Sequential(module.fc)
    if not isinstance(body, nn.Sequential) or not isinstance(head, nn.Sequential):
        raise BenchError(f"the original Yuzu needs a sequential model (layers applied in order); "
                         f"{type(module).__name__} has residual connections or several outputs")
    layers = [m for m in body if not isinstance(m, nn.Flatten)]
    x = torch.zeros(1, 4, seq_len)
    x[0, 0] = 1
    with torch.no_grad():
        features = nn.Sequential(*layers)(x)
    channels = features.shape[1]
    head_layers = list(head)
    first = head_layers[0]
    if not isinstance(first, nn.Linear):
        raise BenchError(f"the dense head starts with {type(first).__name__}, not Linear")
    dense = nn.Linear(first.in_features, first.out_features)
    with torch.no_grad():
        w = first.weight.reshape(first.out_features, channels, -1).permute(0, 2, 1)
        dense.weight.copy_(w.reshape(first.out_features, -1))
        dense.bias.copy_(first.bias)
    seq = nn.Sequential(*layers, Flatten(), dense, *head_layers[1:]).eval()
    with torch.no_grad():
        want, got = module(x), seq(x)
    if not torch.allclose(want, got, atol=1e-5 * max(float(want.abs().max()), 1e-6)):
        raise BenchError("the sequential copy of the model does not reproduce its output")
    return seq


def peer_yuzu_original(job: dict) -> dict:
    """The original Yuzu (``yuzu-ism``): ``precompute`` (timed apart) then ``yuzu_ism``.

    Yuzu reports the Euclidean norm of the output change (``l2``); the oracle is reduced
    the same way for the error.
    """
    try:
        import yuzu
    except ImportError:
        raise BenchError("the original Yuzu is not installed (pip install yuzu-ism)") from None
    torch, module, device = _torch_setup(job)
    if _window(job):
        raise BenchError("the original Yuzu mutates every position; it has no window option")
    seq = yuzu_sequential(module, job["model"]["seq_len"], torch)
    alpha = job.get("yuzu_alpha", 1.5)
    phase(f"yuzu.precompute (alpha={alpha})")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = yuzu.precompute(seq, job["model"]["seq_len"], n_choices=4, alpha=alpha, device=device, random_state=0)
    precompute_s = time.perf_counter() - t0
    x = _load_x(job, 1)
    phase(f"yuzu.yuzu_ism runs (precompute took {precompute_s:.1f} s)")
    timing = timed_runs(lambda: yuzu.yuzu_ism(seq, x, pre, device=device), repeats=job["repeats"],
                        budget_s=job["budget_s"])
    _save_arrays(job, {"all": np.asarray(timing["result"], dtype=np.float32)})
    from importlib.metadata import version

    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
            "convert_s": precompute_s, "compared_as": "l2", "sequences": 1, "alpha": alpha,
            "package": f"yuzu-ism {version('yuzu-ism')}",
            "notes": [f"precompute (alpha={alpha}, includes one naive ISM run) timed as convert_s; "
                      "the model is a flat nn.Sequential copy with Yuzu's Flatten"]}


PEERS: dict[str, Peer] = {
    "tangermeme": peer_tangermeme,
    "tangermeme_fast": peer_tangermeme_fast,
    "yuzu_original": peer_yuzu_original,
}

WORKERS: dict[str, Callable[[dict], dict]] = {
    "prepare": worker_prepare,
    "naive": worker_naive,
    "convert": worker_convert,
    "yuzu": worker_yuzu,
    "yuzu_batch": worker_yuzu_batch,
}


def run_worker(job: dict) -> dict:
    """Run one job in this process: ``{"ok": ..., "error": ..., "peak_rss_mb": ..., ...}``."""
    method = job["method"]
    limit = _address_limit(job)
    previous = resource.getrlimit(resource.RLIMIT_AS)
    if limit and job.get("device") != "cuda":  # CUDA reserves far more address space than it uses
        # only the soft limit, restored below: an in-process run must not leave the caller
        # (and every process it starts later, e.g. a browser) with a lowered address space
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (min(limit, previous[1]) if previous[1] > 0 else limit,
                                                    previous[1]))
    caught: list = []
    try:
        fn = _resolve_function(job["function"]) if job.get("function") else WORKERS[method]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = dict(fn(job))
        out.setdefault("notes", [])
        out.update(ok=True, error=None)
    except BaseException as exc:  # a failing method is a result, never an abort
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        if limit and (isinstance(exc, MemoryError) or "alloc" in text.lower() or "memory" in text.lower()):
            text += f" (address-space limit {limit / 2**30:.1f} GiB, from --max-memory)"
        out = {"ok": False, "error": f"{type(exc).__name__}: {text}"[:2000],
               "traceback": traceback.format_exc()[-4000:], "notes": []}
    for w in caught or ():  # e.g. "CUDA was requested but ...": part of the result
        text = f"{w.category.__name__}: {str(w.message).splitlines()[0] if str(w.message) else ''}"
        if text not in out["notes"] and not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            out["notes"].append(text[:500])
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, previous)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _address_limit(job: dict) -> int:
    """The child's address-space limit: 1.5 × ``max_memory`` (address space exceeds the
    resident memory), at most 85% of the RAM; 0 for no limit."""
    budget = int(job.get("max_memory") or 0)
    if not budget:
        return 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return int(budget * 1.5)
    return int(min(budget * 1.5, total * 0.85))


def _resolve_function(spec: str) -> Callable[[dict], dict]:
    module_name, _, qualname = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _function_spec(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def run_job(job: dict, *, work_dir: Path, timeout_s: float, isolate: bool = True, log=None,
            timeout_option: str = "--timeout") -> dict:
    """Run ``job`` in a child process (or in this one with ``isolate=False``)."""
    start = time.time()
    load = os.getloadavg()[0]
    if not isolate:
        before = peak_rss_mb()
        result = run_worker(job)
        result["peak_rss_mb"] = max(result["peak_rss_mb"] - before, 0.0)
        result["notes"].append("measured in the benchmark process: peak RSS is a ru_maxrss delta")
    else:
        stem = f"{job['model']['name']}.{job['method']}".replace("/", "_").replace("@", "_")
        job_path, result_path, log_path = (work_dir / f"{stem}.{ext}" for ext in ("job.json", "result.json", "log"))
        job_path.write_text(json.dumps(job))
        env = dict(os.environ)
        threads = str(job["threads"])
        env.update(YUZU_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   OPENBLAS_NUM_THREADS=threads, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        cmd = [sys.executable, "-m", "yuzu_onnx.bench", "--worker", str(job_path), "--result", str(result_path)]
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            if rc is None:
                why = f"timed out after {timeout_s:.0f} s ({timeout_option})"
            elif rc < 0:
                why = f"child process killed by signal {-rc}" + (" (out of memory?)" if -rc == 9 else "")
            else:
                why = f"child process exited with code {rc}"
            result = {"ok": False, "error": why + (": " + " | ".join(tail) if tail else ""), "notes": [],
                      "status": "timeout" if rc is None else "killed", "peak_rss_mb": None}
    result.setdefault("status", "ok" if result.get("ok") else "failed")
    result["wall_s"] = time.time() - start
    result["load_average_1min"] = load
    if log is not None:
        state = "ok" if result["ok"] else f"{result['status']}: {result['error'][:300]}"
        log(f"  {job['method']:<16} {result['wall_s']:7.1f} s  {state}")
    return result


# --------------------------------------------------------------------------- benchmark


@dataclass
class BenchConfig:
    """Options of one benchmark run (see ``--help``)."""

    models: list[BenchModel]
    threads: int = 2
    repeats: int = 3
    batch: int = 32
    device: str = "cpu"
    peers: bool = False
    gaussian: bool = False
    first_conv_compare: bool = False
    peer_names: tuple[str, ...] = tuple(PEERS)
    out: Path = Path("bench_results")
    seed: int = 0
    model_seed: int = 0
    budget_s: float = 120.0
    timeout_s: float = 3600.0
    peer_timeout_s: float = 900.0
    max_memory: int = 0
    cache_dir: Path = field(default_factory=default_cache_dir)
    reuse_dirs: tuple[str, ...] = ()
    isolate: bool = True
    work_dir: Path | None = None
    keep: bool = False
    quick: bool = False
    peer_batch_size: int = 32
    yuzu_alpha: float = 1.5

    def options(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "models"}
        return json.loads(json.dumps(d, default=str))


def default_max_memory() -> int:
    """Half the machine's RAM: the per-child memory limit and the batch-size budget."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def choose_batch(batch: int, *, peak_bytes_per_sequence: float, max_memory: int, seconds_per_sequence: float | None,
                 budget_s: float, single_peak_bytes: float | None = None) -> tuple[int, str]:
    """Sequences per batch run: ``batch``, fewer if memory or the time budget says so.

    ``peak_bytes_per_sequence`` is the plan's estimate; ``single_peak_bytes`` the measured
    peak RSS of a one-sequence run: when two of those do not fit, the batch is 1.
    """
    b, why = batch, "requested"
    if single_peak_bytes and max_memory and 2 * single_peak_bytes > max_memory:
        return 1, (f"memory: one sequence peaked at {single_peak_bytes / 2**30:.2f} GiB, more than half the "
                   f"budget {max_memory / 2**30:.1f} GiB")
    if peak_bytes_per_sequence > 0 and max_memory > 0:
        fit = int(max_memory // peak_bytes_per_sequence)
        if fit < b:
            b, why = max(1, fit), (f"memory: plan estimates {peak_bytes_per_sequence / 2**30:.2f} GiB per sequence, "
                                   f"budget {max_memory / 2**30:.1f} GiB")
    if seconds_per_sequence and seconds_per_sequence * b > budget_s:
        fit = max(1, int(budget_s // seconds_per_sequence))
        if fit < b:
            b, why = fit, f"time: {seconds_per_sequence:.2f} s per sequence, budget {budget_s:.0f} s per measurement"
    return b, why


def batch_reason(why: str, *, requested: int, ran: int | None) -> str:
    """Why the batch run used the batch it did: ``why`` from :func:`choose_batch`, unless the
    worker had to halve it after running out of memory."""
    if ran is not None and ran < requested:
        return f"memory: a batch of {requested} ran out of memory at run time; halved to {ran}"
    return why


def _base_job(config: BenchConfig, model: BenchModel, method: str, work: Path) -> dict:
    return {
        "method": method,
        "model": json.loads(json.dumps(asdict(model))),
        "threads": config.threads,
        "device": config.device,
        "repeats": config.repeats,
        "budget_s": config.budget_s,
        "seed": config.seed,
        "model_seed": config.model_seed,
        "max_memory": config.max_memory,
        "x_path": str(work / "x.npy"),
        "peer_batch_size": config.peer_batch_size,
        "yuzu_alpha": config.yuzu_alpha,
    }


def _record(model: str, method: str, kind: str, result: dict) -> dict:
    keep = ("status", "ok", "error", "time_per_sequence_s", "runs_s", "warmup_s", "convert_s", "batch",
            "batch_s", "sequences_per_s", "sequences", "peak_rss_mb", "rss_before_mb", "provider", "compared_as",
            "package", "peer_batch_size", "alpha", "notes", "wall_s", "load_average_1min", "batch_limited_by",
            "rss_growth_per_sequence_mb", "fast_path_used")
    rec = {"model": model, "method": method, "kind": kind}
    rec.update({k: result[k] for k in keep if k in result})
    return rec


def bench_model(config: BenchConfig, model: BenchModel, work: Path, peers: Mapping[str, Peer], log) -> tuple[dict, list[dict]]:
    """All measurements of one model: the model record and one record per method."""
    log(f"{model.name}: L={model.seq_len or '?'}" + (f", window {model.window[0]}:{model.window[1]}" if model.window else ""))
    info = {"model": model.name, "arch": model.arch, "seq_len": model.seq_len,
            "window": list(model.window) if model.window else None, "note": model.note, "status": "ok", "error": None}
    records: list[dict] = []

    def run(method: str, *, timeout_s: float | None = None, **extra) -> dict:
        job = _base_job(config, model, method, work)
        job.update(extra)
        return run_job(job, work_dir=work, timeout_s=timeout_s or config.timeout_s, isolate=config.isolate, log=log,
                       timeout_option="--peer-timeout" if timeout_s else "--timeout")

    n_sequences = max(config.batch, 1)
    prep = run("prepare", n_sequences=n_sequences, cache_dir=str(config.cache_dir), reuse_dirs=list(config.reuse_dirs))
    if not prep["ok"]:
        info.update(status="failed", error=f"prepare: {prep['error']}")
        return info, records
    info.update({k: prep[k] for k in ("model_path", "layout", "alphabet_size", "seq_len", "outputs", "model_mb",
                                      "verified_against_torch")})
    info["prepare_notes"] = prep.get("notes", [])
    common = {"model_path": prep["model_path"], "seq_len": prep["seq_len"], "outputs": prep["outputs"]}

    naive = run("naive", arrays_out=str(work / "naive.npz"), **common)
    records.append(_record(model.name, "naive_ort", "baseline", naive))
    oracle = load_arrays(work / "naive.npz") if naive["ok"] else None

    converted = work / "model.ism.onnx"
    conv = run("convert", converted_path=str(converted), **common)
    if conv["ok"]:
        info["plan"] = conv["plan"]
        info["convert_s"] = conv["convert_s"]
        info["converted_mb"] = conv["converted_mb"]
        info["convert_peak_rss_mb"] = conv["peak_rss_mb"]
        info["convert_notes"] = conv.get("notes", [])
        single = run("yuzu", converted_path=str(converted), arrays_out=str(work / "yuzu.npz"), **common)
        single["convert_s"] = conv["convert_s"]
        rec = _record(model.name, "yuzu_onnx", "yuzu", single)
        if single["ok"] and oracle is not None:
            rec.update(_compare(work / "yuzu.npz", oracle, prep["layout"], "none"))
        records.append(rec)
        batch, why = choose_batch(config.batch, peak_bytes_per_sequence=conv["plan"]["peak_bytes_per_sequence"],
                                  max_memory=config.max_memory,
                                  seconds_per_sequence=single.get("time_per_sequence_s"), budget_s=config.budget_s,
                                  single_peak_bytes=(single.get("peak_rss_mb") or 0) * 2**20)
        if not single["ok"]:
            batched = {"ok": False, "status": "skipped", "error": "the single-sequence run failed", "notes": []}
        elif batch == 1:  # the single-sequence runs already measured it
            batched = {k: single[k] for k in ("ok", "status", "error", "provider", "peak_rss_mb", "load_average_1min")}
            batched.update(batch=1, batch_s=single["time_per_sequence_s"], sequences=1,
                           time_per_sequence_s=single["time_per_sequence_s"],
                           sequences_per_s=1.0 / single["time_per_sequence_s"], runs_s=single["runs_s"],
                           wall_s=0.0, notes=["batch of 1: taken from the single-sequence runs"])
        else:
            batched = run("yuzu_batch", converted_path=str(converted), batch=batch, **common)
        batched["batch_limited_by"] = batch_reason(why, requested=batch, ran=batched.get("batch"))
        if batched.get("ok") and batched.get("rss_before_mb") is not None and batched.get("peak_rss_mb"):
            batched["rss_growth_per_sequence_mb"] = (batched["peak_rss_mb"] - batched["rss_before_mb"]) / batched["batch"]
        records.append(_record(model.name, "yuzu_onnx_batch", "yuzu", batched))
    else:
        info["convert_error"] = conv["error"]
        records.append(_record(model.name, "yuzu_onnx", "yuzu", conv))

    if config.gaussian:
        records.append(_gaussian_record(model, work, run, common, oracle, prep["layout"]))
    if config.first_conv_compare:
        for mode in ("shortcut", "probes"):
            records.append(_first_conv_record(model, work, run, common, oracle, prep["layout"], mode))

    for name, fn in peers.items():
        result = run(name, arrays_out=str(work / f"{name}.npz"), function=_function_spec(fn),
                     timeout_s=config.peer_timeout_s, **common)
        rec = _record(model.name, name, "peer", result)
        if result["ok"]:
            if oracle is None:
                rec["notes"] = [*rec.get("notes", []), "no oracle result to compare with"]
            else:
                try:
                    rec.update(_compare(work / f"{name}.npz", oracle, prep["layout"], result.get("compared_as", "none")))
                except BenchError as exc:
                    rec.update(status="failed", ok=False, error=f"output check: {exc}")
        records.append(rec)
    _add_speedups(info, records)
    return info, records


def _variant_record(model, work: Path, run, common: dict, oracle, layout: str, method: str, kind: str,
                    **convert_options) -> tuple[dict, dict]:
    """Convert with ``convert_options``, time one sequence and compare with the oracle.

    Returns the record and the conversion's result (its plan, when it succeeded).
    """
    converted = work / f"{method}.onnx"
    conv = run("convert", converted_path=str(converted), **convert_options, **common)
    if not conv["ok"]:
        return _record(model.name, method, kind, conv), conv
    single = run("yuzu", converted_path=str(converted), arrays_out=str(work / f"{method}.npz"), **common)
    single["convert_s"] = conv["convert_s"]
    rec = _record(model.name, method, kind, single)
    if single["ok"] and oracle is not None:
        rec.update(_compare(work / f"{method}.npz", oracle, layout, "none"))
    return rec, conv


def _gaussian_record(model, work: Path, run, common: dict, oracle, layout: str) -> dict:
    """The published method (``--probes gaussian``) on the same sequences: time, error, Pearson r."""
    rec, _ = _variant_record(model, work, run, common, oracle, layout, "yuzu_gaussian", "gaussian", probes="gaussian")
    if "relative_error" in rec:  # the run succeeded and was compared with the oracle
        got, _ = load_arrays(work / "yuzu_gaussian.npz")
        want = oracle[0]
        flat_got = np.concatenate([np.asarray(got[k], np.float64).ravel() for k in want])
        flat_want = np.concatenate([np.asarray(want[k], np.float64).ravel() for k in want])
        rec["pearson_r"] = float(np.corrcoef(flat_got, flat_want)[0, 1])
    return rec


FIRST_CONV_METHODS = {"shortcut": "yuzu_first_conv_shortcut", "probes": "yuzu_first_conv_on_probes"}


def _first_conv_record(model, work: Path, run, common: dict, oracle, layout: str, mode: str) -> dict:
    """The spaced-probe model converted with ``--first-conv mode``, timed on the same sequence."""
    rec, conv = _variant_record(model, work, run, common, oracle, layout, FIRST_CONV_METHODS[mode], "first_conv",
                                first_conv=mode)
    if conv["ok"]:
        rec["first_conv_shortcut"] = conv["plan"].get("first_conv_shortcut", [])
        rec["expected_speedup"] = conv["plan"].get("expected_speedup")
    return rec


def _compare(path: Path, oracle, layout: str, compared_as: str) -> dict:
    got, _ = load_arrays(path)
    want, refs = oracle
    if compared_as == "l2":  # the norm of the output change; its scale is the norm of the output
        want = l2_reduce(want, layout)
        norms = [np.sqrt(np.sum(r.reshape(len(r), -1).astype(np.float64) ** 2, axis=1)) for r in refs.values()]
        refs = {name: np.sqrt(sum(n**2 for n in norms)) for name in want}
    err = relative_error(got, want, refs)
    out = {"relative_error": err["relative_error"], "error_per_output": err["per_output"]}
    if err["relative_error"] is None:
        out.update(status="failed", ok=False, error="non-finite values (NaN or inf) in the output")
    return out


def _add_speedups(info: dict, records: list[dict]) -> None:
    naive = next((r for r in records if r["method"] == "naive_ort" and r["ok"]), None)
    if naive is None:
        return
    for r in records:
        if r["ok"] and r.get("time_per_sequence_s") and r["method"] != "naive_ort" and r.get("sequences") == 1:
            r["speedup_vs_naive"] = naive["time_per_sequence_s"] / r["time_per_sequence_s"]
    yuzu = next((r for r in records if r["method"] == "yuzu_onnx" and r["ok"]), None)
    plan = info.get("plan")
    if yuzu is not None and plan:
        yuzu["fraction_of_bound"] = yuzu["speedup_vs_naive"] / plan["bound_speedup"] if plan["bound_speedup"] else None


def run_benchmark(config: BenchConfig, *, peers: Mapping[str, Peer] | None = None, log=print) -> dict:
    """Benchmark every model of ``config``; returns the results (also written to ``config.out``).

    ``peers`` (default: :data:`PEERS` when ``config.peers``) maps a name to a function
    ``peer(job) -> dict`` that must be importable by its module and qualified name
    (it runs in a child process).
    """
    if peers is None:
        peers = {name: PEERS[name] for name in config.peer_names} if config.peers else {}
    if not config.max_memory:
        config.max_memory = default_max_memory()
    machine = machine_info(config.threads)
    git = git_state()
    log(f"yuzu-onnx bench: {len(config.models)} models, {config.threads} threads, device {config.device}, "
        f"commit {git['commit']} (+{git['uncommitted_changes']} uncommitted), load average "
        f"{machine['load_average_start'][0]:.2f}")
    own_work = config.work_dir is None
    work_root = Path(tempfile.mkdtemp(prefix="yuzu-bench-")) if own_work else Path(config.work_dir)
    work_root.mkdir(parents=True, exist_ok=True)
    models, records = [], []
    started = time.time()
    try:
        for model in config.models:
            work = work_root / re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)
            work.mkdir(parents=True, exist_ok=True)
            info, recs = bench_model(config, model, work, peers, log)
            models.append(info)
            records.extend(recs)
            if not config.keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if own_work and not config.keep:
            shutil.rmtree(work_root, ignore_errors=True)
    machine["load_average_end"] = list(os.getloadavg())
    run_info = {"created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "git": git, "yuzu_onnx_version": _version(), "machine": machine, "options": config.options(),
                "wall_s": time.time() - started, "models": [m.name for m in config.models],
                "peers": list(peers)}
    results = {"schema": SCHEMA, "runs": [run_info], "models": models, "records": records}
    for item in models + records:
        item["run"] = 0
    return results


def _version() -> str:
    from . import __version__

    return __version__


def merge_results(old: dict, new: dict) -> dict:
    """``new`` merged into ``old`` (``--update``).

    A model benchmarked again takes its new model record; each of its methods measured
    again replaces the old record, and methods not run this time (peers, Gaussian probes)
    keep their old record. Every model and record names its run (``run``: an index into
    ``runs``); runs no longer referenced are dropped.
    """
    if old.get("schema") != SCHEMA:
        return new
    model_run = {m["model"]: m.get("run", 0) for m in old["models"]}
    old_records = [dict(r, run=r.get("run", model_run.get(r["model"], 0))) for r in old["records"]]
    fresh_models = {m["model"] for m in new["models"]}
    fresh_records = {(r["model"], r["method"]) for r in new["records"]}
    kept_models = [m for m in old["models"] if m["model"] not in fresh_models]
    kept_records = [r for r in old_records if (r["model"], r["method"]) not in fresh_records
                    and (r["model"] not in fresh_models or r["kind"] in ("peer", "gaussian", "first_conv"))]
    used = sorted({x.get("run", 0) for x in kept_models + kept_records})
    remap = {r: i for i, r in enumerate(used)}
    offset = len(used)
    runs = [old["runs"][r] for r in used] + new["runs"]

    def moved(items, shift):
        return [dict(x, run=remap[x.get("run", 0)] if shift is None else x.get("run", 0) + shift) for x in items]

    models = moved(kept_models, None) + moved(new["models"], offset)
    order = {m: i for i, m in enumerate(MODELS)}
    models.sort(key=lambda m: order.get(m["model"], len(order)))
    rank = {m["model"]: i for i, m in enumerate(models)}
    records = moved(kept_records, None) + moved(new["records"], offset)
    methods = ["naive_ort", "yuzu_onnx", "yuzu_onnx_batch", "yuzu_gaussian", *FIRST_CONV_METHODS.values(), *PEERS]
    records.sort(key=lambda r: (rank.get(r["model"], len(rank)),
                                methods.index(r["method"]) if r["method"] in methods else len(methods)))
    return {"schema": SCHEMA, "runs": runs, "models": models, "records": records}


# --------------------------------------------------------------------------- report


def _fmt(value, spec: str = ".3g", missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _seconds(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def markdown_report(results: dict) -> str:
    """The tables of ``bench_results.md``."""
    model_run = {m["model"]: m.get("run", 0) for m in results["models"]}
    records = [dict(r, run=r.get("run", model_run.get(r["model"], 0))) for r in results["records"]]

    def rec(model: str, method: str) -> dict | None:
        return next((r for r in records if r["model"] == model and r["method"] == method), None)

    lines = ["# yuzu-onnx benchmark", ""]
    for i, run in enumerate(results["runs"]):
        m, git = run["machine"], run["git"]
        dirty = f" + {git['uncommitted_changes']} uncommitted changes" if git.get("uncommitted_changes") else ""
        la0, la1 = m["load_average_start"], m.get("load_average_end", [None])
        label = f"Run {i + 1}" if len(results["runs"]) > 1 else "Run"
        lines.append(
            f"{label}: {run['created']}, commit `{git.get('commit')}`{dirty}, yuzu-onnx {run['yuzu_onnx_version']}; "
            f"machine: {m['cpu_model']}, {m['cores']} cores, {m['threads']} threads used, "
            f"{_fmt(m.get('memory_gib'), '.0f')} GiB RAM, onnxruntime {m['onnxruntime']} "
            f"({run['options']['device']}), torch {m.get('torch') or 'not installed'}; load average "
            f"{la0[0]:.2f} at start, {_fmt(la1[0], '.2f')} at end; models: {', '.join(run['models'])}."
        )
    lines += ["", "The machine was shared with other busy processes (see the load averages): timings are noisy, "
              "and a speedup is a ratio of two noisy times. Naive ISM (the oracle, `naive_ism`, which creates its "
              "ONNX Runtime session in each call) and yuzu-onnx are both timed on one sequence: the median of up to "
              "`--repeats` runs after a warm-up run, or a single run when one run takes longer than the time "
              "budget of a measurement (`runs_s` in the JSON). yuzu-onnx is also timed on a batch for sequences "
              "per second. Peak RSS is each method's own child process (Python, ONNX Runtime and the model "
              "included).", ""]
    header = ("| model | L | naive s/seq | yuzu s/seq | speedup | expected | bound | of bound | GFLOP naive → rewritten "
              "| GFLOP/s naive / yuzu | convert s | seq/s (batch) | peak RSS MB naive / yuzu / batch | max rel. error | spacings |")
    several = len(results["runs"]) > 1

    def run_of(item: dict | None) -> str:
        return f"{item.get('run', 0) + 1} | " if several and item is not None else ("– | " if several else "")

    def same_run(a: dict | None, b: dict) -> bool:
        return a is not None and bool(a.get("ok")) and a.get("run", 0) == b.get("run", 0)

    if several:
        header = "| run " + header
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    failures = []
    for info in results["models"]:
        name = info["model"]
        naive, yuzu, batch = rec(name, "naive_ort"), rec(name, "yuzu_onnx"), rec(name, "yuzu_onnx_batch")
        plan = info.get("plan") or {}
        length = str(info.get("seq_len") or "?")
        if info.get("window"):
            length += f" (window {info['window'][1] - info['window'][0]})"
        ok = lambda r: r is not None and r.get("ok")  # noqa: E731
        seqs = f"{_fmt(batch['sequences_per_s'])} ({batch['batch']})" if ok(batch) else "–"
        rss = " / ".join(_fmt(r.get("peak_rss_mb"), ".0f") if r else "–" for r in (naive, yuzu, batch))
        gflop = f"{_fmt(plan.get('naive_gflop'), '.0f')} → {_fmt(plan.get('rewritten_gflop'), '.0f')}" if plan else "–"
        rates = " / ".join(
            _fmt(plan[key] / r["time_per_sequence_s"], ".0f") if plan and ok(r) and r.get("time_per_sequence_s") else "–"
            for key, r in (("naive_gflop", naive), ("rewritten_gflop", yuzu)))
        lines.append(
            f"| {run_of(info)}{name} | {length} | {_seconds(naive['time_per_sequence_s']) if ok(naive) else 'failed'} "
            f"| {_seconds(yuzu['time_per_sequence_s']) if ok(yuzu) else 'failed'} "
            f"| {_fmt(yuzu.get('speedup_vs_naive'), '.1f') + '×' if ok(yuzu) and yuzu.get('speedup_vs_naive') else '–'} "
            f"| {_fmt(plan.get('expected_speedup'), '.1f')}× | {_fmt(plan.get('bound_speedup'), '.1f')}× "
            f"| {_fmt(yuzu.get('fraction_of_bound'), '.0%') if ok(yuzu) else '–'} | {gflop} | {rates} "
            f"| {_fmt(info.get('convert_s'), '.1f')} | {seqs} | {rss} "
            f"| {_fmt(yuzu.get('relative_error'), '.1e') if ok(yuzu) else '–'} "
            f"| {', '.join(map(str, plan.get('spacings', []))) or '–'} |"
        )
        if info.get("status") != "ok":
            failures.append(f"* **{name}**: {info['error']}")
        for r in (naive, yuzu, batch):
            if r is not None and not r.get("ok"):
                failures.append(f"* **{name}** {r['method']}: {r['status']}: {r['error']}")
    lines += ["", "Speedup = naive s/seq ÷ yuzu s/seq; expected and bound are FLOP ratios from the plan "
              "(naive ÷ rewritten, naive ÷ sparse-recompute lower bound); of bound = speedup ÷ bound, above 100% "
              "when the rewritten graph runs at more GFLOP/s than naive ISM does (GFLOP/s = the plan's FLOPs ÷ "
              "the measured time). Max rel. "
              "error: max |yuzu − naive| over all outputs ÷ max(|model output|, |naive ISM|). seq/s at the batch "
              "in parentheses (smaller than requested when the plan's memory estimate or the time budget says so, "
              "see `batch_limited_by` in the JSON)."]
    providers = sorted({r["provider"] for r in records if r.get("provider")})
    if providers:
        lines += ["", f"Execution provider of the converted runs: {', '.join(providers)}."]
    notes = [f"* {i['model']}: {i['note']}" for i in results["models"] if i.get("note")]
    if notes:
        lines += ["", *notes]
    gaussian_recs = [r for r in records if r["kind"] == "gaussian"]
    if gaussian_recs:
        lines += ["", "## Gaussian probes (the published method)", "",
                  "`convert --probes gaussian` (alpha auto) beside the exact spaced probes, same sequences.", "",
                  ("| run " if several else "") + "| model | s/seq | speedup vs naive ORT | spaced probes s/seq "
                  "| convert s | Pearson r | max rel. error | status |",
                  "|---" * (8 + several) + "|"]
        for r in gaussian_recs:
            yuzu = rec(r["model"], "yuzu_onnx")
            status = _status(r)
            lines.append(
                f"| {run_of(r)}{r['model']} | {_seconds(r.get('time_per_sequence_s')) if r.get('ok') else '–'} "
                f"| {_fmt(r.get('speedup_vs_naive'), '.2f')} "
                f"| {_seconds(yuzu.get('time_per_sequence_s')) if same_run(yuzu, r) else '–'} "
                f"| {_fmt(r.get('convert_s'), '.1f')} | {_fmt(r.get('pearson_r'), '.8f')} "
                f"| {_fmt(r.get('relative_error'), '.1e')} | {status} |")
    first_conv_recs = [r for r in records if r["kind"] == "first_conv"]
    if first_conv_recs:
        lines += ["", "## First-convolution shortcut", "",
                  "The same model converted with `--first-conv shortcut` (convolutions of the input from "
                  "gathered kernel-column differences) and `--first-conv probes` (convolved on every probe), "
                  "timed on the same sequence one after the other.", "",
                  ("| run " if several else "") + "| model | first conv | s/seq | speedup vs naive ORT "
                  "| expected (FLOPs) | shortcut on | max rel. error | status |",
                  "|---" * (8 + several) + "|"]
        for r in first_conv_recs:
            status = _status(r)
            mode = "shortcut" if r["method"] == FIRST_CONV_METHODS["shortcut"] else "on probes"
            lines.append(
                f"| {run_of(r)}{r['model']} | {mode} | {_seconds(r.get('time_per_sequence_s')) if r.get('ok') else '–'} "
                f"| {_fmt(r.get('speedup_vs_naive'), '.2f')} | {_fmt(r.get('expected_speedup'), '.1f')} "
                f"| {', '.join(r.get('first_conv_shortcut') or []) or '–'} "
                f"| {_fmt(r.get('relative_error'), '.1e')} | {status} |")
    peer_recs = [r for r in records if r["kind"] == "peer"]
    if peer_recs:
        lines += ["", "## Peers", "", "Same sequences, same thread count; PyTorch modules built by "
                  "`tools/torch_models.py` with the seed of the ONNX export.", "",
                  ("| run " if several else "") + "| model | method | s/seq | speedup vs naive ORT "
                  "| yuzu-onnx faster by | setup s | peak RSS MB | max rel. error | status |",
                  "|---" * (9 + several) + "|"]
        for r in peer_recs:
            yuzu = rec(r["model"], "yuzu_onnx")
            faster = None
            if r.get("ok") and same_run(yuzu, r) and r.get("time_per_sequence_s"):
                faster = r["time_per_sequence_s"] / yuzu["time_per_sequence_s"]
            err = _fmt(r.get("relative_error"), ".1e")
            if r.get("compared_as") == "l2" and r.get("relative_error") is not None:
                err += " (l2)"
            status = _status(r)
            lines.append(
                f"| {run_of(r)}{r['model']} | {r['method']} "
                f"| {_seconds(r.get('time_per_sequence_s')) if r.get('ok') else '–'} "
                f"| {_fmt(r.get('speedup_vs_naive'), '.2f')} | {_fmt(faster, '.1f')}"
                f"{'×' if faster else ''} | {_fmt(r.get('convert_s'), '.1f')} "
                f"| {_fmt(r.get('peak_rss_mb'), '.0f')} | {err} | {status} |")
    if failures:
        lines += ["", "## Failures", "", *failures]
    return "\n".join(lines) + "\n"


def _status(record: dict) -> str:
    """``ok``, or the failure and the start of its message."""
    return "ok" if record.get("ok") else f"{record['status']}: {_short(record.get('error'))}"


def _short(text: str | None, n: int = 160) -> str:
    text = (text or "").replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    """Write ``bench_results.json`` and ``bench_results.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / RESULTS_JSON, out / RESULTS_MD
    for path, text in ((json_path, json.dumps(results, indent=1, default=str) + "\n"),
                       (md_path, markdown_report(results))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path


# --------------------------------------------------------------------------- profile


def stage_of(node_name: str) -> str:
    """The category of an emitted node: ``stage k``, ``repack``, ``decode``, ``tail``, ``ref``, ...

    Nodes that ONNX Runtime fused keep the first node's name after ``fused ``.
    """
    node_name = node_name.removeprefix("fused ")
    if not node_name.startswith("yuzu/"):
        return "ref (reference pass)"
    rest = node_name[len("yuzu/"):]
    parts = rest.split("/")
    if len(parts) > 1 and not re.match(r"s\d+$", parts[0]):
        parts = parts[1:]  # drop the branch (bases / shift classes)
    match = re.match(r"s(\d+)$", parts[0])
    if match and len(parts) > 1:
        return f"stage {match.group(1)}"
    word = re.sub(r"_\d+$", "", parts[0])
    for prefix, category in (("repack", "repack"), ("decode", "decode"), ("tail", "tail"),
                             ("wide_conv", "wide conv"), ("window_sum", "window sums"), ("probes", "probes"),
                             ("input_probes", "probes"), ("shifted", "probes")):
        if word.startswith(prefix):
            return category
    return word


def aggregate_profile(events: list[dict]) -> dict:
    """Kernel time by category from ONNX Runtime profiler events, for the last ``model_run``.

    Control-flow nodes (``If``, ``Loop``, ``Scan``) are left out: their subgraphs' kernels
    are reported on their own, and counting both would count the time twice.
    """
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if runs:
        last = runs[-1]
        lo, hi = last["ts"], last["ts"] + last["dur"]
        events = [e for e in events if lo <= e.get("ts", -1) <= hi]
        run_us = last["dur"]
    else:
        run_us = None
    by_category: dict[str, float] = {}
    by_node: dict[str, float] = {}
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        if op in ("If", "Loop", "Scan"):
            continue
        node = e["name"][: -len("_kernel_time")]
        category = stage_of(node)
        by_category[category] = by_category.get(category, 0.0) + e["dur"]
        by_node[node] = by_node.get(node, 0.0) + e["dur"]
        by_op[op] = by_op.get(op, 0.0) + e["dur"]
    total = sum(by_category.values())

    def table(d, *, collapse_below: float = 0.0):
        rows = [{"name": k, "ms": v / 1e3, "fraction": v / total if total else 0.0}
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])]
        small = [r for r in rows if r["fraction"] < collapse_below]
        if len(small) > 1:
            rows = [r for r in rows if r["fraction"] >= collapse_below]
            rows.append({"name": f"other ({len(small)} parts under {collapse_below:.0%}: "
                         + ", ".join(r["name"] for r in small) + ")",
                         "ms": sum(r["ms"] for r in small), "fraction": sum(r["fraction"] for r in small)})
        return rows

    return {"run_ms": run_us / 1e3 if run_us else None, "kernel_ms": total / 1e3,
            "by_category": table(by_category, collapse_below=0.01),
            "by_op": table(by_op), "top_nodes": table(by_node)[:25]}


def worker_profile(job: dict) -> dict:
    """Profile the converted model with ONNX Runtime: warm-up run, then one profiled run."""
    import onnxruntime as ort

    from .runtime import cpu_session_options, providers_for

    options = cpu_session_options(threads=job["threads"])
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(job["profile_dir"]) / "ort_profile")
    session = ort.InferenceSession(job["converted_path"], options, providers=providers_for(job["device"]))
    x = _load_x(job, job.get("batch", 1))
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)  # warm-up
    t0 = time.perf_counter()
    session.run(None, feed)
    run_s = time.perf_counter() - t0
    path = session.end_profiling()
    events = json.loads(Path(path).read_text())
    summary = aggregate_profile(events)
    os.unlink(path)
    return {"profile": summary, "run_s": run_s, "provider": session.get_providers()[0], "sequences": len(x)}


def run_profile(config: BenchConfig, model: BenchModel, log=print) -> dict:
    """Convert ``model`` and profile one run of the converted model (see :func:`worker_profile`)."""
    if not config.max_memory:
        config.max_memory = default_max_memory()
    work = Path(tempfile.mkdtemp(prefix="yuzu-profile-")) if config.work_dir is None else Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        def run(method: str, **extra) -> dict:
            job = _base_job(config, model, method, work)
            job.update(extra)
            if method == "profile":
                job["function"] = _function_spec(worker_profile)
            result = run_job(job, work_dir=work, timeout_s=config.timeout_s, isolate=config.isolate, log=log)
            if not result["ok"]:
                raise BenchError(f"{model.name}: {method} failed: {result['error']}")
            return result

        prep = run("prepare", n_sequences=1, cache_dir=str(config.cache_dir), reuse_dirs=list(config.reuse_dirs))
        common = {"model_path": prep["model_path"], "seq_len": prep["seq_len"], "outputs": prep["outputs"]}
        conv = run("convert", converted_path=str(work / "model.ism.onnx"), **common)
        prof = run("profile", converted_path=str(work / "model.ism.onnx"), profile_dir=str(work), batch=1, **common)
    finally:
        if not config.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {"schema": SCHEMA + "/profile", "model": model.name, "seq_len": prep["seq_len"],
            "window": list(model.window) if model.window else None, "git": git_state(),
            "machine": machine_info(config.threads) | {"load_average_end": list(os.getloadavg())},
            "plan": conv["plan"], "run_s": prof["run_s"], "provider": prof["provider"], **prof["profile"]}


def profile_markdown(profile: dict) -> str:
    m = profile["machine"]
    lines = [f"# Profile of the converted {profile['model']} (one sequence)", "",
             f"Commit `{profile['git'].get('commit')}`, {m['cpu_model']}, {m['threads']} threads, "
             f"{profile['provider']}, load average {m['load_average_start'][0]:.2f} → "
             f"{m['load_average_end'][0]:.2f} (shared machine: noisy). Wall time of the profiled run "
             f"{profile['run_s']:.2f} s; ONNX Runtime's model_run {_fmt(profile['run_ms'], '.0f')} ms, kernels "
             f"{profile['kernel_ms']:.0f} ms (control-flow nodes excluded; their subgraph kernels are counted). "
             f"Spacings {profile['plan']['spacings']}.", "",
             "| part | ms | share |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['ms']:.1f} | {r['fraction']:.1%} |" for r in profile["by_category"]]
    lines += ["", "| op type | ms | share |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['ms']:.1f} | {r['fraction']:.1%} |" for r in profile["by_op"][:12]]
    lines += ["", "| node | ms | share |", "|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['ms']:.1f} | {r['fraction']:.1%} |" for r in profile["top_nodes"][:15]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yuzu-onnx bench",
        description="Benchmark yuzu-onnx against naive ISM on ONNX Runtime (and peers with --peers).",
    )
    parser.add_argument("--models", help=f"comma-separated: {', '.join(MODELS)}, or .onnx paths "
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
    parser.add_argument("--peer", action="append", choices=sorted(PEERS), help="run only these peers (repeatable)")
    parser.add_argument("--out", default="bench_results", help="results folder (default ./bench_results)")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {', '.join(QUICK_MODELS)} at L={QUICK_LENGTH}")
    parser.add_argument("--window", help="START:END: mutate only these positions (all models)")
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


def config_from_args(args) -> BenchConfig:
    from .session import parse_memory

    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else (
        list(QUICK_MODELS) if args.quick else list(MODELS))
    window = None
    if args.window:
        try:
            start, end = (int(v) for v in args.window.split(":"))
        except ValueError:
            raise BenchError(f"--window must be START:END, got {args.window!r}") from None
        window = (start, end)
    if args.threads < 1:
        raise BenchError(f"--threads must be at least 1, got {args.threads}")
    config = BenchConfig(
        models=resolve_models(names, quick=args.quick, window=window),
        threads=args.threads,
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else 3),
        batch=args.batch if args.batch is not None else (4 if args.quick else 32),
        device=args.device,
        peers=bool(args.peers or args.peer),
        gaussian=args.gaussian,
        first_conv_compare=args.first_conv_compare,
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
    )
    if config.repeats < 1 or config.batch < 1:
        raise BenchError("--repeats and --batch must be at least 1")
    return config


def _worker_main(job_path: str, result_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    result = run_worker(job)
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``yuzu-onnx bench``: run the benchmark; returns the exit code (1 if a model failed)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker:
        return _worker_main(args.worker, args.result)
    if args.render:
        path = Path(args.out) / RESULTS_JSON
        if not path.is_file():
            print(f"yuzu-onnx bench: error: no {path} to render", file=sys.stderr)
            return 2
        _, md_path = write_results(json.loads(path.read_text()), Path(args.out))
        print(f"wrote {md_path}", file=sys.stderr)
        return 0
    try:
        config = config_from_args(args)
        if args.profile:
            (model,) = resolve_models([args.profile], quick=args.quick, window=config.models[0].window
                                      if args.window else None)
            profile = run_profile(config, model, log=lambda s: print(s, file=sys.stderr, flush=True))
            config.out.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)
            (config.out / f"profile_{stem}.json").write_text(json.dumps(profile, indent=1, default=str) + "\n")
            text = profile_markdown(profile)
            (config.out / f"profile_{stem}.md").write_text(text)
            print(text)
            return 0
        results = run_benchmark(config, log=lambda s: print(s, file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"yuzu-onnx bench: error: {exc}", file=sys.stderr)
        return 2
    # failures of this run's own measurements (peers and Gaussian probes may fail: that is a result)
    failed = [m["model"] for m in results["models"] if m["status"] != "ok"] + [
        f"{r['model']}/{r['method']}" for r in results["records"]
        if r["kind"] in ("baseline", "yuzu") and not r["ok"]]
    if args.update and (config.out / RESULTS_JSON).is_file():
        results = merge_results(json.loads((config.out / RESULTS_JSON).read_text()), results)
    json_path, md_path = write_results(results, config.out)
    print(markdown_report(results))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    if failed:
        print(f"yuzu-onnx bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
