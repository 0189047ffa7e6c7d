"""Property: converting any model the generator draws gives the oracle's ISM exactly.

Each example draws a random architecture (:func:`yuzu_onnx.testing.random_models.random_model`),
a window (``None`` or ``(s, e)``), a reduction per output (``none``/``l2``/``raw``, and
``sum`` for outputs inside the local region) and a batch of 2–3 one-hot sequences, one of
them with a few all-zero (N) columns, and whether convolutions of the input take the
first-convolution shortcut (``auto`` or forced). The converted model must pass the full ONNX checker
and match the naive oracle within ``1e-5 × scale`` per output, with
``scale = max(max|f(X)|, max|ism|)``; an output above tolerance passes only when a float64
oracle shows the float32 oracle was the one off.

Deterministic in CI (``derandomize=True``, no example database). ``YUZU_PROPERTY_EXAMPLES``
raises the example count for a longer local run.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yuzu_onnx.analysis.region import analyse_region
from yuzu_onnx.importer import load_model
from yuzu_onnx.testing.exactness import TOLERANCE, check_exactness
from yuzu_onnx.testing.random_models import random_batch, random_model

EXAMPLES = int(os.environ.get("YUZU_PROPERTY_EXAMPLES", "25"))


@st.composite
def windows(draw, seq_len: int):
    if draw(st.booleans()):
        return None
    start = draw(st.integers(0, seq_len - 1))
    end = draw(st.integers(start + 1, seq_len))
    return (start, end)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
def test_random_architecture_matches_oracle(seed, data):
    model, info = random_model(seed)
    spec = load_model(model)
    local = set(analyse_region(spec).maps)
    window = data.draw(windows(spec.seq_len), label="window")
    reduce = {
        name: data.draw(st.sampled_from(["none", "l2", "raw"] + (["sum"] if name in local else [])), label=name)
        for name in info.outputs
    }
    first_conv = data.draw(st.sampled_from(["auto", "shortcut"]), label="first_conv")
    n = data.draw(st.integers(2, 3), label="n_sequences")
    X = random_batch(n, spec.seq_len, layout=spec.layout, rng=np.random.default_rng(seed),
                     n_unknown=3, alphabet_size=spec.alphabet_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a deliberate naive fallback must be exact too
        report = check_exactness(model, X, window=window, reduce=reduce, first_conv=first_conv)
    context = f"seed {seed}: {info.description}; window={window}, reduce={reduce}, first_conv={first_conv}"
    assert report.error is None, f"{context}\n{report.stage} failed: {report.error}"
    assert [c.output for c in report.checks] == list(info.outputs)
    for check in report.checks:
        assert not check.nan, f"{context}\n{check.output} has NaN"
        assert check.shape == check.expected_shape, f"{context}\n{check.output}: {check.shape} != {check.expected_shape}"
        assert check.verdict != "engine", (
            f"{context}\n{check.output}[{check.reduce}]: max|err| {check.max_err:.3e} > "
            f"{TOLERANCE:g} x scale {check.scale:.3e} (float64 oracle error: {check.f64_err})"
        )
