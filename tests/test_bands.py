"""Banded ISM outputs (issue #17): band geometry, exactness of dense and banded outputs
against the oracle, bit-identity of banded and dense, the dense output written once,
the choice of form, metadata, and every consumer of a result file."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import yuzu_onnx
from yuzu_onnx import ISMSession, ModelError, convert, convert_model
from yuzu_onnx.bands import Band, band_positions, bands_of, densify, densify_results, reached
from yuzu_onnx.errors import InputError
from yuzu_onnx.format import read_converted_info
from yuzu_onnx.reductions import reduce_ism
from yuzu_onnx.testing import (
    build_bpnet,
    build_bpnet_valid,
    build_crop_pad,
    build_dilated_profile,
    build_linear_conv,
    build_strided_profile,
    build_tiny_cnn,
    random_onehot,
)
from yuzu_onnx.testing.exactness import TOLERANCE, check_exactness

PROFILE_MODELS = {
    "same_padding": build_linear_conv,
    "valid_cropped": build_bpnet_valid,
    "pad_crop": build_crop_pad,
    "strided": build_strided_profile,
    "dilated": build_dilated_profile,
    "residual_two_heads": build_bpnet,
}


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("stride,lo,hi,length,window", [
    (1, -3, 3, 50, (0, 50)), (1, 0, 6, 44, (0, 50)), (2, -2, 5, 25, (0, 50)), (3, -4, 7, 17, (5, 40)),
    (1, -10, 10, 12, (0, 12)), (2, 3, 3, 20, (0, 50)), (1, 20, 30, 10, (0, 5)),
])
def test_band_covers_every_reached_position_and_is_as_narrow_as_possible(stride, lo, hi, length, window):
    width, starts = band_positions(stride=stride, lo=lo, hi=hi, length=length, window=window)
    p = np.arange(length)
    widest = 0
    for k, j in enumerate(range(*window)):
        reached = np.flatnonzero((stride * p + lo <= j) & (j <= stride * p + hi))
        widest = max(widest, len(reached))
        assert 0 <= starts[k] <= length - width
        assert all(starts[k] <= q < starts[k] + width for q in reached)
    assert width == max(1, min(length, widest))


def test_densify_places_each_band_and_checks_shapes():
    band = Band(axis=4, window_axis=2, width=2, length=5, starts=(0, 2, 3))
    values = np.arange(1, 1 + 1 * 1 * 3 * 1 * 2, dtype=np.float32).reshape(1, 1, 3, 1, 2)
    dense = densify(values, band.to_json())
    assert dense.shape == (1, 1, 3, 1, 5)
    np.testing.assert_array_equal(dense[0, 0, :, 0], [[1, 2, 0, 0, 0], [0, 0, 3, 4, 0], [0, 0, 0, 5, 6]])
    with pytest.raises(InputError, match="not banded as recorded"):
        densify(np.zeros((1, 1, 3, 1, 3), np.float32), band)
    with pytest.raises(InputError, match="band starts"):
        Band(axis=4, window_axis=2, width=2, length=5, starts=(4,))


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", sorted(PROFILE_MODELS))
@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("form", ["dense", "banded"])
def test_dense_and_banded_match_the_oracle(name, layout, form):
    model = PROFILE_MODELS[name](layout=layout)
    length = {d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim} - {0, 4}
    seq_len = max(length)
    X = random_onehot(3, seq_len, layout=layout, seed=3, n_positions=2)
    for window in (None, (seq_len // 3, seq_len // 3 + 9)):
        report = check_exactness(model, X, window=window, output_form=form, float64="never")
        assert report.error is None, report.error
        assert report.fallback is None
        for check in report.checks:
            assert check.verdict == "ok" and check.max_err <= TOLERANCE * check.scale, (window, check.as_dict())


@pytest.mark.parametrize("name", sorted(PROFILE_MODELS))
@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_banded_is_bit_identical_to_dense(name, layout):
    model = PROFILE_MODELS[name](layout=layout)
    dense_model = convert(model, output_form="dense")
    banded_model = convert(model, output_form="banded")
    info = read_converted_info(banded_model)
    seq_len = info.seq_len
    X = random_onehot(2, seq_len, layout=layout, seed=5, n_positions=3)
    dense = ISMSession(dense_model, device="cpu").run(X)
    banded = ISMSession(banded_model, device="cpu").run(X)
    bands = bands_of(info)
    assert bands, "at least the profile is banded"
    for out, value in banded.items():
        if out in bands:
            assert value.shape[bands[out].axis] == bands[out].width < dense[out].shape[bands[out].axis]
            value = densify(value, bands[out])
        assert value.tobytes() == dense[out].tobytes(), out  # bit for bit, signs of zeros included


@pytest.mark.parametrize("reduce", ["l2", "sum", "raw"])
def test_reductions_decoded_from_the_band_match_the_oracle(reduce):
    for build in (build_bpnet, build_strided_profile):
        model = build(layout="ncl")
        seq_len = max(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
        X = random_onehot(2, seq_len, layout="ncl", seed=7, n_positions=1)
        profile = "profile" if build is build_bpnet else "y"
        report = check_exactness(model, X, reduce={profile: reduce}, float64="never")
        assert report.error is None, report.error
        assert all(c.verdict == "ok" for c in report.checks), [c.as_dict() for c in report.checks]


@pytest.mark.parametrize("name", sorted(PROFILE_MODELS))
@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_l2_decoded_from_the_band_matches_the_oracle(name, layout):
    """l2 straight from the band deltas (squares summed per class, classes → bases on the
    sums): edge positions, a window, unknown bases, several output channels, both layouts."""
    model = PROFILE_MODELS[name](layout=layout)
    seq_len = max({d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim} - {0, 4})
    X = random_onehot(3, seq_len, layout=layout, seed=11, n_positions=2)
    X[0] = random_onehot(1, seq_len, layout=layout, seed=12)[0]  # one all one-hot sequence: shift classes
    profiles = {o.name: "l2" for o in model.graph.output}
    for window in (None, (0, 7), (seq_len - 6, seq_len)):
        report = check_exactness(model, X[:1], window=window, reduce=profiles, float64="never")
        assert report.error is None and report.fallback is None, (report.error, report.fallback)
        assert all(c.verdict == "ok" and c.max_err <= TOLERANCE * c.scale for c in report.checks), \
            (window, [c.as_dict() for c in report.checks])
        report = check_exactness(model, X, window=window, reduce=profiles, float64="never")  # all-bases classes
        assert all(c.verdict == "ok" and c.max_err <= TOLERANCE * c.scale for c in report.checks), \
            (window, [c.as_dict() for c in report.checks])


@pytest.mark.parametrize("name", ["strided", "dilated", "valid_cropped"])
@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_band_positions_a_mutation_does_not_reach_are_positive_zero(name, layout):
    """The band decode reads a zero row where a band position does not read the mutated
    position: exactly +0 there (no -0 from a mask product), for both class kinds."""
    model = PROFILE_MODELS[name](layout=layout)
    conv = convert_model(model, output_form="banded")
    seq_len = conv.spec.seq_len
    info = read_converted_info(conv.model)
    for n_positions in (0, 2):
        X = random_onehot(2, seq_len, layout=layout, seed=21, n_positions=n_positions)
        result = ISMSession(conv.model, device="cpu").run(X)
        for out, band in bands_of(info).items():
            m = conv.plan.region.maps[out]
            mask = reached(band, stride=m.stride, lo=m.lo, hi=m.hi, window_start=0)  # (Lw, B)
            values = np.moveaxis(result[out], [band.window_axis, band.axis], [0, 1])  # (Lw, B, ...)
            outside = values[~mask]
            assert outside.size and not np.signbit(outside).any() and not outside.any(), out


# --------------------------------------------------------------------------- dense written once


def _node_outputs(model: onnx.ModelProto, X: np.ndarray) -> dict[str, int]:
    """Output bytes per kernel of one profiled run: op type → largest output."""
    import os
    import tempfile

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "p")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {session.get_inputs()[0].name: X})
        with open(session.end_profiling()) as fh:
            events = json.load(fh)
    sizes: dict[str, int] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"]["op_name"]
            sizes[op] = max(sizes.get(op, 0), int(e["args"].get("output_size", 0)))
    return sizes


def test_dense_output_is_written_once():
    model = build_linear_conv(layout="ncl", seq_len=200, kernel=5, out_channels=3)
    X = random_onehot(2, 200, layout="ncl", seed=1)
    converted = convert(model)
    full = X.shape[0] * 4 * 200 * 3 * 200 * 4  # bytes of the dense ISM output
    sizes = _node_outputs(converted, X)
    big = {op for op, size in sizes.items() if size >= full // 4 and op != "If"}
    assert big == {"MaxUnpool"}, sizes  # one kernel writes the dense output; nothing else of its size runs
    assert sizes["MaxUnpool"] == full


def _two_channel_axes_model(seq_len: int) -> onnx.ModelProto:
    """A conv whose 6 channels are reshaped to ``(2, 3)``: ISM rank 6, past MaxUnpool's."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(5).standard_normal((6, 4, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[2, 2]), helper.make_node("Reshape", ["c", "shape"], ["y"])],
        "two_channel_axes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, seq_len])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 3, seq_len])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array([0, 2, 3, seq_len], np.int64), "shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_dense_from_band_past_max_unpool_rank_scatters_exactly():
    """A dense output MaxUnpool cannot write (ISM rank 6) scatters its band into zeros
    instead: exact, and equal to its densified banded output."""
    model = _two_channel_axes_model(60)
    X = random_onehot(2, 60, layout="ncl", seed=4, n_positions=2)
    dense = convert_model(model)
    ops = {node.op_type for graph in _graphs(dense.model.graph) for node in graph.node}
    assert "ScatterElements" in ops and "MaxUnpool" not in ops
    report = check_exactness(model, X, float64="never")
    assert report.error is None and report.fallback is None
    assert all(c.verdict == "ok" and c.max_err <= TOLERANCE * c.scale for c in report.checks), report.checks
    banded = convert(model, output_form="banded")
    values = ISMSession(banded, device="cpu").run(X)["y"]
    expanded = densify(values, bands_of(read_converted_info(banded))["y"])
    np.testing.assert_array_equal(expanded, ISMSession(dense.model, device="cpu").run(X)["y"])


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)


