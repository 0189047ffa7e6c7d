"""The naive ISM oracle, checked against a closed form and against brute force.

The test models are built inline with ``onnx.helper`` and the expected values never go
through the oracle's own code.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx.encoding import random_one_hot
from yuzu_onnx.errors import InputError, SequenceError
from yuzu_onnx.importer import load_model
from yuzu_onnx.oracle import (
    auto_batch_size,
    bytes_per_sample,
    ism_shape,
    naive_ism,
    reference_outputs,
)

A = 4
OPSET = 17


# --------------------------------------------------------------------------- models


def _model(nodes, inits, layout, length, outputs):
    in_shape = ["batch", A, length] if layout == "ncl" else ["batch", length, A]
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs.items()],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def linear_conv_model(W: np.ndarray, layout: str, length: int) -> onnx.ModelProto:
    """One Conv, no bias, "same" padding. ncl: (N, C, L) out; nlc: (N, L, C) out."""
    pad = W.shape[2] // 2
    src = "x"
    nodes = []
    if layout == "nlc":
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]))
        src = "xt"
    conv_out = "y" if layout == "ncl" else "yc"
    nodes.append(helper.make_node("Conv", [src, "W"], [conv_out], pads=[pad, pad], kernel_shape=[W.shape[2]]))
    if layout == "nlc":
        nodes.append(helper.make_node("Transpose", ["yc"], ["y"], perm=[0, 2, 1]))
    return _model(nodes, {"W": W}, layout, length, {"y": ["batch", None, None]})


def nonlinear_model(layout: str, length: int, seed: int = 0) -> onnx.ModelProto:
    """Conv+bias → Relu → MaxPool(2) → Flatten → Gemm (output "logits", (N, 3)), and the
    pooled track through a Sigmoid (output "track", (N, 6, L/2))."""
    rng = np.random.default_rng(seed)
    c, k, hidden = 6, 5, 3
    inits = {
        "W": rng.normal(size=(c, A, k)).astype(np.float32),
        "b": rng.normal(size=c).astype(np.float32),
        "Wd": rng.normal(size=(c * (length // 2), hidden)).astype(np.float32) / 4,
        "bd": rng.normal(size=hidden).astype(np.float32),
    }
    src = "x"
    nodes = []
    if layout == "nlc":
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]))
        src = "xt"
    nodes += [
        helper.make_node("Conv", [src, "W", "b"], ["c1"], pads=[2, 2], kernel_shape=[k]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2], strides=[2]),
        helper.make_node("Flatten", ["p1"], ["f1"], axis=1),
        helper.make_node("Gemm", ["f1", "Wd", "bd"], ["logits"]),
        helper.make_node("Sigmoid", ["p1"], ["track"]),
    ]
    return _model(nodes, inits, layout, length, {"logits": ["batch", hidden], "track": ["batch", c, None]})


def random_x(n: int, length: int, layout: str, *, seed: int, n_cols=(), soft_cols=()) -> np.ndarray:
    """One-hot (N, L, A) with some all-zero and some soft columns, in ``layout``."""
    x = random_one_hot(n, length, alphabet_size=A, layout="nlc", seed=seed)
    for i, j in n_cols:
        x[i, j] = 0
    for i, j in soft_cols:
        x[i, j] = [0.5, 0.25, 0.0, 0.25]
    return x if layout == "nlc" else np.ascontiguousarray(x.transpose(0, 2, 1))


def to_nlc(x: np.ndarray, layout: str) -> np.ndarray:
    return x if layout == "nlc" else x.transpose(0, 2, 1)


def assert_close_to_scale(got: np.ndarray, want: np.ndarray, ref_out: np.ndarray, rel: float = 1e-6):
    scale = max(np.abs(ref_out).max(), np.abs(want).max())
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= rel * scale, f"max |error| {err:.3g} > {rel} x scale {scale:.3g}"


# --------------------------------------------------------------------------- (a) closed form


def closed_form_conv_ism(W: np.ndarray, x_nlc: np.ndarray, window, layout: str) -> np.ndarray:
    """ISM of a bias-free same-padded Conv: the change at output p from setting column j
    to e_a is W[:, a, k] - sum_b x[j, b] W[:, b, k], k = j - p + K//2."""
    n_seq, length, _ = x_nlc.shape
    c, _, kk = W.shape
    pad = kk // 2
    start, end = window
    lw = end - start
    out = np.zeros((n_seq, lw, A, c, length), dtype=np.float64)  # (N, Lw, A, C, L)
    Wd = W.astype(np.float64)
    for n in range(n_seq):
        for jw in range(lw):
            j = start + jw
            col = x_nlc[n, j].astype(np.float64)
            for a in range(A):
                for p in range(length):
                    k = j - p + pad
                    if 0 <= k < kk:
                        out[n, jw, a, :, p] = Wd[:, a, k] - Wd[:, :, k] @ col
    if layout == "ncl":
        return out.transpose(0, 2, 1, 3, 4)  # (N, A, Lw, C, L)
    return out.transpose(0, 1, 2, 4, 3)  # (N, Lw, A, L, C)


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("window", [None, (3, 11)])
def test_linear_conv_matches_closed_form(layout, window):
    length = 17
    rng = np.random.default_rng(1)
    W = rng.normal(size=(3, A, 5)).astype(np.float32)
    spec = load_model(linear_conv_model(W, layout, length))
    x = random_x(3, length, layout, seed=2, n_cols=[(0, 4), (1, 0), (2, 16), (2, 5)], soft_cols=[(1, 6)])
    ism = naive_ism(spec, x, window=window)
    win = window or (0, length)
    want = closed_form_conv_ism(W, to_nlc(x, layout), win, layout)
    assert set(ism) == {"y"}
    assert ism["y"].dtype == np.float32
    assert ism["y"].shape == want.shape == ism_shape(spec, "y", 3, window=window)
    ref = reference_outputs(spec, x)["y"]
    assert_close_to_scale(ism["y"], want, ref)
    # the N column at (0, 4) and the soft column at (1, 6) get all A substitutions
    xs = to_nlc(x, layout)
    for n, j in [(0, 4), (1, 6)]:
        if win[0] <= j < win[1]:
            sub = ism["y"][n, :, j - win[0]] if layout == "ncl" else ism["y"][n, j - win[0]]
            assert np.all(np.abs(sub).reshape(A, -1).max(axis=1) > 0)
            assert xs[n, j].max() < 1


