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
    timing = measurements.timed_runs(lambda: naive_ism(job["model_path"], x), repeats=1, budget_s=5)
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
    assert {r["name"] for r in prof["by_op"]} == {"Conv", "Where"}


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
