"""The conversion check (verify.py) and the runners' shared protocol (runners.py)."""

from __future__ import annotations

import numpy as np
import pytest

from yuzu_onnx.convert import convert_model
from yuzu_onnx.errors import YuzuError
from yuzu_onnx.runners import ConvertedRunner, NaiveRunner, Runner
from yuzu_onnx.session import ISMSession
from yuzu_onnx.verify import TOLERANCE, compare_ism, random_sequences, verify_conversion


def test_random_sequences_are_one_hot_with_n_in_the_last(tiny_model):
    spec = convert_model(tiny_model).spec
    x = random_sequences(3, spec, seed=1)
    assert x.shape == (3, *spec.input_shape) and x.dtype == np.float32
    per_position = x.sum(axis=1 if spec.layout == "ncl" else 2)
    assert (per_position[:2] == 1).all()
    assert (per_position[2] == 0).sum() == 3


def test_verify_conversion_passes_an_exact_conversion(tiny_model):
    conv = convert_model(tiny_model)
    report = verify_conversion(conv, random_sequences(2, conv.spec), device="cpu")
    assert set(report) == set(conv.outputs)
    for r in report.values():
        assert r["ok"] and r["relative_error"] <= TOLERANCE and r["pearson_r"] > 0.999999


def test_compare_ism_judges_gaussian_by_correlation():
    want = np.random.default_rng(0).standard_normal((1, 4, 30)).astype(np.float32)
    got = want + np.float32(1e-3)
    reference = np.ones((1,), dtype=np.float32)
    assert not compare_ism("y", got, want, reference)["ok"]
    assert compare_ism("y", got, want, reference, probes="gaussian")["ok"]
    with pytest.raises(YuzuError, match="shape"):
        compare_ism("y", got[:, :2], want, reference)


def test_both_runners_are_runners(tiny_model, tiny_ism):
    from yuzu_onnx.importer import load_model

    assert isinstance(ConvertedRunner(ISMSession(tiny_ism, device="cpu")), Runner)
    assert isinstance(NaiveRunner(load_model(tiny_model), device="cpu"), Runner)
