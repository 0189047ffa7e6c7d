"""The rewritten graph against the naive oracle, for every builder model and layout."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from yuzu_onnx import ISMSession, YuzuWarning, convert_model, load_model, naive_ism
from yuzu_onnx.analysis.region import constant_values
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.plan import decide_tail
from yuzu_onnx.testing.model_builders import BUILDERS, random_onehot

TOLERANCE = 1e-5


def reduce_oracle(ism: np.ndarray, how: str, reference: np.ndarray | None = None, axis: int | None = None):
    """Apply a reduction to the oracle's ``none`` result (ncl or nlc: first three axes)."""
    if how == "none":
        return ism
    if how == "l2":
        return np.sqrt((ism.reshape(*ism.shape[:3], -1).astype(np.float64) ** 2).sum(-1))
    if how == "sum":
        return ism.sum(axis=2 + axis)
    raise ValueError(how)


def assert_matches_oracle(result: dict, oracle: dict, reductions: dict, conversion=None, reference=None) -> None:
    """Max |error| <= 1e-5 x scale, scale = max(max|f(X)|, max|ism|) per output (DESIGN §1)."""
    for name, expected_none in oracle.items():
        how = reductions.get(name, "none")
        axis = conversion.region.maps[name].axis if how == "sum" else None
        expected = reduce_oracle(expected_none, how, axis=axis)
        got = result[name]
        assert got.shape == expected.shape, (name, got.shape, expected.shape)
        assert np.isfinite(got).all()
        scale = max(float(np.abs(expected_none).max()), 1e-30)
        if reference is not None:
            scale = max(scale, float(np.abs(reference[name]).max()))
        err = float(np.abs(got - expected).max())
        assert err <= TOLERANCE * scale, f"{name}: max |error| {err:.3g} > {TOLERANCE} x scale {scale:.3g}"