# --------------------------------------------------------------------------- (b) brute force


def brute_force_ism(model: onnx.ModelProto, x: np.ndarray, layout: str, window=None):
    """Explicit double loop over (j, a), one mutant per onnxruntime call."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    n_seq = x.shape[0]
    length = x.shape[2] if layout == "ncl" else x.shape[1]
    start, end = window or (0, length)
    result = {}
    refs = {}
    for n in range(n_seq):
        ref = dict(zip(names, sess.run(names, {"x": x[n : n + 1]}), strict=True))
        for name in names:
            refs.setdefault(name, []).append(ref[name][0])
        for j in range(start, end):
            for a in range(A):
                mutant = x[n : n + 1].copy()
                e_a = np.eye(A, dtype=np.float32)[a]
                if layout == "ncl":
                    is_ref = np.array_equal(mutant[0, :, j], e_a)
                    mutant[0, :, j] = e_a
                else:
                    is_ref = np.array_equal(mutant[0, j, :], e_a)
                    mutant[0, j, :] = e_a
                outs = dict(zip(names, sess.run(names, {"x": mutant}), strict=True))
                for name in names:
                    arr = result.setdefault(name, np.zeros((n_seq, end - start, A, *ref[name].shape[1:])))
                    if not is_ref:
                        arr[n, j - start, a] = outs[name][0].astype(np.float64) - ref[name][0]
    if layout == "ncl":
        result = {k: np.swapaxes(v, 1, 2) for k, v in result.items()}
    return result, {k: np.stack(v) for k, v in refs.items()}


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_nonlinear_model_matches_brute_force(layout):
    length = 12
    model = nonlinear_model(layout, length)
    x = random_x(2, length, layout, seed=3, n_cols=[(0, 0), (1, 7), (1, 8)], soft_cols=[(0, 5)])
    ism = naive_ism(model, x, batch_size=13)
    want, refs = brute_force_ism(model, x, layout)
    assert set(ism) == {"logits", "track"}
    for name in ("logits", "track"):
        assert ism[name].shape == want[name].shape
        assert_close_to_scale(ism[name], want[name], refs[name])
    assert ism["track"].shape[3:] == (6, length // 2)


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_nonlinear_window_and_output_subset(layout, tmp_path):
    length = 12
    model = nonlinear_model(layout, length, seed=5)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = random_x(2, length, layout, seed=4, n_cols=[(1, 3)])
    ism = naive_ism(str(path), x, window=(2, 9), outputs=["logits"])
    assert set(ism) == {"logits"}
    want, refs = brute_force_ism(model, x, layout, window=(2, 9))
    assert_close_to_scale(ism["logits"], want["logits"], refs["logits"])


# --------------------------------------------------------------------------- (c) batching


@pytest.fixture(scope="module")
def nl_spec():
    return load_model(nonlinear_model("ncl", 12, seed=7))


def test_batch_sizes_give_identical_results(nl_spec):
    x = random_x(3, 12, "ncl", seed=8, n_cols=[(2, 2)])
    results = [naive_ism(nl_spec, x, batch_size=b) for b in (1, 7, 40, 10_000)]
    results.append(naive_ism(nl_spec, x, max_memory=3 * bytes_per_sample(nl_spec)))
    for other in results[1:]:
        for name in results[0]:
            np.testing.assert_array_equal(other[name], results[0][name])


def test_exact_zero_at_reference_bases(nl_spec):
    x = random_x(2, 12, "ncl", seed=9, n_cols=[(0, 1)])
    ism = naive_ism(nl_spec, x)
    ref_mask = x == 1  # (N, A, L): the reference bases
    for name, arr in ism.items():
        at_ref = arr[ref_mask]
        assert np.all(at_ref == 0.0), name
    # the logits change for almost every other substitution
    assert np.count_nonzero(ism["logits"][~ref_mask]) > 0.9 * ism["logits"][~ref_mask].size


def test_progress_counts_mutants(nl_spec):
    x = random_x(2, 12, "ncl", seed=10, n_cols=[(0, 3), (1, 4)])
    calls = []
    naive_ism(nl_spec, x, batch_size=10, progress=lambda done, total: calls.append((done, total)))
    total = 2 * 12 * 3 + 2  # per one-hot column, A at the two N columns
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and len(calls) >= total // 10


def test_reference_outputs_and_batch_sizing(nl_spec):
    x = random_x(5, 12, "ncl", seed=11)
    sess = ort.InferenceSession(nl_spec.model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(["logits"], {"x": x})[0]
    got = reference_outputs(nl_spec, x, batch_size=2)
    assert got["logits"].shape == (5, 3) and got["track"].shape == (5, 6, 6)
    np.testing.assert_allclose(got["logits"], want, rtol=1e-6, atol=1e-6)
    via_session = reference_outputs(sess, x, outputs="logits")
    np.testing.assert_allclose(via_session["logits"], want, rtol=1e-6, atol=1e-6)
    assert auto_batch_size(nl_spec, 10 * bytes_per_sample(nl_spec)) == 10
    assert auto_batch_size(nl_spec, 1) == 1
    assert auto_batch_size(nl_spec) >= 1000


def test_empty_batch(nl_spec):
    ism = naive_ism(nl_spec, np.zeros((0, A, 12), np.float32))
    assert ism["logits"].shape == (0, A, 12, 3)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: x[0, 0], "rank 1"),
        (lambda x: np.concatenate([x, x[:, :1]], axis=1), "alphabet"),
        (lambda x: x[:, :, :10], "length 10"),
        (lambda x: np.ascontiguousarray(x.transpose(0, 2, 1)), "alphabet"),
        (lambda x: _set(x, (1, 2, 3), np.nan), "non-finite value (NaN or inf) in sequence 1 at position 3"),
        (lambda x: _set(x, (0, 0, 5), np.inf), "non-finite value (NaN or inf) in sequence 0 at position 5"),
        (lambda x: _set(x, (1, 0, 4), 2.0), "outside [0, 1] in sequence 1 at position 4"),
        (lambda x: _set(x, (0, 1, 6), -0.5), "outside [0, 1] in sequence 0 at position 6"),
        (lambda x: _ones_col(x, 1, 7), "summing to 2 > 1 in sequence 1 at position 7"),
        (lambda x: x.astype(str), "dtype"),
    ],
)
def test_bad_input_errors(nl_spec, make, message):
    x = random_x(2, 12, "ncl", seed=12)
    with pytest.raises(SequenceError) as info:
        naive_ism(nl_spec, make(x))
    assert message in str(info.value)


def test_wrong_layout_error_suggests_transpose():
    length = 9
    spec = load_model(nonlinear_model("nlc", length + 1, seed=1))
    x = random_x(1, length + 1, "ncl", seed=1)  # (1, 4, 10), model wants (1, 10, 4)
    with pytest.raises(SequenceError, match="transpose"):
        naive_ism(spec, x)


def _set(x, idx, value):
    x = x.copy()
    x[idx] = value
    return x


def _ones_col(x, n, j):
    x = x.copy()
    x[n, :, j] = [1, 1, 0, 0]
    return x


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": (5, 5)}, "window (5, 5)"),
        ({"window": (-1, 4)}, "0 <= start < end <= 12"),
        ({"window": (0, 13)}, "0 <= start < end <= 12"),
        ({"window": "ab"}, "window"),
        ({"outputs": ["nope"]}, "no output 'nope'"),
        ({"outputs": []}, "no outputs requested"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_memory": 0}, "max_memory"),
    ],
)
def test_bad_option_errors(nl_spec, kwargs, message):
    x = random_x(1, 12, "ncl", seed=13)
    with pytest.raises(InputError) as info:
        naive_ism(nl_spec, x, **kwargs)
    assert message in str(info.value)


def test_bad_model_type():
    with pytest.raises(TypeError, match="ModelSpec"):
        naive_ism(42, np.zeros((1, A, 12), np.float32))
