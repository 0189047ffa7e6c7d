"""The benchmark harness (tools/bench/) on a tiny model: schema, tables, failing peers.

The peers below run in child processes like the real ones, so they are module-level
functions the child imports by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tools.bench import (
    benchmark,
    cli,
    isolation,
    measurements,
    models,
    peers,
    profile,
    records,
    report,
)
from tools.bench.errors import BenchError
from tools.bench.workers import worker_prepare
from yuzu_onnx.testing import build_tiny_cnn

ROOT = Path(__file__).resolve().parent.parent

SEQ_LEN = 64


def good_peer(job: dict) -> dict:
    """An exact peer: the oracle itself."""
    from yuzu_onnx.oracle import naive_ism

    x = np.load(job["x_path"])[:1]
    window = measurements.job_window(job)
    timing = measurements.timed_runs(lambda: naive_ism(job["model_path"], x, window=window, device=job["device"],
                                                                     threads=job["threads"]), repeats=1, budget_s=5)
    np.savez(job["arrays_out"], **{f"ism/{k}": v for k, v in timing["result"].items()})
    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "compared_as": "none",
            "sequences": 1}


def raising_peer(job: dict) -> dict:
    raise RuntimeError("this peer is broken on purpose")


def nan_peer(job: dict) -> dict:
    from yuzu_onnx.oracle import naive_ism

    x = np.load(job["x_path"])[:1]
    ism = naive_ism(job["model_path"], x)
    np.savez(job["arrays_out"], **{f"ism/{k}": np.full_like(v, np.nan) for k, v in ism.items()})
    return {"time_per_sequence_s": 0.1, "compared_as": "none", "sequences": 1}


def crashing_peer(job: dict) -> dict:
    os.kill(os.getpid(), 9)
    return {}


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    path = folder / "tiny.onnx"
    onnx.save(build_tiny_cnn(seq_len=SEQ_LEN), str(path))
    config = benchmark.BenchConfig(
        models=models.resolve_models([str(path)]), repeats=2, batch=3, budget_s=5, out=folder / "out",
        cache_dir=folder / "cache", timeout_s=120, peer_timeout_s=120,
    )
    peers = {"good": good_peer, "broken": raising_peer, "nan": nan_peer, "crash": crashing_peer}
    lines: list[str] = []
    results = benchmark.run_benchmark(config, peers=peers, log=lines.append)
    json_path, md_path = report.write_results(results, config.out)
    return results, json_path, md_path, lines


def _record(results, method):
    (rec,) = [r for r in results["records"] if r["method"] == method]
    return rec


def test_json_schema(tiny_results):
    results, json_path, _, _ = tiny_results
    data = json.loads(json_path.read_text())
    assert data["schema"] == records.SCHEMA
    assert set(data) == {"schema", "runs", "models", "records"}
    (run,) = data["runs"]
    for key in ("cpu_model", "cores", "threads", "onnxruntime", "load_average_start", "load_average_end"):
        assert key in run["machine"], key
    assert run["machine"]["threads"] == 2
    assert "commit" in run["git"] and run["options"]["batch"] == 3
    (model,) = data["models"]
    assert model["model"] == "tiny" and model["status"] == "ok" and model["seq_len"] == SEQ_LEN
    plan = model["plan"]
    for key in ("naive_gflop", "rewritten_gflop", "bound_gflop", "expected_speedup", "bound_speedup",
                "peak_bytes_per_sequence", "spacings"):
        assert key in plan, key
    assert plan["spacings"] and all(isinstance(s, int) for s in plan["spacings"])
    methods = [r["method"] for r in data["records"]]
    assert methods == ["naive_ort", "yuzu_onnx", "yuzu_onnx_batch", "good", "broken", "nan", "crash"]
    for rec in data["records"]:
        assert {"model", "method", "kind", "status", "ok", "error", "peak_rss_mb", "wall_s"} <= set(rec)
        assert rec["kind"] in ("baseline", "yuzu", "peer")


def test_measurements(tiny_results):
    results = tiny_results[0]
    naive, yuzu, batch = (_record(results, m) for m in ("naive_ort", "yuzu_onnx", "yuzu_onnx_batch"))
    assert naive["ok"] and yuzu["ok"] and batch["ok"]
    assert naive["time_per_sequence_s"] > 0 and yuzu["time_per_sequence_s"] > 0
    assert yuzu["relative_error"] < 1e-5
    assert yuzu["speedup_vs_naive"] == pytest.approx(naive["time_per_sequence_s"] / yuzu["time_per_sequence_s"])
    assert yuzu["fraction_of_bound"] > 0
    assert yuzu["warmup_s"] is not None and 1 <= len(yuzu["runs_s"]) <= 2
    assert yuzu["convert_s"] > 0
    assert batch["batch"] == 3 and batch["sequences_per_s"] > 0
    for rec in (naive, yuzu, batch):
        assert rec["peak_rss_mb"] > 10  # a child process with numpy and onnxruntime loaded


def test_failing_peers_are_recorded(tiny_results):
    results, _, _, lines = tiny_results
    good, broken, nan, crash = (_record(results, m) for m in ("good", "broken", "nan", "crash"))
    assert good["ok"] and good["relative_error"] == 0.0
    assert not broken["ok"] and broken["status"] == "failed"
    assert "RuntimeError: this peer is broken on purpose" in broken["error"]
    assert not nan["ok"] and "non-finite" in nan["error"]
    assert not crash["ok"] and crash["status"] == "killed" and "signal 9" in crash["error"]
    assert any("broken" in line and "failed" in line for line in lines)


def test_markdown(tiny_results):
    _, _, md_path, _ = tiny_results
    text = md_path.read_text()
    assert text.startswith("# yuzu-onnx benchmark")
    assert "| model | L | naive s/seq | yuzu s/seq | speedup |" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    assert row.count("|") == text.splitlines()[text.splitlines().index(row) - 2].count("|")
    assert "## Peers" in text and "| tiny | broken |" in text and "this peer is broken on purpose" in text
    assert "## Failures" not in text  # peers failing is not the model failing


def test_main_quick_in_process(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_cnn(seq_len=32), str(path))
    out = tmp_path / "out"
    rc = cli.main(["--quick", "--models", str(path), "--out", str(out), "--in-process", "--batch", "2",
                   "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    data = json.loads((out / report.RESULTS_JSON).read_text())
    assert data["runs"][0]["options"]["quick"] is True
    assert [r["method"] for r in data["records"]] == ["naive_ort", "yuzu_onnx", "yuzu_onnx_batch"]
    captured = capsys.readouterr()
    assert "| tiny |" in captured.out
    progress = captured.err.splitlines()
    assert "tiny: L=32" in progress  # the length read from the file, not "L=?"
    assert progress.index("tiny: L=32") < next(i for i, line in enumerate(progress) if "prepare" in line)
    assert not [line for line in progress if "error" in line]


def test_without_torch_the_script_stops_before_any_work(tmp_path):
    """Named models need PyTorch: one error line, exit 2, no results, no cache (torch shadowed)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "torch.py").write_text('raise ImportError("torch is hidden by this test")\n')
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != models.BENCH_CACHE_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), str(ROOT)])
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--quick", "--out", str(out),
                           "--cache-dir", str(cache)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("tools/bench.py: error: needs PyTorch: pip install torch==2.13.0")
    assert "toynet@200, bpnet4@200" in line
    assert done.stdout == ""
    assert not out.exists() and not cache.exists()


