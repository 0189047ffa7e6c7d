"""Runs that lose nothing: kill a run part-way, resume it, get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx.results import read_npy_dir, read_npz
from yuzu_onnx.testing import build_basset_like, random_onehot

N_LONG = 600
L_LONG = 150


@pytest.fixture(scope="module")
def long_job(tmp_path_factory):
    """A converted model and enough sequences for a run of a few seconds at batch size 2."""
    from yuzu_onnx.convert import convert, save_model

    folder = tmp_path_factory.mktemp("long")
    model = folder / "basset.onnx"
    onnx.save(build_basset_like(seq_len=L_LONG, seed=4), str(model))
    ism = folder / "basset.ism.onnx"
    save_model(convert(model), ism)
    seqs = folder / "seqs.npy"
    np.save(seqs, random_onehot(N_LONG, L_LONG, seed=5, n_positions=2))
    return {"model": model, "ism": ism, "seqs": seqs}


def _record(partial: Path) -> dict | None:
    try:
        return json.loads((partial / "progress.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_sigkill_then_resume_equals_uninterrupted(long_job, tmp_path, cli, fmt):
    out = tmp_path / ("killed.npz" if fmt == "npz" else "killed")
    partial = out.with_name(out.name + ".partial")
    env = {**os.environ, "YUZU_CHUNK_SECONDS": "0.05"}
    cmd = [sys.executable, "-m", "yuzu_onnx.cli", "run", str(long_job["ism"]), str(long_job["seqs"]),
           "-o", str(out), "--batch-size", "2", "--format", fmt, "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            record = _record(partial)
            if record and record["chunks"]:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be interrupted; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    record = _record(partial)
    done = record["chunks"][-1]["stop"]
    assert 0 < done < N_LONG
    # nothing under the final name: no NPZ; for a folder, no finished array or manifest
    if fmt == "npz":
        assert not out.exists()
    else:
        assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]

    refused = cli("run", long_job["ism"], long_job["seqs"], "-o", out, "--batch-size", "2", "--format", fmt)
    assert refused.rc == 2 and "--resume" in refused.error_lines[0]

    resumed = cli("run", long_job["ism"], long_job["seqs"], "-o", out, "--format", fmt, "--resume")
    assert resumed.rc == 0, resumed.err
    assert f"{done} resumed" in resumed.err
    assert not partial.exists()

    whole = tmp_path / ("whole.npz" if fmt == "npz" else "whole")
    assert cli("run", long_job["ism"], long_job["seqs"], "-o", whole, "--batch-size", "2", "--format", fmt).rc == 0
    read = read_npz if fmt == "npz" else read_npy_dir
    got, got_meta = read(out)
    want, want_meta = read(whole)
    assert set(got) == set(want) == {"y", "x", "names"}
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)
    assert got_meta == want_meta


def _interrupt_after(monkeypatch, calls: int):
    """Make ConvertedRunner.run raise KeyboardInterrupt on call number ``calls + 1``."""
    import yuzu_onnx.pipeline as pipeline

    real = pipeline.ConvertedRunner.run
    count = {"n": 0}

    def run(self, x):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(pipeline, "CHUNK_SECONDS", 0.0)
    monkeypatch.setattr(pipeline.ConvertedRunner, "run", run)


def test_resume_refuses_other_input_or_model(cli, tiny_ism, tiny_model, tmp_path, monkeypatch):
    seqs = tmp_path / "a.npy"
    np.save(seqs, random_onehot(8, 64, seed=1))
    other = tmp_path / "b.npy"
    np.save(other, random_onehot(8, 64, seed=2))
    out = tmp_path / "r.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        res = cli("run", tiny_ism, seqs, "-o", out, "--batch-size", "2")
    assert res.rc == 130
    assert _record(tmp_path / "r.npz.partial")["chunks"][-1]["stop"] == 4
    res = cli("run", tiny_ism, other, "-o", out, "--resume")
    assert res.rc == 2 and "input file differ" in res.error_lines[0]
    res = cli("ism", tiny_model, seqs, "-o", out, "--resume", "--window", "0:32")
    assert res.rc == 2 and "the model differ" in res.error_lines[0]
    assert not out.exists()
    res = cli("run", tiny_ism, seqs, "-o", out, "--resume")
    assert res.rc == 0, res.err
    assert "4 resumed" in res.err
    whole = tmp_path / "whole.npz"
    assert cli("run", tiny_ism, seqs, "-o", whole, "--batch-size", "2").rc == 0
    np.testing.assert_array_equal(read_npz(out)[0]["y"], read_npz(whole)[0]["y"])


def test_resume_without_partial_store_starts_over(cli, tiny_ism, seq_files, tmp_path):
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "r.npz", "--resume")
    assert res.rc == 0
    assert any("nothing to resume" in w for w in res.warning_lines)
    assert (tmp_path / "r.npz").is_file()


def test_naive_runs_resume_too(cli, tiny_model, tmp_path, monkeypatch):
    import yuzu_onnx.pipeline as pipeline

    seqs = tmp_path / "a.npy"
    np.save(seqs, random_onehot(6, 64, seed=3))
    out = tmp_path / "n.npz"
    real = pipeline.NaiveRunner.run
    count = {"n": 0}

    def run(self, x):
        count["n"] += 1
        if count["n"] > 1:
            raise KeyboardInterrupt
        return real(self, x)

    with monkeypatch.context() as m:
        m.setattr(pipeline, "CHUNK_SECONDS", 0.0)
        m.setattr(pipeline.NaiveRunner, "run", run)
        assert cli("naive", tiny_model, seqs, "-o", out, "--batch-size", "400").rc == 130
    assert _record(tmp_path / "n.npz.partial")["chunks"]
    res = cli("naive", tiny_model, seqs, "-o", out, "--resume")
    assert res.rc == 0, res.err
    assert cli("naive", tiny_model, seqs, "-o", tmp_path / "w.npz", "--batch-size", "400").rc == 0
    np.testing.assert_array_equal(read_npz(out)[0]["y"], read_npz(tmp_path / "w.npz")[0]["y"])


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_store_of_an_earlier_version_resumes(cli, tiny_ism, tmp_path, monkeypatch, fmt):
    """Chunks are one .npy per output now; a store whose chunks are one .npz each (as
    earlier versions wrote them) still resumes to the same result."""
    seqs = tmp_path / "a.npy"
    np.save(seqs, random_onehot(8, 64, seed=3))
    out = tmp_path / ("r.npz" if fmt == "npz" else "r")
    args = ["--format", fmt] if fmt == "npy" else []
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        assert cli("run", tiny_ism, seqs, "-o", out, "--batch-size", "2", *args).rc == 130
    partial = out.with_name(out.name + ".partial")
    record = _record(partial)
    for k, chunk in enumerate(record["chunks"]):  # rewrite the chunks in the earlier layout
        arrays = {f"o{i}": np.load(partial / file) for i, file in enumerate(chunk.pop("files"))}
        chunk["file"] = f"chunk-{k:06d}.npz"
        np.savez(partial / chunk["file"], **arrays)
    (partial / "progress.json").write_text(json.dumps(record))
    res = cli("run", tiny_ism, seqs, "-o", out, "--resume", *args)
    assert res.rc == 0, res.err
    assert "4 resumed" in res.err
    whole = tmp_path / ("whole.npz" if fmt == "npz" else "whole")
    assert cli("run", tiny_ism, seqs, "-o", whole, "--batch-size", "2", *args).rc == 0
    if fmt == "npz":
        np.testing.assert_array_equal(read_npz(out)[0]["y"], read_npz(whole)[0]["y"])
    else:
        np.testing.assert_array_equal(np.load(out / "y.npy"), np.load(whole / "y.npy"))
