"""The numpy reductions (reductions.py): l2 norm, reduce_ism, Pearson r."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yuzu_onnx.errors import InputError
from yuzu_onnx.reductions import l2_norm, pearson_r, reduce_ism


def _ism(shape=(2, 4, 10, 3, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_l2_norm_is_the_norm_over_the_output_dims():
    ism = _ism()
    want = np.sqrt((ism.astype(np.float64) ** 2).sum(axis=(3, 4)))
    got = l2_norm(ism)
    assert got.dtype == np.float64 and got.shape == ism.shape[:3]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # a transposed view (the variant table's (N, Lw, A) order) gives the same numbers
    np.testing.assert_array_equal(l2_norm(np.swapaxes(ism, 1, 2)), np.swapaxes(got, 1, 2))


def test_reduce_ism_matches_brute_force():
    ism = _ism()
    assert reduce_ism(ism, "none") is ism
    np.testing.assert_array_equal(reduce_ism(ism, "l2"), l2_norm(ism).astype(np.float32))
    np.testing.assert_array_equal(reduce_ism(ism[..., 0, 0], "l2"), np.abs(ism[..., 0, 0]))
    summed = reduce_ism(ism, "sum", sum_axis=2)  # output axis 2 = the last one here
    np.testing.assert_allclose(summed, ism.astype(np.float64).sum(axis=4), rtol=1e-6)
    reference = _ism((2, 3, 5), seed=1)
    np.testing.assert_array_equal(reduce_ism(ism, "raw", reference=reference), ism + reference[:, None, None])


def test_reduce_ism_refusals():
    with pytest.raises(InputError, match="positional axis"):
        reduce_ism(_ism(), "sum")
    with pytest.raises(InputError, match="unknown reduction"):
        reduce_ism(_ism(), "max")
    with pytest.raises(ValueError, match="reference"):
        reduce_ism(_ism(), "raw")


def test_pearson_r_of_arrays_and_mappings():
    a = _ism((3, 4, 20))
    b = a + 0.1 * _ism((3, 4, 20), seed=2)
    r = pearson_r(a, b)
    assert r == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)
    assert pearson_r(a, a) == 1.0
    # mappings: the outputs of `expected`, concatenated in its order
    both = pearson_r({"x": a, "y": b, "unused": a}, {"y": b, "x": a})
    assert both == pearson_r(np.concatenate([b.ravel(), a.ravel()]), np.concatenate([b.ravel(), a.ravel()]))


def test_pearson_r_undefined_cases():
    a = _ism((10,))
    bad = a.copy()
    bad[3] = np.nan
    assert math.isnan(pearson_r(bad, a)) and math.isnan(pearson_r(a, bad))
    assert pearson_r(np.zeros(5), np.zeros(5)) == 1.0  # identical constants
    assert math.isnan(pearson_r(np.ones(5), a[:5]))  # one side constant
    assert math.isnan(pearson_r(np.ones(1), np.full(1, 2.0)))
