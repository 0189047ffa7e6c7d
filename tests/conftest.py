"""Shared fixtures: small models and sequences on disk, and an in-process CLI runner."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx.testing import build_bpnet, build_tiny_cnn, random_onehot

SEQ_LEN = 64
N_SEQUENCES = 5


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("yuzu-onnx: error:")]

    @property
    def warning_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("yuzu-onnx: warning:")]


@pytest.fixture(autouse=True)
def _cpu_for_auto(request, monkeypatch):
    """``--device auto`` means the CPU in every test not marked ``cuda`` (and in the processes
    they start): the suite compares runs bit for bit, which holds on one device, and
    tests/test_cuda.py checks CUDA against the oracle on its own."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setenv("YUZU_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Converted-model cache in a temporary folder, never in the home folder."""
    monkeypatch.setenv("YUZU_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "yuzu-cache"))


@pytest.fixture
def cli(capsys):
    """Run ``yuzu-onnx`` in-process: ``cli("run", ...)`` → :class:`CliResult`."""
    from yuzu_onnx.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run


@pytest.fixture
def cli_subprocess():
    """Run ``python -m yuzu_onnx.cli`` in a real process: ``cli_subprocess(...)`` → :class:`CliResult`."""

    def run(*args, cwd=None, env=None, timeout=300) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "yuzu_onnx.cli", *map(str, args)],
            capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """``tiny.onnx`` (tiny CNN, ncl, L=64, output y (N, 3)) and ``bpnet_nlc.onnx``
    (BPNet-like, nlc, L=64, outputs profile (N, 64, 2) and counts (N, 2))."""
    folder = tmp_path_factory.mktemp("models")
    onnx.save(build_tiny_cnn(seq_len=SEQ_LEN, seed=1), str(folder / "tiny.onnx"))
    onnx.save(build_bpnet(layout="nlc", seq_len=SEQ_LEN, seed=2), str(folder / "bpnet_nlc.onnx"))
    return folder


@pytest.fixture(scope="session")
def tiny_model(model_dir) -> Path:
    return model_dir / "tiny.onnx"


@pytest.fixture(scope="session")
def bpnet_model(model_dir) -> Path:
    return model_dir / "bpnet_nlc.onnx"


@pytest.fixture(scope="session")
def tiny_ism(model_dir, tiny_model) -> Path:
    """``tiny.onnx`` converted with default options."""
    from yuzu_onnx.convert import convert, save_model

    path = model_dir / "tiny.ism.onnx"
    save_model(convert(tiny_model), path)
    return path


@pytest.fixture(scope="session")
def onehot_ncl() -> np.ndarray:
    """``(5, 4, 64)`` random one-hot; the last sequence has 3 all-zero (N) columns."""
    x = random_onehot(N_SEQUENCES, SEQ_LEN, seed=3)
    x[-1, :, [5, 20, 40]] = 0.0
    return x


@pytest.fixture(scope="session")
def seq_files(tmp_path_factory, onehot_ncl) -> dict[str, Path]:
    """The same sequences as ``ncl.npy``, ``nlc.npy`` and ``seqs.fa`` (names s0..s4)."""
    folder = tmp_path_factory.mktemp("seqs")
    np.save(folder / "ncl.npy", onehot_ncl)
    nlc = np.ascontiguousarray(onehot_ncl.transpose(0, 2, 1))
    np.save(folder / "nlc.npy", nlc)
    letters = np.array(list("ACGTN"))
    codes = np.where(nlc.sum(axis=2) == 0, 4, nlc.argmax(axis=2))
    with open(folder / "seqs.fa", "w") as fh:
        for i, row in enumerate(codes):
            fh.write(f">s{i} test sequence\n{''.join(letters[row])}\n")
    return {"ncl": folder / "ncl.npy", "nlc": folder / "nlc.npy", "fasta": folder / "seqs.fa"}
