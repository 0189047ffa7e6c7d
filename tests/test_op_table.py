"""Invariants of the op table (``yuzu_onnx/ops``): complete entries, a helpful error for
unknown ops, closed-form crop and FLOPs checks, and the package's place at the bottom
of the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import yuzu_onnx.ops as ops_package
from yuzu_onnx import load_model
from yuzu_onnx.analysis.positional import PositionalMap
from yuzu_onnx.analysis.region import analyse_region
from yuzu_onnx.emit.builder import GraphBuilder
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
        if spec.window_sum is not None:
            assert spec.window_sum.kind in ("sum", "mean"), op
            assert callable(spec.window_sum.reduced_axes), op
        if spec.flattens:
            assert spec.locality is not None and spec.window_sum is None, op
        if spec.dense_weight is not None:
            assert spec.window_sum is None and not spec.flattens, op


def test_ops_without_locality_are_the_ones_that_end_the_region() -> None:
    non_local = sorted(op for op, spec in OPS.items() if spec.locality is None)
    assert non_local == ["ConvTranspose", "GRU", "Gemm", "GlobalAveragePool", "LSTM", "RNN", "Shape", "Size"]
    # entries without a locality rule hold what else the engine knows: FLOPs, a head role
    assert OPS["GlobalAveragePool"].window_sum is not None and OPS["Gemm"].dense_weight is not None


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
    shapes["p"] = (-1, 8, 1)
    assert flops_of(helper.make_node("GlobalAveragePool", ["y"], ["p"]), shapes) == 8 * 17


# -- linear heads: window sums and dense layers -------------------------------------


def test_head_roles_are_the_linear_reductions_flattens_and_dense_layers() -> None:
    roles = {op: spec.window_sum.kind for op, spec in OPS.items() if spec.window_sum is not None}
    assert roles == {"GlobalAveragePool": "mean", "ReduceMean": "mean", "ReduceSum": "sum"}
    assert sorted(op for op, spec in OPS.items() if spec.flattens) == ["Flatten", "Reshape"]
    assert sorted(op for op, spec in OPS.items() if spec.dense_weight is not None) == ["Gemm", "MatMul"]


def test_reduced_axes_from_attributes_constant_inputs_and_global_pools() -> None:
    shapes = {"h": (-1, 4, 20, 3)}
    axes_of = OPS["ReduceSum"].window_sum.reduced_axes
    assert OPS["ReduceMean"].window_sum.reduced_axes is axes_of
    assert axes_of(helper.make_node("ReduceMean", ["h"], ["y"], axes=[-1, 2]), shapes, {}) == [2, 3]
    node = helper.make_node("ReduceSum", ["h", "axes"], ["y"])
    assert axes_of(node, shapes, {"axes": np.array([-2], np.int64)}) == [2]
    assert axes_of(node, shapes, {}) is None  # axes computed at run time
    assert axes_of(node, shapes, {"axes": np.zeros(0, np.int64)}) is None  # empty: every axis
    assert axes_of(helper.make_node("ReduceSum", ["h"], ["y"]), shapes, {}) is None  # every axis
    pool = OPS["GlobalAveragePool"].window_sum.reduced_axes
    assert pool(helper.make_node("GlobalAveragePool", ["h"], ["y"]), shapes, {}) == [2, 3]


def test_dense_weights_of_matmul_and_gemm() -> None:
    w = np.arange(12, dtype=np.float64).reshape(3, 4)
    constants = {"w": w, "wt": w.T.copy(), "c": np.ones(4, np.float32), "cube": np.zeros((2, 3, 4))}
    matmul = OPS["MatMul"].dense_weight
    got = matmul(helper.make_node("MatMul", ["x", "w"], ["y"]), constants)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, w)
    assert matmul(helper.make_node("MatMul", ["x", "cube"], ["y"]), constants) is None
    assert matmul(helper.make_node("MatMul", ["x", "v"], ["y"]), constants) is None  # computed weights
    gemm = OPS["Gemm"].dense_weight
    np.testing.assert_array_equal(gemm(helper.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=0.5), constants),
                                  np.float32(0.5) * w.astype(np.float32))
    np.testing.assert_array_equal(gemm(helper.make_node("Gemm", ["x", "wt"], ["y"], transB=1), constants), w)
    assert gemm(helper.make_node("Gemm", ["x", "w"], ["y"], transA=1), constants) is None
    assert gemm(helper.make_node("Gemm", ["x", "w", "bias"], ["y"]), constants) is None  # computed bias


def test_axes_input_since_matches_the_onnx_schemas() -> None:
    listed = {op: spec.axes_input_since for op, spec in OPS.items() if spec.axes_input_since is not None}
    assert listed["ReduceSum"] == 13 and listed["ReduceMean"] == 18 and listed["Unsqueeze"] == 13
    for op, since in listed.items():
        before, after = onnx.defs.get_schema(op, since - 1), onnx.defs.get_schema(op, since)
        assert "axes" in before.attributes and "axes" not in after.attributes, op
        assert [i.name for i in after.inputs][1] == "axes", op


@pytest.mark.parametrize(("op", "opset", "as_input"), [("ReduceSum", 12, False), ("ReduceSum", 13, True),
                                                        ("ReduceMax", 17, False), ("ReduceMax", 18, True)])
def test_emitted_reductions_list_their_axes_as_the_opset_wants(op: str, opset: int, as_input: bool) -> None:
    b = GraphBuilder(opset)
    b.reduce(op, "x", [1], keepdims=0)
    (node,) = b.nodes
    assert (len(node.input) == 2) == as_input and any(a.name == "axes" for a in node.attribute) != as_input


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


ALLOWED_IMPORTS = ("__future__", "collections", "dataclasses", "types", "typing", "numpy", "onnx",
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


# -- no op lists outside the table ---------------------------------------------------

# (module under yuzu_onnx/, op type) -> why comparing a node's op type with it there is
# not op knowledge the table should hold
OP_TYPE_TESTS_ALLOWED = {
    ("analysis/region.py", "Constant"): "Constant nodes are in-graph initializers: reading their values is "
                                        "graph import, not a rule of an op family",
    ("importer.py", "Reshape"): "fixed-batch Reshape targets are canonicalised on import; to move into "
                                "ops/layout.py once the importer's issue-#16 edits have landed",
    ("fixed_batch.py", "Reshape"): "a fixed-batch export's batch-1 Reshape target is freed on import (a "
                                   "target-shape input); to move into ops/layout.py with the importer's entry",
    ("fixed_batch.py", "Concat"): "a batch-1 constant concatenated with batch-dependent tensors is expanded on "
                                  "import; to move into ops/broadcasting.py with the importer's entry",
}
# modules that build models rather than read them: they choose which ops to emit
NOT_SCANNED = ("ops", "testing")


def _is_op_type(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "op_type") or (
        isinstance(node, ast.Name) and node.id == "op_type"
    )


def _literal_strings(node: ast.expr) -> list[str] | None:
    """The strings of a string literal or a literal tuple/set/list of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.Set, ast.List)) and node.elts:
        strings = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        return strings if len(strings) == len(node.elts) else None
    return None