def test_requirements_follow_what_the_run_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "torch_importable", lambda: False)
    (toynet,) = models.resolve_models(["toynet"], quick=True)
    tiny = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_cnn(seq_len=32), str(tiny))
    (own,) = models.resolve_models([str(tiny)])
    cache = tmp_path / "cache"
    assert cli.missing_requirements([own], cache_dir=cache, reuse_dirs=()) == []
    (problem,) = cli.missing_requirements([toynet, own], cache_dir=cache, reuse_dirs=())
    assert problem.startswith("needs PyTorch:") and "toynet@200" in problem
    cache.mkdir()
    (cache / toynet.cache_name).write_bytes(b"")  # an export on disk: used unchecked without torch
    assert cli.missing_requirements([toynet], cache_dir=cache, reuse_dirs=()) == []
    (problem,) = cli.missing_requirements([own], cache_dir=cache, reuse_dirs=(), peers=True)
    assert "runs the peers" in problem
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    problems = cli.missing_requirements([own], cache_dir=cache, reuse_dirs=(), peers=True,
                                        explicit_peers=["yuzu_original"])
    assert problems[1] == "peer yuzu_original needs yuzu: pip install yuzu-ism"


def test_every_model_failing_writes_no_results(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    out = tmp_path / "out"
    out.mkdir()
    (out / report.RESULTS_JSON).write_text("earlier results\n")
    rc = cli.main(["--quick", "--models", str(broken), "--out", str(out), "--in-process",
                   "--cache-dir", str(tmp_path / "cache")])
    assert rc == 1
    assert (out / report.RESULTS_JSON).read_text() == "earlier results\n"
    assert not (out / report.RESULTS_MD).exists()
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if "error" in line and line.startswith("tools/bench.py")]
    assert errors == ["tools/bench.py: error: every model failed, no results written: broken"]
    assert "broken: length unknown" in captured.err.splitlines()


def test_the_package_does_not_reach_into_tools():
    """``yuzu_onnx`` works from a wheel: no benchmark module, no import of ``tools``."""
    package = ROOT / "yuzu_onnx"
    assert not (package / "bench.py").exists()
    for path in package.rglob("*.py"):
        text = path.read_text()
        for needle in ("import tools", "from tools", "torch_models"):
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle!r}"


def test_first_conv_compare_times_both_modes(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_cnn(seq_len=32), str(path))
    out = tmp_path / "out"
    rc = cli.main(["--quick", "--models", str(path), "--out", str(out), "--in-process", "--batch", "1",
                   "--cache-dir", str(tmp_path / "cache"), "--first-conv-compare"])
    assert rc == 0
    data = json.loads((out / report.RESULTS_JSON).read_text())
    by_method = {r["method"]: r for r in data["records"]}
    short, probes = by_method["yuzu_first_conv_shortcut"], by_method["yuzu_first_conv_on_probes"]
    for rec in (short, probes):
        assert rec["ok"] and rec["kind"] == "first_conv" and rec["relative_error"] < 1e-5
        assert rec["time_per_sequence_s"] > 0 and rec["speedup_vs_naive"] > 0
    assert short["first_conv_shortcut"] and not probes["first_conv_shortcut"]
    text = (out / report.RESULTS_MD).read_text()
    assert "## First-convolution shortcut" in text and "| tiny | shortcut |" in text and "| tiny | on probes |" in text