# --------------------------------------------------------------------------- forms and metadata


def test_auto_bands_only_where_it_saves_four_times():
    narrow = convert_model(build_linear_conv(seq_len=64, kernel=7), output_form="auto")  # 64 / 7
    assert narrow.plan.outputs["y"].form == "banded"
    wide = convert_model(build_bpnet(), output_form="auto")  # band 43 of 100
    assert {name: how.form for name, how in wide.plan.outputs.items()} == {"profile": "dense", "counts": "dense"}
    assert convert_model(build_bpnet()).plan.outputs["profile"].form == "dense"  # the default


def test_banded_keeps_dense_where_no_length_axis_remains():
    conv = convert_model(build_bpnet(), output_form="banded", reduce={"profile": "none", "counts": "l2"})
    assert conv.plan.outputs["profile"].form == "banded" and conv.plan.outputs["counts"].form == "dense"
    info = read_converted_info(conv.model)
    assert info.forms == {"profile": "banded", "counts": "dense"}
    band = info.outputs["profile"]["band"]
    assert band["width"] == conv.plan.outputs["profile"].band.width and len(band["starts"]) == 100
    dims = [d.dim_value for d in conv.model.graph.output[0].type.tensor_type.shape.dim]
    assert dims[-1] == band["width"]


def test_banded_refused_where_nothing_can_be_banded():
    with pytest.raises(InputError, match="use output_form='dense' or output_form='auto'"):
        convert(build_tiny_cnn(), output_form="banded")
    with pytest.raises(InputError, match="output_form='banded' needs exact probes"):
        convert(build_linear_conv(), output_form="banded", probes="gaussian")
    with pytest.raises(InputError, match="output_form='sparse' is not one of"):
        convert(build_linear_conv(), output_form="sparse")
    with pytest.raises(InputError, match="use output_form='dense' or output_form='auto'"):
        convert(build_linear_conv(), output_form="banded", reduce="raw")


