"""Every command end to end on small models built in the tests.

A few commands run in a real ``python -m yuzu_onnx.cli`` process; the rest call
``main([...])`` in-process. ``naive`` (the oracle) and ``run`` must agree key by key
within 1e-5 of the output scale.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx.results import read_npy_dir, read_npz
from yuzu_onnx.testing import build_gru

TOL = 1e-5


def assert_same_ism(got: dict, want: dict) -> None:
    """Same keys, shapes, and values within 1e-5 x scale for every ISM output."""
    assert set(got) == set(want)
    for key in want:
        a, b = np.asarray(got[key]), np.asarray(want[key])
        assert a.shape == b.shape, key
        if a.dtype.kind in "US":
            assert (a == b).all(), key
            continue
        scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-30)
        assert float(np.abs(a - b).max()) <= TOL * scale, key


def test_help_and_version_in_a_process(cli_subprocess):
    res = cli_subprocess("--help")
    assert res.rc == 0
    for command in ("inspect", "convert", "run", "ism", "naive", "verify", "plot", "demo"):
        assert command in res.out
    res = cli_subprocess("--version")
    assert res.rc == 0 and "yuzu-onnx" in res.out


def test_usage_error_is_one_line_exit_2(cli):
    res = cli("run", "only-one-argument")
    assert res.rc == 2
    assert len(res.err.strip().splitlines()) == 1
    assert res.err.startswith("yuzu-onnx: error:")


def test_convert_then_run_matches_naive_in_a_process(cli_subprocess, tiny_model, seq_files, tmp_path):
    ism_path = tmp_path / "tiny.ism.onnx"
    res = cli_subprocess("convert", tiny_model, "-o", ism_path)
    assert res.rc == 0, res.err
    assert "stages" in res.out and "expected speedup" in res.out
    sidecar = json.loads((tmp_path / "tiny.ism.onnx.json").read_text())
    assert sidecar["input"] == "x" and sidecar["layout"] == "ncl" and sidecar["alphabet"] == "ACGT"
    assert sidecar["seq_len"] == 64 and sidecar["window"] == [0, 64]
    assert sidecar["outputs"]["y"]["reduce"] == "none"
    assert sidecar["outputs"]["y"]["shape"] == [None, 4, 64, 3]

    res = cli_subprocess("run", ism_path, seq_files["ncl"], "-o", tmp_path / "run.npz")
    assert res.rc == 0, res.err
    assert "5 sequences" in res.err and "CPUExecutionProvider" in res.err and "run.npz" in res.err
    res = cli_subprocess("naive", tiny_model, seq_files["ncl"], "-o", tmp_path / "naive.npz", "--quiet")
    assert res.rc == 0, res.err
    assert res.err == ""
    run, run_meta = read_npz(tmp_path / "run.npz")
    naive, naive_meta = read_npz(tmp_path / "naive.npz")
    assert set(run) == {"y", "x", "names"}
    assert_same_ism(run, naive)
    assert run["y"].shape == (5, 4, 64, 3)
    np.testing.assert_array_equal(run["x"], np.load(seq_files["ncl"]))
    for key in ("layout", "alphabet", "window", "reductions", "source_sha256", "provider"):
        assert run_meta[key] == naive_meta[key], key
    assert run_meta["layout"] == "ncl" and run_meta["window"] == [0, 64]
    assert run_meta["reductions"] == {"y": "none"}
    assert not (tmp_path / "run.npz.partial").exists()


def test_inspect_original(cli, tiny_model):
    res = cli("inspect", tiny_model)
    assert res.rc == 0, res.err
    for text in ("layout ncl", "alphabet ACGT", "length 64", "opset 17", "local region", "stops at",
                 "GlobalAveragePool", "spacing", "receptive field", "probes", "decoded from window sums",
                 "naive ISM", "expected speedup", "bound speedup", "peak memory"):
        assert text in res.out, text
    res = cli("inspect", tiny_model, "--json")
    doc = json.loads(res.out)
    assert doc["kind"] == "original" and doc["seq_len"] == 64 and doc["layout"] == "ncl"
    assert doc["outputs"] == {"y": ["batch", 3]}
    assert doc["op_counts"]["Conv"] == 2
    assert doc["stages"] and all(st["spacing"] >= st["receptive_field"] for st in doc["stages"])
    assert doc["naive_flops"] > doc["rewritten_flops"] > 0 and doc["naive_flops"] > doc["bound_flops"] > 0
    assert doc["expected_speedup"] > 1 and doc["fallback_reason"] is None


def test_inspect_tail_strategies_and_window(cli, bpnet_model, tmp_path):
    doc = json.loads(cli("inspect", bpnet_model, "--json", "--window", "10:30").out)
    assert doc["layout"] == "nlc" and doc["window"] == [10, 30]
    assert doc["tails"]["profile"].startswith("decoded directly")
    assert set(doc["outputs"]) == {"profile", "counts"}
    gru = tmp_path / "gru.onnx"
    onnx.save(build_gru(seq_len=32), str(gru))
    doc = json.loads(cli("inspect", gru, "--json").out)
    assert doc["tails"]["y"].startswith("materialised tail")
    doc = json.loads(cli("inspect", gru, "--json", "--probes", "naive").out)
    assert doc["tails"]["y"].startswith("naive fallback") and doc["stages"] == []


def test_inspect_converted(cli, tiny_ism, tiny_model):
    res = cli("inspect", tiny_ism)
    assert res.rc == 0, res.err
    assert "converted ISM model" in res.out and "reduce=none" in res.out and "source sha256" in res.out
    doc = json.loads(cli("inspect", tiny_ism, "--json").out)
    assert doc["kind"] == "converted" and doc["window"] == [0, 64] and doc["seq_len"] == 64
    assert doc["outputs"]["y"] == {"reduce": "none", "form": "dense", "shape": [None, 4, 64, 3], "band": None}
    assert doc["stages"] and doc["opset"] == 17
    import hashlib

    assert doc["source_sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()


def test_run_fasta_names_window_and_reductions_match_naive(cli, bpnet_model, seq_files, tmp_path):
    ism_path = tmp_path / "bp.ism.onnx"
    options = ["--window", "8:40", "--reduce", "profile=sum,counts=l2"]
    assert cli("convert", bpnet_model, "-o", ism_path, *options).rc == 0
    res = cli("run", ism_path, seq_files["fasta"], "-o", tmp_path / "run.npz", "--batch-size", "2")
    assert res.rc == 0, res.err
    res = cli("naive", bpnet_model, seq_files["fasta"], "-o", tmp_path / "naive.npz", *options)
    assert res.rc == 0, res.err
    run, meta = read_npz(tmp_path / "run.npz")
    naive, _ = read_npz(tmp_path / "naive.npz")
    assert_same_ism(run, naive)
    assert list(run["names"]) == [f"s{i}" for i in range(5)]
    assert run["profile"].shape == (5, 32, 4, 2)  # nlc: (N, Lw, A, channels), summed over positions
    assert run["counts"].shape == (5, 32, 4)
    assert meta["window"] == [8, 40] and meta["reductions"] == {"profile": "sum", "counts": "l2"}


def test_raw_reduction_matches_naive(cli, tiny_model, seq_files, tmp_path):
    assert cli("ism", tiny_model, seq_files["ncl"], "-o", tmp_path / "a.npz", "--reduce", "raw").rc == 0
    assert cli("naive", tiny_model, seq_files["ncl"], "-o", tmp_path / "b.npz", "--reduce", "raw").rc == 0
    assert_same_ism(read_npz(tmp_path / "a.npz")[0], read_npz(tmp_path / "b.npz")[0])


def test_npy_format_equals_npz(cli, tiny_ism, seq_files, tmp_path):
    assert cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "r.npz", "--quiet").rc == 0
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "folder", "--format", "npy", "--batch-size", "2")
    assert res.rc == 0, res.err
    arrays, meta = read_npy_dir(tmp_path / "folder")
    ref, ref_meta = read_npz(tmp_path / "r.npz")
    assert set(arrays) == set(ref)
    for key in ref:
        np.testing.assert_array_equal(arrays[key], ref[key])
    assert meta["layout"] == ref_meta["layout"] and meta["window"] == ref_meta["window"]
    assert not (tmp_path / "folder.partial").exists()
    assert not [p for p in (tmp_path / "folder").iterdir() if p.name.startswith(".")]


def test_ism_command_uses_the_cache(cli, tiny_model, seq_files, tmp_path):
    cache = tmp_path / "cache"
    for name in ("a.npz", "b.npz"):
        res = cli("ism", tiny_model, seq_files["ncl"], "-o", tmp_path / name, "--cache-dir", cache)
        assert res.rc == 0, res.err
    assert len(list(cache.glob("*.onnx"))) == 1
    a, _ = read_npz(tmp_path / "a.npz")
    b, _ = read_npz(tmp_path / "b.npz")
    np.testing.assert_array_equal(a["y"], b["y"])
    naive = cli("naive", tiny_model, seq_files["ncl"], "-o", tmp_path / "n.npz")
    assert naive.rc == 0
    assert_same_ism(a, read_npz(tmp_path / "n.npz")[0])


def test_check_source(cli, tiny_ism, tiny_model, bpnet_model, seq_files, tmp_path):
    ok = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "ok.npz", "--check-source", tiny_model)
    assert ok.rc == 0, ok.err
    bad = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "bad.npz", "--check-source", bpnet_model)
    assert bad.rc == 2
    assert len(bad.error_lines) == 1 and "is not the model" in bad.error_lines[0]
    assert not (tmp_path / "bad.npz").exists()


def test_modisco_and_variants(cli, tiny_ism, seq_files, tmp_path):
    out = tmp_path / "r.npz"
    tsv = tmp_path / "variants.tsv"
    res = cli("run", tiny_ism, seq_files["fasta"], "-o", out, "--modisco", "y:1", "--variants", tsv)
    assert res.rc == 0, res.err
    assert "modisco motifs" in res.err
    for suffix in ("ohe", "hyp", "contrib"):
        with np.load(tmp_path / f"r.{suffix}.npz") as data:
            assert data["arr_0"].shape == (5, 4, 64)
    arrays, _ = read_npz(out)
    hyp = np.load(tmp_path / "r.hyp.npz")["arr_0"]
    scores = arrays["y"][..., 1]
    np.testing.assert_allclose(hyp, scores - scores.mean(axis=1, keepdims=True), atol=1e-6)
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["name", "position", "ref", "alt"]
    assert lines[0].split("\t")[-1] == "y_l2"
    # 4 one-hot sequences x 64 positions x 3 alts + one with 3 N positions (4 alts there)
    assert len(lines) - 1 == 5 * 64 * 3 + 3
    bad = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "x.npz", "--modisco", "nope")
    assert bad.rc == 2 and "--modisco" in bad.error_lines[0]
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.skipif(importlib.util.find_spec("pyfaidx") is None, reason="needs pyfaidx")
def test_bed_with_genome_and_strand(cli, tiny_ism, tmp_path):
    rng = np.random.default_rng(0)
    chrom = "".join(rng.choice(list("ACGT"), 500))
    (tmp_path / "genome.fa").write_text(">chr1\n" + "\n".join(chrom[i : i + 60] for i in range(0, 500, 60)) + "\n")
    (tmp_path / "regions.bed").write_text("chr1\t100\t110\tplus\t0\t+\nchr1\t300\t310\tminus\t0\t-\n")
    out = tmp_path / "bed.npz"
    res = cli("run", tiny_ism, tmp_path / "regions.bed", "-o", out, "--genome", tmp_path / "genome.fa", "--strand")
    assert res.rc == 0, res.err
    arrays, meta = read_npz(out)
    assert list(arrays["names"]) == ["plus", "minus"]
    assert meta["coords"] == [["chr1", 73, 137, "+"], ["chr1", 273, 337, "-"]]
    comp = str.maketrans("ACGT", "TGCA")
    expect = [chrom[73:137], chrom[273:337].translate(comp)[::-1]]
    got = ["".join("ACGT"[i] for i in x.argmax(axis=0)) for x in arrays["x"]]
    assert got == expect
    no_genome = cli("run", tiny_ism, tmp_path / "regions.bed", "-o", tmp_path / "n.npz")
    assert no_genome.rc == 2 and "--genome" in no_genome.error_lines[0]


def test_verify(cli, bpnet_model, tiny_model):
    res = cli("verify", bpnet_model, "-n", "2")
    assert res.rc == 0, res.err
    assert "profile" in res.out and "counts" in res.out and "within 1e-05" in res.out
    res = cli("verify", tiny_model, "-n", "2", "--window", "5:20", "--reduce", "l2")
    assert res.rc == 0, res.err


def test_verify_fails_on_a_wrong_conversion(cli, tiny_model, monkeypatch):
    import yuzu_onnx.session as session

    real = session.ISMSession.run

    def broken(self, X, **kw):
        out = real(self, X, **kw)
        return {k: v + 0.01 * np.abs(v).max() for k, v in out.items()}

    monkeypatch.setattr(session.ISMSession, "run", broken)
    res = cli("verify", tiny_model, "-n", "1")
    assert res.rc == 1
    assert "FAIL" in res.out and len(res.error_lines) == 1


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plot(cli, tiny_ism, seq_files, tmp_path):
    out = tmp_path / "r.npz"
    assert cli("run", tiny_ism, seq_files["fasta"], "-o", out).rc == 0
    fig = tmp_path / "fig.png"
    res = cli("plot", out, "--name", "s2", "--target", "0", "--span", "10:40", "-o", fig)
    assert res.rc == 0, res.err
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli("plot", out, "--name", "nope", "-o", tmp_path / "bad.png")
    assert bad.rc == 2 and len(bad.error_lines) == 1
    assert not (tmp_path / "bad.png").exists()


def test_demo_data_is_package_data():
    """The demo's files come from the package (``yuzu_onnx/demo_data``), and the wheel ships them all."""
    import fnmatch

    import yuzu_onnx
    from yuzu_onnx import demo

    tomllib = pytest.importorskip("tomllib")
    data = Path(yuzu_onnx.__file__).resolve().parent / "demo_data"
    model, seqs, sites = demo.find_demo_files()
    assert (model.parent, seqs.parent, sites.parent) == (data, data, data)
    assert [model.name, seqs.name, sites.name] == ["demo_motifs.onnx", "demo_sequences.fa", "demo_motifs.tsv"]
    repo = Path(__file__).resolve().parent.parent
    config = tomllib.loads((repo / "pyproject.toml").read_text("utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["yuzu_onnx.demo_data"]
    shipped = [p.name for p in data.iterdir() if p.is_file() and p.suffix != ".py"]
    assert shipped and all(any(fnmatch.fnmatch(name, pat) for pat in patterns) for name in shipped), shipped
    # one copy of each in the repository: the old places are empty
    assert not (repo / "models" / "demo_motifs.onnx").exists()
    assert not list((repo / "examples").glob("demo_*.fa")) and not list((repo / "examples").glob("demo_*.tsv"))


def test_demo_without_its_data_says_reinstall(cli, tmp_path, monkeypatch):
    from yuzu_onnx import demo

    monkeypatch.setattr(demo, "demo_data_file", lambda name: None)
    res = cli("demo", "-o", tmp_path / "demo")
    assert res.rc == 2 and len(res.error_lines) == 1, res.err
    assert "missing from the installed package" in res.err and "reinstall" in res.err
    assert "repository root" not in res.err


def test_demo_in_a_process(cli_subprocess, tmp_path):
    env = {**os.environ, "YUZU_CACHE_DIR": str(tmp_path / "cache")}
    res = cli_subprocess("demo", "-o", tmp_path / "demo", cwd=tmp_path, env=env)
    assert res.rc == 0, res.err
    assert (tmp_path / "demo" / "demo_ism.npz").is_file()
    assert "most important position" in res.out
    arrays, meta = read_npz(tmp_path / "demo" / "demo_ism.npz")
    assert arrays["logit"].shape == (16, 4, 200)
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "demo" / "demo_ism.png").is_file()
    # the demo model finds the planted motifs
    assert res.out.count("inside the planted") >= 12


def test_unexpected_error_is_one_line_and_debug_shows_traceback(cli, tiny_ism, seq_files, tmp_path, monkeypatch):
    import yuzu_onnx.pipeline as pipeline

    def boom(self, x):
        raise RuntimeError("something odd\nsecond line")

    monkeypatch.setattr(pipeline.ConvertedRunner, "run", boom)
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "r.npz")
    assert res.rc == 1
    assert res.err.strip().splitlines() == [
        "yuzu-onnx: error: unexpected RuntimeError: something odd (run with --debug for the traceback)"
    ]
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "r.npz", "--resume", "--debug")
    assert res.rc == 1 and "Traceback" in res.err
    assert not (tmp_path / "r.npz").exists()