def _spec(name: str, layout: str):
    model = BUILDERS[name](layout=layout)
    return load_model(model, seq_len=100 if name == "dynamic_length" else None)


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_builder_matches_oracle(name: str, layout: str) -> None:
    spec = _spec(name, layout)
    length = spec.seq_len
    with_unknown = random_onehot(3, length, layout=layout, seed=7, n_positions=3)  # all-bases classes
    one_hot = random_onehot(2, length, layout=layout, seed=8)  # shift classes
    windows = [None, (length // 3, length // 3 + 9), (0, 5), (length - 4, length)]
    for k, window in enumerate(windows):
        X = one_hot if k % 2 == 0 else with_unknown
        for how in ("none", "l2"):
            conversion = convert_model(spec, window=window, reduce=how)
            onnx.checker.check_model(conversion.model, full_check=True)
            result = ISMSession(conversion.model).run(X)
            oracle = naive_ism(spec, X, window=window)
            assert_matches_oracle(result, oracle, conversion.reductions, conversion, reference_outputs(spec, X))


def test_reference_base_is_exactly_zero_and_n_positions_report_all_bases() -> None:
    spec = _spec("bpnet", "ncl")
    X = random_onehot(2, spec.seq_len, layout="ncl", seed=3, n_positions=4)
    result = ISMSession(convert_model(spec).model).run(X)
    for ism in result.values():
        at_ref = ism.reshape(*ism.shape[:3], -1)[X.astype(bool)]
        assert (at_ref == 0).all()
        unknown = np.nonzero(X.sum(axis=1) == 0)
        assert np.abs(ism[unknown[0], :, unknown[1]]).reshape(len(unknown[0]), -1).max(axis=1).min() > 0


def test_sum_and_raw_reductions() -> None:
    spec = _spec("bpnet", "nlc")
    X = random_onehot(2, spec.seq_len, layout="nlc", seed=5, n_positions=1)
    conversion = convert_model(spec, reduce={"profile": "sum", "counts": "raw"})
    result = ISMSession(conversion.model).run(X)
    oracle = naive_ism(spec, X)
    assert_matches_oracle({"profile": result["profile"]}, {"profile": oracle["profile"]}, {"profile": "sum"}, conversion)
    reference = reference_outputs(spec, X)["counts"]  # (N, 2)
    expected = oracle["counts"] + reference[:, None, None, :]  # nlc: (N, L, A, 2)
    is_ref = X.astype(bool)
    expected[is_ref] = np.broadcast_to(reference[:, None, None, :], expected.shape)[is_ref]
    scale = np.abs(expected).max()
    assert np.abs(result["counts"] - expected).max() <= TOLERANCE * scale
    assert (result["counts"][is_ref] == np.broadcast_to(reference[:, None, None, :], expected.shape)[is_ref]).all()


def test_outputs_subset_and_metadata() -> None:
    spec = _spec("bpnet", "ncl")
    conversion = convert_model(spec, outputs=["counts"], window="10:30", reduce="l2")
    props = {p.key: p.value for p in conversion.model.metadata_props}
    assert props["yuzu_onnx.window"] == "10:30"
    assert props["yuzu_onnx.source_sha256"] == spec.source_sha256
    assert [o.name for o in conversion.model.graph.output] == ["counts"]
    X = random_onehot(2, spec.seq_len, seed=1)
    result = ISMSession(conversion.model).run(X)
    assert result["counts"].shape == (2, 4, 20)


def test_naive_probe_mode_matches_oracle_and_warns_nothing() -> None:
    spec = _spec("basset_like", "ncl")
    X = random_onehot(2, spec.seq_len, seed=2, n_positions=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", YuzuWarning)
        conversion = convert_model(spec, probes="naive", window=(5, 25))
    assert conversion.plan.stages == ()
    assert_matches_oracle(ISMSession(conversion.model).run(X), naive_ism(spec, X, window=(5, 25)), {})


def test_model_without_local_region_falls_back_with_warning() -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4 * 30, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "dense_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 30])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.warns(YuzuWarning, match="no local region"):
        conversion = convert_model(model)
    X = random_onehot(2, 30, seed=4, n_positions=1)
    assert_matches_oracle(ISMSession(conversion.model).run(X), naive_ism(load_model(model), X), {})


def test_converted_model_runs_in_fresh_process_with_only_onnxruntime(tmp_path) -> None:
    import subprocess
    import sys

    spec = _spec("tiny_cnn", "ncl")
    path = tmp_path / "ism.onnx"
    onnx.save(convert_model(spec).model, str(path))
    X = random_onehot(2, spec.seq_len, seed=9)
    np.save(tmp_path / "x.npy", X)
    script = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "assert 'yuzu_onnx' not in sys.modules and 'onnx' not in sys.modules\n"
        f"s = ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n"
        f"out = s.run(None, {{'x': np.load({str(tmp_path / 'x.npy')!r})}})[0]\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
    )
    subprocess.run([sys.executable, "-I", "-c", script], check=True)
    expected = naive_ism(spec, X)["y"]
    got = np.load(tmp_path / "out.npy")
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()


@pytest.mark.parametrize("name", ["bpnet", "bpnet_valid", "pools", "crop_pad", "keras_conv2d", "auto_pad"])
def test_narrow_window_crops_stages_and_stays_exact(name: str) -> None:
    from yuzu_onnx.emit.crop import stage_spans
    from yuzu_onnx.emit.probes import EmitContext

    spec = load_model(BUILDERS[name](layout="ncl", seq_len=400))
    window = (190, 197)
    conversion = convert_model(spec, window=window)
    ctx = EmitContext(spec, conversion.region, conversion.plan, None, {}, {}, {})
    from yuzu_onnx.analysis.region import constant_values

    ctx.constants = constant_values(spec.model)
    assert any(stage_spans(ctx, s) is not None for s in range(len(conversion.plan.stages)))
    for X in (random_onehot(2, 400, seed=1), random_onehot(2, 400, seed=2, n_positions=3)):
        result = ISMSession(conversion.model).run(X)
        oracle = naive_ism(spec, X, window=window)
        assert_matches_oracle(result, oracle, conversion.reductions, conversion, reference_outputs(spec, X))


def test_io_binding_path_gives_the_same_numbers() -> None:
    spec = _spec("bpnet", "ncl")
    session = ISMSession(convert_model(spec).model)
    X = random_onehot(2, spec.seq_len, seed=12, n_positions=1)
    plain = session.run(X)
    session.use_io_binding = True  # the CUDA path, exercised on the CPU provider
    bound = session.run(X)
    for name in plain:
        np.testing.assert_array_equal(plain[name], bound[name])


@pytest.mark.parametrize("reduce,cuda_path", [(None, False), ("l2", False), (None, True)])
def test_batches_are_written_into_one_result_bit_for_bit(reduce, cuda_path) -> None:
    """Several batches: the first batch's arrays set the result's shape, later batches are
    written into its rows (by ONNX Runtime through IO binding on the CPU, copied on CUDA);
    equal to one run per batch."""
    spec = _spec("bpnet", "ncl")
    session = ISMSession(convert_model(spec, reduce=reduce).model)
    session.use_io_binding = cuda_path  # the CUDA path, exercised on the CPU provider
    X = random_onehot(7, spec.seq_len, seed=13, n_positions=1)
    done = []
    got = session.run(X, batch_size=3, progress=lambda k, n: done.append((k, n)))  # batches of 3, 3 and 1
    assert done == [(3, 7), (6, 7), (7, 7)]
    for name in session.output_names:
        assert got[name].flags.c_contiguous and got[name].shape[0] == 7
        for begin in (0, 3, 6):
            alone = session.run(X[begin:begin + 3])[name]
            np.testing.assert_array_equal(got[name][begin:begin + 3], alone)
    assert all(v.shape[0] == 0 for v in session.run(X[:0]).values())


def test_soft_columns_get_all_substitutions_like_the_oracle() -> None:
    spec = _spec("bpnet", "ncl")
    X = random_onehot(2, spec.seq_len, seed=3)
    X[0, :, 10] = 0.25
    X[1, :, 50] = [0.5, 0.0, 0.5, 0.0]
    X[1, :, 90] = [0.0, 0.0, 0.3, 0.0]
    for window in (None, (5, 60)):
        conversion = convert_model(spec, window=window)
        result = ISMSession(conversion.model).run(X)
        oracle = naive_ism(spec, X, window=window)
        assert_matches_oracle(result, oracle, conversion.reductions, conversion, reference_outputs(spec, X))


@pytest.mark.parametrize("name,tail", [("transpose_dense", "none"), ("basset_like", "vectors"), ("attention", "materialised")])
def test_peak_memory_counts_only_the_tail_that_was_built(name: str, tail: str) -> None:
    spec = _spec(name, "ncl")
    conversion = convert_model(spec)
    planned = conversion.plan.tail
    props = {p.key: p.value for p in conversion.model.metadata_props}
    assert planned.kind == props["yuzu_onnx.tail"] == tail
    peak = conversion.plan.peak_bytes_per_sequence
    assert int(props["yuzu_onnx.peak_bytes_per_sequence"]) == int(peak)
    unbuilt = {"materialised": 0.0, "vectors": planned.frontier_chunk_bytes, "none": planned.materialised_chunk_bytes}
    assert planned.unbuilt_bytes == unbuilt[tail]
    assert planned.chunk_bytes == planned.materialised_chunk_bytes - unbuilt[tail]
    if tail != "materialised":
        assert planned.unbuilt_bytes > 0
        assert not planned.frontier
    # deciding again from the peak of a fully materialised tail gives the same plan
    full_peak = peak + planned.unbuilt_bytes
    again = decide_tail(spec, conversion.plan, conversion.outputs, constants=constant_values(spec.model),
                        peak_with_materialised_tail=full_peak)
    assert again == conversion.plan
    if tail == "materialised":
        assert full_peak == peak
    else:
        assert full_peak > peak
