"""The first-convolution shortcut: convolutions of the sequence input computed from
kernel-column differences instead of being run on the probes (DESIGN §3b)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from test_rewrite import _spec, assert_matches_oracle

from yuzu_onnx import InputError, ISMSession, convert_model, load_model, naive_ism
from yuzu_onnx.analysis.input_convs import InputConv, find_input_convs
from yuzu_onnx.analysis.region import analyse_region, constant_values
from yuzu_onnx.emit.crop import Span
from yuzu_onnx.emit.input_conv import input_conv_index
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.testing.model_builders import BUILDERS, random_onehot

# builders whose first convolution reads the input (crop_pad pads the input first)
WITH_INPUT_CONV = sorted(set(BUILDERS) - {"crop_pad"})


def _branches(model: onnx.ModelProto) -> dict[str, onnx.GraphProto]:
    node = next(n for n in model.graph.node if n.op_type == "If")
    return {a.name: a.g for a in node.attribute}


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_shortcut_matches_oracle_on_every_builder(name: str, layout: str) -> None:
    spec = _spec(name, layout)
    length = spec.seq_len
    one_hot = random_onehot(2, length, layout=layout, seed=11)
    with_unknown = random_onehot(2, length, layout=layout, seed=12, n_positions=3)
    for k, window in enumerate([None, (length // 2 - 4, length // 2 + 5), (length - 3, length)]):
        X = one_hot if k % 2 == 0 else with_unknown
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # models without a local region fall back, exactly
            conversion = convert_model(spec, window=window, first_conv="shortcut")
        if name in WITH_INPUT_CONV and not conversion.plan.fallback_reason:
            assert conversion.plan.input_convs, f"{name}: the first convolution should take the shortcut"
        result = ISMSession(conversion.model).run(X)
        oracle = naive_ism(spec, X, window=window)
        assert_matches_oracle(result, oracle, conversion.reductions, conversion, reference_outputs(spec, X))


def test_shortcut_on_protein_alphabet_and_both_substitution_classes() -> None:
    from yuzu_onnx.testing.random_models import random_batch, random_model

    for seed in range(40):
        model, info = random_model(seed)
        protein = load_model(model)
        if protein.alphabet_size == 20 and find_input_convs(protein, analyse_region(protein),
                                                            constant_values(protein.model)):
            break
    else:
        pytest.skip("the generator drew no protein model with an input convolution")
    X = random_batch(3, protein.seq_len, layout=protein.layout, rng=np.random.default_rng(0), n_unknown=2,
                     alphabet_size=20)
    conversion = convert_model(protein, first_conv="shortcut")
    assert conversion.plan.input_convs, info.description
    result = ISMSession(conversion.model).run(X)
    oracle = naive_ism(protein, X)
    assert_matches_oracle(result, oracle, conversion.reductions, conversion, reference_outputs(protein, X))


def test_shortcut_replaces_the_convolution_and_the_input_probes() -> None:
    spec = _spec("tiny_cnn", "ncl")
    plain = convert_model(spec, first_conv="probes")
    short = convert_model(spec, first_conv="shortcut")
    assert not plain.plan.input_convs and len(short.plan.input_convs) == 1
    for branch in ("then_branch", "else_branch"):
        before, after = _branches(plain.model)[branch], _branches(short.model)[branch]
        convs = [sum(n.op_type == "Conv" for n in g.node) for g in (before, after)]
        assert convs[1] == convs[0] - 1
        # the input is read only by the first convolution: no probe sequences are built at all
        assert not any("probe_mask" in name for n in after.node for name in n.input)
        assert any("probe_mask" in name for n in before.node for name in n.input)
    onnx.checker.check_model(short.model, full_check=True)
    props = {p.key: p.value for p in short.model.metadata_props}
    assert props["yuzu_onnx.first_conv_shortcut"] != "[]"


def test_auto_takes_the_shortcut_only_where_the_cost_model_says_it_pays() -> None:
    from yuzu_onnx.plan import PlanOptions

    spec = _spec("basset_like", "ncl")
    conv = find_input_convs(spec, analyse_region(spec), constant_values(spec.model))[0]
    dear = PlanOptions(shortcut_weight=conv.flops_per_output() * 2)
    assert not convert_model(spec, plan_options=dear).plan.input_convs
    cheap_options = PlanOptions(shortcut_weight=conv.flops_per_output() / 2)
    cheap = convert_model(spec, plan_options=cheap_options)
    assert cheap.plan.input_convs
    expensive_flops = convert_model(spec, first_conv="probes", plan_options=cheap_options).plan.rewritten_flops
    assert cheap.plan.rewritten_flops < expensive_flops


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="first_conv='fast' is not one of auto, shortcut, probes"):
        convert_model(_spec("tiny_cnn", "ncl"), first_conv="fast")


@pytest.mark.parametrize("stride,dilation,offset,kernel,spacing", [
    (1, 1, -3, 7, 7), (1, 2, -4, 5, 11), (2, 1, -2, 5, 6), (3, 1, 0, 4, 9), (1, 1, 0, 1, 1),
])
def test_index_table_matches_brute_force(stride, dilation, offset, kernel, spacing) -> None:
    weight = np.zeros((2, 4, kernel), dtype=np.float32)
    conv = InputConv(0, "y", weight, stride, dilation, offset)
    for window in [(0, 50), (13, 29)]:
        start, end = window
        lw = end - start
        n = min(spacing, lw)
        span = Span(2, 17)
        index = input_conv_index(conv, span, window, spacing, n)
        for c in range(n):
            for q, p in enumerate(range(span.lo, span.hi + 1)):
                hits = [(j, t) for t in range(kernel) for j in [stride * p + offset + t * dilation]
                        if start <= j < end and (j - start) % spacing == c]
                expected = (hits[0][0] - start) * kernel + hits[0][1] if hits else lw * kernel + q
                assert len(hits) <= 1 and index[c, q] == expected, (c, p, hits, index[c, q])


def test_spacing_narrower_than_the_kernel_is_refused() -> None:
    from yuzu_onnx.errors import UnsupportedError

    conv = InputConv(0, "y", np.zeros((1, 4, 5), dtype=np.float32), 1, 1, -2)
    with pytest.raises(UnsupportedError, match="one mutation per window"):
        input_conv_index(conv, Span(0, 9), (0, 10), 3, 3)


def test_keras_layout_chain_is_recognised_but_a_scrambling_reshape_is_not() -> None:
    spec = _spec("keras_conv2d", "nlc")  # Unsqueeze → Transpose → Conv (1, k)
    convs = find_input_convs(spec, analyse_region(spec), constant_values(spec.model))
    assert [c.kernel for c in convs] == [7]
    # the same model with the Transpose swapped for a Reshape to the same shape reads
    # the one-hot values in the wrong order: no shortcut may be taken
    model = onnx.ModelProto()
    model.CopyFrom(spec.model)
    graph = model.graph
    node = next(n for n in graph.node if n.op_type == "Transpose")
    shape_name = "scramble_shape"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, 4, 1, spec.seq_len], dtype=np.int64),
                                                          shape_name))
    node.op_type = "Reshape"
    del node.attribute[:]
    node.input.append(shape_name)
    scrambled = load_model(model)
    region = analyse_region(scrambled)
    assert not find_input_convs(scrambled, region, constant_values(scrambled.model))


def test_cli_convert_and_inspect_report_the_shortcut(tmp_path, cli) -> None:
    from yuzu_onnx.testing.model_builders import build_basset_like

    path = tmp_path / "m.onnx"
    onnx.save(build_basset_like(), str(path))
    out = tmp_path / "m.ism.onnx"
    run = cli("convert", str(path), "-o", str(out), "--first-conv", "shortcut")
    assert run.rc == 0, run.err
    assert "first convolution from kernel-column differences" in run.out
    inspect = cli("inspect", str(path), "--first-conv", "shortcut")
    assert inspect.rc == 0, inspect.err
    assert "first convolution: kernel-column differences" in inspect.out
    bad = cli("convert", str(path), "-o", str(out), "--first-conv", "sometimes")
    assert bad.rc == 2 and "invalid choice" in bad.err
