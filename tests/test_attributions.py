"""Hypothetical / actual contributions from ISM and the files TF-MoDISco reads."""

from __future__ import annotations

import numpy as np
import pytest

from yuzu_onnx.attributions import modisco_arrays, select_target, write_modisco
from yuzu_onnx.encoding import random_one_hot
from yuzu_onnx.errors import InputError


def _onehot_ncl(rng, n, a, length):
    return random_one_hot(n, length, alphabet_size=a, layout="ncl", rng=rng)


def _ism_like(rng, x_window_ncl, *out_dims):
    """Random deltas, exactly 0 at the reference base (as the ISM contract says)."""
    ism = rng.standard_normal((*x_window_ncl.shape, *out_dims)).astype(np.float32)
    mask = x_window_ncl.astype(bool).reshape(*x_window_ncl.shape, *([1] * len(out_dims)))
    return np.where(mask, 0.0, ism).astype(np.float32)


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_shapes_centring_and_contrib(layout):
    rng = np.random.default_rng(0)
    x = _onehot_ncl(rng, 3, 4, 30)
    x[1, :, 7] = 0  # an N: no reference base
    ism = _ism_like(rng, x)
    if layout == "nlc":
        x_in, ism_in = x.transpose(0, 2, 1), ism.transpose(0, 2, 1)
    else:
        x_in, ism_in = x, ism
    out = modisco_arrays(ism_in, x_in, layout=layout)
    assert set(out) == {"one_hot", "hypothetical", "contrib"}
    for arr in out.values():
        assert arr.shape == (3, 4, 30)  # always (N, A, Lw), whatever the model's layout
        assert arr.dtype == np.float32
    np.testing.assert_array_equal(out["one_hot"], x)
    hyp, contrib = out["hypothetical"], out["contrib"]
    np.testing.assert_allclose(hyp.sum(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(hyp, ism - ism.mean(axis=1, keepdims=True), atol=1e-6)
    assert np.all(contrib[x == 0] == 0)  # only reference bases carry a contribution
    assert np.all(contrib[1, :, 7] == 0)
    ref_scores = contrib.sum(axis=1)
    np.testing.assert_allclose(ref_scores, -ism.mean(axis=1) * x.sum(axis=1), atol=1e-6)
    assert np.count_nonzero(contrib) == np.count_nonzero(x * (hyp != 0))


def test_window_start_slices_the_input():
    rng = np.random.default_rng(1)
    x = _onehot_ncl(rng, 2, 4, 50)
    ism = _ism_like(rng, x[:, :, 10:30])
    out = modisco_arrays(ism, x, layout="ncl", window_start=10)
    np.testing.assert_array_equal(out["one_hot"], x[:, :, 10:30])
    assert np.all(out["contrib"][x[:, :, 10:30] == 0] == 0)
    # X already cut to the window works too
    same = modisco_arrays(ism, x[:, :, 10:30], layout="ncl")
    np.testing.assert_array_equal(same["hypothetical"], out["hypothetical"])
    with pytest.raises(InputError, match="window_start"):
        modisco_arrays(ism, x, layout="ncl", window_start=40)


def test_target_selects_from_flattened_out_dims():
    rng = np.random.default_rng(2)
    x = _onehot_ncl(rng, 2, 4, 12)
    ism = _ism_like(rng, x, 3, 5)  # out_dims (3, 5): e.g. 3 tasks × 5 profile bins
    flat = ism.reshape(2, 4, 12, 15)
    np.testing.assert_allclose(select_target(ism, 7), flat[..., 7])
    np.testing.assert_allclose(select_target(ism, [1, 2]), flat[..., 1] + flat[..., 2], rtol=1e-6)
    np.testing.assert_allclose(select_target(ism, None), flat.sum(-1), rtol=1e-5, atol=1e-6)
    out = modisco_arrays(ism, x, layout="ncl", target=7)
    h = flat[..., 7]
    np.testing.assert_allclose(out["hypothetical"], h - h.mean(axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(InputError, match="out of range"):
        select_target(ism, 15)
    with pytest.raises(InputError, match="int or a list"):
        select_target(ism, "profile")
    # a scalar output: None and 0 select it
    scalar = _ism_like(rng, x)
    np.testing.assert_array_equal(select_target(scalar, None), scalar)
    np.testing.assert_array_equal(select_target(scalar, 0), scalar)


def test_bad_inputs():
    rng = np.random.default_rng(3)
    x = _onehot_ncl(rng, 2, 4, 10)
    ism = _ism_like(rng, x)
    with pytest.raises(InputError, match="layout"):
        modisco_arrays(ism, x, layout="nchw")
    with pytest.raises(InputError, match="disagree"):
        modisco_arrays(ism, x[:1], layout="ncl")


@pytest.mark.parametrize("length", [30, 31])
def test_write_modisco_files_load_like_the_modisco_cli(tmp_path, length):
    rng = np.random.default_rng(4)
    x = _onehot_ncl(rng, 5, 4, length)
    arrays = modisco_arrays(_ism_like(rng, x), x, layout="ncl")
    files = write_modisco(tmp_path / "sub" / "run1", arrays)
    assert files.sequences.name == "run1.ohe.npz"
    assert files.attributions.name == "run1.hyp.npz"
    assert files.window == length - length % 2
    cmd = files.command(max_seqlets=500)
    assert f"-s {files.sequences}" in cmd and f"-a {files.attributions}" in cmd and f"-w {files.window}" in cmd

    # what `modisco motifs -s ... -a ... -w W` does with them (modiscolite/cli.py)
    sequences = np.load(files.sequences)["arr_0"]
    attributions = np.load(files.attributions)["arr_0"]
    np.testing.assert_array_equal(sequences, arrays["one_hot"])
    np.testing.assert_array_equal(attributions, arrays["hypothetical"])
    np.testing.assert_array_equal(np.load(files.contrib)["arr_0"], arrays["contrib"])
    center = sequences.shape[2] // 2
    start, end = center - files.window // 2, center + files.window // 2
    sequences = sequences[:, :, start:end].transpose(0, 2, 1)
    attributions = attributions[:, :, start:end].transpose(0, 2, 1)
    assert sequences.shape == attributions.shape == (5, files.window, 4)
    assert sequences.shape[1] >= files.window  # the CLI's own check
    assert not list(tmp_path.glob("sub/.*tmp"))  # no temporary files left


def test_write_modisco_rejects_other_dicts(tmp_path):
    with pytest.raises(InputError, match="modisco_arrays"):
        write_modisco(tmp_path / "x", {"one_hot": np.zeros((1, 4, 5))})
