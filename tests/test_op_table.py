"""Invariants of the op table (``yuzu_onnx/ops``): complete entries, a helpful error for
unknown ops, closed-form crop and FLOPs checks, and the package's place at the bottom
of the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import yuzu_onnx.ops as ops_package
from yuzu_onnx import load_model
from yuzu_onnx.analysis.positional import PositionalMap
from yuzu_onnx.analysis.region import analyse_region
from yuzu_onnx.ops import (
    OPS,
    CropContext,
    NotLocal,
    Span,
    UnsupportedOpError,
    flops_of,
    locality_rule,
    op_spec,
    supported_ops,
)
from yuzu_onnx.ops.registry import elementwise_flops, register

OPS_DIR = Path(ops_package.__file__).parent


def test_every_entry_is_complete() -> None:
    assert supported_ops() == sorted(op for op, spec in OPS.items() if spec.locality is not None)
    for op, spec in OPS.items():
        assert spec.op_type == op
        assert callable(spec.flops), op
        if spec.crop is not None:
            assert spec.required_spans is not None, f"{op} has a crop rewrite but no span function"
        if spec.required_spans is not None or spec.takes_shape_inputs or spec.gaussian_linear is not None:
            assert spec.locality is not None, f"{op} is cropped or sensed but has no locality rule"
        if spec.gaussian_linear is not None:
            assert spec.convolution, op
        if spec.meta:
            assert spec.locality is None, f"meta op {op} cannot be local data"


def test_ops_without_locality_are_the_ones_that_end_the_region() -> None:
    non_local = sorted(op for op, spec in OPS.items() if spec.locality is None)
    assert non_local == ["ConvTranspose", "GRU", "Gemm", "LSTM", "RNN", "Shape", "Size"]


def test_the_table_is_read_only_and_each_op_registered_once() -> None:
    with pytest.raises(TypeError):
        OPS["Relu"] = OPS["Tanh"]  # type: ignore[index]
    with pytest.raises(ValueError, match="Relu"):
        register("Relu")


def test_unknown_op_error_names_op_node_and_supported_set() -> None:
    node = helper.make_node("FancyMix", ["a"], ["b"], name="mixer")
    with pytest.raises(UnsupportedOpError) as caught:
        locality_rule(node)
    error = caught.value
    assert isinstance(error, NotLocal)
    assert (error.op_type, error.node) == ("FancyMix", "mixer")
    assert error.supported == tuple(supported_ops())
    assert "FancyMix" in str(error) and ", ".join(supported_ops()) in str(error)
    custom = helper.make_node("Conv", ["a", "w"], ["c"], domain="com.example")
    with pytest.raises(UnsupportedOpError, match=r"com\.example\.Conv") as caught:
        locality_rule(custom)
    assert caught.value.node == "c"  # an unnamed node is named by its first output
    assert locality_rule(helper.make_node("Conv", ["a", "w"], ["c"])) is OPS["Conv"].locality


def test_region_stop_names_the_unknown_op_and_its_node() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("LpNormalization", ["r"], ["y"], axis=1, name="norm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    region = analyse_region(load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    (stop,) = region.stops
    assert (stop.op_type, stop.node) == ("LpNormalization", "norm")
    assert stop.reason == f"no locality rule for op LpNormalization (ops with rules: {', '.join(supported_ops())})"


def test_unknown_ops_get_a_blank_entry_with_default_flops() -> None:
    spec = op_spec("FancyMix")
    assert spec.locality is None and spec.required_spans is None and not spec.meta
    node = helper.make_node("FancyMix", ["a"], ["b"])
    shapes = {"a": (-1, 4, 10), "b": (-1, 8, 10)}
    assert flops_of(node, shapes) == elementwise_flops(node, shapes) == 80.0


def test_flops_closed_forms() -> None:
    shapes = {"x": (-1, 4, 21), "w": (8, 4, 5), "y": (-1, 8, 17), "m": (-1, 17, 8), "v": (8, 3), "z": (-1, 17, 3)}
    assert flops_of(helper.make_node("Conv", ["x", "w"], ["y"]), shapes) == 2.0 * 8 * 17 * 4 * 5
    assert flops_of(helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3]), shapes) == 8 * 17 * 3
    assert flops_of(helper.make_node("MatMul", ["m", "v"], ["z"]), shapes) == 2.0 * 17 * 3 * 8
    assert flops_of(helper.make_node("Relu", ["y"], ["y2"]), shapes) == 8 * 17


def _conv_crop_context(pads: list[int]) -> CropContext:
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[5], pads=pads, name="conv")
    return CropContext(
        node=node,
        maps={"x": PositionalMap(2, 20, 1, 0, 0), "y": PositionalMap(2, 20, 1, -2, 2)},
        shapes={"x": (-1, 4, 20), "y": (-1, 8, 20)},
        constants={"w": np.zeros((8, 4, 5), np.float32)},
    )


def test_conv_span_and_crop_rewrite() -> None:
    ctx = _conv_crop_context([2, 2])
    conv = OPS["Conv"]
    assert conv.required_spans(ctx, Span(5, 9)) == {"x": Span(3, 11)}
    edit = conv.crop(ctx, Span(5, 9), {"x": Span(3, 11)})
    assert [(a.name, list(a.ints)) for a in edit.attributes] == [("pads", [0, 0])]
    # at the sequence start the cropped copy keeps the two leading pads
    assert conv.required_spans(ctx, Span(0, 3)) == {"x": Span(0, 5)}
    edit = conv.crop(ctx, Span(0, 3), {"x": Span(0, 5)})
    assert [(a.name, list(a.ints)) for a in edit.attributes] == [("pads", [2, 0])]
    assert set(edit.drop_attributes) == {"auto_pad", "ceil_mode"}


def test_per_position_constants_are_cut_to_the_span() -> None:
    node = helper.make_node("Add", ["h", "bias"], ["y"])
    bias = np.arange(20, dtype=np.float32).reshape(1, 20)
    ctx = CropContext(node=node, maps={"h": PositionalMap(2, 20, 1, -2, 2), "y": PositionalMap(2, 20, 1, -2, 2)},
                      shapes={"h": (-1, 8, 20), "y": (-1, 8, 20)}, constants={"bias": bias})
    spec = OPS["Add"]
    assert spec.required_spans(ctx, Span(4, 6)) == {"h": Span(4, 6)}
    ((index, value, hint),) = spec.crop(ctx, Span(4, 6), {"h": Span(4, 6)}).inputs
    assert index == 1 and hint == "crop_const"
    np.testing.assert_array_equal(value, bias[:, 4:7])


ALLOWED_IMPORTS = ("__future__", "collections", "dataclasses", "types", "numpy", "onnx",
                   "yuzu_onnx.ops", "yuzu_onnx.analysis.positional")


def _imports_of(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved)."""
    package = ["yuzu_onnx", *path.parent.relative_to(OPS_DIR.parent).parts]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
    return names


def test_ops_is_the_lowest_layer() -> None:
    files = sorted(OPS_DIR.glob("*.py")) + [OPS_DIR.parent / "analysis" / "positional.py"]
    for path in files:
        for name in _imports_of(path):
            assert any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED_IMPORTS), (
                f"{path.name} imports {name}"
            )
