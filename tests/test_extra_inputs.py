"""Models with inputs besides the one-hot sequence (issue 14, item 5).

BPNet with control tracks (``x_ctl`` ``(N, 2, L)`` concatenated after the tower) and a
model with per-sequence covariates (a float scale and an integer cell type): the converted
model keeps the extra inputs, holds them fixed for every mutant of a sequence and matches
the naive oracle on the original model within 1e-5 of the output scale.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from yuzu_onnx.convert import convert_model
from yuzu_onnx.encoding import random_one_hot
from yuzu_onnx.errors import InputError, ModelError
from yuzu_onnx.extra_inputs import ExtraInput, check_extra_values, sample_extra_values
from yuzu_onnx.format import read_converted_info
from yuzu_onnx.importer import load_model
from yuzu_onnx.oracle import naive_ism, reference_outputs
from yuzu_onnx.session import ISMSession
from yuzu_onnx.sidecar import sidecar_document
from yuzu_onnx.testing.extra_input_models import build_bpnet_control, build_covariates

TOL = 1e-5


def assert_exact(got: dict, want: dict, refs: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        scale = max(float(np.abs(refs[name]).max()), float(np.abs(want[name]).max()))
        assert float(np.abs(got[name] - want[name]).max()) <= TOL * scale, name


def sequences(spec, n: int = 3, seed: int = 1) -> np.ndarray:
    """Random one-hot sequences; the last has two N columns (every base is a substitution there)."""
    return random_one_hot(n, spec.seq_len, layout=spec.layout, seed=seed, n_unknown=2, unknown_in="last")


@pytest.fixture(scope="module", params=["ncl", "nlc"])
def bpnet_control(request):
    return load_model(build_bpnet_control(layout=request.param, seq_len=72))


@pytest.mark.parametrize("window", [None, (20, 44)])
def test_bpnet_control_tracks_exact(bpnet_control, window):
    spec = bpnet_control
    assert [e.name for e in spec.extra_inputs] == ["x_ctl"]
    conv = convert_model(spec, window=window)
    # the Concat with the control tracks and the profile conv are in the local region
    assert conv.plan.outputs["profile"].strategy == "decoded_in_region"
    assert not any(s.op_type == "Concat" for s in conv.region.stops)
    X = sequences(spec)
    extra = sample_extra_values(spec.extra_inputs, len(X), seed=4)
    got = ISMSession(conv.model).run(X, extra=extra)
    assert_exact(got, naive_ism(spec, X, window=window, extra=extra), reference_outputs(spec, X, extra=extra))


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("window", [None, (8, 30)])
def test_covariates_exact(layout, window):
    spec = load_model(build_covariates(layout=layout, seq_len=48))
    assert {e.name: (e.shape, e.dtype) for e in spec.extra_inputs} == {"scale": ((1,), "float32"),
                                                                       "cell": ((), "int64")}
    conv = convert_model(spec, window=window)
    assert conv.plan.outputs["profile"].strategy == "decoded_in_region"
    X = sequences(spec, n=4)
    extra = {"scale": np.array([[0.5], [1.0], [2.0], [-1.5]], np.float32), "cell": np.array([0, 2, 1, 2])}
    got = ISMSession(conv.model).run(X, extra=extra, batch_size=3)  # batches of 3 and 1 sequences
    assert_exact(got, naive_ism(spec, X, window=window, extra=extra), reference_outputs(spec, X, extra=extra))


def test_naive_probes_keep_the_extra_inputs():
    spec = load_model(build_bpnet_control(seq_len=40))
    conv = convert_model(spec, probes="naive")
    X = sequences(spec, n=2)
    extra = sample_extra_values(spec.extra_inputs, 2, seed=7)
    assert_exact(ISMSession(conv.model).run(X, extra=extra), naive_ism(spec, X, extra=extra),
                 reference_outputs(spec, X, extra=extra))


def test_the_oracle_gives_each_mutant_its_own_sequences_row():
    """One mutant by hand: the original model on (mutant, that sequence's control tracks)."""
    model = build_bpnet_control(seq_len=40)
    spec = load_model(model)
    X = sequences(spec, n=2)
    extra = sample_extra_values(spec.extra_inputs, 2, seed=3)
    ism = naive_ism(spec, X, extra=extra)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    n, j = 1, 17
    a = int((np.argmax(X[n, :, j]) + 1) % 4)
    mutant = X[n : n + 1].copy()
    mutant[0, :, j] = 0
    mutant[0, a, j] = 1
    feeds = {"x_ctl": extra["x_ctl"][n : n + 1]}
    want = session.run(["profile"], {"x": mutant, **feeds})[0] - session.run(["profile"], {"x": X[n : n + 1], **feeds})[0]
    np.testing.assert_allclose(ism["profile"][n, a, j], want[0], atol=1e-6)


def test_extra_inputs_change_the_result_and_one_row_serves_all():
    spec = load_model(build_bpnet_control(seq_len=40))
    session = ISMSession(convert_model(spec).model)
    X = sequences(spec, n=3)
    one = sample_extra_values(spec.extra_inputs, 1, seed=1)
    shared = session.run(X, extra=one)
    repeated = session.run(X, extra={"x_ctl": np.repeat(one["x_ctl"], 3, axis=0)})
    other = session.run(X, extra=sample_extra_values(spec.extra_inputs, 1, seed=2))
    np.testing.assert_array_equal(shared["profile"], repeated["profile"])
    assert not np.allclose(shared["counts"], other["counts"])  # log(1 + sum(x_ctl)) enters the counts


def test_converted_model_keeps_the_inputs_and_records_them():
    spec = load_model(build_bpnet_control(layout="nlc", seq_len=40))
    conv = convert_model(spec)
    assert [i.name for i in conv.model.graph.input] == ["x", "x_ctl"]
    onnx.checker.check_model(conv.model)
    info = read_converted_info(conv.model)
    assert info.extra_inputs == (ExtraInput("x_ctl", (40, 2), "float32"),)
    assert json.loads(conv.model.metadata_props[4].value) == {"x_ctl": {"shape": [40, 2], "dtype": "float32"}}
    assert sidecar_document(conv)["extra_inputs"] == {"x_ctl": {"shape": [40, 2], "dtype": "float32"}}


def test_missing_unknown_and_misshapen_values_are_refused():
    spec = load_model(build_bpnet_control(seq_len=40))
    session = ISMSession(convert_model(spec).model)
    X = sequences(spec, n=2)
    with pytest.raises(InputError, match=r"also takes x_ctl \(batch, 2, 40\) float32; give the values with extra"):
        session.run(X)
    with pytest.raises(InputError, match="names 'ctl', which the model does not take"):
        session.run(X, extra={"ctl": np.zeros((2, 2, 40), np.float32)})
    with pytest.raises(InputError, match=r"has shape \(3, 2, 40\).*give \(2, 2, 40\) for 2 sequences"):
        session.run(X, extra={"x_ctl": np.zeros((3, 2, 40), np.float32)})
    with pytest.raises(InputError, match="also takes x_ctl"):
        naive_ism(spec, X)
    with pytest.raises(InputError, match="probes='gaussian' .* also takes x_ctl; use probes='spaced'"):
        convert_model(spec, probes="gaussian")


def test_scalar_rows_are_accepted_for_per_sequence_scalars():
    extra = (ExtraInput("cell", (), "int64"),)
    values = check_extra_values(extra, {"cell": 2}, 3)
    np.testing.assert_array_equal(values["cell"], [2, 2, 2])


def _two_one_hot_inputs(seq_len: int = 32) -> onnx.ModelProto:
    """``y = conv(x) + conv(ref)``: two inputs of shape (N, 4, L)."""
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [3, 4, 5], rng.standard_normal(60).astype(np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [3, 4, 5], rng.standard_normal(60).astype(np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[2, 2]),
        helper.make_node("Conv", ["ref", "w2"], ["b"], pads=[2, 2]),
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("Add", ["ra", "b"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4, seq_len]) for n in ("x", "ref")]
    graph = helper.make_graph(nodes, "two", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_input_picks_the_one_hot_input_when_several_qualify():
    model = _two_one_hot_inputs()
    with pytest.raises(ModelError, match=r"several inputs look like one-hot sequences \(x, ref\); choose one with input_name="):
        load_model(model)
    spec = load_model(model, input_name="ref")
    assert spec.input_name == "ref" and [e.name for e in spec.extra_inputs] == ["x"]
    conv = convert_model(spec)
    X = sequences(spec, n=2)
    extra = {"x": random_one_hot(2, spec.seq_len, seed=9)}
    assert_exact(ISMSession(conv.model).run(X, extra=extra), naive_ism(spec, X, extra=extra),
                 reference_outputs(spec, X, extra=extra))


def test_extra_input_length_axis_named_like_the_sequence_is_resolved():
    model = build_bpnet_control(seq_len=40)
    for vi in model.graph.input:
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
        vi.type.tensor_type.shape.dim[2].dim_param = "length"
    spec = load_model(model, seq_len=40)
    assert spec.extra_inputs == (ExtraInput("x_ctl", (2, 40), "float32"),)
    model.graph.input[1].type.tensor_type.shape.dim[2].dim_param = "other"
    with pytest.raises(ModelError, match="extra input 'x_ctl' has shape .* dynamic axis 2"):
        load_model(model, seq_len=40)


def test_extra_input_without_batch_axis_is_refused():
    model = build_bpnet_control(seq_len=40)
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_value = 2
    with pytest.raises(ModelError, match="need the batch on their first axis"):
        load_model(model)


def test_cli_ism_and_naive_agree_key_by_key(cli, tmp_path):
    model = tmp_path / "bpnet_control.onnx"
    onnx.save(build_bpnet_control(seq_len=48), model)
    X = random_one_hot(3, 48, seed=2)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "ctl.npy", sample_extra_values((ExtraInput("x_ctl", (2, 48), "float32"),), 3)["x_ctl"])
    extra = ["--extra-input", f"x_ctl={tmp_path / 'ctl.npy'}"]
    res = cli("inspect", model)
    assert res.rc == 0 and "extra input: x_ctl (batch, 2, 48) float32" in res.out
    res = cli("ism", model, tmp_path / "x.npy", "-o", tmp_path / "ism.npz", "--quiet", *extra)
    assert res.rc == 0, res.err
    res = cli("naive", model, tmp_path / "x.npy", "-o", tmp_path / "naive.npz", "--quiet", *extra)
    assert res.rc == 0, res.err
    got, want = np.load(tmp_path / "ism.npz"), np.load(tmp_path / "naive.npz")
    for key in ("profile", "counts"):
        scale = float(np.abs(want[key]).max())
        assert float(np.abs(got[key] - want[key]).max()) <= TOL * scale
    res = cli("convert", model, "-o", tmp_path / "ism.onnx")
    assert res.rc == 0
    res = cli("run", tmp_path / "ism.onnx", tmp_path / "x.npy", "-o", tmp_path / "run.npz", "--quiet")
    assert res.rc == 2 and "give the values with --extra-input" in res.error_lines[0]
    res = cli("verify", model, "-n", "3", *extra)
    assert res.rc == 0 and "as given with --extra-input" in res.out
    res = cli("verify", model, "-n", "2")
    assert res.rc == 0 and "random values" in res.out


def test_extra_input_at_another_resolution_ends_the_region_and_stays_exact():
    """A (N, 8, L/2) extra input added after a stride-2 pool has no position map: the Add
    ends the local region, and the tail reads the input tiled to the mutants."""
    from yuzu_onnx.testing.extra_input_models import _MultiInputGraph

    g = _MultiInputGraph("pooled_extra", layout="ncl", seq_len=48, seed=0)
    bias = g.add_input("bias", TensorProto.FLOAT, ["batch", 8, 24])
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.op("Add", [g.op("MaxPool", [h], kernel_shape=[2], strides=[2]), bias])
    g.output(g.same_conv(g.op("Relu", [h]), 8, 2, 3, gain=1.0), "y")
    spec = load_model(g.build())
    conv = convert_model(spec)
    assert any(s.op_type == "Add" and "'bias'" in s.reason for s in conv.region.stops)
    assert conv.plan.stages  # the conv and pool before it still run on probes
    X = sequences(spec)
    extra = sample_extra_values(spec.extra_inputs, len(X), seed=2)
    assert_exact(ISMSession(conv.model).run(X, extra=extra), naive_ism(spec, X, extra=extra),
                 reference_outputs(spec, X, extra=extra))
