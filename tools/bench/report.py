"""The results files: ``bench_results.json`` and the tables of ``bench_results.md``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .records import FIRST_CONV_METHODS, MEMORY_TOLERANCE

RESULTS_JSON = "bench_results.json"
RESULTS_MD = "bench_results.md"

INTRO = ("The machine was shared with other busy processes (see the load averages): timings are noisy, "
         "and a speedup is a ratio of two noisy times. Naive ISM (the oracle, `naive_ism`, which creates its "
         "ONNX Runtime session in each call) and yuzu-onnx are both timed on one sequence: the median of up to "
         "`--repeats` runs after a warm-up run, or a single run when one run takes longer than the time "
         "budget of a measurement (`runs_s` in the JSON). yuzu-onnx is also timed on a batch for sequences "
         "per second. Peak RSS is each method's own child process (Python, ONNX Runtime and the model "
         "included).")
MODEL_HEADER = ("| model | L | naive s/seq | yuzu s/seq | speedup | expected | bound | of bound | GFLOP naive → "
                "rewritten | GFLOP/s naive / yuzu | convert s | seq/s (batch) | peak RSS MB naive / yuzu / batch "
                "| peak memory per sequence: estimated / measured | max rel. error | spacings |")
MODEL_LEGEND = ("Speedup = naive s/seq ÷ yuzu s/seq; expected and bound are FLOP ratios from the plan "
                "(naive ÷ rewritten, naive ÷ sparse-recompute lower bound); of bound = speedup ÷ bound, above 100% "
                "when the rewritten graph runs at more GFLOP/s than naive ISM does (GFLOP/s = the plan's FLOPs ÷ "
                "the measured time). Max rel. "
                "error: max |yuzu − naive| over all outputs ÷ max(|model output|, |naive ISM|). seq/s at the batch "
                "in parentheses (smaller than requested when the plan's memory estimate or the time budget says so, "
                "see `batch_limited_by` in the JSON). Naive s/seq \"extrapolated from K positions\": naive ISM ran on "
                "K positions spread over the window (`--naive-sample`), its time is the session and reference "
                "outputs plus the mutants' time × window ÷ K, and the error is checked at those K positions. "
                "Peak memory per sequence: the plan's estimate (`peak_bytes_per_sequence` plus `fixed_bytes`, the "
                "runtime, weights and session held once, as `inspect` prints them) "
                "/ the peak RSS of the process that loaded the converted model and ran one sequence (the "
                "interpreter, ONNX Runtime and the weights included); ⚠ marks a measured peak above "
                f"{MEMORY_TOLERANCE:g} × the estimate.")


def fmt(value, spec: str = ".3g", missing: str = "–") -> str:
    """``value`` formatted with ``spec``, or ``missing`` for None and non-finite numbers."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def seconds(value) -> str:
    """A time in seconds: three significant digits, whole seconds from 100 s."""
    if value is None:
        return "–"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def status(record: dict) -> str:
    """``ok``, or the failure and the start of its message."""
    return "ok" if record.get("ok") else f"{record['status']}: {short(record.get('error'))}"


def short(text: str | None, n: int = 160) -> str:
    """``text`` on one line, fit for a table cell, at most ``n`` characters."""
    text = (text or "").replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


class _Tables:
    """The records of a results file, each with its run, and the cells the tables share."""

    def __init__(self, results: dict) -> None:
        model_run = {m["model"]: m.get("run", 0) for m in results["models"]}
        self.results = results
        self.records = [dict(r, run=r.get("run", model_run.get(r["model"], 0))) for r in results["records"]]
        self.several = len(results["runs"]) > 1

    def find(self, model: str, method: str) -> dict | None:
        return next((r for r in self.records if r["model"] == model and r["method"] == method), None)

    def of_kind(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]

    def run_cell(self, item: dict | None) -> str:
        """The leading ``run |`` cell when the file holds several runs."""
        return f"{item.get('run', 0) + 1} | " if self.several and item is not None else ("– | " if self.several else "")

    def header(self, columns: str, n: int) -> list[str]:
        """A table's header and rule: ``columns`` after the run column when there is one."""
        return [("| run " if self.several else "") + columns, "|---" * (n + self.several) + "|"]


def _same_run(a: dict | None, b: dict) -> bool:
    return a is not None and bool(a.get("ok")) and a.get("run", 0) == b.get("run", 0)


