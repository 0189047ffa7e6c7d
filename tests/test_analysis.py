"""Locality analysis against brute force: perturb one input position, see what moves."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from yuzu_onnx import load_model
from yuzu_onnx.analysis.positional import PositionalMap
from yuzu_onnx.analysis.region import analyse_region
from yuzu_onnx.ops import OPS, NotLocal, RuleContext
from yuzu_onnx.testing.model_builders import BUILDERS, random_onehot


def _region_outputs(spec, region) -> list[str]:
    return [name for name in region.maps if name != spec.input_name and name in spec.shapes]


def _run_all(spec, names, X):
    model = onnx.ModelProto()
    model.CopyFrom(spec.model)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type for vi in inferred.graph.value_info}
    existing = {o.name for o in model.graph.output}
    kept = []
    for name in names:
        if name in existing:
            kept.append(name)
        elif name in types:
            vi = onnx.ValueInfoProto(name=name)
            vi.type.CopyFrom(types[name])
            model.graph.output.append(vi)
            kept.append(name)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(kept, session.run(kept, {spec.input_name: X})))


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_windows_contain_every_change_and_edges_are_reached(name: str, layout: str) -> None:
    spec = load_model(BUILDERS[name](layout=layout), seq_len=100 if name == "dynamic_length" else None)
    region = analyse_region(spec)
    length = spec.seq_len
    X = random_onehot(1, length, layout=layout, seed=11)
    rng = np.random.default_rng(0)
    positions = sorted({0, length - 1, length // 2, *rng.integers(0, length, 12).tolist()})
    mutants = []
    for j in positions:
        x = X.copy()
        if layout == "ncl":
            ref = int(x[0, :, j].argmax())
            x[0, :, j] = 0
            x[0, (ref + 1 + rng.integers(0, 3)) % 4, j] = 1
        else:
            ref = int(x[0, j].argmax())
            x[0, j] = 0
            x[0, j, (ref + 1 + rng.integers(0, 3)) % 4] = 1
        mutants.append(x)
    names = _region_outputs(spec, region)
    reference = _run_all(spec, names, X)
    changed_runs = [_run_all(spec, names, x) for x in mutants]
    for tensor, ref_value in reference.items():
        if ref_value.dtype.kind != "f":
            continue
        m: PositionalMap = region.maps[tensor]
        reached_lo = reached_hi = False
        for j, run in zip(positions, changed_runs):
            moved = np.moveaxis(run[tensor] != ref_value, m.axis, 0).reshape(m.length, -1).any(axis=1)
            for p in np.nonzero(moved)[0]:
                lo, hi = m.window(int(p))
                assert lo <= j <= hi, f"{tensor}: position {p} moved for input {j} outside window [{lo}, {hi}]"
                reached_lo |= j == lo
                reached_hi |= j == hi
        any_change = any((run[tensor] != ref_value).any() for run in changed_runs)
        if any_change and m.receptive_field > 1:
            assert reached_lo or reached_hi, f"{tensor}: window {m} never reached at its edges"


def _ctx(op: str, in_map: PositionalMap, in_shape, out_shape, **attrs) -> RuleContext:
    node = onnx.helper.make_node(op, ["a"], ["b"], **attrs)
    return RuleContext(node=node, input_maps=[in_map], shapes={"a": in_shape, "b": out_shape}, constants={}, opset=17)


def test_conv_window_composition_closed_form() -> None:
    m = PositionalMap(axis=2, length=50, stride=2, lo=-3, hi=4)
    node = onnx.helper.make_node("Conv", ["a", "w"], ["b"], kernel_shape=[5], dilations=[2], strides=[3], pads=[4, 4])
    ctx = RuleContext(
        node=node,
        input_maps=[m, None],
        shapes={"a": (-1, 8, 50), "b": (-1, 8, 17), "w": (8, 8, 5)},
        constants={"w": np.zeros((8, 8, 5), np.float32)},
        opset=17,
    )
    out = OPS["Conv"].locality(ctx)[0]
    # output q reads positions 3q-4 .. 3q+4, i.e. input windows 2(3q-4)-3 .. 2(3q+4)+4
    assert (out.stride, out.lo, out.hi, out.length) == (6, -11, 12, 17)


def test_ops_that_mix_positions_are_not_local() -> None:
    m = PositionalMap(axis=2, length=10, stride=1, lo=0, hi=0)
    with pytest.raises(NotLocal, match="sequence axis"):
        OPS["Softmax"].locality(_ctx("Softmax", m, (-1, 4, 10), (-1, 4, 10), axis=2))
    with pytest.raises(NotLocal, match="merges"):
        OPS["Flatten"].locality(_ctx("Flatten", m, (-1, 4, 10), (-1, 40)))


def test_unknown_op_is_reported_by_name_and_node() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Hardmax", ["r"], ["h"], axis=2, name="mix"),
         helper.make_node("Erf", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    spec = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    region = analyse_region(spec)
    assert [str(s) for s in region.stops] == ["Hardmax node 'mix': it normalises over the sequence axis"]
    assert region.frontier == ("r",)