def test_failing_model_is_recorded(tmp_path):
    config = benchmark.BenchConfig(models=[models.BenchModel("ghost", path=str(tmp_path / "missing.onnx"))],
                                   repeats=1, batch=1, budget_s=1, out=tmp_path, cache_dir=tmp_path, isolate=False)
    results = benchmark.run_benchmark(config, log=lambda s: None)
    (model,) = results["models"]
    assert model["status"] == "failed" and "prepare" in model["error"]
    assert "## Failures" in report.markdown_report(results)


def test_unknown_model_is_an_error(capsys):
    assert cli.main(["--models", "nosuchnet"]) == 2
    assert "unknown model 'nosuchnet'" in capsys.readouterr().err


def test_merge_results_replaces_what_was_run_again():
    def results(tag, model_names, methods):
        return {"schema": records.SCHEMA, "runs": [{"tag": tag}],
                "models": [{"model": m, "run": 0} for m in model_names],
                "records": [{"model": m, "method": meth, "kind": kind, "tag": tag, "run": 0}
                            for m, meth, kind in methods]}

    old = results("old", ["toynet", "deepsea"], [("toynet", "naive_ort", "baseline"), ("toynet", "tangermeme", "peer"),
                                                  ("deepsea", "naive_ort", "baseline"), ("deepsea", "yuzu_onnx", "yuzu")])
    new = results("new", ["deepsea"], [("deepsea", "naive_ort", "baseline")])
    merged = records.merge_results(old, new)
    assert [r["tag"] for r in merged["runs"]] == ["old", "new"]
    assert [(m["model"], m["run"]) for m in merged["models"]] == [("toynet", 0), ("deepsea", 1)]
    # the model's main records are all replaced; only peers and Gaussian records survive a rerun
    assert [(r["model"], r["method"], r["tag"], r["run"]) for r in merged["records"]] == [
        ("toynet", "naive_ort", "old", 0), ("toynet", "tangermeme", "old", 0), ("deepsea", "naive_ort", "new", 1)]
    again = records.merge_results(merged, results("newer", ["toynet"], [("toynet", "naive_ort", "baseline")]))
    assert [r["tag"] for r in again["runs"]] == ["old", "new", "newer"]
    assert [(r["model"], r["method"], r["tag"], r["run"]) for r in again["records"]] == [
        ("toynet", "naive_ort", "newer", 2), ("toynet", "tangermeme", "old", 0), ("deepsea", "naive_ort", "new", 1)]


def test_timed_runs_budget():
    calls = []
    out = measurements.timed_runs(lambda: calls.append(1) or len(calls), repeats=3, budget_s=10)
    assert len(calls) == 4 and len(out["runs_s"]) == 3 and out["result"] == 4
    calls.clear()
    out = measurements.timed_runs(lambda: calls.append(1), repeats=3, budget_s=0.0)
    assert len(calls) == 1 and out["warmup_s"] is None and len(out["runs_s"]) == 1


def test_timed_runs_release_each_result_before_the_next_run():
    """A run never overlaps the previous run's result (a held 2 GB ISM output would make every
    timed run allocate fresh memory)."""
    import weakref

    class Output:
        pass

    held: list[weakref.ref] = []

    def run() -> Output:
        alive = [r for r in held if r() is not None]
        assert not alive, "the previous result is still held"
        out = Output()
        held.append(weakref.ref(out))
        return out

    out = measurements.timed_runs(run, repeats=3, budget_s=10)
    assert len(held) == 4 and out["result"] is held[-1]()


def test_choose_batch():
    assert benchmark.choose_batch(32, peak_bytes_per_sequence=2**20, max_memory=2**30, seconds_per_sequence=0.1,
                              budget_s=100) == (32, "requested")
    b, why = benchmark.choose_batch(32, peak_bytes_per_sequence=2**30, max_memory=4 * 2**30, seconds_per_sequence=0.1,
                                budget_s=100)
    assert b == 4 and why.startswith("memory")
    b, why = benchmark.choose_batch(32, peak_bytes_per_sequence=0, max_memory=0, seconds_per_sequence=10, budget_s=45)
    assert b == 4 and why.startswith("time")
    b, why = benchmark.choose_batch(32, peak_bytes_per_sequence=2**20, max_memory=4 * 2**30, seconds_per_sequence=0.1,
                                budget_s=100, single_peak_bytes=3 * 2**30)
    assert b == 1 and "one sequence peaked at 3.00 GiB" in why


def test_batch_reason_says_when_the_worker_halved_the_batch():
    assert benchmark.batch_reason("requested", requested=32, ran=32) == "requested"
    assert benchmark.batch_reason("requested", requested=32, ran=16) == (
        "memory: a batch of 32 ran out of memory at run time; halved to 16")
    assert benchmark.batch_reason("time: 2.00 s per sequence", requested=8, ran=None).startswith("time")


