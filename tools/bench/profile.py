"""Where a converted model spends its time (``--profile MODEL``).

ONNX Runtime's profiler times every kernel over several runs after warm-up runs (each
kernel's median); the times are summed by the emitted node-name prefixes
(``yuzu/<branch>/s<k>/`` = stage ``k``, re-pack, decode, tail, and the reference pass), by
op type and by node.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from .benchmark import BenchConfig, base_job
from .environment import git_state, machine_info
from .errors import BenchError
from .isolation import Log, default_max_memory, function_spec, run_job
from .measurements import load_sequences
from .models import BenchModel
from .records import SCHEMA
from .report import fmt

CATEGORY_PREFIXES = (("repack", "repack"), ("decode", "decode"), ("tail", "tail"), ("wide_conv", "wide conv"),
                     ("window_sum", "window sums"), ("probes", "probes"), ("input_probes", "probes"),
                     ("shifted", "probes"))


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
    for prefix, category in CATEGORY_PREFIXES:
        if word.startswith(prefix):
            return category
    return word


def share_table(times_us: dict[str, float], total_us: float, *, collapse_below: float = 0.0) -> list[dict]:
    """Rows ``{"name", "ms", "fraction"}``, longest first; parts under ``collapse_below`` as one ``other`` row."""
    rows = [{"name": k, "ms": v / 1e3, "fraction": v / total_us if total_us else 0.0}
            for k, v in sorted(times_us.items(), key=lambda kv: -kv[1])]
    small = [r for r in rows if r["fraction"] < collapse_below]
    if len(small) > 1:
        rows = [r for r in rows if r["fraction"] >= collapse_below]
        rows.append({"name": f"other ({len(small)} parts under {collapse_below:.0%}: "
                     + ", ".join(r["name"] for r in small) + ")",
                     "ms": sum(r["ms"] for r in small), "fraction": sum(r["fraction"] for r in small)})
    return rows


def aggregate_profile(events: list[dict], *, warmup: int = 1) -> dict:
    """Kernel time by category from ONNX Runtime profiler events: per node, the median over
    the ``model_run`` s after the first ``warmup`` (the last run when there are no more).

    Control-flow nodes (``If``, ``Loop``, ``Scan``) are left out: their subgraphs' kernels
    are reported on their own, and counting both would count the time twice.
    """
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed = runs[warmup:] or runs[-1:]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
               and e.get("args", {}).get("op_name", "?") not in ("If", "Loop", "Scan")]
    windows = [(run["ts"], run["ts"] + run["dur"]) for run in timed] or [(-math.inf, math.inf)]
    per_run: list[dict[str, float]] = [{} for _ in windows]
    op_of: dict[str, str] = {}
    for e in kernels:
        node = e["name"][: -len("_kernel_time")]
        op_of[node] = e.get("args", {}).get("op_name", "?")
        for times, (lo, hi) in zip(per_run, windows):
            if lo <= e.get("ts", -1) <= hi:
                times[node] = times.get(node, 0.0) + e["dur"]
    by_node = {node: statistics.median(times.get(node, 0.0) for times in per_run)
               for node in sorted({n for times in per_run for n in times})}
    by_category: dict[str, float] = {}
    by_op: dict[str, float] = {}
    for node, us in by_node.items():
        by_category[stage_of(node)] = by_category.get(stage_of(node), 0.0) + us
        by_op[op_of[node]] = by_op.get(op_of[node], 0.0) + us
    total = sum(by_category.values())
    run_us = statistics.median(run["dur"] for run in timed) if timed else None
    return {"run_ms": run_us / 1e3 if run_us else None, "kernel_ms": total / 1e3, "runs": len(per_run),
            "by_category": share_table(by_category, total, collapse_below=0.01),
            "by_op": share_table(by_op, total), "top_nodes": share_table(by_node, total)[:25]}


WARMUP_RUNS = 3  # the first runs fault in fresh output memory, which later runs reuse
PROFILE_BUDGET_S = 10.0  # profiled runs: as many as fit in this (at least 1, at most MAX_PROFILED_RUNS)
MAX_PROFILED_RUNS = 20


def worker_profile(job: dict) -> dict:
    """Profile the converted model with ONNX Runtime: up to :data:`WARMUP_RUNS` warm-up runs
    (fewer when one run takes longer than the budget), then as many profiled runs as fit in
    :data:`PROFILE_BUDGET_S`; every kernel's time is its median over the profiled runs."""
    import onnxruntime as ort

    from yuzu_onnx.runtime import cpu_session_options, provider_entries, providers_for

    options = cpu_session_options(threads=job["threads"])
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(job["profile_dir"]) / "ort_profile")
    session = ort.InferenceSession(job["converted_path"], options, providers=provider_entries(providers_for(job["device"])))
    x = load_sequences(job, job.get("batch", 1))
    feed = {session.get_inputs()[0].name: x}
    budget = job.get("profile_budget_s", PROFILE_BUDGET_S)
    warmup, started = 0, time.perf_counter()
    while warmup < WARMUP_RUNS and (warmup == 0 or time.perf_counter() - started < budget / 2):
        t0 = time.perf_counter()
        session.run(None, feed)
        run_s = time.perf_counter() - t0
        warmup += 1
    count = max(1, min(MAX_PROFILED_RUNS, int(budget / max(run_s, 1e-6))))
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    path = session.end_profiling()
    events = json.loads(Path(path).read_text())
    summary = aggregate_profile(events, warmup=warmup)
    os.unlink(path)
    return {"profile": summary, "run_s": statistics.median(times), "warmup_runs": warmup,
            "provider": session.get_providers()[0], "sequences": len(x)}


