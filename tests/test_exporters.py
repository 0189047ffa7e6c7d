"""Real exporter output (PyTorch TorchScript opset 17 and dynamo opset 18): rewrite == oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx import ISMSession, convert_model, load_model, naive_ism
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.testing.model_builders import random_onehot

DATA = Path(__file__).parent / "data" / "torch"
EXPORTS = sorted(DATA.glob("*.onnx"))


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_exported_models_match_oracle(path: Path) -> None:
    spec = load_model(path)
    X = random_onehot(2, spec.seq_len, layout=spec.layout, seed=3, n_positions=2)
    X[0] = random_onehot(1, spec.seq_len, layout=spec.layout, seed=4)[0]  # one sequence fully one-hot
    reference = reference_outputs(spec, X)
    length = spec.seq_len
    for window in (None, (length // 2 - 10, length // 2 + 10)):
        conversion = convert_model(spec, window=window)
        assert conversion.plan.fallback_reason is None
        onnx.checker.check_model(conversion.model, full_check=True)
        session = ISMSession(conversion.model)
        for rows in (slice(0, 1), slice(0, 2)):  # shift classes (one-hot) and all bases (with N)
            result = session.run(X[rows])
            oracle = naive_ism(spec, X[rows], window=window)
            for name, expected in oracle.items():
                scale = max(np.abs(expected).max(), np.abs(reference[name][rows]).max())
                assert np.abs(result[name] - expected).max() <= 1e-5 * scale, (path.stem, name, window)


NAIVE_CLI_MODELS = [p for p in EXPORTS if "bpnet9" not in p.stem] + ["keras_conv2d"]


@pytest.mark.parametrize("source", NAIVE_CLI_MODELS, ids=lambda s: s if isinstance(s, str) else s.stem)
def test_naive_command_on_exporter_output(source, cli, tmp_path: Path) -> None:
    """`yuzu-onnx naive` on PyTorch (TorchScript and dynamo) and tf2onnx-style (Keras) exports."""
    from yuzu_onnx.encoding import decode_one_hot
    from yuzu_onnx.results import read_npz
    from yuzu_onnx.testing.model_builders import BUILDERS

    if isinstance(source, str):
        path = tmp_path / f"{source}.onnx"
        onnx.save(BUILDERS[source](layout="nlc", seq_len=60), str(path))
    else:
        path = source
    spec = load_model(path)
    X = random_onehot(2, spec.seq_len, layout=spec.layout, seed=5)
    fasta = tmp_path / "in.fa"
    seqs = decode_one_hot(X, spec.alphabet, spec.layout)
    fasta.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(seqs)))
    out = tmp_path / "naive.npz"
    result = cli("naive", path, fasta, "-o", out, "--window", "10:20")
    assert result.rc == 0, result.err
    arrays, _ = read_npz(out)
    expected = naive_ism(spec, X, window=(10, 20))
    for name, value in expected.items():
        np.testing.assert_allclose(arrays[name], value, rtol=0, atol=1e-6 * max(1.0, np.abs(value).max()))
