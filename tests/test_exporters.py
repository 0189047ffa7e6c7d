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
