"""Loading a model with the wrong --layout or --alphabet, and the Gaussian refusal:
the message names the option that is wrong and what the model's shape suggests
(issue #16 items 3, 4, 12 and the --alphabet part of 13)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from yuzu_onnx import InputError, ModelError, load_model
from yuzu_onnx.convert import convert_model
from yuzu_onnx.testing import build_activations, build_dynamic_length, build_gated

SEQ_LEN = 64  # the length of the conftest models


def assert_refused(res, code: int, *needles: str, out: Path | None = None) -> None:
    """Exit ``code``, one error line holding every needle, no traceback, no output file."""
    assert res.rc == code, (res.rc, res.err)
    assert "Traceback" not in res.err
    assert len(res.error_lines) == 1, res.err
    for needle in needles:
        assert needle in res.error_lines[0], (needle, res.error_lines[0])
    assert out is None or not out.exists()


@pytest.fixture(scope="module")
def dynamic_nlc(tmp_path_factory) -> Path:
    """A channels-last model whose length is dynamic: input ``(batch, ?, 4)``."""
    path = tmp_path_factory.mktemp("dyn") / "dyn_nlc.onnx"
    onnx.save(build_dynamic_length(layout="nlc", seq_len=SEQ_LEN), str(path))
    return path


def test_layout_nlc_on_a_channels_first_model(cli_subprocess, tiny_model):
    res = cli_subprocess("inspect", tiny_model, "--layout", "nlc")
    assert_refused(res, 2, "the layout looks wrong", "(?, 4, 64)", "suggests --layout ncl")
    assert "KeyError" not in res.err


@pytest.mark.parametrize("extra", [(), ("--seq-len", SEQ_LEN), ("--alphabet", "dna"), ("--alphabet", "4")])
def test_layout_ncl_on_a_channels_last_model(cli, bpnet_model, extra):
    res = cli("inspect", bpnet_model, "--layout", "ncl", *extra)
    assert_refused(res, 2, "the layout looks wrong", "--layout ncl puts the alphabet on axis 1 (size 64)",
                   "suggests --layout nlc")
    assert "disagrees" not in res.err and "letters" not in res.err


@pytest.mark.parametrize("extra", [(), ("--seq-len", SEQ_LEN), ("--alphabet", "dna", "--seq-len", SEQ_LEN)])
def test_layout_ncl_on_a_dynamic_channels_last_model(cli, dynamic_nlc, extra):
    res = cli("inspect", dynamic_nlc, "--layout", "ncl", *extra)
    assert_refused(res, 2, "the layout looks wrong", "(a dynamic size)", "suggests --layout nlc")
    assert "dynamic alphabet axis" not in res.err and "disagrees" not in res.err


def test_wrong_layout_from_python_names_the_keyword(bpnet_model, dynamic_nlc):
    with pytest.raises(ModelError, match=r"the layout looks wrong.*layout='ncl' puts.*suggests layout='nlc'$"):
        load_model(bpnet_model, layout="ncl")
    with pytest.raises(ModelError, match="suggests layout='nlc'"):
        load_model(dynamic_nlc, layout="ncl", alphabet="dna", seq_len=SEQ_LEN)


def test_the_right_explicit_layout_still_loads(tiny_model, bpnet_model, dynamic_nlc):
    assert load_model(tiny_model, layout="ncl").input_shape == (4, SEQ_LEN)
    assert load_model(bpnet_model, layout="nlc", alphabet="dna").input_shape == (SEQ_LEN, 4)
    assert load_model(dynamic_nlc, layout="nlc", seq_len=SEQ_LEN).input_shape == (SEQ_LEN, 4)


@pytest.mark.parametrize("extra", [(), ("--layout", "ncl")])
def test_protein_alphabet_on_a_dna_model(cli, tiny_model, extra):
    res = cli("inspect", tiny_model, "--alphabet", "protein", *extra)
    assert_refused(res, 2, "the model's alphabet axis has size 4, not 20", "--alphabet protein has 20 letters")
    assert "use --alphabet if" not in res.err


def test_protein_alphabet_on_a_dna_model_from_python(tiny_model):
    with pytest.raises(ModelError, match=r"alphabet axis has size 4, not 20 \(alphabet='protein' has 20 letters"):
        load_model(tiny_model, alphabet="protein")


@pytest.mark.parametrize("builder", [build_activations, build_gated], ids=["gelu_from_erf", "gated"])
def test_gaussian_refusal_names_the_elementwise_product(cli, tmp_path, builder):
    path = tmp_path / "m.onnx"
    onnx.save(builder(seq_len=SEQ_LEN), str(path))
    res = cli("convert", path, "-o", tmp_path / "o.onnx", "--probes", "gaussian")
    assert_refused(res, 2, "elementwise product of two branches", "GELU", "gated unit", "(node '", "--probes spaced",
                   out=tmp_path / "o.onnx")
    assert "joins two branches" not in res.err


def test_gaussian_refusal_names_a_residual_connection():
    from yuzu_onnx.testing import build_bpnet

    with pytest.raises(InputError, match=r"adds two branches, as a residual \(skip\) connection does"):
        convert_model(build_bpnet(seq_len=SEQ_LEN), probes="gaussian")


def test_constant_folding_keeps_onnxruntime_log_lines_off_stderr(tmp_path) -> None:
    """onnx-graphsurgeon's constant folding runs its own ONNX Runtime session on import; a
    model whose optimisation makes ORT warn (an Unsqueeze of a constant that is also a graph
    output) must not print ``[W:onnxruntime:...]`` lines."""
    import subprocess
    import sys

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((8, 4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["h"], pads=[1, 1]),
        helper.make_node("Unsqueeze", ["C", "axes"], ["cu"]),
        helper.make_node("Add", ["h", "cu"], ["y0"]),
        helper.make_node("ReduceMean", ["y0"], ["y"], axes=[2], keepdims=0),
        helper.make_node("Identity", ["C"], ["Cid"]),
        helper.make_node("Unsqueeze", ["Cid", "axes"], ["C2"]),
    ]
    graph = helper.make_graph(
        nodes, "warns", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("C2", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(8, np.float32), "C"), numpy_helper.from_array(np.array([1]), "axes"),
         numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "warns.onnx"
    onnx.save(model, path)
    code = f"from yuzu_onnx import load_model; load_model({str(path)!r})"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "does not carry the batch" in res.stderr  # refused later, for its constant output
    assert "onnxruntime:" not in res.stderr, res.stderr
