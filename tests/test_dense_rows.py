"""The row-gather decode of dense multi-track outputs (``yuzu_onnx/emit/dense_rows.py``).

Outputs that keep many values per position after the length axis (``(N, bins, tracks)``)
are decoded by one Gather of whole rows from the probe deltas; these tests check it against
the oracle, against the band decode it replaces (bit for bit), for exact +0 where a mutation
does not reach and at the reference base, streamed, and that short rows keep the band decode.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import yuzu_onnx.emit.dense_rows as dense_rows
from yuzu_onnx import ISMSession, convert_model, naive_ism
from yuzu_onnx.bands import densify_results
from yuzu_onnx.plan import PlanOptions
from yuzu_onnx.testing import build_dilated_profile, build_track_head, random_onehot

TOLERANCE = 1e-5
SEQ_LEN = 96


def node_names(model: onnx.ModelProto) -> list[str]:
    """Names of every node, subgraphs (the shift/all-bases branches, chunks) included."""
    names: list[str] = []

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            names.append(node.name)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g)

    walk(model.graph)
    return names


def decoded_by_rows(model: onnx.ModelProto) -> bool:
    return any("dense_rows" in name for name in node_names(model))


def scale_of(*arrays: np.ndarray) -> float:
    return max(float(np.abs(a).max()) for a in arrays)


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("window", [None, (30, 61)])
def test_track_head_matches_the_oracle(layout, window):
    model = build_track_head(layout=layout, seq_len=SEQ_LEN, seed=3)
    conversion = convert_model(model, window=window)
    assert decoded_by_rows(conversion.model)
    with_n = random_onehot(3, SEQ_LEN, layout=layout, seed=5, n_positions=2)  # the all-bases branch
    one_hot = random_onehot(2, SEQ_LEN, layout=layout, seed=6)  # the shift branch
    for batch in (with_n, one_hot):
        got = ISMSession(conversion.model, device="cpu").run(batch)
        want = naive_ism(model, batch, window=window)
        for name in ("tracks", "strands"):
            assert got[name].shape == want[name].shape
            scale = scale_of(got[name], want[name])
            assert scale > 0
            assert float(np.abs(got[name] - want[name]).max()) <= TOLERANCE * scale, name


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_row_decode_is_bit_identical_to_the_band_decode(layout, monkeypatch):
    model = build_track_head(layout=layout, seq_len=SEQ_LEN, seed=4)
    X = random_onehot(2, SEQ_LEN, layout=layout, seed=6)
    with_n = X.copy()
    column = (slice(None), slice(None), 40) if layout == "ncl" else (slice(None), 40, slice(None))
    with_n[1][column[1:]] = 0
    rows = convert_model(model, window=(20, 70)).model
    monkeypatch.setattr(dense_rows, "MIN_ROW_ELEMENTS", 10**9)
    bands = convert_model(model, window=(20, 70)).model
    assert decoded_by_rows(rows) and not decoded_by_rows(bands)
    for batch in (X, with_n):
        got = ISMSession(rows, device="cpu").run(batch)
        want = ISMSession(bands, device="cpu").run(batch)
        for name in want:
            assert np.array_equal(got[name], want[name]), name


def test_unreached_bins_and_the_reference_base_are_positive_zero():
    model = build_track_head(layout="ncl", seq_len=SEQ_LEN, seed=5)
    conversion = convert_model(model)
    X = random_onehot(1, SEQ_LEN, seed=7)
    ism = ISMSession(conversion.model, device="cpu").run(X)["tracks"][0]  # (A, L, bins, tracks)
    reference = X[0].astype(bool)  # (A, L)
    assert np.all(ism[reference] == 0) and not np.signbit(ism[reference]).any()
    # a mutation reaches only the bins whose window holds it: position 10 cannot reach bin 40
    far = ism[:, 10, 40]
    assert np.all(far == 0) and not np.signbit(far).any()
    assert np.abs(ism[~reference]).max() > 0


def test_streamed_row_decode_matches_the_whole_window():
    model = build_track_head(layout="nlc", seq_len=SEQ_LEN, seed=6)
    whole = convert_model(model, window=(10, 80)).model
    streamed = convert_model(model, window=(10, 80), plan_options=PlanOptions(window_chunk=16))
    assert len(streamed.plan.chunks) > 1 and decoded_by_rows(streamed.model)
    X = random_onehot(2, SEQ_LEN, layout="nlc", seed=8, n_positions=1)
    got = ISMSession(streamed.model, device="cpu").run(X)
    want = ISMSession(whole, device="cpu").run(X)
    for name in want:
        assert float(np.abs(got[name] - want[name]).max()) <= 1e-6 * scale_of(want[name]), name


def test_short_rows_and_banded_outputs_keep_the_band_decode():
    # a channels-first profile (length innermost: one value per row) stays on the band decode
    assert not decoded_by_rows(convert_model(build_dilated_profile(seq_len=60)).model)
    # so does an output asked for banded: its band is the ISM output itself
    model = build_track_head(layout="ncl", seq_len=SEQ_LEN, seed=2)
    banded = convert_model(model, output_form="banded")
    assert not decoded_by_rows(banded.model)
    X = random_onehot(1, SEQ_LEN, seed=9)
    session = ISMSession(banded.model, device="cpu")
    dense = densify_results(session.run(X), {"outputs": session.info.outputs})
    want = naive_ism(model, X)
    for name in want:
        assert float(np.abs(dense[name] - want[name]).max()) <= TOLERANCE * scale_of(want[name]), name


def test_the_band_is_gathered_in_the_ism_layout():
    """A banded (or band-written dense) output reads its band with the same row gather:
    ``band_rows`` in the graph, no class-to-base MatMul on the band."""
    model = build_dilated_profile(seq_len=60)
    for form in ("banded", "dense"):
        names = node_names(convert_model(model, output_form=form).model)
        assert any("band_rows" in n for n in names) and not any("per_base" in n for n in names), form


def uses_zero_block(model: onnx.ModelProto) -> bool:
    return any("zero_block" in name for name in node_names(model))


@pytest.mark.parametrize("builder,form", [(build_track_head, "dense"), (build_dilated_profile, "dense"),
                                          (build_dilated_profile, "banded")])
@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_the_reference_reads_zeros_either_way(builder, form, layout, monkeypatch):
    """The reference base reads an appended block of zero rows (small probe deltas) or the
    zero bin through a select on the index (large ones): the same values, bit for bit, +0
    at the reference, with and without unknown bases."""
    model = builder(layout=layout, seq_len=SEQ_LEN, seed=4)
    zero_block = convert_model(model, window=(20, 70), output_form=form).model
    monkeypatch.setattr(dense_rows, "ZERO_BLOCK_GAIN", 0)
    select = convert_model(model, window=(20, 70), output_form=form).model
    assert uses_zero_block(zero_block) and not uses_zero_block(select)
    for n_positions in (0, 2):
        X = random_onehot(2, SEQ_LEN, layout=layout, seed=10, n_positions=n_positions)
        got = ISMSession(zero_block, device="cpu").run(X)
        want = ISMSession(select, device="cpu").run(X)
        for name in want:
            assert np.array_equal(got[name], want[name]) and np.array_equal(np.signbit(got[name]),
                                                                             np.signbit(want[name])), name