def test_relative_error_and_l2():
    want = {"y": np.array([[[1.0, -2.0]]], dtype=np.float32)}
    got = {"y": want["y"] + np.float32(0.01)}
    err = measurements.relative_error(got, want, {"y": np.array([[4.0]])})
    assert err["relative_error"] == pytest.approx(0.01 / 4.0, rel=1e-4)
    assert measurements.relative_error({"y": np.full((1, 1, 2), np.nan)}, want)["relative_error"] is None
    ism = {"a": np.ones((1, 4, 5, 3), np.float32), "b": np.ones((1, 4, 5), np.float32)}
    l2 = measurements.l2_reduce(ism, "ncl")
    assert list(l2) == ["all"] and l2["all"].shape == (1, 4, 5) and np.allclose(l2["all"], 2.0)
    assert measurements.l2_reduce({"a": np.ones((1, 5, 4, 3))}, "nlc")["all"].shape == (1, 4, 5)


def test_stage_of():
    assert profile.stage_of("/conv1/Conv") == "ref (reference pass)"
    assert profile.stage_of("yuzu/shift/s2//conv/Conv") == "stage 2"
    assert profile.stage_of("yuzu/bases/s0/Relu") == "stage 0"
    assert profile.stage_of("yuzu/shift/repack_13") == "repack"
    assert profile.stage_of("yuzu/shift/decode_57") == "decode"
    assert profile.stage_of("yuzu/shift/tail/Gemm_3") == "tail"
    assert profile.stage_of("yuzu/window_input_4") == "window_input"
    assert profile.stage_of("fused yuzu/shift/tail//head/head.2/Gemm") == "tail"
    assert profile.stage_of("fused /body/body.0/Conv") == "ref (reference pass)"


def test_aggregate_profile():
    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 50},  # the warm-up run: ignored
        node("yuzu/shift/s0//c/Conv", "Conv", 10, 40),
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 100},
        node("yuzu/classes", "If", 101, 95),  # control flow: its subgraph kernels are counted instead
        node("yuzu/shift/s0//c/Conv", "Conv", 102, 60),
        node("yuzu/shift/repack_3", "Where", 170, 30),
        node("/c/Conv", "Conv", 101, 1),
    ]
    prof = profile.aggregate_profile(events)
    assert prof["run_ms"] == pytest.approx(0.1) and prof["kernel_ms"] == pytest.approx(0.091)
    shares = {r["name"]: r["ms"] for r in prof["by_category"]}
    assert shares["stage 0"] == pytest.approx(0.06) and shares["repack"] == pytest.approx(0.03)
    assert {r["name"] for r in prof["by_op"]} == {"Conv", "Where"} and prof["runs"] == 1
    # two more runs: every kernel's median over the three runs after the warm-up
    events += [{"cat": "Session", "name": "model_run", "ts": 300, "dur": 300}, node("yuzu/shift/s0//c/Conv", "Conv", 310, 200),
               node("yuzu/shift/repack_3", "Where", 400, 10),
               {"cat": "Session", "name": "model_run", "ts": 700, "dur": 80}, node("yuzu/shift/s0//c/Conv", "Conv", 710, 50),
               node("yuzu/shift/repack_3", "Where", 760, 20), node("/c/Conv", "Conv", 770, 3)]
    prof = profile.aggregate_profile(events)
    shares = {r["name"]: r["ms"] for r in prof["by_category"]}
    assert prof["runs"] == 3 and prof["run_ms"] == pytest.approx(0.1)
    assert shares["stage 0"] == pytest.approx(0.06) and shares["repack"] == pytest.approx(0.02)
    assert shares["ref (reference pass)"] == pytest.approx(0.001)  # absent from one run: 0 there


def test_profile_worker(tmp_path):
    from yuzu_onnx.convert import convert_model, save_model

    conv = convert_model(build_tiny_cnn(seq_len=SEQ_LEN))
    path = save_model(conv.model, tmp_path / "tiny.ism.onnx")
    x = measurements.random_onehot(1, SEQ_LEN, 4, "ncl", seed=0)
    np.save(tmp_path / "x.npy", x)
    job = {"converted_path": str(path), "x_path": str(tmp_path / "x.npy"), "threads": 1, "device": "cpu",
           "profile_dir": str(tmp_path), "batch": 1}
    out = profile.worker_profile(job)
    names = {r["name"] for r in out["profile"]["by_category"]}
    assert "stage 0" in names or any(n.startswith("other") and "stage 0" in n for n in names)
    assert out["profile"]["kernel_ms"] > 0 and out["sequences"] == 1
    assert out["warmup_runs"] == profile.WARMUP_RUNS and out["profile"]["runs"] >= 1
    assert not list(tmp_path.glob("ort_profile*.json"))


