"""The measurements of yuzu-onnx and its oracle, each run by a worker (see :mod:`.isolation`).

A worker takes a job (a dict), does one measurement and returns a JSON-able dict; arrays
go to ``job["arrays_out"]``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .isolation import address_limit
from .measurements import (
    extrapolate,
    job_window,
    load_sequences,
    peak_rss_mb,
    phase,
    random_onehot,
    rss_mb,
    sample_positions,
    save_arrays,
    timed_runs,
)
from .models import prepare_export


def worker_prepare(job: dict) -> dict:
    """Find or export the model, check the export against PyTorch, write the sequences."""
    from yuzu_onnx.importer import load_model

    model = job["model"]
    notes: list[str] = []
    if model.get("path"):
        path = Path(model["path"])
        verified = None
    else:
        path, verified, notes = prepare_export(job)
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


#: the convert options that change the outputs themselves; the naive worker applies them too
TARGET_OPTIONS = ("select", "aggregate")


def naive_spec(job: dict):
    """The model naive ISM runs, and the targets it computes.

    ``(spec, targets)``: the job's model with the conversion's ``select``/``aggregate``
    applied in its graph (:func:`yuzu_onnx.targets.targeted_spec`, as :func:`yuzu_onnx.naive_ism`
    applies them), so the oracle's time, ISM and reference outputs are those of the outputs
    the converted model computes; ``targets`` is ``{output: [target records]}`` (``{}``
    without targets).
    """
    from yuzu_onnx.importer import load_model
    from yuzu_onnx.targets import targeted_spec, targets_key

    spec = load_model(job["model_path"], seq_len=job.get("seq_len"))
    options = convert_options(job)
    if not any(options.get(k) for k in TARGET_OPTIONS):
        return spec, {}
    spec, targets = targeted_spec(spec, options.get("select"), options.get("aggregate"))
    return spec, targets_key(targets)


def naive_at_positions(spec, x: np.ndarray, positions: np.ndarray, *, device: str) -> tuple[dict, dict, float, float]:
    """Naive ISM (every substitution, batched as :func:`yuzu_onnx.naive_ism` batches) at the
    absolute ``positions`` only.

    Returns ``(ism, reference outputs, setup_s, mutants_s)``: ISM arrays laid out like
    ``naive_ism``'s with ``len(positions)`` in place of the window, the reference outputs,
    the seconds spent creating the session and running the reference, and on the mutants.
    """
    from yuzu_onnx.oracle import auto_batch_size, build_mutants, ism_shape, mutant_mask
    from yuzu_onnx.runtime import make_session

    t0 = time.perf_counter()
    names = list(spec.output_names)
    session = make_session(spec.model, device=device)
    refs = dict(zip(names, (np.asarray(r) for r in session.run(names, {spec.input_name: x})), strict=True))
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    mask = mutant_mask(x, spec.layout, (0, spec.seq_len))[:, positions, :]
    ism = {name: np.zeros(ism_shape(spec, name, len(x), window=(0, len(positions))), np.float32) for name in names}
    n_idx, k_idx, a_idx = np.nonzero(mask)
    batch = auto_batch_size(spec)
    for lo in range(0, len(n_idx), batch):
        nb, kb, ab = n_idx[lo : lo + batch], k_idx[lo : lo + batch], a_idx[lo : lo + batch]
        mutants = build_mutants(x, spec.layout, nb, positions[kb], ab)
        outs = session.run(names, {spec.input_name: mutants})
        for name, out in zip(names, outs, strict=True):
            delta = np.asarray(out, np.float32) - refs[name][nb].astype(np.float32)
            if spec.layout == "ncl":
                ism[name][nb, ab, kb] = delta
            else:
                ism[name][nb, kb, ab] = delta
    return ism, refs, setup_s, time.perf_counter() - t1


def _worker_naive_sampled(job: dict, spec, x: np.ndarray, k: int) -> dict:
    """Naive ISM on ``k`` positions spread over the window, its time extrapolated to the window."""
    start, end = job_window(job) or (0, spec.seq_len)
    positions = sample_positions(start, end, k)
    phase(f"naive ISM runs on {len(positions)} of {end - start} positions (extrapolated)")
    rss_before = rss_mb()
    parts: list[tuple[float, float]] = []

    def once():
        ism, refs, setup_s, mutants_s = naive_at_positions(spec, x, positions, device=job["device"])
        parts.append((setup_s, mutants_s))
        return ism, refs

    timing = timed_runs(once, repeats=job["repeats"], budget_s=job["budget_s"])
    counted = parts[1:] if timing["warmup_s"] is not None else parts  # the warm-up is not a timed run
    estimates = [extrapolate(s, m, sampled=len(positions), width=end - start) for s, m in counted]
    ism, refs = timing["result"]
    save_arrays(job, ism, refs)
    return {"time_per_sequence_s": float(np.median(estimates)), "runs_s": estimates, "warmup_s": timing["warmup_s"],
            "rss_before_mb": rss_before, "sequences": 1, "extrapolated_from_positions": len(positions),
            "naive_sample": {"positions": len(positions), "window_positions": end - start,
                             "measured_s": timing["median_s"], "measured_runs_s": timing["runs_s"],
                             "setup_s": [s for s, _ in counted], "mutants_s": [m for _, m in counted]},
            "sampled_positions": [int(p - start) for p in positions],
            "notes": [f"naive ISM timed on {len(positions)} of {end - start} positions and extrapolated: "
                      f"setup + mutants × {end - start}/{len(positions)}"]}


def worker_naive(job: dict) -> dict:
    """The oracle on ONNX Runtime: naive ISM of one sequence, and the reference outputs.

    With ``job["naive_sample"]`` smaller than the window, naive ISM runs on that many
    positions spread over the window and its time is extrapolated (:func:`extrapolate`).
    A model converted with ``select``/``aggregate`` runs with the same targets
    (:func:`naive_spec`); the result names them (``targets``).
    """
    from yuzu_onnx.oracle import naive_ism, reference_outputs

    spec, targets = naive_spec(job)
    named = {"targets": targets} if targets else {}
    x = load_sequences(job, 1)
    device = job["device"]
    start, end = job_window(job) or (0, spec.seq_len)
    k = job.get("naive_sample")
    if k is not None and k < end - start:
        return {**_worker_naive_sampled(job, spec, x, k), **named}
    phase("naive ISM runs" + (" (with the conversion's targets)" if targets else ""))
    rss_before = rss_mb()
    timing = timed_runs(lambda: naive_ism(spec, x, window=job_window(job), device=device),
                        repeats=job["repeats"], budget_s=job["budget_s"])
    refs = reference_outputs(spec, x, device=device)
    save_arrays(job, timing["result"], refs)
    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
            "rss_before_mb": rss_before, "sequences": 1, **named}


def plan_summary(conv) -> dict:
    """The JSON record of a conversion's plan: FLOPs, speedups, memory, stages."""
    plan = conv.plan
    stages = [{"spacing": s.spacing, "n_probes": s.n_probes, "receptive_field": s.receptive_field,
               "nodes": len(s.nodes), "gflop_per_probe": s.flops_per_probe / 1e9} for s in plan.stages]
    return {
        "naive_gflop": plan.naive_flops / 1e9,
        "rewritten_gflop": plan.rewritten_flops / 1e9,
        "bound_gflop": plan.bound_flops / 1e9,
        "expected_speedup": plan.expected_speedup,
        "bound_speedup": plan.bound_speedup,
        "peak_bytes_per_sequence": float(plan.peak_bytes_per_sequence),
        "fixed_bytes": float(plan.fixed_bytes),
        "spacings": [s.spacing for s in plan.stages],
        "stages": stages,
        "tail_chunk": plan.tail_chunk,
        "window": list(plan.window),
        "fallback_reason": plan.fallback_reason,
        "first_conv_shortcut": [conv.spec.model.graph.node[c.node].name or c.output for c in plan.input_convs],
    }