def test_malformed_form_in_metadata_is_refused():
    model = convert(build_linear_conv(), output_form="banded")
    for prop in model.metadata_props:
        if prop.key == "yuzu_onnx.outputs":
            entry = json.loads(prop.value)
            entry["y"]["form"] = "sparse"
            prop.value = json.dumps(entry)
    with pytest.raises(ModelError, match="yuzu_onnx.outputs"):
        read_converted_info(model)


def test_reduce_ism_on_banded_equals_dense():
    model = build_bpnet(layout="nlc")
    conv = convert_model(model, output_form="banded")
    band = conv.plan.outputs["profile"].band
    X = random_onehot(2, 100, layout="nlc", seed=2)
    banded = ISMSession(conv.model, device="cpu").run(X)["profile"]
    dense = densify(banded, band)
    reference = np.random.default_rng(0).standard_normal((2, 100, 2)).astype(np.float32)
    for how in ("l2", "sum", "raw"):
        got = reduce_ism(banded, how, reference=reference, sum_axis=1, band=band)
        want = reduce_ism(dense, how, reference=reference, sum_axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * float(np.abs(want).max()))
    assert reduce_ism(banded, "none", band=band) is banded


# --------------------------------------------------------------------------- results and consumers


def test_run_writes_banded_results_that_every_consumer_reads(tmp_path):
    from yuzu_onnx.cli import main
    from yuzu_onnx.pipeline import read_results

    model_path = tmp_path / "profile.onnx"
    onnx.save(build_bpnet(layout="ncl", seq_len=80), model_path)
    x = random_onehot(3, 80, layout="ncl", seed=4, n_positions=1)
    np.save(tmp_path / "x.npy", x)
    for form in ("dense", "banded"):
        code = main(["ism", str(model_path), str(tmp_path / "x.npy"), "-o", str(tmp_path / f"{form}.npz"),
                     "--output-form", form, "--modisco", "profile", "--variants", str(tmp_path / f"{form}.tsv"),
                     "--cache-dir", str(tmp_path / "cache"), "--quiet"])
        assert code == 0
    dense, dense_meta = read_results(tmp_path / "dense.npz")
    banded, meta = read_results(tmp_path / "banded.npz")
    assert meta["forms"] == {"profile": "banded", "counts": "dense"} and dense_meta["bands"] == {}
    assert banded["profile"].shape[-1] == meta["bands"]["profile"]["width"] < 80
    expanded = densify_results(banded, meta)
    assert expanded["profile"].tobytes() == dense["profile"].tobytes()
    assert np.array_equal(expanded["counts"], dense["counts"])
    assert (tmp_path / "dense.tsv").read_text() == (tmp_path / "banded.tsv").read_text()
    for part in ("hyp", "contrib", "ohe"):
        a, b = np.load(tmp_path / f"dense.{part}.npz"), np.load(tmp_path / f"banded.{part}.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    pytest.importorskip("matplotlib")
    for form in ("dense", "banded"):
        assert main(["plot", str(tmp_path / f"{form}.npz"), "--output", "profile", "--target", "5",
                     "-o", str(tmp_path / f"{form}.png")]) == 0
    assert (tmp_path / "dense.png").read_bytes() == (tmp_path / "banded.png").read_bytes()


def test_inspect_and_convert_say_which_form(tmp_path, capsys):
    from yuzu_onnx.cli import main

    model_path = tmp_path / "conv.onnx"
    onnx.save(build_linear_conv(seq_len=64, kernel=7), model_path)
    assert main(["inspect", str(model_path)]) == 0
    text = capsys.readouterr().out
    assert "y: dense (a mutation reaches 7 of 64 positions: --output-form banded or auto stores 9.1x less)" in text
    assert main(["convert", str(model_path), "-o", str(tmp_path / "ism.onnx"), "--output-form", "auto"]) == 0
    assert "output y: banded (7 of 64 positions, 9.1x smaller than dense)" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "ism.onnx")]) == 0
    assert "banded: 7 of 64 positions" in capsys.readouterr().out


def test_densify_is_public():
    assert yuzu_onnx.densify is densify
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "densify" in yuzu_onnx.__all__