def test_yuzu_sequential_matches_module():
    """The original Yuzu's flat copy of a model (position-major Flatten) gives the same outputs."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("yuzu")
    tm = models.load_torch_models()
    for arch, length in (("toynet", 64), ("basset", 96)):
        module = tm.build(arch, seq_len=length)
        seq = peers.yuzu_sequential(module, length, torch)
        x = torch.from_numpy(tm.random_onehot(3, length, seed=4))
        with torch.no_grad():
            torch.testing.assert_close(seq(x), module(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(BenchError, match="sequential"):
        peers.yuzu_sequential(tm.build("bpnet4", seq_len=64), 64, torch)


def test_tangermeme_peer_in_process(tmp_path):
    """tangermeme on a small torch model, through the benchmark, agrees with the oracle."""
    pytest.importorskip("torch")
    pytest.importorskip("tangermeme")
    model = models.BenchModel("toynet64", "toynet", 64, cache_name="toynet_L64.onnx")
    config = benchmark.BenchConfig(models=[model], repeats=1, batch=1, budget_s=1, out=tmp_path, cache_dir=tmp_path,
                                   isolate=False, peers=True, peer_names=("tangermeme",))
    results = benchmark.run_benchmark(config, log=lambda s: None)
    (peer,) = [r for r in results["records"] if r["method"] == "tangermeme"]
    assert peer["ok"], peer["error"]
    assert peer["relative_error"] < 1e-5 and peer["package"].startswith("tangermeme")
    assert results["models"][0]["verified_against_torch"] is True


def test_in_process_run_leaves_the_address_space_limit_alone(tmp_path):
    """An in-process run must not lower the caller's (and its later children's) limit."""
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    out = isolation.run_worker({"method": "prepare", "function": isolation.function_spec(worker_prepare),
                                "max_memory": 2**30, "model": {"name": "nonexistent"}, "n_sequences": 1})
    assert not out["ok"]
    assert resource.getrlimit(resource.RLIMIT_AS) == before


# --- long-context models: naive ISM on a sample of positions, the memory column, convert options


def test_sample_positions_and_extrapolation():
    assert measurements.sample_positions(0, 1000, 5).tolist() == [0, 250, 500, 749, 999]
    assert measurements.sample_positions(10, 14, 8).tolist() == [10, 11, 12, 13]  # k >= width: every position
    assert measurements.sample_positions(10, 14, None).tolist() == [10, 11, 12, 13]
    spread = measurements.sample_positions(557, 1557, 32)
    assert len(spread) == 32 and spread[0] == 557 and spread[-1] == 1556 and np.all(np.diff(spread) > 0)
    with pytest.raises(BenchError, match="at least 1"):
        measurements.sample_positions(0, 100, 0)
    # setup once, the mutants' time scaled by window / sampled
    assert measurements.extrapolate(0.5, 2.0, sampled=32, width=1000) == pytest.approx(0.5 + 2.0 * 1000 / 32)
    assert measurements.extrapolate(0.5, 2.0, sampled=100, width=100) == pytest.approx(2.5)
    with pytest.raises(BenchError):
        measurements.extrapolate(0.5, 2.0, sampled=0, width=100)


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_naive_at_positions_is_naive_ism_there(layout):
    from tools.bench.workers import naive_at_positions
    from yuzu_onnx.importer import load_model
    from yuzu_onnx.oracle import naive_ism

    spec = load_model(build_tiny_cnn(seq_len=SEQ_LEN, layout=layout))
    x = measurements.random_onehot(2, SEQ_LEN, 4, layout, seed=3)
    positions = np.array([0, 17, 40, 63])
    got, refs, setup_s, mutants_s = naive_at_positions(spec, x, positions, device="cpu")
    want = naive_ism(spec, x, device="cpu")
    axis = measurements.position_axis(layout)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], np.take(value, positions, axis=axis))
        assert refs[name].shape == (2, *spec.output(name).shape[1:])
    assert setup_s > 0 and mutants_s > 0


def test_worker_naive_extrapolates_from_the_sample(tmp_path):
    from tools.bench.workers import worker_naive

    path = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_cnn(seq_len=SEQ_LEN), str(path))
    np.save(tmp_path / "x.npy", measurements.random_onehot(1, SEQ_LEN, 4, "ncl", seed=0))
    job = {"model_path": str(path), "seq_len": SEQ_LEN, "x_path": str(tmp_path / "x.npy"), "device": "cpu",
           "repeats": 2, "budget_s": 5, "arrays_out": str(tmp_path / "naive.npz"),
           "model": {"window": [8, 48]}, "naive_sample": 5}
    out = worker_naive(job)
    sample = out["naive_sample"]
    assert out["extrapolated_from_positions"] == 5 and sample["window_positions"] == 40
    assert out["sampled_positions"] == [0, 10, 20, 29, 39]  # relative to the window
    assert len(out["runs_s"]) == len(sample["setup_s"]) == len(sample["mutants_s"]) == 2  # the warm-up is not counted
    expected = [s + m * 40 / 5 for s, m in zip(sample["setup_s"], sample["mutants_s"], strict=True)]
    assert out["runs_s"] == pytest.approx(expected)
    assert out["time_per_sequence_s"] == pytest.approx(float(np.median(expected)))
    ism, refs = measurements.load_arrays(tmp_path / "naive.npz")
    assert ism["y"].shape == (1, 4, 5, 3) and refs["y"].shape == (1, 3)
    # a sample as wide as the window is the ordinary oracle run
    full = worker_naive(dict(job, naive_sample=40))
    assert "extrapolated_from_positions" not in full and measurements.load_arrays(tmp_path / "naive.npz")[0]["y"].shape[2] == 40


def test_compare_at_the_sampled_positions(tmp_path):
    rng = np.random.default_rng(0)
    full = {"y": rng.normal(size=(1, 4, 40, 3)).astype(np.float32)}
    refs = {"y": np.ones((1, 3), np.float32)}
    np.savez(tmp_path / "got.npz", **{"ism/y": full["y"]})
    positions = [0, 10, 39]
    oracle = benchmark.Oracle({"y": full["y"][:, :, positions]}, refs, positions)
    assert benchmark.compare(tmp_path / "got.npz", oracle, "ncl", "none")["relative_error"] == 0.0
    shifted = benchmark.Oracle({"y": full["y"][:, :, [1, 11, 38]]}, refs, positions)
    assert benchmark.compare(tmp_path / "got.npz", shifted, "ncl", "none")["relative_error"] > 0.01


def test_memory_fields_and_cell():
    gib = 2**30
    fields = records.memory_fields(1.0 * gib, 1.2 * 1024)  # measured in MB of 2**20 bytes
    assert fields["peak_memory_estimate_bytes"] == gib and fields["peak_memory_measured_bytes"] == 1.2 * gib
    assert fields["peak_memory_ratio"] == pytest.approx(1.2) and fields["peak_memory_over_estimate"] is True
    assert report.memory_cell(fields) == "1.00 / 1.20 GiB ⚠"
    within = records.memory_fields(1.21 * gib, 1.35 * 1024)
    assert within["peak_memory_over_estimate"] is False and report.memory_cell(within) == "1.21 / 1.35 GiB"
    at_limit = records.memory_fields(gib, 1.15 * 1024)
    assert at_limit["peak_memory_over_estimate"] is False  # flagged only above 1.15 × the estimate
    small = records.memory_fields(100 * 2**20, 180.4)
    assert report.memory_cell(small) == "100 / 180 MiB ⚠"
    missing = records.memory_fields(gib, None)
    assert missing["peak_memory_ratio"] is None and missing["peak_memory_over_estimate"] is None
    assert report.memory_cell(missing) == "1.00 / – GiB"
    assert report.memory_cell(None) == report.memory_cell({}) == "–"


def test_naive_cell_says_when_it_extrapolates():
    assert report.naive_cell({"ok": True, "time_per_sequence_s": 812.4}) == "812"
    assert report.naive_cell({"ok": True, "time_per_sequence_s": 812.4, "extrapolated_from_positions": 32}) == (
        "812 (extrapolated from 32 positions)")
    assert report.naive_cell({"ok": False, "status": "failed", "error": "x"}) == "failed"


def test_table_shows_extrapolation_and_memory(tiny_results):
    results = json.loads(json.dumps(tiny_results[0]))
    naive, yuzu = (_record(results, m) for m in ("naive_ort", "yuzu_onnx"))
    naive["extrapolated_from_positions"] = 7
    yuzu.update(records.memory_fields(2**20, 300.0))
    text = report.markdown_report(results)
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    assert "(extrapolated from 7 positions)" in cells[" naive s/seq "]
    assert cells[" peak memory per sequence: estimated / measured "].strip() == "1 / 300 MiB ⚠"
    # the real run recorded both numbers and their ratio
    real = _record(tiny_results[0], "yuzu_onnx")
    plan = tiny_results[0]["models"][0]["plan"]
    assert real["peak_memory_estimate_bytes"] == plan["peak_bytes_per_sequence"] + plan["fixed_bytes"]
    assert plan["fixed_bytes"] > 0
    assert real["peak_memory_ratio"] == pytest.approx(
        real["peak_memory_measured_bytes"] / real["peak_memory_estimate_bytes"])


def test_model_variants_carry_convert_options():
    (l2,) = models.resolve_models(["borzoi_like:l2"])
    base = models.MODELS["borzoi_like"]
    assert l2.name == "borzoi_like:l2" and dict(l2.convert_options) == {"reduce": "l2"}
    assert (l2.arch, l2.cache_name, l2.window, l2.naive_sample) == (base.arch, base.cache_name, base.window, 20)
    assert dict(models.MODELS["borzoi_like_l2"].convert_options) == {"reduce": "l2"}
    assert models.MODELS["borzoi_like_l2"].cache_name == base.cache_name  # one export for both
    (custom,) = models.resolve_models(["deepsea:reduce=l2+first_conv=probes+alpha=1.5"])
    assert dict(custom.convert_options) == {"reduce": "l2", "first_conv": "probes", "alpha": 1.5}
    with pytest.raises(BenchError, match="no convert option"):
        models.resolve_models(["deepsea:windoww=3"])
    with pytest.raises(BenchError, match="KEY=VALUE"):
        models.resolve_models(["deepsea:nonsense"])
    with pytest.raises(BenchError, match="unknown model"):
        models.resolve_models(["nomodel:l2"])
    (quick,) = models.resolve_models(["chrombpnet:l2"], quick=True)
    assert (quick.name, quick.seq_len, quick.window) == ("chrombpnet:l2@400", 400, (100, 300))
    assert dict(quick.options) == {"out_len": 200} and quick.naive_sample == 16
    assert dict(quick.convert_options) == {"reduce": "l2"} and quick.cache_name == "chrombpnet_L400.onnx"
    (windowed,) = models.resolve_models(["borzoi_like_l2"], window=(8000, 8010))
    assert windowed.window == (8000, 8010) and dict(windowed.convert_options) == {"reduce": "l2"}


def test_new_models_windows_and_samples():
    m = models.MODELS
    assert m["bpnet_lite"].window is None and m["bpnet_lite"].naive_sample is None  # all 2114 positions
    assert m["chrombpnet"].window == (557, 1557)
    assert m["splice10k"].window == (5000, 10000) and m["splice10k"].seq_len == 15000
    assert m["borzoi_like"].window == (8142, 8242)
    assert 100 <= m["basenji2_like"].window[1] - m["basenji2_like"].window[0] <= 400
    assert models.naive_sample_for(m["chrombpnet"], None) == 32
    assert models.naive_sample_for(m["chrombpnet"], 0) is None  # --naive-sample 0: every position
    assert models.naive_sample_for(m["toynet"], 8) == 8


def test_oracle_comparison_follows_the_convert_options():
    assert models.oracle_comparison({}) == "none"
    assert models.oracle_comparison({"reduce": "none", "first_conv": "probes"}) == "none"
    assert models.oracle_comparison({"reduce": "l2"}) == "l2_per_output"
    assert models.oracle_comparison({"reduce": {"profile": "l2", "counts": "l2"}}) == "l2_per_output"
    assert models.oracle_comparison({"reduce": {"profile": "l2", "counts": "none"}}) is None
    assert models.oracle_comparison({"reduce": "sum"}) is None
    assert models.oracle_comparison({"outputs": ["human"]}) is None  # not checked against the oracle
    # output targets: the naive worker applies the same ones, so the outputs compare as they are
    assert models.oracle_comparison({"select": "human:1=0", "aggregate": "human:2=0:4:sum"}) == "none"
    assert models.oracle_comparison({"select": "human:1=0", "reduce": "l2"}) == "l2_per_output"


def test_convert_options_of_a_job():
    from tools.bench.workers import convert_options

    job = {"model": {"convert_options": {"reduce": "l2", "first_conv": "probes"}}, "output_form": "banded"}
    assert convert_options(job) == {"reduce": "l2", "first_conv": "probes", "output_form": "banded"}
    assert convert_options(dict(job, reduce="none"))["reduce"] == "none"  # a variant run's own option wins
    assert convert_options({"model": {}}) == {}


def test_naive_sample_option(tmp_path):
    args = cli.build_parser().parse_args(["--models", "chrombpnet", "--naive-sample", "8"])
    assert cli.config_from_args(args).naive_sample == 8
    assert cli.config_from_args(cli.build_parser().parse_args(["--models", "toynet"])).naive_sample is None
    with pytest.raises(BenchError, match="naive-sample"):
        cli.config_from_args(cli.build_parser().parse_args(["--models", "toynet", "--naive-sample", "-1"]))


def test_convert_options_and_sample_through_the_benchmark(tmp_path):
    """A model converted with reduce=l2, naive ISM on 6 of 40 positions: compared as norms at those positions."""
    path = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_cnn(seq_len=SEQ_LEN), str(path))
    model = models.BenchModel("tiny:l2", path=str(path), window=(12, 52), convert_options={"reduce": "l2"},
                              naive_sample=6)
    config = benchmark.BenchConfig(models=[model], repeats=1, batch=2, budget_s=5, out=tmp_path / "out",
                                   cache_dir=tmp_path / "cache", isolate=False)
    results = benchmark.run_benchmark(config, peers={}, log=lambda _: None)
    naive, yuzu = (_record(results, m) for m in ("naive_ort", "yuzu_onnx"))
    assert naive["ok"] and naive["extrapolated_from_positions"] == 6 and len(naive["sampled_positions"]) == 6
    assert yuzu["ok"] and yuzu["relative_error"] < 1e-5
    assert results["models"][0]["convert_options"] == {"reduce": "l2"}
    assert yuzu["peak_memory_estimate_bytes"] > 0  # in-process: no peak RSS of its own to measure
    assert "(extrapolated from 6 positions)" in report.markdown_report(results)


def test_targets_variants_fit_the_quick_lengths():
    """``--quick`` shortens borzoi_like/basenji2_like to 24 bins: the targets variants sum ten of those."""
    (borzoi,) = models.resolve_models(["borzoi_like_targets"], quick=True)
    assert dict(borzoi.convert_options) == {"select": {"human": {1: [0, 1, 2, 3]}},
                                            "aggregate": {"human": {2: (7, 17, "sum")}}}
    assert models.MODELS["borzoi_like_targets"].convert_options["aggregate"] == {"human": {2: (90, 100, "sum")}}
    assert "(7, 17, 'sum')" in borzoi.note  # the table's model note says what was converted
    (basenji,) = models.resolve_models(["basenji2_like_targets"], quick=True)
    assert basenji.convert_options["aggregate"] == {"human": {1: (7, 17, "sum")}}
    # a variant's own aggregate is kept under --quick
    (own,) = models.resolve_models(['borzoi_like_targets:aggregate={"human":{"2":[0,3,"mean"]}}'], quick=True)
    assert own.convert_options["aggregate"] == {"human": {"2": [0, 3, "mean"]}}
    assert own.convert_options["select"] == {"human": {1: [0, 1, 2, 3]}}


TARGET_RECORDS = {"profile": [{"select": {"axis": 1, "indices": [1]}},
                              {"aggregate": {"axis": 2, "start": 10, "end": 30, "how": "sum"}}],
                  "counts": [{"select": {"axis": 1, "indices": [0]}}]}


@pytest.mark.parametrize("naive_sample", [None, 6])
def test_targets_variant_compares_naive_and_yuzu_like_for_like(tmp_path, naive_sample):
    """A model converted with select/aggregate (as ``borzoi_like_targets``): naive ISM runs with
    the same targets, so the speedup and the error compare the same outputs, and the records
    name the targets; a peer's untargeted ISM is targeted for its check."""
    from yuzu_onnx.testing import build_bpnet

    path = tmp_path / "bpnet.onnx"
    onnx.save(build_bpnet(seq_len=48, seed=3), str(path))
    base = models.BenchModel("bpnet", path=str(path), window=(8, 40) if naive_sample else None,
                             naive_sample=naive_sample)
    model = models.variant(base, "bpnet:targets", {
        "select": {"profile": {1: [1]}, "counts": {1: [0]}}, "aggregate": {"profile": {-1: (10, 30, "sum")}}})
    work = tmp_path / "work"
    config = benchmark.BenchConfig(models=[model], repeats=1, batch=2, budget_s=5, out=tmp_path / "out",
                                   cache_dir=tmp_path / "cache", isolate=False, work_dir=work, keep=True)
    results = benchmark.run_benchmark(config, peers={"good": good_peer}, log=lambda _: None)
    naive, yuzu, peer = (_record(results, m) for m in ("naive_ort", "yuzu_onnx", "good"))
    assert naive["ok"] and yuzu["ok"] and peer["ok"], (naive.get("error"), yuzu.get("error"), peer.get("error"))
    assert naive["targets"] == yuzu["targets"] == TARGET_RECORDS  # the records name the targets
    assert yuzu["relative_error"] is not None and yuzu["relative_error"] <= 1e-5
    assert yuzu["speedup_vs_naive"] > 0
    assert "targets" not in peer and peer["relative_error"] <= 1e-5
    assert any("targets were applied" in note for note in peer["notes"])
    # the arrays themselves: both targeted, equal within 1e-5 of the output scale
    folder = work / "bpnet_targets"
    want, refs = measurements.load_arrays(folder / "naive.npz")
    got, _ = measurements.load_arrays(folder / "yuzu.npz")
    got = measurements.at_positions(got, naive.get("sampled_positions"), 2)
    width = naive_sample or 48
    assert want["profile"].shape == got["profile"].shape == (1, 4, width, 1, 1)
    assert want["counts"].shape == got["counts"].shape == (1, 4, width, 1)
    assert refs["profile"].shape == (1, 1, 1) and refs["counts"].shape == (1, 1)
    for name in want:
        scale = max(float(np.abs(refs[name]).max()), float(np.abs(want[name]).max()))
        assert float(np.abs(want[name]).max()) > 0, name
        assert float(np.abs(got[name] - want[name]).max()) <= 1e-5 * scale, name
    # arrays computed with other targets than the oracle's fail the check instead of comparing
    oracle = benchmark.Oracle(want, refs, naive.get("sampled_positions"), {})
    failed = benchmark.checked(folder / "yuzu.npz", oracle, "ncl", "none", targets=yuzu["targets"])
    assert not failed["ok"] and "targets" in failed["error"]