def test_keyboard_interrupt_exits_130(cli, tiny_ism, seq_files, tmp_path, monkeypatch):
    import yuzu_onnx.pipeline as pipeline

    def interrupt(self, x):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.ConvertedRunner, "run", interrupt)
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "r.npz")
    assert res.rc == 130 and "interrupted" in res.err and "--resume" in res.err
    assert not (tmp_path / "r.npz").exists()


def test_convert_refuses_a_converted_model(cli, tiny_ism, tmp_path):
    res = cli("convert", tiny_ism, "-o", tmp_path / "again.onnx")
    assert res.rc == 2 and "is a converted ISM model" in res.error_lines[0] and "yuzu-onnx run" in res.error_lines[0]
    assert not (tmp_path / "again.onnx").exists()


def test_converted_model_is_valid_onnx(cli, bpnet_model, tmp_path):
    out = tmp_path / "m.onnx"
    assert cli("convert", bpnet_model, "-o", out, "--outputs", "counts").rc == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["counts"]
    assert json.loads((tmp_path / "m.onnx.json").read_text())["outputs"].keys() == {"counts"}


def test_bench_is_a_script_not_a_subcommand(cli):
    """The benchmark needs tools/ from a source checkout: ``python tools/bench.py`` (see test_bench.py)."""
    result = cli("bench", "--help")
    assert result.rc == 2 and "invalid choice: 'bench'" in result.err