def _bands(conv) -> dict:
    """``{output: {"width", "length"}}`` of the banded outputs of a conversion."""
    return {name: {"width": how.band.width, "length": how.band.length}
            for name, how in conv.plan.outputs.items() if how.form == "banded" and how.band is not None}


CONVERT_JOB_KEYS = ("probes", "first_conv", "reduce", "output_form")


def convert_options(job: dict) -> dict:
    """The conversion's keyword arguments: the model's ``convert_options``, then the job's own
    (``probes``, ``first_conv``, ``reduce``, ``output_form`` of a variant run) over them."""
    return {**job["model"].get("convert_options", {}), **{k: job[k] for k in CONVERT_JOB_KEYS if k in job}}


def worker_convert(job: dict) -> dict:
    """Convert the model; save it for the run workers; report the plan."""
    from yuzu_onnx.convert import convert_model, save_model

    rss_before = rss_mb()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        phase("converting")
        t0 = time.perf_counter()
        conv = convert_model(job["model_path"], seq_len=job.get("seq_len"), window=job_window(job),
                             **convert_options(job))
        convert_s = time.perf_counter() - t0
    save_model(conv.model, job["converted_path"])
    return {
        "convert_s": convert_s,
        "rss_before_mb": rss_before,
        "converted_mb": round(Path(job["converted_path"]).stat().st_size / 1e6, 2),
        "plan": {**plan_summary(conv), "bands": _bands(conv)},
        "notes": [str(w.message) for w in caught],
    }


