"""Each measurement in its own child process, under a memory limit and a timeout.

A job (a JSON-able dict) names its worker function as ``"module:qualname"``; the child
(``python -m tools.bench --worker JOB --result RESULT``) imports it, runs it and writes
its result. Peak RSS is then the method's own, and a method that crashes, runs out of
memory or times out is recorded instead of ending the benchmark.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from .environment import REPO_ROOT
from .measurements import peak_rss_mb

Log = Callable[[str], None]


def default_max_memory() -> int:
    """Half the machine's RAM: the per-child memory limit and the batch-size budget."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def address_limit(job: dict) -> int:
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


def function_spec(fn: Callable) -> str:
    """``"module:qualname"`` of a module-level function, for a job."""
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve_function(spec: str) -> Callable[[dict], dict]:
    """The function a :func:`function_spec` names."""
    module_name, _, qualname = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def run_worker(job: dict) -> dict:
    """Run one job in this process: ``{"ok": ..., "error": ..., "peak_rss_mb": ..., ...}``.

    The address space is limited (soft limit, CPU only) while the worker runs and restored
    afterwards; an exception is a failed result, never an abort.
    """
    limit = address_limit(job)
    previous = resource.getrlimit(resource.RLIMIT_AS)
    if limit and job.get("device") != "cuda":  # CUDA reserves far more address space than it uses
        # only the soft limit, restored below: an in-process run must not leave the caller
        # (and every process it starts later, e.g. a browser) with a lowered address space
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (min(limit, previous[1]) if previous[1] > 0 else limit,
                                                    previous[1]))
    caught: list = []
    try:
        fn = resolve_function(job["function"])
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


def run_worker_files(job_path: str, result_path: str) -> int:
    """The child's side: run the job in ``job_path``, write the result atomically to ``result_path``."""
    job = json.loads(Path(job_path).read_text())
    result = run_worker(job)
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)
    return 0


def child_environment(threads: int) -> dict[str, str]:
    """The child's environment: the thread count everywhere, and this process's import path."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p]
    if str(REPO_ROOT) not in paths:
        paths.insert(0, str(REPO_ROOT))
    env.update(YUZU_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), PYTHONPATH=os.pathsep.join(paths))
    return env


def _run_in_child(job: dict, *, work_dir: Path, timeout_s: float, timeout_option: str) -> dict:
    """Run ``job`` in a child process; a crash, kill or timeout becomes a failed result."""
    stem = f"{job['model']['name']}.{job['method']}".replace("/", "_").replace("@", "_")
    job_path, result_path, log_path = (work_dir / f"{stem}.{ext}" for ext in ("job.json", "result.json", "log"))
    job_path.write_text(json.dumps(job))
    cmd = [sys.executable, "-m", "tools.bench", "--worker", str(job_path), "--result", str(result_path)]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=child_environment(job["threads"]))
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    if result_path.is_file():
        return json.loads(result_path.read_text())
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    if rc is None:
        why = f"timed out after {timeout_s:.0f} s ({timeout_option})"
    elif rc < 0:
        why = f"child process killed by signal {-rc}" + (" (out of memory?)" if -rc == 9 else "")
    else:
        why = f"child process exited with code {rc}"
    return {"ok": False, "error": why + (": " + " | ".join(tail) if tail else ""), "notes": [],
            "status": "timeout" if rc is None else "killed", "peak_rss_mb": None}


def status_line(method: str, result: dict) -> str:
    """The progress line of a finished measurement."""
    state = "ok" if result["ok"] else f"{result['status']}: {result['error'][:300]}"
    return f"  {method:<16} {result['wall_s']:7.1f} s  {state}"


def run_job(job: dict, *, work_dir: Path, timeout_s: float, isolate: bool = True, log: Log | None = None,
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
        result = _run_in_child(job, work_dir=work_dir, timeout_s=timeout_s, timeout_option=timeout_option)
    result.setdefault("status", "ok" if result.get("ok") else "failed")
    result["wall_s"] = time.time() - start
    result["load_average_1min"] = load
    if log is not None:
        log(status_line(job["method"], result))
    return result