def run_profile(config: BenchConfig, model: BenchModel, log: Log = print) -> dict:
    """Convert ``model`` and profile runs of the converted model (see :func:`worker_profile`)."""
    if not config.max_memory:
        config.max_memory = default_max_memory()
    work = Path(tempfile.mkdtemp(prefix="yuzu-profile-")) if config.work_dir is None else Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        def run(method: str, **extra) -> dict:
            job = base_job(config, model, method, work)
            job.update(extra)
            result = run_job(job, work_dir=work, timeout_s=config.timeout_s, isolate=config.isolate, log=log)
            if not result["ok"]:
                raise BenchError(f"{model.name}: {method} failed: {result['error']}")
            return result

        prep = run("prepare", n_sequences=1, cache_dir=str(config.cache_dir), reuse_dirs=list(config.reuse_dirs))
        common = {"model_path": prep["model_path"], "seq_len": prep["seq_len"], "outputs": prep["outputs"]}
        conv = run("convert", converted_path=str(work / "model.ism.onnx"), **common)
        prof = run("profile", function=function_spec(worker_profile), converted_path=str(work / "model.ism.onnx"),
                   profile_dir=str(work), batch=1, **common)
    finally:
        if not config.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {"schema": SCHEMA + "/profile", "model": model.name, "seq_len": prep["seq_len"],
            "window": list(model.window) if model.window else None, "git": git_state(),
            "machine": machine_info(config.threads) | {"load_average_end": list(os.getloadavg())},
            "plan": conv["plan"], "run_s": prof["run_s"], "warmup_runs": prof["warmup_runs"],
            "provider": prof["provider"], **prof["profile"]}


def profile_markdown(profile: dict) -> str:
    """The profile as Markdown tables: by category, by op type, the slowest nodes."""
    m = profile["machine"]
    lines = [f"# Profile of the converted {profile['model']} (one sequence)", "",
             f"Commit `{profile['git'].get('commit')}`, {m['cpu_model']}, {m['threads']} threads, "
             f"{profile['provider']}, load average {m['load_average_start'][0]:.2f} → "
             f"{m['load_average_end'][0]:.2f} (shared machine: noisy). Medians of {profile['runs']} profiled "
             f"runs after {profile['warmup_runs']} warm-up runs: wall time {profile['run_s'] * 1e3:.1f} ms; "
             f"ONNX Runtime's model_run {fmt(profile['run_ms'], '.1f')} ms, kernels {profile['kernel_ms']:.1f} ms "
             f"(each kernel's median; control-flow nodes excluded, their subgraph kernels are counted). "
             f"Spacings {profile['plan']['spacings']}.", "",
             "| part | ms | share |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['ms']:.1f} | {r['fraction']:.1%} |" for r in profile["by_category"]]
    lines += ["", "| op type | ms | share |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['ms']:.1f} | {r['fraction']:.1%} |" for r in profile["by_op"][:12]]
    lines += ["", "| node | ms | share |", "|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['ms']:.1f} | {r['fraction']:.1%} |" for r in profile["top_nodes"][:15]]
    return "\n".join(lines) + "\n"