def _ok(record: dict | None) -> bool:
    return record is not None and bool(record.get("ok"))


def _run_lines(results: dict) -> list[str]:
    """One line per run: when, which commit, which machine, which models."""
    lines = []
    for i, run in enumerate(results["runs"]):
        m, git = run["machine"], run["git"]
        dirty = f" + {git['uncommitted_changes']} uncommitted changes" if git.get("uncommitted_changes") else ""
        la0, la1 = m["load_average_start"], m.get("load_average_end", [None])
        label = f"Run {i + 1}" if len(results["runs"]) > 1 else "Run"
        lines.append(
            f"{label}: {run['created']}, commit `{git.get('commit')}`{dirty}, yuzu-onnx {run['yuzu_onnx_version']}; "
            f"machine: {m['cpu_model']}, {m['cores']} cores, {m['threads']} threads used, "
            f"{fmt(m.get('memory_gib'), '.0f')} GiB RAM, onnxruntime {m['onnxruntime']} "
            f"({run['options']['device']}), torch {m.get('torch') or 'not installed'}; load average "
            f"{la0[0]:.2f} at start, {fmt(la1[0], '.2f')} at end; models: {', '.join(run['models'])}."
        )
    return lines


def naive_cell(record: dict | None) -> str:
    """The naive s/seq cell: the time, and where naive ISM ran on a sample of the window,
    ``(extrapolated from K positions)``."""
    if not _ok(record):
        return "failed"
    text = seconds(record["time_per_sequence_s"])
    k = record.get("extrapolated_from_positions")
    return f"{text} (extrapolated from {k} positions)" if k else text


def memory_cell(record: dict | None) -> str:
    """``estimated / measured`` peak memory of one sequence, like ``1.21 / 1.35 GiB`` (MiB below
    1 GiB), with ⚠ where the measured peak exceeds ``MEMORY_TOLERANCE`` × the estimate."""
    record = record or {}
    estimate, measured = record.get("peak_memory_estimate_bytes"), record.get("peak_memory_measured_bytes")
    if not estimate and not measured:
        return "–"
    unit, scale = ("GiB", 2**30) if max(estimate or 0, measured or 0) >= 2**30 else ("MiB", 2**20)
    spec = ".2f" if unit == "GiB" else ".0f"
    text = f"{fmt(estimate and estimate / scale, spec)} / {fmt(measured and measured / scale, spec)} {unit}"
    return text + (" ⚠" if record.get("peak_memory_over_estimate") else "")


def _model_row(t: _Tables, info: dict) -> str:
    """A model's row of the main table."""
    name = info["model"]
    naive, yuzu, batch = t.find(name, "naive_ort"), t.find(name, "yuzu_onnx"), t.find(name, "yuzu_onnx_batch")
    plan = info.get("plan") or {}
    length = str(info.get("seq_len") or "?")
    if info.get("window"):
        length += f" (window {info['window'][1] - info['window'][0]})"
    seqs = f"{fmt(batch['sequences_per_s'])} ({batch['batch']})" if _ok(batch) else "–"
    rss = " / ".join(fmt(r.get("peak_rss_mb"), ".0f") if r else "–" for r in (naive, yuzu, batch))
    gflop = f"{fmt(plan.get('naive_gflop'), '.0f')} → {fmt(plan.get('rewritten_gflop'), '.0f')}" if plan else "–"
    rates = " / ".join(
        fmt(plan[key] / r["time_per_sequence_s"], ".0f") if plan and _ok(r) and r.get("time_per_sequence_s") else "–"
        for key, r in (("naive_gflop", naive), ("rewritten_gflop", yuzu)))
    return (
        f"| {t.run_cell(info)}{name} | {length} | {naive_cell(naive)} "
        f"| {seconds(yuzu['time_per_sequence_s']) if _ok(yuzu) else 'failed'} "
        f"| {fmt(yuzu.get('speedup_vs_naive'), '.1f') + '×' if _ok(yuzu) and yuzu.get('speedup_vs_naive') else '–'} "
        f"| {fmt(plan.get('expected_speedup'), '.1f')}× | {fmt(plan.get('bound_speedup'), '.1f')}× "
        f"| {fmt(yuzu.get('fraction_of_bound'), '.0%') if _ok(yuzu) else '–'} | {gflop} | {rates} "
        f"| {fmt(info.get('convert_s'), '.1f')} | {seqs} | {rss} | {memory_cell(yuzu)} "
        f"| {fmt(yuzu.get('relative_error'), '.1e') if _ok(yuzu) else '–'} "
        f"| {', '.join(map(str, plan.get('spacings', []))) or '–'} |"
    )


