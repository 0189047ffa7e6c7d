"""Importer compatibility: old opsets are upgraded, a batch fixed to 1 is freed."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx import ISMSession, ModelError, YuzuWarning, convert_model, load_model, naive_ism
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.testing.model_builders import build_tiny_cnn, random_onehot


def _batch_one_model(opset: int):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "target"], ["f"]),
        helper.make_node("MatMul", ["f", "dense"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array((0.3 * rng.standard_normal((8, 4, 5))).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, 240], dtype=np.int64), "target"),
        numpy_helper.from_array((0.1 * rng.standard_normal((240, 3))).astype(np.float32), "dense"),
    ]
    graph = helper.make_graph(
        nodes, "batch_one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 30])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [9, 13])
def test_fixed_batch_of_one_and_old_opsets(opset: int) -> None:
    with pytest.warns(YuzuWarning) as caught:
        spec = load_model(_batch_one_model(opset))
    messages = [str(w.message) for w in caught]
    assert any("fixed batch of 1" in m for m in messages), messages
    assert any(f"opset {opset} was upgraded to 11" in m for m in messages) == (opset < 11), messages
    assert spec.opset >= 11
    X = random_onehot(3, 30, seed=1, n_positions=1)
    result = ISMSession(convert_model(spec).model).run(X)["y"]
    expected = naive_ism(spec, X)["y"]
    scale = max(np.abs(expected).max(), np.abs(reference_outputs(spec, X)["y"]).max())
    assert np.abs(result - expected).max() <= 1e-5 * scale


def test_ir_version_newer_than_onnxruntime_reads_is_lowered() -> None:
    """An ``onnx`` newer than ``onnxruntime`` writes IR versions ONNX Runtime refuses; the
    importer declares the newest one it reads, and the conversion stays exact."""
    from yuzu_onnx.runtime import onnxruntime_max_ir_version

    newest = onnxruntime_max_ir_version()
    assert newest is not None and newest >= 10, "ONNX Runtime's refusal names its newest IR version"
    model = build_tiny_cnn(seq_len=40)
    model.ir_version = newest + 1
    spec = load_model(model)
    assert spec.model.ir_version == newest and model.ir_version == newest + 1  # the caller's model is untouched
    x = random_onehot(2, 40, seed=3, n_positions=1)
    got = ISMSession(convert_model(spec).model, device="cpu").run(x)
    want = naive_ism(spec, x, device="cpu")
    for name, value in want.items():
        assert np.max(np.abs(got[name] - value)) <= 1e-5 * max(np.max(np.abs(value)), 1e-30)


def test_opset_newer_than_onnxruntime_reads_is_a_clear_error(monkeypatch) -> None:
    import yuzu_onnx.runtime

    monkeypatch.setattr(yuzu_onnx.runtime, "onnxruntime_max_ir_version", lambda: 5)
    monkeypatch.setattr(yuzu_onnx.runtime, "IR_VERSION_READ_EVERYWHERE", 3)  # an ONNX Runtime that old
    model = build_tiny_cnn(seq_len=40)
    model.ir_version = 8
    with pytest.raises(ModelError, match=r"declares ONNX IR version 8 and opset \d+, which need IR version \d+; "
                                         r"onnxruntime \S+ reads IR versions up to 5: upgrade onnxruntime"):
        load_model(model)
