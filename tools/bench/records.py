"""The results format (``yuzu-onnx-bench/1``): one record per model and method, and merging runs.

``{"schema", "runs": [run info], "models": [model record], "records": [method record]}``;
every model and method record names its run (``run``: an index into ``runs``).
"""

from __future__ import annotations

from .models import MODELS
from .peers import PEERS

SCHEMA = "yuzu-onnx-bench/1"
FIRST_CONV_METHODS = {"shortcut": "yuzu_first_conv_shortcut", "probes": "yuzu_first_conv_on_probes"}
FORM_METHODS = ("yuzu_onnx_banded", "yuzu_onnx_l2")
METHOD_ORDER = ["naive_ort", "yuzu_onnx", "yuzu_onnx_batch", *FORM_METHODS, "yuzu_gaussian",
                *FIRST_CONV_METHODS.values(), *PEERS]
RECORD_FIELDS = ("status", "ok", "error", "time_per_sequence_s", "runs_s", "warmup_s", "convert_s", "batch",
                 "batch_s", "sequences_per_s", "sequences", "peak_rss_mb", "rss_before_mb", "provider",
                 "compared_as", "package", "peer_batch_size", "alpha", "notes", "wall_s", "load_average_1min",
                 "batch_limited_by", "rss_growth_per_sequence_mb", "fast_path_used", "ism_mb_per_sequence",
                 "result_file_mb_per_sequence", "extrapolated_from_positions", "naive_sample", "sampled_positions",
                 "targets")
MEMORY_TOLERANCE = 1.15  # a measured peak above the plan's estimate times this is flagged


def memory_fields(estimate_bytes: float | None, measured_mb: float | None) -> dict:
    """The memory check of a converted model: the plan's ``peak_bytes_per_sequence`` beside
    the measured peak RSS (``ru_maxrss``, in MB of 2**20 bytes) of the fresh process that
    loaded it and ran one sequence.

    Returns ``peak_memory_estimate_bytes``, ``peak_memory_measured_bytes``,
    ``peak_memory_ratio`` (measured ÷ estimate) and ``peak_memory_over_estimate`` (measured
    above ``MEMORY_TOLERANCE`` × estimate); None where a number is missing.
    """
    estimate = float(estimate_bytes) if estimate_bytes else None
    measured = float(measured_mb) * 2**20 if measured_mb else None
    ratio = measured / estimate if estimate and measured else None
    return {"peak_memory_estimate_bytes": estimate, "peak_memory_measured_bytes": measured,
            "peak_memory_ratio": ratio, "peak_memory_over_estimate": None if ratio is None else ratio > MEMORY_TOLERANCE}


def make_record(model: str, method: str, kind: str, result: dict) -> dict:
    """The record of one method on one model: the result's fields of :data:`RECORD_FIELDS`."""
    rec = {"model": model, "method": method, "kind": kind}
    rec.update({k: result[k] for k in RECORD_FIELDS if k in result})
    return rec


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
                    and (r["model"] not in fresh_models or r["kind"] in ("peer", "gaussian", "first_conv", "form"))]
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
    records.sort(key=lambda r: (rank.get(r["model"], len(rank)),
                                METHOD_ORDER.index(r["method"]) if r["method"] in METHOD_ORDER else len(METHOD_ORDER)))
    return {"schema": SCHEMA, "runs": runs, "models": models, "records": records}
