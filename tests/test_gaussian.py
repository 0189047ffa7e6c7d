"""Gaussian probes (``convert --probes gaussian``, DESIGN §3a) against the naive oracle."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx import (
    InputError,
    ISMSession,
    UnsupportedError,
    YuzuError,
    convert,
    convert_model,
    load_model,
    naive_ism,
)
from yuzu_onnx.analysis.region import analyse_region
from yuzu_onnx.convert_gaussian import ALPHA_GRID, pearson_r
from yuzu_onnx.describe import gaussian_summary
from yuzu_onnx.emit import gaussian_design
from yuzu_onnx.emit.gaussian_design import GaussianUnsupportedError
from yuzu_onnx.plan import PlanOptions
from yuzu_onnx.testing.model_builders import BUILDERS, SEQUENTIAL, random_onehot

MIN_PEARSON = PlanOptions().gaussian_min_pearson

ROOT = Path(__file__).resolve().parent.parent
TORCH_DATA = ROOT / "tests" / "data" / "torch"
RESIDUAL = ("bpnet", "bpnet_valid", "residual_pool", "concat_branches", "gated")


def props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key.removeprefix("yuzu_onnx."): p.value for p in model.metadata_props}


def check_against_oracle(spec, conversion, *, window=None, n_positions=2, seed=11) -> float:
    """Run the Gaussian model on 2 sequences (one with N columns); returns Pearson r vs naive ISM."""
    onnx.checker.check_model(conversion.model, full_check=True)
    X = random_onehot(2, spec.seq_len, layout=spec.layout, seed=seed)
    X[1:] = random_onehot(1, spec.seq_len, layout=spec.layout, seed=seed + 1, n_positions=n_positions)
    got = ISMSession(conversion.model, device="cpu").run(X)
    expected = naive_ism(spec, X, window=window, device="cpu")
    for name, ism in got.items():
        assert ism.shape == expected[name].shape
        assert np.isfinite(ism).all(), name
        lw = ism.shape[2] if spec.layout == "ncl" else ism.shape[1]
        start = 0 if window is None else window[0]
        columns = X[:, :, start : start + lw] if spec.layout == "ncl" else X[:, start : start + lw, :]
        at_reference = ism.reshape(*ism.shape[:3], -1)[columns == 1]
        assert (at_reference == 0).all(), "ISM must be exactly 0 at the reference base"
    r = pearson_r(got, expected)
    assert r >= MIN_PEARSON, f"Pearson r {r:.8f} < {MIN_PEARSON}"
    return r


def gaussian_conversion(spec, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gaussian never falls back to naive ISM
        return convert_model(spec, probes="gaussian", **kw)


def check_metadata(conversion) -> None:
    p = props(conversion.model)
    assert p["probes"] == "gaussian"
    assert float(p["alpha"]) in ALPHA_GRID
    assert float(p["pearson_r"]) >= MIN_PEARSON
    assert 1.0 <= float(p["condition_number"]) <= PlanOptions().gaussian_max_condition
    assert p["seed"] == "0"
    layers = json.loads(p["stages"])
    assert layers and all(layer["probes"] == math.ceil(round(float(p["alpha"]) * layer["support"], 9))
                          for layer in layers)
    assert gaussian_summary(conversion.model).startswith(f"gaussian probes: alpha {p['alpha']}")


@pytest.mark.parametrize("name", sorted(SEQUENTIAL))
def test_sequential_builders_match_oracle(name: str) -> None:
    layout = "nlc" if name in ("basset_like", "strided_conv", "gelu20", "dynamic_length") else "ncl"
    spec = load_model(BUILDERS[name](layout=layout), seq_len=100 if name == "dynamic_length" else None)
    conversion = gaussian_conversion(spec)
    check_metadata(conversion)
    check_against_oracle(spec, conversion)


def test_window_and_reductions() -> None:
    spec = load_model(BUILDERS["pools"](layout="ncl"))
    window = (37, 61)
    conversion = gaussian_conversion(spec, window=window, reduce="l2")
    X = random_onehot(2, spec.seq_len, seed=4, n_positions=1)
    got = ISMSession(conversion.model, device="cpu").run(X)["y"]
    expected = naive_ism(spec, X, window=window, device="cpu")["y"]
    assert got.shape == (2, 4, 24)
    l2 = np.sqrt((expected.astype(np.float64) ** 2).sum(-1))
    assert np.corrcoef(got.ravel(), l2.ravel())[0, 1] >= MIN_PEARSON
    spec = load_model(BUILDERS["crop_pad"](layout="nlc"))  # the output is a local profile
    conversion = gaussian_conversion(spec, window=(20, 50), reduce="sum")
    X = random_onehot(1, spec.seq_len, layout="nlc", seed=6)
    got = ISMSession(conversion.model, device="cpu").run(X)["y"]
    expected = naive_ism(spec, X, window=(20, 50), device="cpu")["y"].sum(axis=3)
    assert got.shape == expected.shape == (1, 30, 4, 3)
    assert pearson_r({"y": got}, {"y": expected}) >= MIN_PEARSON


@pytest.mark.parametrize("file", ["toynet_torchscript.onnx", "basset_dynamo.onnx"])
def test_exported_torch_models(file: str) -> None:
    spec = load_model(TORCH_DATA / file)
    window = (120, 160) if file.startswith("basset") else None  # keeps the test fast
    conversion = gaussian_conversion(spec, window=window)
    check_metadata(conversion)
    check_against_oracle(spec, conversion, window=window)


def _torch_models():
    pytest.importorskip("torch")
    path = ROOT / "tools" / "torch_models.py"
    module_spec = importlib.util.spec_from_file_location("yuzu_torch_models", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


CLASSIC = {
    "toynet": {"seq_len": 64, "n_filters": 8},
    "basset": {"seq_len": 120, "channels": (8, 8, 8), "hidden": (16,), "n_outputs": 4},
    "deepsea": {"seq_len": 200, "channels": (8, 8, 8), "hidden": 16, "n_outputs": 4},
}


@pytest.mark.parametrize("arch", sorted(CLASSIC))
def test_classic_architectures(arch: str, tmp_path) -> None:
    tm = _torch_models()
    options = CLASSIC[arch]
    path = tm.export(tm.build(arch, seed=3, **options), tmp_path / f"{arch}.onnx", seq_len=options["seq_len"])
    spec = load_model(path)
    conversion = gaussian_conversion(spec)
    check_metadata(conversion)
    check_against_oracle(spec, conversion)


@pytest.mark.parametrize("file", ["bpnet4_torchscript.onnx", "bpnet4_dynamo.onnx"])
def test_residual_export_is_refused(file: str) -> None:
    with pytest.raises(GaussianUnsupportedError, match=r"adds two branches, as a residual .*Add of .*probes='spaced'"):
        convert_model(TORCH_DATA / file, probes="gaussian")


@pytest.mark.parametrize("name", RESIDUAL)
def test_multi_branch_builders_are_refused(name: str) -> None:
    model = BUILDERS[name]()
    spec = load_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(GaussianUnsupportedError) as info:
            convert_model(spec, probes="gaussian")
    message = str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, UnsupportedError)
    assert info.value.exit_code == 2
    op = {"concat_branches": "Concat", "gated": "Mul"}.get(name, "Add")
    node = next(n for n in spec.model.graph.node if n.op_type == op and n.name in message)
    assert f"(node {node.name!r}, {op} of " in message
    assert message.startswith("gaussian probes support only sequential conv/activation/pool stacks")


def test_model_without_local_region_is_refused() -> None:
    weight = numpy_helper.from_array(np.ones((3, 4 * 32), np.float32), "w")
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GaussianUnsupportedError, match="need a local convolutional region, and the model has none.*Flatten.*probes='spaced'"):
        convert_model(model, probes="gaussian")


def test_fixed_seed_gives_identical_bytes() -> None:
    spec = load_model(BUILDERS["tiny_cnn"](seq_len=64))
    first = gaussian_conversion(spec, seed=5).model.SerializeToString()
    again = gaussian_conversion(load_model(BUILDERS["tiny_cnn"](seq_len=64)), seed=5).model.SerializeToString()
    other = gaussian_conversion(spec, seed=6).model
    assert first == again
    assert other.SerializeToString() != first
    assert props(other)["seed"] == "6"


@pytest.mark.parametrize("alpha", [0.9, 1.6, -1, "fast", math.nan])
def test_alpha_out_of_range(alpha) -> None:
    spec = load_model(BUILDERS["linear_conv"]())
    with pytest.raises(InputError, match=r"^alpha=.* is not 'auto' or a number in \[1.0, 1.5\]"):
        convert_model(spec, probes="gaussian", alpha=alpha)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed(seed) -> None:
    with pytest.raises(InputError, match="^seed=.* is not a non-negative integer"):
        convert_model(BUILDERS["linear_conv"](), probes="gaussian", seed=seed)


def test_fixed_alpha_sets_probe_counts() -> None:
    spec = load_model(BUILDERS["strided_conv"]())
    conversion = gaussian_conversion(spec, alpha="1.25")
    p = props(conversion.model)
    assert (p["alpha"], p["alpha_mode"]) == ("1.25", "fixed")
    layers = json.loads(p["stages"])
    # first conv: kernel 4 → 3 shift classes x 4 positions; second: RF 4 + 2·2 = 8
    assert [(lay["support"], lay["probes"]) for lay in layers] == [(12, 15), (24, 30)]
    assert [lay["probes_all_bases"] for lay in layers] == [20, 40]
    check_against_oracle(spec, conversion)
    model = convert(BUILDERS["linear_conv"](), probes="gaussian", alpha=1.1, seed=2)
    assert (props(model)["alpha"], props(model)["seed"]) == ("1.10", "2")


def test_no_alpha_reaching_the_threshold_is_an_error() -> None:
    unreachable = PlanOptions(gaussian_min_pearson=1.5)  # every α of the grid is tried
    with pytest.raises(YuzuError, match=r"no alpha in \[1.0, 1.5\].*1\.50: r=.*probes='spaced'"):
        convert_model(BUILDERS["linear_conv"](), probes="gaussian", plan_options=unreachable)


def test_badly_conditioned_systems_are_refused() -> None:
    strict = PlanOptions(gaussian_max_condition=1.5)
    with pytest.raises(YuzuError, match=r"condition number .* \(> 2e\+00\); raise alpha="):
        convert_model(BUILDERS["linear_conv"](), probes="gaussian", alpha=1.0, plan_options=strict)
    with pytest.raises(YuzuError, match="no alpha .*condition number"):
        convert_model(BUILDERS["linear_conv"](), probes="gaussian", plan_options=strict)


def test_interior_positions_share_pinvs_and_rounded_moduli_stay_correct() -> None:
    spec = load_model(BUILDERS["tiny_cnn"](seq_len=256))
    region = analyse_region(spec)
    design = gaussian_design.design_layers(spec, region, (0, 256), n_classes=4, alpha_max=1.5)
    solves = gaussian_design.solve_design(design, region, alphabet_size=4, alpha=1.0, seed=0)[3]
    for conv, solve in zip(design.convs, solves):
        positions = region.maps[conv.output].length
        assert solve.shares_pinvs and len(solve.pinvs) < positions / 2
    spec = load_model(BUILDERS["basset_like"]())
    region = analyse_region(spec)
    minimal = gaussian_design.design_layers(spec, region, (0, 150), n_classes=4, alpha_max=1.5)
    rounded = gaussian_design.design_layers(spec, region, (0, 150), n_classes=4, alpha_max=1.5,
                                            pinv_budget_bytes=0)  # force stride-multiple moduli
    assert rounded.moduli != minimal.moduli
    assert all(r % 3 == 0 for r, m in zip(rounded.moduli, minimal.moduli) if r != m)
    conversion = gaussian_conversion(spec, plan_options=PlanOptions(gaussian_pinv_budget_bytes=0))
    assert json.loads(props(conversion.model)["stages"])[1]["spacing"] == rounded.moduli[1]
    check_against_oracle(spec, conversion)