def _model_failures(t: _Tables, info: dict) -> list[str]:
    """The ``## Failures`` lines of a model: preparation, oracle and yuzu-onnx runs."""
    name = info["model"]
    failures = [f"* **{name}**: {info['error']}"] if info.get("status") != "ok" else []
    for r in (t.find(name, m) for m in ("naive_ort", "yuzu_onnx", "yuzu_onnx_batch")):
        if r is not None and not r.get("ok"):
            failures.append(f"* **{name}** {r['method']}: {r['status']}: {r['error']}")
    return failures


def _model_table(t: _Tables) -> list[str]:
    """The main table (one row per model), its legend, providers and model notes."""
    header = ("| run " if t.several else "") + MODEL_HEADER
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    lines += [_model_row(t, info) for info in t.results["models"]]
    lines += ["", MODEL_LEGEND]
    providers = sorted({r["provider"] for r in t.records if r.get("provider")})
    if providers:
        lines += ["", f"Execution provider of the converted runs: {', '.join(providers)}."]
    notes = [f"* {i['model']}: {i['note']}" for i in t.results["models"] if i.get("note")]
    if notes:
        lines += ["", *notes]
    return lines


def _gaussian_table(t: _Tables) -> list[str]:
    records = t.of_kind("gaussian")
    if not records:
        return []
    lines = ["", "## Gaussian probes (the published method)", "",
             "`convert --probes gaussian` (alpha auto) beside the exact spaced probes, same sequences.", "",
             *t.header("| model | s/seq | speedup vs naive ORT | spaced probes s/seq "
                       "| convert s | Pearson r | max rel. error | status |", 8)]
    for r in records:
        yuzu = t.find(r["model"], "yuzu_onnx")
        lines.append(
            f"| {t.run_cell(r)}{r['model']} | {seconds(r.get('time_per_sequence_s')) if r.get('ok') else '–'} "
            f"| {fmt(r.get('speedup_vs_naive'), '.2f')} "
            f"| {seconds(yuzu.get('time_per_sequence_s')) if _same_run(yuzu, r) else '–'} "
            f"| {fmt(r.get('convert_s'), '.1f')} | {fmt(r.get('pearson_r'), '.8f')} "
            f"| {fmt(r.get('relative_error'), '.1e')} | {status(r)} |")
    return lines


def _first_conv_table(t: _Tables) -> list[str]:
    records = t.of_kind("first_conv")
    if not records:
        return []
    lines = ["", "## First-convolution shortcut", "",
             "The same model converted with `--first-conv shortcut` (convolutions of the input from "
             "gathered kernel-column differences) and `--first-conv probes` (convolved on every probe), "
             "timed on the same sequence one after the other.", "",
             *t.header("| model | first conv | s/seq | speedup vs naive ORT "
                       "| expected (FLOPs) | shortcut on | max rel. error | status |", 8)]
    for r in records:
        mode = "shortcut" if r["method"] == FIRST_CONV_METHODS["shortcut"] else "on probes"
        lines.append(
            f"| {t.run_cell(r)}{r['model']} | {mode} | {seconds(r.get('time_per_sequence_s')) if r.get('ok') else '–'} "
            f"| {fmt(r.get('speedup_vs_naive'), '.2f')} | {fmt(r.get('expected_speedup'), '.1f')} "
            f"| {', '.join(r.get('first_conv_shortcut') or []) or '–'} "
            f"| {fmt(r.get('relative_error'), '.1e')} | {status(r)} |")
    return lines


