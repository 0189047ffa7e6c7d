"""Length-axis blocks: a Reshape that splits the sequence axis into blocks of neighbouring
positions (Enformer's attention pooling), the ops over the block axis and the Reshape that
merges the blocks back are local (the op cases are in ``tests/test_ops.py``). Here: an
Enformer-style tower keeps every node before its first attention in the local region and
matches the oracle; reshapes that are not local say whether they split or merge the
sequence axis; a length the model's blocks cannot take is refused in one line."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import onnx
import pytest

from yuzu_onnx import YuzuWarning, load_model
from yuzu_onnx.analysis.region import DATA, analyse_region
from yuzu_onnx.errors import ModelError
from yuzu_onnx.testing import build_enformer_like
from yuzu_onnx.testing.exactness import check_exactness
from yuzu_onnx.testing.model_builders import _Graph
from yuzu_onnx.testing.random_models import random_batch

L = 32
C = 4


def _region(model: onnx.ModelProto, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", YuzuWarning)
        spec = load_model(model, **kwargs)
    return spec, analyse_region(spec)


def first_attention(graph: onnx.GraphProto, kinds) -> int:
    """Index of the first MatMul of two sequence-dependent tensors (attention scores)."""
    for i, node in enumerate(graph.node):
        if node.op_type == "MatMul" and all(kinds.get(name) == DATA for name in node.input):
            return i
    raise AssertionError("the model has no attention")


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_enformer_tower_is_local_up_to_the_first_attention(layout: str) -> None:
    spec, region = _region(build_enformer_like(layout=layout, seq_len=96))
    graph = spec.model.graph
    stop = first_attention(graph, region.kinds)
    before = {i for i in range(stop) if any(region.kinds.get(o) == DATA for o in graph.node[i].output)}
    outside = sorted(before - set(region.region_nodes))
    assert not outside, [graph.node[i].op_type for i in outside]
    assert sum(graph.node[i].op_type == "Reshape" for i in region.region_nodes) == 3
    assert [s.op_type for s in region.stops] == ["MatMul"]
    # three poolings by 2: the tower's output has one position per 8 input positions
    pooled = graph.node[stop].input[0]
    assert region.maps[pooled].stride == 8 and region.maps[pooled].length == 96 // 8


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("window", [None, (30, 61)], ids=["whole", "window"])
def test_enformer_tower_matches_the_oracle(layout: str, window) -> None:
    model = build_enformer_like(layout=layout, seq_len=96)
    X = random_batch(2, 96, layout=layout, rng=np.random.default_rng(3), n_unknown=4)
    report = check_exactness(model, X, window=window, float64="never")
    assert report.ok, report.summary()
    plan = report.conversion.plan
    assert plan.stages and all(stage.n_probes < plan.window_length for stage in plan.stages[:1])


# -- reshapes that end the region say what they do ---------------------------------------


def stop_reason(body: Callable[[_Graph, str], str]) -> str:
    g = _Graph("stop", layout="ncl", seq_len=L, seed=0, opset=17)
    t = g.conv(g.seq(), 4, C, 3, pads=[1, 1])
    g.output(body(g, t), "y")
    _, region = _region(g.build())
    reasons = [stop.reason for stop in region.stops if stop.op_type in ("Reshape", "Flatten")]
    assert len(reasons) == 1, region.stops
    return reasons[0]


def test_flattening_channels_and_length_is_a_merge_with_the_axes_before() -> None:
    reason = stop_reason(lambda g, t: g.op("Reshape", [t, g.ints([0, C * L])]))
    assert reason.startswith("it merges the sequence axis with the axes before it")
    assert f"(-1, {C}, {L}) -> (-1, {C * L})" in reason


def test_flattening_channels_last_is_a_merge_into_features() -> None:
    reason = stop_reason(lambda g, t: g.op("Flatten", [g.to_last(t)], axis=1))
    assert reason.startswith("it flattens the sequence axis with the axes after it into features")


def test_interleaving_blocks_is_a_merge_with_the_axes_before() -> None:
    """``(N, C, L/2, 2) -> (N, C, 2, L/2) -> (N, C, L)``: positions interleave, not local."""

    def body(g: _Graph, t: str) -> str:
        blocks = g.op("Transpose", [g.op("Reshape", [t, g.ints([0, C, L // 2, 2])])], perm=[0, 1, 3, 2])
        return g.op("Reshape", [blocks, g.ints([0, C, L])])

    assert stop_reason(body).startswith("it merges the sequence axis with the axes before it")


def test_spreading_positions_over_a_finer_grid_is_refused_as_such() -> None:
    """``(N, L, C) -> (N, 2L, C/2)``: each position's channels over two new positions."""

    def body(g: _Graph, t: str) -> str:
        return g.op("Reshape", [g.to_last(t), g.ints([0, 2 * L, C // 2])])

    reason = stop_reason(body)
    assert reason.startswith(f"it spreads each of the {L} positions of the sequence axis over 2 positions")


def test_split_into_pieces_that_are_not_blocks_is_refused_as_a_split() -> None:
    """``(N, 30, C) -> (N, 12, 10)``: rows of 2.5 positions, not whole blocks of positions."""

    def body(g: _Graph, t: str) -> str:
        cut = g.op("Slice", [g.to_last(t), g.ints([0]), g.ints([30]), g.ints([1])])
        return g.op("Reshape", [cut, g.ints([0, 12, 30 * C // 12])])

    assert stop_reason(body).startswith("it splits the sequence axis into pieces that are not blocks")


def test_split_reshape_in_the_tail_keeps_the_region_exact() -> None:
    """A split after the region has ended (in the tail) runs on materialised mutants."""
    g = _Graph("tail_split", layout="ncl", seq_len=L, seed=0, opset=17)
    t = g.conv(g.seq(), 4, C, 3, pads=[1, 1])
    mixed = g.op("Add", [t, g.reduce("ReduceMean", t, [2], keepdims=1)])  # mixes positions
    blocks = g.op("Reshape", [mixed, g.ints([0, C, L // 2, 2])])
    g.output(g.reduce("ReduceMax", blocks, [3]), "y")
    X = random_batch(2, L, layout="ncl", rng=np.random.default_rng(5), n_unknown=2)
    report = check_exactness(g.build(), X, float64="never")
    assert report.ok, report.summary()


# -- lengths the blocks cannot take --------------------------------------------------------


def pooled_any_length(k: int) -> onnx.ModelProto:
    """A dynamic-length model that pools blocks of ``k`` positions (any multiple of ``k``)."""
    g = _Graph("pooled", layout="ncl", seq_len=L, seed=0, opset=17, dynamic_length=True)
    t = g.op("Relu", [g.conv(g.seq(), 4, C, 3, pads=[1, 1])])
    blocks = g.op("Reshape", [t, g.ints([0, C, -1, k])])
    pooled = g.reduce("ReduceMax", blocks, [3])
    g.output(g.conv(pooled, C, 2, 3, pads=[1, 1]), "y")
    return g.build()


@pytest.mark.parametrize(("k", "length"), [(2, 33), (3, 32)])
def test_length_the_blocks_cannot_take_is_refused_in_one_line(k: int, length: int) -> None:
    with pytest.raises(ModelError) as info:
        load_model(pooled_any_length(k), seq_len=length)
    message = str(info.value)
    assert "\n" not in message
    assert f"length {length}" in message and "Reshape node" in message
    assert "give seq_len= a multiple of k" in message  # the CLI says --seq-len (errors.option)


@pytest.mark.parametrize(("k", "length"), [(2, 34), (3, 33)])
def test_length_the_blocks_take_is_exact(k: int, length: int) -> None:
    model = pooled_any_length(k)
    X = random_batch(2, length, layout="ncl", rng=np.random.default_rng(k), n_unknown=2)
    spec, region = _region(model, seq_len=length)
    assert not region.stops and any(spec.model.graph.node[i].op_type == "Reshape" for i in region.region_nodes)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fixed.graph.input[0].type.tensor_type.shape.dim[2].dim_value = length  # as --seq-len fixes it
    report = check_exactness(fixed, X, window=(5, 20), float64="never")
    assert report.ok, report.summary()


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_enformer_tower_with_odd_lengths_pads_and_masks_inside_the_region(layout: str) -> None:
    """101 → 51 → 26 → 13 positions: two poolings pad one position and mask its logit
    (``Pad`` and a constant ``Where``, as ``enformer-pytorch`` exports them)."""
    model = build_enformer_like(layout=layout, seq_len=101)
    spec, region = _region(model)
    graph = spec.model.graph
    inside = [graph.node[i].op_type for i in region.region_nodes]
    assert inside.count("Pad") == 2 and inside.count("Where") == 2
    stop = first_attention(graph, region.kinds)
    assert all(i in region.region_nodes for i in range(stop)
               if any(region.kinds.get(o) == DATA for o in graph.node[i].output))
    X = random_batch(2, 101, layout=layout, rng=np.random.default_rng(4), n_unknown=3)
    report = check_exactness(model, X, window=(40, 70), float64="never")
    assert report.ok, report.summary()
