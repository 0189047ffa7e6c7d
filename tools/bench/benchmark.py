"""The benchmark of each model: oracle, conversion, converted runs, variants and peers.

For every model the benchmark measures, on the same seeded random one-hot sequences:

* ``naive_ort``: the exact oracle (:func:`yuzu_onnx.naive_ism`) on ONNX Runtime, same threads;
* the conversion (:func:`yuzu_onnx.convert_model`; its time is reported on its own);
* ``yuzu_onnx``: the converted model on one sequence (median of the repeats after a warm-up run);
* ``yuzu_onnx_batch``: the converted model on a batch (sequences per second);
* with ``--gaussian`` / ``--first-conv-compare``: the model converted with other options;
* with ``--forms``: the output forms of profile models: ``yuzu_onnx_banded``
  (``--output-form banded``, densified for the error check) and ``yuzu_onnx_l2``
  (``--reduce l2``), each timed on one sequence with its output memory and file size;
* with ``--peers``: the peers of :mod:`.peers`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .environment import git_state, machine_info, yuzu_onnx_version
from .errors import BenchError
from .isolation import Log, default_max_memory, function_spec, run_job, status_line
from .measurements import (
    apply_targets,
    at_positions,
    describe_targets,
    l2_reduce,
    load_arrays,
    position_axis,
    relative_error,
)
from .models import BenchModel, default_cache_dir, naive_sample_for, oracle_comparison
from .peers import PEERS, Peer
from .records import FIRST_CONV_METHODS, SCHEMA, make_record, memory_fields
from .workers import WORKERS

Runner = Callable[..., dict]


class Oracle(NamedTuple):
    """Naive ISM's arrays: ISM and reference outputs; ``positions`` (indices into the window)
    when naive ISM ran on a sample of the window's positions, None for all of them;
    ``targets``: ``{output: [target records]}`` naive ISM applied (the conversion's
    ``select``/``aggregate``), ``{}`` for none."""

    ism: dict[str, np.ndarray]
    refs: dict[str, np.ndarray]
    positions: list[int] | None = None
    targets: dict[str, list[dict]] = {}


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
    forms: bool = False
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
    naive_sample: int | None = None

    def options(self) -> dict:
        """The options as recorded in the results (JSON-able; the models are listed apart)."""
        d = {k: v for k, v in asdict(self).items() if k != "models"}
        return json.loads(json.dumps(d, default=str))


def one_sequence_estimate(plan: dict) -> float:
    """The plan's memory estimate of a process that runs one sequence: the per-sequence
    peak plus what the process holds once (runtime, weights, session)."""
    return float(plan["peak_bytes_per_sequence"]) + float(plan.get("fixed_bytes", 0.0))


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


def base_job(config: BenchConfig, model: BenchModel, method: str, work: Path) -> dict:
    """The fields every job of ``model`` shares; ``method`` names one of :data:`WORKERS` or a peer."""
    job = {
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
        "naive_sample": naive_sample_for(model, config.naive_sample),
    }
    if method in WORKERS:
        job["function"] = function_spec(WORKERS[method])
    return job


def model_line(model: BenchModel, seq_len: int | None) -> str:
    """The progress line that starts a model: its name, length and window."""
    length = f"L={seq_len}" if seq_len else "length unknown"
    return f"{model.name}: {length}" + (f", window {model.window[0]}:{model.window[1]}" if model.window else "")


def bench_model(config: BenchConfig, model: BenchModel, work: Path, peers: Mapping[str, Peer],
                log: Log) -> tuple[dict, list[dict]]:
    """All measurements of one model: the model record and one record per method."""
    info = {"model": model.name, "arch": model.arch, "seq_len": model.seq_len,
            "window": list(model.window) if model.window else None, "note": model.note, "status": "ok", "error": None,
            "convert_options": dict(model.convert_options)}
    records: list[dict] = []

    def run(method: str, *, timeout_s: float | None = None, quiet: bool = False, **extra) -> dict:
        job = base_job(config, model, method, work)
        job.update(extra)
        return run_job(job, work_dir=work, timeout_s=timeout_s or config.timeout_s, isolate=config.isolate,
                       log=None if quiet else log, timeout_option="--peer-timeout" if timeout_s else "--timeout")

    if model.seq_len:  # a file's length is known once it is loaded
        log(model_line(model, model.seq_len))
    prep = run("prepare", quiet=not model.seq_len, n_sequences=max(config.batch, 1), cache_dir=str(config.cache_dir),
               reuse_dirs=list(config.reuse_dirs))
    if not model.seq_len:
        log(model_line(model, prep.get("seq_len")))
        log(status_line("prepare", prep))
    if not prep["ok"]:
        info.update(status="failed", error=f"prepare: {prep['error']}")
        return info, records
    info.update({k: prep[k] for k in ("model_path", "layout", "alphabet_size", "seq_len", "outputs", "model_mb",
                                      "verified_against_torch")})
    info["prepare_notes"] = prep.get("notes", [])
    common = {"model_path": prep["model_path"], "seq_len": prep["seq_len"], "outputs": prep["outputs"]}
    layout = prep["layout"]

    naive = run("naive", arrays_out=str(work / "naive.npz"), **common)
    records.append(make_record(model.name, "naive_ort", "baseline", naive))
    oracle = (Oracle(*load_arrays(work / "naive.npz"), naive.get("sampled_positions"), naive.get("targets") or {})
              if naive["ok"] else None)
    records += _yuzu_records(config, model, work, run, common, oracle, layout, info)
    if config.gaussian:
        records.append(_gaussian_record(model, work, run, common, oracle, layout))
    if config.first_conv_compare:
        for mode in ("shortcut", "probes"):
            records.append(_first_conv_record(model, work, run, common, oracle, layout, mode))
    if config.forms:
        records += _form_records(model, work, run, common, oracle, layout)
    for name, fn in peers.items():
        records.append(_peer_record(config, model, name, fn, work, run, common, oracle, layout))
    add_speedups(info, records)
    return info, records


def _yuzu_records(config: BenchConfig, model: BenchModel, work: Path, run: Runner, common: dict,
                  oracle: Oracle | None, layout: str, info: dict) -> list[dict]:
    """Convert (the plan goes into ``info``), then the single-sequence and the batch records."""
    converted = work / "model.ism.onnx"
    conv = run("convert", converted_path=str(converted), **common)
    if not conv["ok"]:
        info["convert_error"] = conv["error"]
        return [make_record(model.name, "yuzu_onnx", "yuzu", conv)]
    info["plan"] = conv["plan"]
    info["convert_s"] = conv["convert_s"]
    info["converted_mb"] = conv["converted_mb"]
    info["convert_peak_rss_mb"] = conv["peak_rss_mb"]
    info["convert_notes"] = conv.get("notes", [])
    single = run("yuzu", converted_path=str(converted), arrays_out=str(work / "yuzu.npz"), **common)
    single["convert_s"] = conv["convert_s"]
    rec = make_record(model.name, "yuzu_onnx", "yuzu", single)
    rec.update(memory_fields(one_sequence_estimate(conv["plan"]),
                             single.get("one_sequence_peak_rss_mb") or single.get("peak_rss_mb")))
    compared_as = oracle_comparison(model.convert_options)
    if single["ok"] and oracle is not None and compared_as is not None:
        rec.update(checked(work / "yuzu.npz", oracle, layout, compared_as, targets=single.get("targets") or {}))
    elif single["ok"] and compared_as is None:
        rec["notes"] = [*rec.get("notes", []), "not compared with naive ISM: the convert options "
                        f"{dict(model.convert_options)} change the outputs in a way the bench does not check"]
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
    return [rec, make_record(model.name, "yuzu_onnx_batch", "yuzu", batched)]


def _variant_record(model: BenchModel, work: Path, run: Runner, common: dict, oracle: Oracle | None, layout: str,
                    method: str, kind: str, compared_as: str = "none", **convert_options) -> tuple[dict, dict]:
    """Convert with ``convert_options``, time one sequence and compare with the oracle
    (``compared_as="l2_per_output"`` for ``--reduce l2``).

    Returns the record and the conversion's result (its plan, when it succeeded).
    """
    converted = work / f"{method}.onnx"
    conv = run("convert", converted_path=str(converted), **convert_options, **common)
    if not conv["ok"]:
        return make_record(model.name, method, kind, conv), conv
    single = run("yuzu", converted_path=str(converted), arrays_out=str(work / f"{method}.npz"), **common)
    single["convert_s"] = conv["convert_s"]
    rec = make_record(model.name, method, kind, single)
    rec.update(memory_fields(one_sequence_estimate(conv["plan"]),
                             single.get("one_sequence_peak_rss_mb") or single.get("peak_rss_mb")))
    if single["ok"] and oracle is not None:
        rec.update(checked(work / f"{method}.npz", oracle, layout, compared_as, targets=single.get("targets") or {}))
    return rec, conv


def _form_records(model: BenchModel, work: Path, run: Runner, common: dict, oracle: Oracle | None,
                  layout: str) -> list[dict]:
    """``--output-form banded`` and ``--reduce l2`` on the same sequence (``--forms``)."""
    banded, conv = _variant_record(model, work, run, common, oracle, layout, "yuzu_onnx_banded", "form",
                                   output_form="banded")
    if conv["ok"]:
        banded["bands"] = conv["plan"].get("bands", {})
    l2, _ = _variant_record(model, work, run, common, oracle, layout, "yuzu_onnx_l2", "form",
                            compared_as="l2_per_output", reduce="l2")
    return [banded, l2]


def _gaussian_record(model: BenchModel, work: Path, run: Runner, common: dict, oracle: Oracle | None,
                     layout: str) -> dict:
    """The published method (``--probes gaussian``) on the same sequences: time, error, Pearson r."""
    rec, _ = _variant_record(model, work, run, common, oracle, layout, "yuzu_gaussian", "gaussian", probes="gaussian")
    if "relative_error" in rec:  # the run succeeded and was compared with the oracle
        got, _ = load_arrays(work / "yuzu_gaussian.npz")
        got = at_positions(got, oracle.positions, position_axis(layout))
        want = oracle.ism
        flat_got = np.concatenate([np.asarray(got[k], np.float64).ravel() for k in want])
        flat_want = np.concatenate([np.asarray(want[k], np.float64).ravel() for k in want])
        rec["pearson_r"] = float(np.corrcoef(flat_got, flat_want)[0, 1])
    return rec


def _first_conv_record(model: BenchModel, work: Path, run: Runner, common: dict, oracle: Oracle | None,
                       layout: str, mode: str) -> dict:
    """The spaced-probe model converted with ``--first-conv mode``, timed on the same sequence."""
    rec, conv = _variant_record(model, work, run, common, oracle, layout, FIRST_CONV_METHODS[mode], "first_conv",
                                first_conv=mode)
    if conv["ok"]:
        rec["first_conv_shortcut"] = conv["plan"].get("first_conv_shortcut", [])
        rec["expected_speedup"] = conv["plan"].get("expected_speedup")
    return rec


def _peer_record(config: BenchConfig, model: BenchModel, name: str, fn: Peer, work: Path, run: Runner,
                 common: dict, oracle: Oracle | None, layout: str) -> dict:
    """One peer on the same sequence, compared with the oracle (a failure is a record)."""
    result = run(name, arrays_out=str(work / f"{name}.npz"), function=function_spec(fn),
                 timeout_s=config.peer_timeout_s, **common)
    rec = make_record(model.name, name, "peer", result)
    if result["ok"]:
        compared_as = result.get("compared_as", "none")
        if oracle is None:
            rec["notes"] = [*rec.get("notes", []), "no oracle result to compare with"]
        elif oracle.targets and compared_as != "none":
            rec["notes"] = [*rec.get("notes", []), f"not compared with naive ISM: the peer's {compared_as} values "
                            f"cannot be targeted afterwards ({describe_targets(oracle.targets)})"]
        else:
            rec.update(checked(work / f"{name}.npz", oracle, layout, compared_as, apply=oracle.targets))
            if oracle.targets and rec["ok"]:
                rec["notes"] = [*rec.get("notes", []), "the peer computes every output value; the conversion's "
                                f"targets were applied to its ISM for the check ({describe_targets(oracle.targets)})"]
    return rec


def checked(path: Path, oracle: Oracle, layout: str, compared_as: str, **kwargs) -> dict:
    """:func:`compare`, with a failed check (other shapes or targets than the oracle's) as a failed record."""
    try:
        return compare(path, oracle, layout, compared_as, **kwargs)
    except BenchError as exc:
        return {"status": "failed", "ok": False, "error": f"output check: {exc}"}


def compare(path: Path, oracle: Oracle, layout: str, compared_as: str, *, targets: Mapping | None = None,
            apply: Mapping | None = None) -> dict:
    """The error of the arrays a worker wrote to ``path`` against the oracle (``compared_as="l2"``: as norms),
    at the oracle's sampled positions when it ran on a sample of the window.

    ``targets``: the targets the worker's arrays were computed with (a converted model's
    ``select``/``aggregate`` records); they must be the oracle's, else the check fails.
    ``apply``: targets to apply to the worker's untargeted ISM first (a peer's;
    :func:`.measurements.apply_targets`).
    """
    if apply:
        targets = apply
    if dict(targets or {}) != dict(oracle.targets):
        raise BenchError(f"the arrays were computed with targets {describe_targets(targets or {}) or 'none'}, "
                         f"naive ISM with {describe_targets(oracle.targets) or 'none'}")
    got, _ = load_arrays(path)
    if apply:
        got = apply_targets(got, apply)
    got = at_positions(got, oracle.positions, position_axis(layout, compared_as))
    want, refs = oracle.ism, oracle.refs
    if compared_as == "l2_per_output":  # --reduce l2: each output's norm, scaled by that output's norm
        want = {name: l2_reduce({name: value}, layout)["all"] for name, value in want.items()}
        if layout == "nlc":
            want = {name: np.swapaxes(value, 1, 2) for name, value in want.items()}
        refs = {name: np.sqrt(np.sum(r.reshape(len(r), -1).astype(np.float64) ** 2, axis=1)) for name, r in refs.items()}
    if compared_as == "l2":  # the norm of the output change; its scale is the norm of the output
        want = l2_reduce(want, layout)
        norms = [np.sqrt(np.sum(r.reshape(len(r), -1).astype(np.float64) ** 2, axis=1)) for r in refs.values()]
        refs = {name: np.sqrt(sum(n**2 for n in norms)) for name in want}
    err = relative_error(got, want, refs)
    out = {"relative_error": err["relative_error"], "error_per_output": err["per_output"]}
    if err["relative_error"] is None:
        out.update(status="failed", ok=False, error="non-finite values (NaN or inf) in the output")
    return out


def add_speedups(info: dict, records: list[dict]) -> None:
    """Speedups over naive ISM for the single-sequence records, and the yuzu run's fraction of the bound."""
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


def run_benchmark(config: BenchConfig, *, peers: Mapping[str, Peer] | None = None, log: Log = print) -> dict:
    """Benchmark every model of ``config``; returns the results (see :mod:`.records`).

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
    log(f"benchmark: {len(config.models)} models, {config.threads} threads, device {config.device}, "
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
                "git": git, "yuzu_onnx_version": yuzu_onnx_version(), "machine": machine,
                "options": config.options(), "wall_s": time.time() - started, "models": [m.name for m in config.models],
                "peers": list(peers)}
    results = {"schema": SCHEMA, "runs": [run_info], "models": models, "records": records}
    for item in models + records:
        item["run"] = 0
    return results


def failed_measurements(results: dict) -> list[str]:
    """This run's own failures: models that could not be prepared, and failed oracle or yuzu-onnx runs.

    Peers, Gaussian probes and first-convolution variants may fail: that is a result.
    """
    return [m["model"] for m in results["models"] if m["status"] != "ok"] + [
        f"{r['model']}/{r['method']}" for r in results["records"]
        if r["kind"] in ("baseline", "yuzu") and not r["ok"]]


def every_model_failed(results: dict) -> bool:
    """True when no model of the run has all of its oracle and yuzu-onnx measurements."""
    complete = {m["model"] for m in results["models"] if m["status"] == "ok"}
    complete -= {r["model"] for r in results["records"] if r["kind"] in ("baseline", "yuzu") and not r["ok"]}
    return not complete