def _forms_table(t: _Tables) -> list[str]:
    """``--forms``: dense (the main run), banded and ``l2`` on the same sequence, with the
    original Yuzu's ``l2`` where it ran."""
    models = list(dict.fromkeys(r["model"] for r in t.of_kind("form")))
    if not models:
        return []
    lines = ["", "## Output forms (profile models)", "",
             "The main run (dense output), `--output-form banded` and `--reduce l2`, one sequence each; "
             "MB: the ISM outputs of one sequence in memory and as a result NPZ. The original Yuzu "
             "(`yuzu_original`, when run with `--peers`) computes the l2 form.", "",
             *t.header("| model | dense s/seq (× naive) | banded s/seq (× naive) | l2 s/seq (× naive) "
                       "| original Yuzu l2 s/seq | l2 vs original Yuzu | band | MB dense / banded "
                       "| file MB dense / banded | max rel. error dense / banded / l2 |", 10)]

    def timed(r: dict | None) -> str:
        if not _ok(r):
            return "–"
        return f"{seconds(r.get('time_per_sequence_s'))} ({fmt(r.get('speedup_vs_naive'), '.1f')}×)"

    for name in models:
        dense, banded, l2 = (t.find(name, m) for m in ("yuzu_onnx", "yuzu_onnx_banded", "yuzu_onnx_l2"))
        yuzu = t.find(name, "yuzu_original")
        vs = None
        if _ok(yuzu) and _ok(l2) and _same_run(yuzu, l2):
            vs = yuzu["time_per_sequence_s"] / l2["time_per_sequence_s"]
        bands = ", ".join(f"{o}: {b['width']} of {b['length']}" for o, b in ((banded or {}).get("bands") or {}).items())
        mem = " / ".join(fmt((r or {}).get("ism_mb_per_sequence"), ".3g") if _ok(r) else "–" for r in (dense, banded))
        files = " / ".join(fmt((r or {}).get("result_file_mb_per_sequence"), ".3g") if _ok(r) else "–"
                           for r in (dense, banded))
        errors = " / ".join(fmt((r or {}).get("relative_error"), ".1e") if _ok(r) else "–" for r in (dense, banded, l2))
        lines.append(
            f"| {t.run_cell(banded or l2)}{name} | {timed(dense)} | {timed(banded)} | {timed(l2)} "
            f"| {seconds(yuzu.get('time_per_sequence_s')) if _ok(yuzu) else '–'} "
            f"| {fmt(vs, '.1f') + '× faster' if vs else '–'} | {bands or (status(banded) if banded else '–')} "
            f"| {mem} | {files} | {errors} |")
    return lines


def _peer_table(t: _Tables) -> list[str]:
    records = t.of_kind("peer")
    if not records:
        return []
    lines = ["", "## Peers", "", "Same sequences, same thread count; PyTorch modules built by "
             "`tools/torch_models.py` with the seed of the ONNX export.", "",
             *t.header("| model | method | s/seq | speedup vs naive ORT "
                       "| yuzu-onnx faster by | setup s | peak RSS MB | max rel. error | status |", 9)]
    for r in records:
        yuzu = t.find(r["model"], "yuzu_onnx")
        faster = None
        if r.get("ok") and _same_run(yuzu, r) and r.get("time_per_sequence_s"):
            faster = r["time_per_sequence_s"] / yuzu["time_per_sequence_s"]
        err = fmt(r.get("relative_error"), ".1e")
        if r.get("compared_as") == "l2" and r.get("relative_error") is not None:
            err += " (l2)"
        lines.append(
            f"| {t.run_cell(r)}{r['model']} | {r['method']} "
            f"| {seconds(r.get('time_per_sequence_s')) if r.get('ok') else '–'} "
            f"| {fmt(r.get('speedup_vs_naive'), '.2f')} | {fmt(faster, '.1f')}"
            f"{'×' if faster else ''} | {fmt(r.get('convert_s'), '.1f')} "
            f"| {fmt(r.get('peak_rss_mb'), '.0f')} | {err} | {status(r)} |")
    return lines


def markdown_report(results: dict) -> str:
    """The tables of ``bench_results.md``."""
    t = _Tables(results)
    lines = ["# yuzu-onnx benchmark", "", *_run_lines(results), "", INTRO, "", *_model_table(t),
             *_gaussian_table(t), *_first_conv_table(t), *_forms_table(t), *_peer_table(t)]
    failures = [line for info in results["models"] for line in _model_failures(t, info)]
    if failures:
        lines += ["", "## Failures", "", *failures]
    return "\n".join(lines) + "\n"


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    """Write ``bench_results.json`` and ``bench_results.md`` into ``out`` (each atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / RESULTS_JSON, out / RESULTS_MD
    for path, text in ((json_path, json.dumps(results, indent=1, default=str) + "\n"),
                       (md_path, markdown_report(results))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path
