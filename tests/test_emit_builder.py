"""``GraphBuilder.select`` and ``GraphBuilder.pad`` for every element type a model's tensors
may have: a valid model that ONNX Runtime runs, with exactly numpy's result."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from yuzu_onnx.emit.builder import GraphBuilder
from yuzu_onnx.errors import UnsupportedError

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64]


def values(dtype: type, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values spanning the type's range (extremes included), not just small numbers."""
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        picks = np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
        return picks[rng.integers(0, len(picks), shape)]
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


def run(b: GraphBuilder, out: str, inputs: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Run the builder's nodes; ``out`` has the inputs' element type and ``shape``."""
    elem_type = helper.np_dtype_to_tensor_dtype(next(iter(inputs.values())).dtype)
    graph = helper.make_graph(
        b.nodes, "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(out, elem_type, shape)],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([out], inputs)[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=[np.dtype(d).name for d in DTYPES])
@pytest.mark.parametrize("mask_kind", ["constant", "tensor"])
def test_select_is_exact_for_every_element_type(dtype: type, mask_kind: str) -> None:
    a, c = values(dtype, (3, 2, 5), 0), values(dtype, (2, 5), 1)
    mask = np.random.default_rng(2).random((3, 1, 5)) > 0.5
    b = GraphBuilder(17)
    inputs = {"a": a, "c": c}
    if mask_kind == "tensor":
        b.nodes.append(helper.make_node("Constant", [], ["m"], value=onnx.numpy_helper.from_array(mask)))
    out = b.select("m" if mask_kind == "tensor" else mask, "a", "c", dtype=np.dtype(dtype))
    got = run(b, out, inputs, (3, 2, 5))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.where(mask, a, c))
    ops = {n.op_type for n in b.nodes}
    assert ("Where" in ops) == (dtype != np.float32), ops  # float32 keeps Mul/Mul/Add


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("dtype", DTYPES, ids=[np.dtype(d).name for d in DTYPES])
def test_pad_is_exact_for_every_element_type(dtype: type, opset: int) -> None:
    x = values(dtype, (2, 3, 4), 0)
    b = GraphBuilder(opset)
    out = b.pad("x", [0, 0, 1, 0, 0, 2], dtype=np.dtype(dtype))
    got = run(b, out, {"x": x}, (2, 3, 7))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.pad(x, [(0, 0), (0, 0), (1, 2)]))


def test_an_element_type_without_exact_handling_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="complex64"):
        GraphBuilder(17).select(np.ones(3, bool), "a", "c", dtype=np.dtype(np.complex64))
