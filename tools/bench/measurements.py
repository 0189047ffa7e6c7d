"""What one measurement records: times, memory, the sequences and the error against the oracle.

A measurement is a job (a dict) run by a worker; arrays go to ``job["arrays_out"]``
(an ``.npz`` with ``ism/<output>`` and ``ref/<output>`` entries).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .errors import BenchError


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
    warm-up is the only run (``runs_s`` holds it, ``warmup_s`` is None). Each run's result
    is released before the next starts (a large ISM output held across runs would make every
    run allocate, and fault in, fresh memory). Returns the median, the runs, and the last
    result.
    """
    first = time.perf_counter()
    result = fn()
    first_s = time.perf_counter() - first
    runs: list[float] = []
    if warmup and first_s < budget_s:
        n = max(1, min(repeats, int(budget_s // max(first_s, 1e-6))))
        for _ in range(n):
            result = None  # a run does not overlap the previous one's result (as a caller writing results out)
            t0 = time.perf_counter()
            result = fn()
            runs.append(time.perf_counter() - t0)
        warmup_s = first_s
    else:
        runs, warmup_s = [first_s], None
    return {"median_s": float(np.median(runs)), "runs_s": runs, "warmup_s": warmup_s, "result": result}


def random_onehot(n: int, seq_len: int, alphabet_size: int, layout: str, *, seed: int) -> np.ndarray:
    """Seeded random one-hot sequences (no unknown bases), in the model's layout:
    :func:`yuzu_onnx.encoding.random_one_hot`, shape ``(n, A, L)`` (ncl) or ``(n, L, A)``."""
    from yuzu_onnx.encoding import random_one_hot

    return random_one_hot(n, seq_len, alphabet_size=alphabet_size, layout=layout, seed=seed)


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


def sample_positions(start: int, end: int, k: int | None) -> np.ndarray:
    """``k`` positions spread evenly over ``[start, end)``, both ends included (every
    position when ``k`` is None or at least the window's width)."""
    if k is None or k >= end - start:
        return np.arange(start, end)
    if k < 1:
        raise BenchError(f"--naive-sample must be at least 1 position, got {k}")
    return np.unique(np.round(np.linspace(start, end - 1, k)).astype(np.int64))


def extrapolate(setup_s: float, mutants_s: float, *, sampled: int, width: int) -> float:
    """The time of naive ISM over ``width`` positions from a run over ``sampled`` of them:
    the fixed part (session, reference outputs) once, the mutants' part scaled by
    ``width / sampled``."""
    if sampled < 1:
        raise BenchError("no sampled positions to extrapolate from")
    return setup_s + mutants_s * width / sampled


def position_axis(layout: str, compared_as: str = "none") -> int:
    """The mutated-position axis of an ISM array: 2 for ``(N, A, Lw, ...)``, 1 for ``(N, Lw, A, ...)``
    (nlc layout); the original Yuzu's l2 norms (``compared_as="l2"``) are always ``(N, A, Lw)``."""
    return 2 if layout == "ncl" or compared_as == "l2" else 1


def at_positions(arrays: Mapping[str, np.ndarray], positions, axis: int) -> dict[str, np.ndarray]:
    """The arrays at ``positions`` (indices into the window) along ``axis``; unchanged for None."""
    if positions is None:
        return dict(arrays)
    idx = np.asarray(positions, dtype=np.int64)
    return {k: np.take(np.asarray(v), idx, axis=axis) for k, v in arrays.items()}


def apply_targets(arrays: Mapping[str, np.ndarray], targets: Mapping[str, list[dict]]) -> dict[str, np.ndarray]:
    """ISM arrays (``(N, A, Lw, ...)`` or ``(N, Lw, A, ...)``) with output targets applied
    afterwards, for tools that compute every output value (peers).

    ``targets``: ``{output: [{"select": {"axis", "indices"}} | {"aggregate": {"axis",
    "start", "end", "how"}}]}`` (:func:`yuzu_onnx.targets.targets_key`; axes of the model
    output, batch = 0, so axis ``k`` is ISM axis ``k + 2``). Select and sum/mean are linear,
    so targeting the difference equals the difference of the targeted outputs, up to rounding.
    """
    out = dict(arrays)
    for name, records in targets.items():
        if name not in out:
            continue
        value = np.asarray(out[name])
        for record in records:
            if "select" in record:
                sel = record["select"]
                value = np.take(value, np.asarray(sel["indices"], dtype=np.int64), axis=int(sel["axis"]) + 2)
            else:
                agg = record["aggregate"]
                axis = int(agg["axis"]) + 2
                part = np.take(value, np.arange(int(agg["start"]), int(agg["end"])), axis=axis).astype(np.float64)
                reduced = part.sum(axis=axis, keepdims=True) if agg["how"] == "sum" else part.mean(axis=axis,
                                                                                                  keepdims=True)
                value = reduced.astype(np.float32)
        out[name] = value
    return out


def describe_targets(targets: Mapping[str, list[dict]]) -> str:
    """``human: select axis 1 = [0, 1]; sum over axis 2 90:100 (kept, size 1)`` (empty for none)."""
    from yuzu_onnx.targets import describe_operations

    return "; ".join(f"{name}: {describe_operations(records)}" for name, records in targets.items())


def load_sequences(job: dict, n: int | None = None) -> np.ndarray:
    """The job's sequences (all, or the first ``n``)."""
    x = np.load(job["x_path"])
    return x if n is None else x[:n]


def job_window(job: dict) -> tuple[int, int] | None:
    """The mutated positions ``(start, end)`` of the job's model, or None for all."""
    w = job["model"].get("window")
    return tuple(w) if w else None


def save_arrays(job: dict, arrays: Mapping[str, np.ndarray], refs: Mapping[str, np.ndarray] | None = None) -> None:
    """Write ISM arrays (and reference outputs) to ``job["arrays_out"]``, when the job asks."""
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