def _op_type_tests(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, op type)`` for each comparison of an op type with literal op names, and each
    literal collection of two or more ONNX op names (a hand-written op list)."""
    op_names = {schema.name for schema in onnx.defs.get_all_schemas()}
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_op_type(o) for o in operands):
                for o in operands:
                    found.update((node.lineno, s) for s in _literal_strings(o) or [])
        elif isinstance(node, (ast.Tuple, ast.Set, ast.List)):
            strings = _literal_strings(node) or []
            if len(strings) > 1 and all(s in op_names for s in strings):
                found.update((node.lineno, s) for s in strings)
    return sorted(found)


def test_no_hand_written_op_lists_outside_the_table() -> None:
    package = OPS_DIR.parent
    seen: set[tuple[str, str]] = set()
    unexpected: list[str] = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module.split("/")[0] in NOT_SCANNED:
            continue
        for line, op in _op_type_tests(ast.parse(path.read_text("utf-8"))):
            seen.add((module, op))
            if (module, op) not in OP_TYPE_TESTS_ALLOWED:
                unexpected.append(f"{module}:{line} tests op type {op!r}")
    assert not unexpected, "op knowledge belongs in the op table (yuzu_onnx/ops):\n" + "\n".join(unexpected)
    assert seen == set(OP_TYPE_TESTS_ALLOWED), "stale allow-list entries: " + str(set(OP_TYPE_TESTS_ALLOWED) - seen)


def test_the_op_list_check_catches_comparisons_and_literal_lists() -> None:
    source = """
if node.op_type == "Conv": pass
if n.op_type not in ("Gemm", "MatMul"): pass
if op_type in {"ReduceSum"}: pass
HEADS = ["Flatten", "Reshape"]
if node.op_type == other.op_type: pass
NAMES = ("none", "sum")
"""
    found = _op_type_tests(ast.parse(source))
    assert sorted(op for _, op in found) == ["Conv", "Flatten", "Gemm", "MatMul", "ReduceSum", "Reshape"]