def worker_yuzu(job: dict) -> dict:
    """The converted model on one sequence: warm-up, then the median of the repeats."""
    from yuzu_onnx.bands import bands_of, densify_results
    from yuzu_onnx.session import ISMSession

    rss_before = rss_mb()
    session = ISMSession(job["converted_path"], device=job["device"], threads=job["threads"])
    x = load_sequences(job, 1)
    phase(f"runs on one sequence ({session.provider})")
    session.run(x, batch_size=1)  # its peak is the memory of one sequence (later runs overlap a held result)
    one_sequence_rss = peak_rss_mb()
    timing = timed_runs(lambda: session.run(x, batch_size=1), repeats=job["repeats"], budget_s=job["budget_s"])
    result = timing["result"]
    ism_mb = sum(v.nbytes for v in result.values()) / 1e6
    notes = []
    if job.get("arrays_out"):
        file_mb = _npz_mb(result, Path(job["arrays_out"]).with_suffix(".result.npz"))
        bands = bands_of(session.info)
        if bands:  # compared with the oracle in the dense form
            result = densify_results(result, {"bands": {k: b.to_json() for k, b in bands.items()}})
            notes.append(f"banded outputs {sorted(bands)} densified (yuzu_onnx.densify) for the error check")
    save_arrays(job, result)
    out = {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
           "rss_before_mb": rss_before, "provider": session.provider, "sequences": 1, "ism_mb_per_sequence": ism_mb,
           "one_sequence_peak_rss_mb": one_sequence_rss, "notes": notes}
    if job.get("arrays_out"):
        out["result_file_mb_per_sequence"] = file_mb
    if session.info.targets:
        out["targets"] = session.info.targets
    return out


def _npz_mb(arrays: dict, path: Path) -> float:
    """Megabytes of ``arrays`` written as an uncompressed NPZ (as ``run`` writes results); the file is removed."""
    np.savez(path, **arrays)
    size = path.stat().st_size / 1e6
    path.unlink()
    return size


def worker_yuzu_batch(job: dict) -> dict:
    """The converted model on a batch of ``job["batch"]`` sequences: sequences per second.

    A batch that runs out of memory is halved, with a fresh session, until it fits
    (recorded in the notes).
    """
    import gc

    from yuzu_onnx.errors import InputError
    from yuzu_onnx.session import ISMSession

    rss_before = rss_mb()
    batch = job["batch"]
    x = load_sequences(job, batch)
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
            notes.append(f"a batch of {batch} ran out of memory (limit {address_limit(job) / 2**30:.1f} GiB of "
                         "address space); halved")
            batch //= 2
            del session
            gc.collect()
    return {"batch_s": timing["median_s"], "runs_s": timing["runs_s"], "batch": batch,
            "sequences_per_s": batch / timing["median_s"], "time_per_sequence_s": timing["median_s"] / batch,
            "rss_before_mb": rss_before, "provider": session.provider, "sequences": batch, "notes": notes}


WORKERS: dict[str, Callable[[dict], dict]] = {
    "prepare": worker_prepare,
    "naive": worker_naive,
    "convert": worker_convert,
    "yuzu": worker_yuzu,
    "yuzu_batch": worker_yuzu_batch,
}
