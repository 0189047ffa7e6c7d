"""Fixed-batch exports (issue 14, item 2) and a quiet ONNX Runtime.

A model exported with batch 1 baked into ``Reshape``/``Concat`` shape constants is
rewritten so that the batch is dynamic, and the rewrite is checked by running a batch of
3 against each sequence alone; a model that really uses its batch (``x[0]``, a
``Squeeze`` of the batch axis) is refused with one line naming the node and the export
fix. ONNX Runtime's own ``[E:onnxruntime:...]`` lines never reach stderr.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from yuzu_onnx.convert import convert_model
from yuzu_onnx.encoding import random_one_hot
from yuzu_onnx.errors import ModelError, YuzuWarning
from yuzu_onnx.fixed_batch import free_fixed_batch
from yuzu_onnx.importer import load_model
from yuzu_onnx.oracle import naive_ism, reference_outputs
from yuzu_onnx.session import ISMSession
from yuzu_onnx.testing.extra_input_models import build_batch_indexing, build_fixed_batch
from yuzu_onnx.testing.model_builders import _Graph

TOL = 1e-5


def _squeeze_batch() -> onnx.ModelProto:
    """``x.squeeze(0)`` then ``unsqueeze(0)``: runs on batch 1 only."""
    g = _Graph("squeeze_batch", layout="ncl", seq_len=32, seed=0)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 6, 5)])
    h = g.unsqueeze(g.squeeze(h, [0]), [0])
    g.output(g.gemm(g.reduce("ReduceMean", h, [2]), 6, 2), "y")
    model = g.build()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    return model


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_batch_one_reshape_and_concat_are_freed_and_exact(layout):
    model = build_fixed_batch(layout=layout)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    X = random_one_hot(3, 64, layout=layout, seed=5, n_unknown=2, unknown_in="last")
    with pytest.raises(Exception, match="Expected: 1"):  # the export really fixes the batch
        session.run(None, {"x": X})
    with pytest.warns(YuzuWarning, match=r"fixed batch of 1; 2 shape constant\(s\).*Concat.*Reshape"):
        spec = load_model(model)
    refs = reference_outputs(spec, X)
    for name in ("profile", "y"):  # the freed model gives the original's outputs, batch 1 at a time
        alone = np.concatenate([session.run([name], {"x": X[i : i + 1]})[0] for i in range(3)])
        np.testing.assert_allclose(refs[name], alone, rtol=1e-5, atol=1e-6)
    conv = convert_model(spec, window=(10, 40))
    got = ISMSession(conv.model).run(X)
    want = naive_ism(spec, X, window=(10, 40))
    for name in want:
        scale = max(float(np.abs(refs[name]).max()), float(np.abs(want[name]).max()))
        assert float(np.abs(got[name] - want[name]).max()) <= TOL * scale


def test_batch_indexing_is_refused_naming_the_node():
    with pytest.raises(ModelError) as caught:
        load_model(build_batch_indexing())
    message = str(caught.value)
    assert "\n" not in message
    assert "node 'Gather_" in message and "(Gather) gives different values for a batch of 3" in message
    assert "dynamic_axes={'x': {0: 'batch'}}" in message and "dynamic_shapes=" in message


def test_a_node_failing_on_batches_is_refused_naming_it():
    with pytest.raises(ModelError, match=r"fixes the batch at 1 and fails on a batch of 3 .*node 'Squeeze_\d+' "
                                         r"\(Squeeze\).*dynamic_axes="):
        load_model(_squeeze_batch())


def test_a_model_broken_for_every_batch_keeps_its_own_error():
    model = build_fixed_batch()
    bad = onnx.helper.make_node("Reshape", ["x", "bad_shape"], ["r"])
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([7, -1], np.int64), "bad_shape"))
    model.graph.node.insert(0, bad)
    model.graph.output.append(onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, None))
    with pytest.raises(ModelError, match="ONNX Runtime cannot run the model with a batch of 2 sequences"):
        load_model(model)


def test_free_fixed_batch_returns_none_when_one_sequence_fails():
    model = _squeeze_batch()

    def feeds(n):
        return {"x": np.zeros((n + 1, 4, 32), np.float32)}  # never a batch of one

    assert free_fixed_batch(model, "x", feeds) is None


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_no_onnxruntime_log_lines_on_stderr(cli_subprocess, tmp_path, command):
    path = tmp_path / "fixed.onnx"
    onnx.save(build_fixed_batch(), path)
    res = cli_subprocess(command, path, *(["-n", "2"] if command == "verify" else []))
    assert res.rc == 0, res.err
    assert "[E:" not in res.err and "onnxruntime:" not in res.err
    assert all(line.startswith("yuzu-onnx: warning:") for line in res.err.splitlines()), res.err
    bad = tmp_path / "indexing.onnx"
    onnx.save(build_batch_indexing(), bad)
    res = cli_subprocess(command, bad)
    assert res.rc == 2
    assert res.err.count("\n") == 1 and res.err.startswith("yuzu-onnx: error:")
