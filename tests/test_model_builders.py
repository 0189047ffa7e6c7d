"""The seeded test models: valid ONNX, runnable, non-trivial, and accepted by the importer."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from yuzu_onnx.errors import ModelError
from yuzu_onnx.importer import load_model
from yuzu_onnx.testing import BUILDERS, LAYOUTS, SEQUENTIAL, build_linear_conv, random_onehot

CASES = [(name, layout) for name in BUILDERS for layout in LAYOUTS]

# ops a plain sequential local region may contain, and the ops that end the region
CHAIN_OPS = {
    "Conv", "BatchNormalization", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Elu",
    "Gelu", "Exp", "MaxPool", "AveragePool", "LpPool", "Transpose", "Unsqueeze", "Squeeze",
}  # fmt: skip
MIXING_OPS = {"Flatten", "Reshape", "GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceMax", "GRU", "Gemm"}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _seq_len(name: str) -> int:
    return inspect.signature(BUILDERS[name]).parameters["seq_len"].default


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], onnx.ModelProto]:
    return {(name, layout): BUILDERS[name](layout=layout) for name, layout in CASES}


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_builder_model_is_valid_and_runs(models, name, layout):
    model = models[name, layout]
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    length = _seq_len(name)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    expected_len = "L" if name == "dynamic_length" else length
    assert dims == (["batch", 4, expected_len] if layout == "ncl" else ["batch", expected_len, 4])

    session = _session(model)
    x = random_onehot(3, length, layout=layout, seed=7, n_positions=2)
    three = session.run(None, {"x": x})
    one = session.run(None, {"x": x[:1]})
    for y3, y1 in zip(three, one, strict=True):
        assert y3.dtype == np.float32 and y3.shape[0] == 3 and y1.shape[0] == 1
        assert np.all(np.isfinite(y3))
        np.testing.assert_allclose(y1, y3[:1], rtol=1e-5, atol=1e-5)
        scale = float(np.abs(y3).max())
        assert 1e-3 < scale < 1e3, f"output scale {scale} is degenerate"
        assert np.ptp(y3, axis=0).max() > 1e-3 * scale, "output does not depend on the input"

    # a single substitution in the middle moves the output (ISM is non-trivial)
    mutant = x[:1].copy()
    j = length // 2
    if layout == "ncl":
        mutant[0, :, j] = np.roll(mutant[0, :, j], 1) if mutant[0, :, j].any() else np.eye(4)[0]
    else:
        mutant[0, j, :] = np.roll(mutant[0, j, :], 1) if mutant[0, j, :].any() else np.eye(4)[0]
    moved = session.run(None, {"x": mutant})
    assert max(float(np.abs(a - b).max()) for a, b in zip(moved, one, strict=True)) > 1e-6


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_importer_accepts_builder_model(models, name, layout):
    length = _seq_len(name)
    spec = load_model(models[name, layout], seq_len=length)
    assert spec.layout == layout
    assert spec.seq_len == length
    assert spec.alphabet == "ACGT"
    assert spec.input_name == "x"
    assert all(out.batch_axis == 0 for out in spec.outputs)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_other_length_and_seed(name):
    build = BUILDERS[name]
    length = _seq_len(name) + 7
    a = build(layout="ncl", seq_len=length, seed=3)
    assert a.SerializeToString() == build(layout="ncl", seq_len=length, seed=3).SerializeToString()
    b = build(layout="ncl", seq_len=length, seed=4)
    weights_a = [numpy_helper.to_array(t) for t in a.graph.initializer if t.data_type == 1]
    weights_b = [numpy_helper.to_array(t) for t in b.graph.initializer if t.data_type == 1]
    assert any(wa.size > 1 and not np.array_equal(wa, wb) for wa, wb in zip(weights_a, weights_b, strict=True))
    onnx.checker.check_model(a, full_check=True)
    ys = _session(a).run(None, {"x": random_onehot(2, length, seed=1)})
    assert all(np.all(np.isfinite(y)) for y in ys)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_builders_reject_bad_arguments(layout):
    with pytest.raises(ValueError, match="layout"):
        BUILDERS["tiny_cnn"](layout="nchw")
    with pytest.raises(ValueError, match="seq_len"):
        BUILDERS["tiny_cnn"](layout=layout, seq_len=4)


def _walk_chain(model: onnx.ModelProto) -> str:
    """Follow the single chain from the input; return why it stopped."""
    consts = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    tensor = "x"
    while True:
        if tensor in outputs:
            return "output"
        users = [n for n in model.graph.node if tensor in n.input]
        if users and all(n.op_type in MIXING_OPS for n in users):
            return "mixing"
        if len(users) != 1:
            return "branch"
        node = users[0]
        dynamic_inputs = [i for i in node.input if i and i not in consts]
        if node.op_type not in CHAIN_OPS or dynamic_inputs != [tensor]:
            return f"op {node.op_type}"
        tensor = node.output[0]


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_sequential_registry_matches_graph(models, name, layout):
    reason = _walk_chain(models[name, layout])
    if name in SEQUENTIAL:
        assert reason in ("mixing", "output"), reason
    else:
        assert reason not in ("mixing", "output")


def test_dynamic_length_needs_seq_len():
    model = BUILDERS["dynamic_length"]()
    with pytest.raises(ModelError, match="seq_len="):
        load_model(model)
    session = _session(model)
    for length in (40, 123):
        (y,) = session.run(None, {"x": random_onehot(2, length, seed=0)})
        assert y.shape == (2, 3)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("kernel", "out_channels"), [(7, 3), (4, 2), (1, 1)])
def test_linear_conv_closed_form_ism(layout, kernel, out_channels):
    length = 24
    model = build_linear_conv(layout=layout, seq_len=length, seed=5, kernel=kernel, out_channels=out_channels)
    (w,) = [numpy_helper.to_array(t) for t in model.graph.initializer]
    assert w.shape == (out_channels, 4, kernel)
    pad = (kernel - 1) // 2
    session = _session(model)
    x = random_onehot(1, length, layout=layout, seed=2, n_positions=1)
    x_ncl = x if layout == "ncl" else x.transpose(0, 2, 1)
    (ref,) = session.run(None, {"x": x})
    mutants = np.repeat(x_ncl, 4 * length, axis=0)  # mutant (j, a) at row 4j + a
    for j in range(length):
        mutants[4 * j : 4 * j + 4, :, j] = np.eye(4, dtype=np.float32)
    feed = mutants if layout == "ncl" else mutants.transpose(0, 2, 1)
    (out,) = session.run(None, {"x": np.ascontiguousarray(feed)})
    naive = out - ref
    if layout == "nlc":
        naive, ref = naive.transpose(0, 2, 1), ref.transpose(0, 2, 1)
    assert ref.shape == (1, out_channels, length)
    expected = np.zeros((4 * length, out_channels, length), dtype=np.float32)
    for j in range(length):
        for a in range(4):
            column_delta = w[:, a, :] - np.einsum("cbt,b->ct", w, x_ncl[0, :, j])  # (C, k)
            for t in range(kernel):
                p = j + pad - t
                if 0 <= p < length:
                    expected[4 * j + a, :, p] = column_delta[:, t]
    np.testing.assert_allclose(naive, expected, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_random_onehot(layout):
    x = random_onehot(5, 50, layout=layout, seed=1, n_positions=3)
    assert x.dtype == np.float32 and x.shape == ((5, 4, 50) if layout == "ncl" else (5, 50, 4))
    per_position = x.sum(axis=1 if layout == "ncl" else 2)  # (5, 50)
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert np.all((per_position == 0).sum(axis=1) == 3)
    assert np.all((per_position == 1).sum(axis=1) == 47)
    other = random_onehot(5, 50, layout="nlc" if layout == "ncl" else "ncl", seed=1, n_positions=3)
    np.testing.assert_array_equal(x, other.transpose(0, 2, 1))
    assert not np.array_equal(x, random_onehot(5, 50, layout=layout, seed=2, n_positions=3))
    with pytest.raises(ValueError, match="layout"):
        random_onehot(1, 10, layout="cl")
    with pytest.raises(ValueError, match="n_positions"):
        random_onehot(1, 10, n_positions=11)


ROOT = Path(__file__).resolve().parent.parent
TORCH_DATA = ROOT / "tests" / "data" / "torch"
MANIFEST = json.loads((TORCH_DATA / "manifest.json").read_text())["models"]


def test_tiny_cnn_example_is_the_builder_model():
    stored = onnx.load(str(ROOT / "models" / "tiny_cnn.onnx"))
    assert stored.SerializeToString() == BUILDERS["tiny_cnn"](seq_len=200).SerializeToString()


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_exported_torch_models_match_manifest(entry):
    path = TORCH_DATA / entry["file"]
    raw = path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    assert len(raw) < 300_000
    spec = load_model(path)
    assert (spec.layout, spec.seq_len, spec.opset) == ("ncl", entry["seq_len"], entry["opset"])
    assert {o.name: [-1, *o.shape[1:]] for o in spec.outputs} == {
        name: [-1, *shape[1:]] for name, shape in entry["outputs"].items()
    }
    session = _session(onnx.load(str(path)))
    ys = session.run(None, {"x": random_onehot(3, entry["seq_len"], seed=2)})
    assert all(np.all(np.isfinite(y)) and np.ptp(y, axis=0).max() > 0 for y in ys)


def test_torch_data_total_size():
    assert sum(p.stat().st_size for p in TORCH_DATA.iterdir()) < 2_000_000
