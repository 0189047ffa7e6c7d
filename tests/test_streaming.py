"""Streaming (README: "Memory: streaming the window"): the window runs in chunks within a
memory budget, and the chunked model gives the unchunked model's numbers (and the oracle's).

Small models are cut into chunks with ``PlanOptions(window_chunk=W)``; chunk boundaries then
fall inside every stage's receptive field, across residual joins and next to the sequence
edges. Budgets are tested on a residual BPNet large enough for chunks to pay.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from test_rewrite import reduce_oracle

from yuzu_onnx import ISMSession, YuzuWarning, convert_model, load_model, naive_ism
from yuzu_onnx.errors import InputError
from yuzu_onnx.format import read_converted_info
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.plan import PlanOptions, planned_fixed_bytes
from yuzu_onnx.testing.model_builders import BUILDERS, build_residual_bpnet, random_onehot

# models with residual joins, valid convolutions and crops, strides, pooling, dense and
# attention tails, linear heads decoded from window sums
MODELS = ("bpnet", "bpnet_valid", "dilated_profile", "strided_profile", "residual_pool", "basset_like",
          "crop_pad", "concat_branches", "gated", "attention")


def _scale(oracle: np.ndarray, reference: np.ndarray) -> float:
    return max(float(np.abs(oracle).max()), float(np.abs(reference).max()), 1e-30)


def _streamed(spec, *, window=None, chunks: int = 4, **kwargs):
    """The unchunked conversion, and one whose window runs in ``chunks`` chunks."""
    whole = convert_model(spec, window=window, **kwargs)
    assert not whole.plan.chunks
    width = -(-whole.plan.window_length // chunks)
    streamed = convert_model(spec, window=window, plan_options=PlanOptions(window_chunk=width), **kwargs)
    assert len(streamed.plan.chunks) == chunks
    return whole, streamed


def _budget_that_streams(spec) -> int:
    """A budget below what the whole window needs that some chunking fits."""
    whole = convert_model(spec).plan.peak_bytes_per_sequence
    for share in (0.8, 0.7, 0.6, 0.5):
        budget = int(planned_fixed_bytes(spec) + share * whole)
        with warnings.catch_warnings():
            warnings.simplefilter("error", YuzuWarning)
            try:
                if convert_model(spec, max_memory=budget).plan.chunks:
                    return budget
            except YuzuWarning:
                continue
    raise AssertionError("no budget streams this model")


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("name", MODELS)
def test_streamed_model_matches_the_unchunked_model_and_the_oracle(name: str, layout: str) -> None:
    spec = load_model(BUILDERS[name](layout=layout))
    length = spec.seq_len
    for window in (None, (length // 3, length // 3 + 25)):
        whole, streamed = _streamed(spec, window=window)
        onnx.checker.check_model(streamed.model, full_check=True)
        X = random_onehot(3, length, layout=layout, seed=5, n_positions=2)  # N columns: all-bases classes
        X[0] = random_onehot(1, length, layout=layout, seed=6)[0]  # one fully one-hot sequence: shift classes
        unchunked = ISMSession(whole.model).run(X)
        chunked = ISMSession(streamed.model).run(X)
        oracle = naive_ism(spec, X, window=window)
        reference = reference_outputs(spec, X)
        for out, expected in oracle.items():
            scale = _scale(expected, reference[out])
            assert chunked[out].shape == unchunked[out].shape == expected.shape
            assert np.abs(chunked[out] - unchunked[out]).max() <= 1e-6 * scale, (out, window)
            assert np.abs(chunked[out] - expected).max() <= 1e-5 * scale, (out, window)


@pytest.mark.parametrize("reduce", ["l2", "sum"])
def test_streamed_reductions(reduce: str) -> None:
    spec = load_model(BUILDERS["bpnet"](layout="ncl"))
    reductions = {"profile": reduce, "counts": "l2"}
    whole, streamed = _streamed(spec, reduce=reductions)
    X = random_onehot(2, spec.seq_len, seed=8, n_positions=1)
    chunked = ISMSession(streamed.model).run(X)
    oracle = naive_ism(spec, X)
    reference = reference_outputs(spec, X)
    for out, expected in oracle.items():
        axis = streamed.region.maps[out].axis if reductions[out] == "sum" else None
        want = reduce_oracle(expected, reductions[out], axis=axis)
        assert chunked[out].shape == want.shape
        assert np.abs(chunked[out] - want).max() <= 1e-5 * _scale(expected, reference[out])


def test_streamed_banded_output_is_the_whole_windows_band() -> None:
    spec = load_model(BUILDERS["dilated_profile"](layout="ncl"))
    window = (5, 70)
    whole, streamed = _streamed(spec, window=window, output_form="banded")
    X = random_onehot(2, spec.seq_len, seed=9, n_positions=1)
    unchunked = ISMSession(whole.model).run(X)
    chunked = ISMSession(streamed.model).run(X)
    for out in unchunked:
        np.testing.assert_array_equal(chunked[out], unchunked[out])
    whole_info, streamed_info = read_converted_info(whole.model), read_converted_info(streamed.model)
    assert streamed_info.outputs == whole_info.outputs  # the same band: width and starts


def test_streaming_is_recorded_and_bounded_by_the_budget() -> None:
    spec = load_model(build_residual_bpnet(seq_len=400, out_len=200, filters=16, layers=5, profile_kernel=25))
    whole = convert_model(spec)
    budget = _budget_that_streams(spec)
    streamed = convert_model(spec, max_memory=budget)
    plan = streamed.plan
    assert len(plan.chunks) >= 2 and plan.peak_bytes_per_sequence + planned_fixed_bytes(spec) <= budget
    assert sum(c.window_length for c in plan.chunks) == 400
    assert [c.window for c in plan.chunks] == sorted(c.window for c in plan.chunks)
    info = read_converted_info(streamed.model)
    assert info.window_chunks["count"] == len(plan.chunks) and info.window_chunks["width"] == plan.chunk_width
    assert "more than the" in info.window_chunks["reason"]
    assert info.peak_bytes_per_sequence == int(plan.peak_bytes_per_sequence) and info.fixed_bytes > 0
    # a budget the whole window fits needs no chunks
    assert not convert_model(spec, max_memory=int(whole.plan.peak_bytes_per_sequence + planned_fixed_bytes(spec)) + 1
                             ).plan.chunks


def test_a_budget_no_chunking_fits_warns_and_run_says_so() -> None:
    spec = load_model(build_residual_bpnet(seq_len=400, out_len=200, filters=16, layers=5, profile_kernel=25))
    with pytest.warns(YuzuWarning, match="more than the .* of max_memory="):
        streamed = convert_model(spec, max_memory=1000)
    assert streamed.plan.streaming_reason.startswith("no chunking fits")
    with pytest.raises(InputError, match="would not help: no chunking fits"):
        ISMSession(streamed.model).batch_size_for(10_000)


def test_the_planner_keeps_every_stage_in_the_region_under_a_small_budget() -> None:
    """Memory never sends stages to materialised mutants: the region and its stages stay,
    the window streams."""
    spec = load_model(build_residual_bpnet(seq_len=400, out_len=200, filters=16, layers=5, profile_kernel=25))
    whole = convert_model(spec)
    small = convert_model(spec, max_memory=_budget_that_streams(spec))
    assert small.region.region_nodes == whole.region.region_nodes
    assert "profile" in small.region.maps and small.plan.chunks
    assert all(chunk.tail.kind == whole.plan.tail.kind for chunk in small.plan.chunks)
    assert small.plan.expected_speedup > 0.8 * whole.plan.expected_speedup


def test_a_model_whose_outputs_alone_exceed_the_budget_keeps_the_cheapest_plan() -> None:
    """Chunks cannot shrink the ISM outputs: with no chunking in the budget, the plan needing
    about the least memory and costing the least wins, and the reason says so."""
    spec = load_model(BUILDERS["bpnet"](layout="ncl"))
    with pytest.warns(YuzuWarning, match="more than the .* of max_memory="):
        conversion = convert_model(spec, max_memory=1000)
    assert conversion.plan.streaming_reason.startswith("no chunking fits")
    assert read_converted_info(conversion.model).window_chunks["reason"].startswith("no chunking fits")


def test_run_budget_counts_the_runtime_and_weights_once() -> None:
    spec = load_model(BUILDERS["bpnet"](layout="ncl"))
    session = ISMSession(convert_model(spec).model)
    info = session.info
    budget = info.fixed_bytes + 10 * info.peak_bytes_per_sequence
    assert session.batch_size_for(budget) == 10
    with pytest.raises(InputError, match="runtime and weights"):
        session.batch_size_for(info.fixed_bytes + info.peak_bytes_per_sequence // 2)


def test_ism_budgets_the_conversion_too(tmp_path) -> None:
    from yuzu_onnx import ism

    model = build_residual_bpnet(seq_len=400, out_len=200, filters=16, layers=5, profile_kernel=25)
    whole = convert_model(load_model(model))
    budget = _budget_that_streams(load_model(model))
    X = random_onehot(1, 400, seed=4)
    result = ism(model, X, cache_dir=tmp_path, max_memory=budget)
    (cached,) = tmp_path.glob("*.onnx")
    assert read_converted_info(onnx.load(cached)).window_chunks.get("count", 1) > 1
    expected = ISMSession(whole.model).run(X)
    reference = reference_outputs(load_model(model), X)
    for name, values in expected.items():
        assert np.abs(result[name] - values).max() <= 1e-5 * _scale(values, reference[name])  # window-sum rounding