def test_long_context_architectures():
    """The new bench architectures at small widths: output shapes and the bpnet-lite crops."""
    torch = pytest.importorskip("torch")
    tm = models.load_torch_models()
    assert tm.basenji_dilations(11) == [1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 72]
    x = lambda length: torch.from_numpy(tm.random_onehot(2, length, seed=1))  # noqa: E731
    with torch.no_grad():
        profile, counts = tm.build("bpnet_lite", seq_len=300, out_len=100)(x(300))
        assert profile.shape == (2, 2, 100) and counts.shape == (2, 1)
        bpnet = tm.build("bpnet_lite", seq_len=300, out_len=100)
        assert bpnet.trim == 100 and bpnet.count_pad == 37 and len(bpnet.rconvs) == 8
        chrom = tm.build("chrombpnet", seq_len=300, out_len=100, n_filters=16, bias_filters=8)
        profile, counts = chrom(x(300))
        assert profile.shape == (2, 1, 100) and counts.shape == (2, 1)
        a, b = chrom.accessibility(x(300)), chrom.bias(x(300))
        torch.testing.assert_close(profile, a[0] + b[0])
        torch.testing.assert_close(counts, torch.logaddexp(a[1], b[1]))
        borzoi = tm.build("borzoi_like", seq_len=1024, stem=8, tower=(8, 8, 8, 8, 16), dim=16, heads=2, final=16,
                          target_length=12, n_human=5)
        assert borzoi(x(1024)).shape == (2, 5, 12)
        basenji = tm.build("basenji2_like", seq_len=2048, stem=8, tower_init=8, tower_end=16, inner=8, final=16,
                           crop=2, n_human=5)
        assert basenji(x(2048)).shape == (2, 16 - 4, 5)
