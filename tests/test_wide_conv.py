"""Wide few-output convolutions (profile heads) as MatMul + skewed sums, against Conv."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx.emit.builder import GraphBuilder
from yuzu_onnx.emit.wide_conv import emit_wide_conv, is_wide_conv


@pytest.mark.parametrize(
    "cout,k,dilation,stride,pads,bias",
    [(2, 75, 1, 1, [37, 37], True), (1, 25, 2, 1, [0, 0], False), (3, 16, 3, 2, [5, 9], True), (2, 20, 1, 3, [0, 0], True),
     (2, 7, 1, 1, [3, 3], True), (1, 3, 2, 1, [1, 3], False)],  # the last two pad the products, not the input
)
def test_wide_conv_matches_conv(cout, k, dilation, stride, pads, bias) -> None:
    rng = np.random.default_rng(0)
    cin, length = 16 * cout, 120
    weight = rng.standard_normal((cout, cin, k)).astype(np.float32)
    constants = {"w": weight, "b": rng.standard_normal(cout).astype(np.float32)}
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    node = helper.make_node("Conv", inputs, ["y"], pads=pads, dilations=[dilation], strides=[stride])
    out_len = (length + sum(pads) - (k - 1) * dilation - 1) // stride + 1
    shapes = {"x": (-1, cin, length), "y": (-1, cout, out_len)}
    assert is_wide_conv(node, shapes, constants)
    b = GraphBuilder(17)
    emit_wide_conv(b, node, "x", "y", shapes, constants)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, length])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", cout, out_len])
    fast = helper.make_model(helper.make_graph(b.nodes, "fast", [x_info], [y_info], b.initializers),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    inits = [numpy_helper.from_array(v, n) for n, v in constants.items() if n in inputs]
    plain = helper.make_model(helper.make_graph([node], "plain", [x_info], [y_info], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(fast, full_check=True)
    x = rng.standard_normal((3, cin, length)).astype(np.float32)
    got = ort.InferenceSession(fast.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_narrow_or_grouped_convs_are_left_alone() -> None:
    constants = {"w": np.zeros((64, 4, 19), np.float32), "v": np.zeros((2, 4, 5), np.float32)}
    shapes = {"x": (-1, 4, 100), "y": (-1, 64, 100)}
    assert not is_wide_conv(helper.make_node("Conv", ["x", "w"], ["y"]), shapes, constants)
    assert not is_wide_conv(helper.make_node("Conv", ["x", "v"], ["y"]), shapes, constants)
    # few output channels for the input channels and kernel: 32 → 2 is wide at kernel 7, 32 → 8 is not
    constants = {"w": np.zeros((2, 32, 7), np.float32), "v": np.zeros((8, 32, 7), np.float32),
                 "u": np.zeros((4, 32, 17), np.float32)}
    shapes = {"x": (-1, 32, 100), "y": (-1, 8, 100)}
    assert is_wide_conv(helper.make_node("Conv", ["x", "w"], ["y"]), shapes, constants)
    assert not is_wide_conv(helper.make_node("Conv", ["x", "v"], ["y"]), shapes, constants)
    assert is_wide_conv(helper.make_node("Conv", ["x", "u"], ["y"]), shapes, constants)  # a long kernel from 8×


def test_peak_memory_counts_the_matmul_form_of_a_wide_profile_head() -> None:
    """The MatMul form holds ``Cout·K`` product rows per position: the stage estimate
    must cover them (BPNet-like heads made the runner's batch run out of memory)."""
    from yuzu_onnx import load_model
    from yuzu_onnx.analysis.region import analyse_region, constant_values
    from yuzu_onnx.analysis.wide_convs import wide_conv_bytes
    from yuzu_onnx.plan import _stage_bytes, plan_rewrite
    from yuzu_onnx.testing.model_builders import _Graph

    g = _Graph("wide_head", layout="ncl", seq_len=300, seed=0)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 16, 9)])
    g.profile_output(g.same_conv(h, 16, 2, 41), "profile")  # 16 -> 2 channels, kernel 41: the MatMul form
    spec = load_model(g.build())
    constants = constant_values(spec.model)
    graph = spec.model.graph
    (head,) = [i for i, n in enumerate(graph.node) if n.op_type == "Conv" and is_wide_conv(n, spec.shapes, constants)]
    region = analyse_region(spec)
    plan = plan_rewrite(spec, region)
    (stage,) = [st for st in plan.stages if head in st.nodes]
    need = spec.alphabet_size * stage.n_probes * wide_conv_bytes(graph.node[head], spec.shapes, constants)
    assert _stage_bytes(spec, region, stage, spec.alphabet_size, plan.window, constants) >= need
    assert plan.peak_bytes_per_sequence >= need
    # without the wide convolution's products the estimate would have been smaller
    assert _stage_bytes(spec, region, stage, spec.alphabet_size, plan.window, {}) < need
