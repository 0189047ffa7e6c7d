"""Output targets computed in the graph (issue #14 item 3): ``--select`` / ``--aggregate``
(Python ``select=`` / ``aggregate=``): parsing and its errors, exactness against the oracle
with the same targets (dense and banded, ``reduce="l2"``, windows, N positions), the cut of
linear producers (exact, fewer FLOPs), the memory estimate, metadata, sidecar and the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx import ISMSession, ModelError, convert_model, load_model, naive_ism
from yuzu_onnx.bands import densify_results
from yuzu_onnx.errors import InputError, interface
from yuzu_onnx.format import PREFIX, read_converted_info
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.reductions import reduce_ism
from yuzu_onnx.results import read_npz
from yuzu_onnx.session import cached_conversion
from yuzu_onnx.shards import load_results
from yuzu_onnx.sidecar import sidecar_document
from yuzu_onnx.targets import (
    Aggregate,
    Select,
    apply_targets,
    parse_targets,
    targeted_spec,
    targets_from_json,
)
from yuzu_onnx.testing import build_basset_like, build_bpnet, build_dilated_profile, random_onehot

TOLERANCE = 1e-5


def _check(model, X, *, select=None, aggregate=None, window=None, reduce="none", output_form="dense",
           expect_shapes=None):
    """Converted ISM with targets vs the oracle with the same targets, per output."""
    conv = convert_model(model, select=select, aggregate=aggregate, window=window, reduce=reduce,
                         output_form=output_form)
    session = ISMSession(conv.model)
    got = densify_results(session.run(X), {"outputs": session.info.outputs})
    want = naive_ism(model, X, select=select, aggregate=aggregate, window=window)
    refs = reference_outputs(conv.spec, X)
    for name in conv.outputs:
        expected = reduce_ism(want[name], conv.reductions[name])
        assert got[name].shape == expected.shape, name
        if expect_shapes is not None:
            assert got[name].shape == expect_shapes[name], name
        scale = max(float(np.abs(refs[name]).max()), float(np.abs(want[name]).max()))
        err = float(np.abs(got[name] - expected).max())
        assert err <= TOLERANCE * scale, (name, err, scale)
        assert np.abs(expected).max() > 0, name  # the comparison is not of two zero arrays
    return conv


# --------------------------------------------------------------------------- parsing


SHAPES = {"profile": (-1, 3, 50), "counts": (-1, 2)}


def test_dicts_and_cli_strings_give_the_same_targets():
    from_dicts = parse_targets(select={"profile": {1: [2, 0]}, "counts": {-1: 1}},
                               aggregate={"profile": {-1: (10, 20, "sum")}}, output_shapes=SHAPES)
    from_text = parse_targets(select=["profile:1=2,0", "counts:-1=1"], aggregate="profile:2=10:20:sum",
                              output_shapes=SHAPES)
    assert from_dicts == from_text
    assert from_text["profile"].operations == (Select(1, (2, 0)), Aggregate(2, 10, 20, "sum"))
    assert from_text["profile"].shape(SHAPES["profile"]) == (-1, 2, 1)
    assert from_text["counts"].shape(SHAPES["counts"]) == (-1, 1)
    # a select and an aggregate on one axis: the range counts the selected entries
    both = parse_targets(select="profile:1=2,0,1", aggregate="profile:1=0:2:mean", output_shapes=SHAPES)
    assert both["profile"].operations == (Select(1, (2, 0, 1)), Aggregate(1, 0, 2, "mean"))
    assert both["profile"].shape(SHAPES["profile"]) == (-1, 1, 50)
    assert targets_from_json(both["profile"].to_json()) == both["profile"].operations
    assert parse_targets(output_shapes=SHAPES) == {}


@pytest.mark.parametrize(("select", "aggregate", "words"), [
    ({"prof": {1: [0]}}, None, ["output 'prof'", "profile, counts"]),
    ({"profile": {0: [0]}}, None, ["axis 0 of output 'profile'", "batch axis"]),
    ({"profile": {-3: [0]}}, None, ["axis -3 of output 'profile'", "batch axis"]),
    ({"profile": {-4: [0]}}, None, ["axis -4 of output 'profile'", "out of range"]),
    ({"profile": {3: [0]}}, None, ["axis 3 of output 'profile'", "out of range", "3 axes"]),
    ({"profile": {1: [3]}}, None, ["index 3", "axis 1 of output 'profile'", "3 entries"]),
    ({"profile": {1: []}}, None, ["selects nothing", "axis 1 of output 'profile'"]),
    ({"profile": {1: ["x"]}}, None, ["axis 1 of output 'profile'", "whole number", "'x'"]),
    (None, {"profile": {2: (5, 5, "sum")}}, ["range 5:5", "axis 2 of output 'profile'", "empty"]),
    (None, {"profile": {2: (40, 60, "sum")}}, ["range 40:60", "50 entries"]),
    (None, {"profile": {2: (0, 5, "max")}}, ["reduction 'max'", "axis 2 of output 'profile'", "sum, mean"]),
    (None, {"profile": {2: (0, 5)}}, ["axis 2 of output 'profile'", "(start, end, 'sum' or 'mean')"]),
    (None, "profile:2=0:5", ["aggregate='profile:2=0:5'", "START:END:sum|mean"]),
    ("profile=1", None, ["select='profile=1'", "OUTPUT:AXIS=I,J"]),
    (["profile:1=0", "profile:1=1"], None, ["twice", "axis 1 of output 'profile'"]),
    ({"profile": [0]}, None, ["output 'profile'", "{output: {axis: ...}}"]),
])
def test_parse_errors_name_the_output_the_axis_and_the_value(select, aggregate, words):
    with pytest.raises(InputError) as caught:
        parse_targets(select=select, aggregate=aggregate, output_shapes=SHAPES)
    for word in words:
        assert word in str(caught.value)


def test_parse_errors_spell_the_options_per_interface():
    with pytest.raises(InputError) as caught:
        parse_targets(select="profile:0=1", output_shapes=SHAPES)
    assert str(caught.value).startswith("select=: axis 0")
    with interface("cli"):
        assert str(caught.value).startswith("--select: axis 0")


# --------------------------------------------------------------------------- exactness vs the oracle


@pytest.fixture(scope="module")
def profile_model():
    return build_dilated_profile(seq_len=48, seed=3)  # y: (N, 3, 48), decoded in the local region


def test_profile_select_channels_and_aggregate_bins(profile_model):
    X = random_onehot(2, 48, seed=1, n_positions=2)
    _check(profile_model, X, select={"y": {1: [2, 0]}}, aggregate={"y": {2: (10, 30, "sum")}},
           expect_shapes={"y": (2, 4, 48, 2, 1)})
    _check(profile_model, X, aggregate={"y": {-1: (0, 48, "mean")}}, window=(5, 40), reduce="l2",
           expect_shapes={"y": (2, 4, 35)})


def test_channels_last_profile_select_tracks_and_aggregate_bins():
    model = build_dilated_profile(seq_len=48, seed=6, layout="nlc")  # y: (N, 48, 3), a Transpose after the conv
    X = random_onehot(2, 48, seed=3, layout="nlc", n_positions=2)
    _check(model, X, select={"y": {-1: [2, 0]}}, aggregate={"y": {1: (12, 36, "mean")}}, window=(4, 44),
           expect_shapes={"y": (2, 40, 4, 1, 2)})
    _check(model, X, select={"y": {2: [1]}}, output_form="banded")


@pytest.mark.parametrize("form", ["dense", "banded"])
def test_profile_targets_that_keep_the_length_axis_stay_local_and_band(profile_model, form):
    X = random_onehot(2, 48, seed=2, n_positions=1)
    conv = _check(profile_model, X, select={"y": {1: [1]}}, aggregate={"y": {1: (0, 1, "sum")}}, output_form=form)
    assert conv.plan.outputs["y"].strategy == "decoded_in_region"
    assert conv.plan.outputs["y"].form == form
    conv = _check(profile_model, X, aggregate={"y": {1: (0, 3, "mean")}}, window=(10, 30), output_form=form)
    assert conv.plan.outputs["y"].form == form


def test_dense_head_after_flatten_select():
    model = build_basset_like(seq_len=60, seed=4)  # Flatten → Gemm → ReLU → Gemm → Sigmoid, y (N, 5)
    X = random_onehot(2, 60, seed=3, n_positions=2)
    conv = _check(model, X, select={"y": {1: [4, 1]}}, expect_shapes={"y": (2, 4, 60, 2)})
    assert conv.plan.outputs["y"].strategy != "decoded_in_region"  # a tail output
    _check(model, X, select={"y": {1: [3]}}, reduce="l2", window=(20, 50))


@pytest.mark.parametrize("reduce", ["none", "l2"])
def test_bpnet_profile_and_counts_heads_with_a_window_and_n_positions(reduce):
    model = build_bpnet(seq_len=64, seed=5)  # profile (N, 2, 64), counts = GAP → Gemm (N, 2)
    X = random_onehot(3, 64, seed=4, n_positions=3)
    select = {"profile": {1: [1]}, "counts": {1: [0]}}
    aggregate = {"profile": {2: (20, 44, "sum")}}
    conv = _check(model, X, select=select, aggregate=aggregate, window=(8, 56), reduce=reduce)
    assert conv.plan.outputs["profile"].strategy == "window_sums"  # the bin sum is a linear head
    assert conv.plan.outputs["counts"].strategy.startswith("window_sums")
    _check(model, X, select={"profile": {1: [0, 1]}}, output_form="banded",
           reduce={"profile": "none", "counts": reduce})


# --------------------------------------------------------------------------- the cut of linear producers


def _outputs_of(model: onnx.ModelProto, X: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _matmul_head_model() -> onnx.ModelProto:
    """Conv → ReLU → Transpose → MatMul(W) → Add(bias) → Softplus: ``y`` (N, L, 6), channels last."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4, 5)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "dense"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "dense"], ["m"]),
             helper.make_node("Add", ["m", "bias"], ["a"]),
             helper.make_node("Softplus", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "matmul_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   ["batch", 4, 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _conv_bn_head_model() -> onnx.ModelProto:
    """Conv(bias) → BatchNormalization → Mul(per-track scale (1, 6, 1)) → Sigmoid: ``y`` (N, 6, L)."""
    rng = np.random.default_rng(8)
    arrays = {"w": rng.standard_normal((6, 4, 3)), "b": rng.standard_normal(6), "scale": 1 + rng.random(6),
              "shift": rng.standard_normal(6), "mean": rng.standard_normal(6), "var": 0.5 + rng.random(6),
              "gain": rng.standard_normal((1, 6, 1))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"]),
             helper.make_node("Mul", ["gain", "n"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "bn_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["batch", 4, 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(("build", "output", "axis", "indices"), [
    (lambda: build_bpnet(seq_len=40, seed=1), "profile", 1, [1]),               # Conv
    (lambda: build_bpnet(seq_len=40, seed=1, layout="nlc"), "profile", 2, [1]),  # Transpose → Conv
    (lambda: build_basset_like(seq_len=40, seed=1), "y", 1, [4, 0, 2]),        # Sigmoid → Gemm
    (_matmul_head_model, "y", 2, [5, 1]),                                     # Softplus → Add → MatMul
    (_conv_bn_head_model, "y", -2, [4, 4, 0]),                                # Sigmoid → Mul → BN → Conv
])
def test_the_cut_is_exact_and_drops_the_gather_and_flops(build, output, axis, indices):
    model = build()
    spec = load_model(model)
    targets = parse_targets(select={output: {axis: indices}}, output_shapes={o.name: o.shape for o in spec.outputs})
    cut = apply_targets(spec.model, targets, shapes=spec.shapes, cut=True)
    gathered = apply_targets(spec.model, targets, shapes=spec.shapes, cut=False)
    assert "Gather" not in _op_types(cut) and "Gather" in _op_types(gathered)
    layout = "nlc" if spec.layout == "nlc" else "ncl"
    X = random_onehot(3, spec.seq_len, seed=5, layout=layout, n_positions=2)
    names = [o.name for o in cut.graph.output]
    for name, a, b in zip(names, _outputs_of(cut, X), _outputs_of(gathered, X), strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(b).max()), err_msg=name)
    assert _outputs_of(cut, X)[names.index(output)].shape[axis] == len(indices)
    np.testing.assert_array_equal(_outputs_of(gathered, X)[names.index(output)],
                                  np.take(_outputs_of(spec.model, X)[names.index(output)], indices, axis=axis))
    # fewer FLOPs than without targets, and than with the Gather
    plain = convert_model(spec, outputs=[output]).plan
    with_cut = convert_model(targeted_spec(spec, select={output: {axis: indices}})[0], outputs=[output]).plan
    without_cut = convert_model(targeted_spec(spec, select={output: {axis: indices}}, cut=False)[0],
                                outputs=[output]).plan
    assert with_cut.naive_flops < plain.naive_flops and with_cut.naive_flops < without_cut.naive_flops
    assert with_cut.rewritten_flops < plain.rewritten_flops


def test_the_cut_leaves_producers_that_other_nodes_read():
    model = build_bpnet(seq_len=40, seed=1)
    spec = load_model(model)
    # the tower before the profile conv also feeds the counts head: select on it cannot cut the tower,
    # but the profile conv itself (read only by the output) is cut; a select along the length gathers
    targets = parse_targets(select={"profile": {2: [0, 5, 9]}}, output_shapes={o.name: o.shape for o in spec.outputs})
    along_length = apply_targets(spec.model, targets, shapes=spec.shapes)
    assert "Gather" in _op_types(along_length)
    shared = helper.make_model(helper.make_graph(
        list(spec.model.graph.node) + [helper.make_node("Relu", ["profile"], ["relu_of_profile"])],
        "g", list(spec.model.graph.input), list(spec.model.graph.output)
        + [helper.make_tensor_value_info("relu_of_profile", TensorProto.FLOAT, None)],
        list(spec.model.graph.initializer)), opset_imports=list(spec.model.opset_import), ir_version=8)
    targets = parse_targets(select={"profile": {1: [1]}}, output_shapes={"profile": (-1, 2, 40)})
    kept = apply_targets(shared, targets, shapes={**spec.shapes, "relu_of_profile": (-1, 2, 40)})
    assert "Gather" in _op_types(kept)
    X = random_onehot(2, 40, seed=6)
    full = _outputs_of(shared, X)[0]
    got = dict(zip([o.name for o in kept.graph.output], _outputs_of(kept, X), strict=True))
    np.testing.assert_array_equal(got["profile"], full[:, [1]])
    assert got["relu_of_profile"].shape == (2, 2, 40)  # the other reader still sees every channel


# --------------------------------------------------------------------------- memory, metadata, sidecar


def test_targets_lower_the_memory_estimate_and_the_output_size():
    model = build_bpnet(seq_len=64, seed=2)
    plain = convert_model(model)
    targeted = convert_model(model, select={"profile": {1: [0]}}, aggregate={"profile": {2: (24, 40, "sum")}})
    assert targeted.plan.peak_bytes_per_sequence < plain.plan.peak_bytes_per_sequence
    assert read_converted_info(targeted.model).peak_bytes_per_sequence < \
        read_converted_info(plain.model).peak_bytes_per_sequence
    assert targeted.spec.output("profile").shape == (-1, 1, 1)
    assert targeted.spec.source_sha256 == plain.spec.source_sha256


def test_metadata_and_sidecar_record_the_targets():
    model = build_bpnet(seq_len=40, seed=2)
    conv = convert_model(model, select={"profile": {1: [1, 0]}}, aggregate={"profile": {-1: (5, 15, "mean")}})
    records = [{"select": {"axis": 1, "indices": [1, 0]}},
               {"aggregate": {"axis": 2, "start": 5, "end": 15, "how": "mean"}}]
    info = read_converted_info(conv.model)
    assert info.targets == {"profile": records}
    assert info.outputs["profile"]["targets"] == records and "targets" not in info.outputs["counts"]
    doc = sidecar_document(conv)
    assert doc["outputs"]["profile"]["targets"] == records and "targets" not in doc["outputs"]["counts"]
    assert doc["outputs"]["profile"]["shape"] == [None, 4, 40, 2, 1]
    # a model converted without targets records none (files written before targets read the same)
    plain = convert_model(model)
    assert read_converted_info(plain.model).targets == {}
    assert all("targets" not in entry for entry in read_converted_info(plain.model).outputs.values())
    # a malformed record is refused, naming the key
    props = {p.key: p.value for p in conv.model.metadata_props}
    outputs = json.loads(props[PREFIX + "outputs"])
    outputs["profile"]["targets"] = [{"choose": {"axis": 1}}]
    props[PREFIX + "outputs"] = json.dumps(outputs)
    with pytest.raises(ModelError, match="yuzu_onnx.outputs"):
        read_converted_info(props)


def test_the_conversion_cache_key_includes_the_targets(tmp_path):
    model = build_bpnet(seq_len=40, seed=2)
    X = random_onehot(1, 40, seed=1)
    a = cached_conversion(model, cache_dir=tmp_path, seq_len=40, select={"counts": {1: [0]}})
    b = cached_conversion(model, cache_dir=tmp_path, seq_len=40, select={"counts": {1: [1]}})
    c = cached_conversion(model, cache_dir=tmp_path, seq_len=40)
    assert len({a, b, c}) == 3
    assert ISMSession(a).run(X)["counts"].shape == (1, 4, 40, 1)
    assert ISMSession(c).run(X)["counts"].shape == (1, 4, 40, 2)


# --------------------------------------------------------------------------- the command line


def test_cli_convert_run_and_naive_with_the_same_targets_compare_key_by_key(cli, tmp_path):
    model_path, x_path = tmp_path / "bpnet.onnx", tmp_path / "x.npy"
    onnx.save(build_bpnet(seq_len=48, seed=3), model_path)
    np.save(x_path, random_onehot(3, 48, seed=7, n_positions=2))
    targets = ["--select", "profile:1=1", "--aggregate", "profile:-1=10:30:sum", "--select", "counts:1=0"]
    ism = tmp_path / "bpnet.ism.onnx"
    result = cli("convert", model_path, "-o", ism, *targets)
    assert result.rc == 0, result.err
    assert "targets: select axis 1 = [1]; sum over axis 2 10:30" in result.out
    sidecar = json.loads((tmp_path / "bpnet.ism.onnx.json").read_text())
    assert sidecar["outputs"]["counts"]["targets"] == [{"select": {"axis": 1, "indices": [0]}}]
    shown = cli("inspect", ism)
    assert shown.rc == 0 and "profile (batch, 4, 48, 1, 1) reduce=none, targets: select axis 1 = [1]" in shown.out
    assert json.loads(cli("inspect", ism, "--json").out)["outputs"]["counts"]["targets"] == \
        [{"select": {"axis": 1, "indices": [0]}}]
    assert cli("run", ism, x_path, "-o", tmp_path / "run.npz", "--quiet").rc == 0  # no target options needed
    result = cli("naive", model_path, x_path, "-o", tmp_path / "naive.npz", "--quiet", *targets)
    assert result.rc == 0, result.err
    got, got_meta = read_npz(tmp_path / "run.npz")
    want, want_meta = read_npz(tmp_path / "naive.npz")
    assert sorted(got) == sorted(want)
    # the result files name the targets, the same records as the converted model's metadata
    recorded = {"profile": [{"select": {"axis": 1, "indices": [1]}},
                            {"aggregate": {"axis": 2, "start": 10, "end": 30, "how": "sum"}}],
                "counts": [{"select": {"axis": 1, "indices": [0]}}]}
    assert got_meta["targets"] == want_meta["targets"] == recorded == read_converted_info(onnx.load(ism)).targets
    # a sharded run records them too
    assert cli("run", ism, x_path, "-o", tmp_path / "sharded", "--format", "shards", "--quiet").rc == 0
    assert load_results(tmp_path / "sharded").metadata["targets"] == recorded
    for key in ("profile", "counts"):
        assert got[key].shape == want[key].shape
        scale = float(np.abs(want[key]).max())
        assert float(np.abs(got[key] - want[key]).max()) <= 1e-4 * scale
    assert got["profile"].shape == (3, 4, 48, 1, 1) and got["counts"].shape == (3, 4, 48, 1)
    original = cli("inspect", model_path, *targets, "--json")
    assert json.loads(original.out)["outputs"]["profile"] == ["batch", 1, 1]
    result = cli("verify", model_path, "-n", "2", *targets)
    assert result.rc == 0 and "all outputs within" in result.out


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_result_metadata_records_the_targets_of_both_runners(tmp_path, fmt):
    """``run_to_files`` writes ``targets`` (output → records) for a converted model and for
    naive ISM on the targeted model, key by key the same; ``{}`` without targets."""
    from yuzu_onnx.encoding import SequenceBatch
    from yuzu_onnx.pipeline import read_results, run_to_files
    from yuzu_onnx.runners import ConvertedRunner, NaiveRunner

    model = build_bpnet(seq_len=40, seed=2)
    select, aggregate = {"profile": {1: [1, 0]}}, {"profile": {-1: (5, 15, "mean")}}
    records = {"profile": [{"select": {"axis": 1, "indices": [1, 0]}},
                           {"aggregate": {"axis": 2, "start": 5, "end": 15, "how": "mean"}}]}
    batch = SequenceBatch(x=random_onehot(2, 40, seed=4), names=("a", "b"))
    conv = convert_model(model, select=select, aggregate=aggregate)
    spec, targets = targeted_spec(load_model(model), select, aggregate)
    runs = {
        "yuzu": ConvertedRunner(ISMSession(conv.model, device="cpu")),
        "naive": NaiveRunner(spec, device="cpu", targets=targets),
        "plain": ConvertedRunner(ISMSession(convert_model(model).model, device="cpu")),
    }
    found = {}
    for label, runner in runs.items():
        out = tmp_path / (f"{label}.npz" if fmt == "npz" else label)
        run_to_files(runner, batch, out, fmt=fmt, model_sha256="m", input_sha256="i")
        found[label] = read_results(out)
    (yuzu, yuzu_meta), (naive, naive_meta) = found["yuzu"], found["naive"]
    assert yuzu_meta["targets"] == naive_meta["targets"] == records
    assert found["plain"][1]["targets"] == {}
    assert set(yuzu_meta) == set(naive_meta)  # the two files compare key by key
    assert yuzu["profile"].shape == naive["profile"].shape == (2, 4, 40, 2, 1)
    scale = max(float(np.abs(naive["profile"]).max()), float(np.abs(yuzu["profile"]).max()))
    assert float(np.abs(np.asarray(yuzu["profile"]) - naive["profile"]).max()) <= TOLERANCE * scale
    # the runner records the targets of the outputs it runs only, from either form of the targets
    only_counts = NaiveRunner(spec, outputs=["counts"], device="cpu", targets=targets)
    assert only_counts.targets == {}
    assert NaiveRunner(spec, device="cpu", targets=records).targets == records


def test_cli_refuses_bad_targets_in_one_line(cli, tmp_path):
    model_path = tmp_path / "bpnet.onnx"
    onnx.save(build_bpnet(seq_len=40, seed=3), model_path)
    result = cli("convert", model_path, "-o", tmp_path / "m.onnx", "--select", "profile:0=1")
    assert result.rc == 2
    assert result.error_lines == ["yuzu-onnx: error: --select: axis 0 of output 'profile' is the batch axis (one "
                                  "row per sequence); targets choose along the output's own axes 1..2"]
    np.save(tmp_path / "x.npy", random_onehot(1, 40, seed=1))
    result = cli("naive", model_path, tmp_path / "x.npy", "-o", tmp_path / "n.npz", "--aggregate", "counts:1=0:2:max")
    assert result.rc == 2 and "--aggregate: reduction 'max'" in result.err
