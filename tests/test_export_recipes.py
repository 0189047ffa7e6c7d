"""The README's "Exporting your model" recipes, run as they stand (issue #14 item 4).

Every ``python`` block of that section is executed here on a small seeded model of its
framework (two convolutions, the second dilated, a profile head and a pooled head), in a
namespace that holds only ``model`` and the sequence length ``L``; the file it writes is
then converted and compared with naive ISM (1e-5 of the output scale) for a batch of 1 and
a batch of 3, and the exported model's outputs with the framework's own. A recipe whose
framework is not installed is skipped with the reason (CI installs none of them).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx import ISMSession, ModelError, convert_model, load_model, naive_ism
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.testing.model_builders import random_onehot

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "Exporting your model"
L = 96  # the sequence length of every recipe's model
TOLERANCE = 1e-5

# each python block of the section, by a text only it contains
TORCHSCRIPT = "dynamo=False, opset_version=17,\n    input_names"
DYNAMO = "dynamo=True"
ENFORMER = "constant_while_exporting"
KERAS = "tf2onnx.convert.from_keras"
JAX = "from jax2onnx import to_onnx"
RECIPES = (TORCHSCRIPT, DYNAMO, ENFORMER, KERAS, JAX)


def section_text() -> str:
    """The README's ``## Exporting your model`` section, up to the next ``## `` heading."""
    text = README.read_text("utf-8")
    match = re.search(rf"^## {re.escape(SECTION)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {SECTION}' section"
    return match.group(1)


def code_blocks(language: str) -> list[str]:
    """The fenced ``language`` code blocks of the section, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", section_text(), flags=re.M | re.S)


def recipe(marker: str) -> str:
    """The one python block of the section that contains ``marker``."""
    found = [block for block in code_blocks("python") if marker in block]
    assert len(found) == 1, f"{len(found)} python blocks of the README's '{SECTION}' contain {marker!r}"
    return found[0]


def run_recipe(marker: str, model, folder: Path, monkeypatch) -> Path:
    """Execute the README block in ``folder`` with ``model`` and ``L``; the file it wrote."""
    monkeypatch.chdir(folder)
    exec(compile(recipe(marker), f"README.md ({SECTION})", "exec"), {"model": model, "L": L})
    path = folder / "model.onnx"
    assert path.is_file(), "the recipe wrote no model.onnx"
    return path


def check_export(path: Path, framework: Callable[[np.ndarray], list[np.ndarray]]) -> None:
    """The export has a dynamic batch, computes what the framework computes, and its
    conversion matches naive ISM for a batch of 1 and of 3 (with ``N`` positions)."""
    model = onnx.load(str(path))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value, f"the export's batch is fixed: {batch}"
    spec = load_model(path)
    assert spec.seq_len == L
    conversion = convert_model(spec)
    assert conversion.plan.fallback_reason is None
    session = ISMSession(conversion.model)
    for n, seed, n_positions in ((1, 11, 0), (3, 12, 2)):
        X = random_onehot(n, L, layout=spec.layout, seed=seed, n_positions=n_positions)
        reference = reference_outputs(spec, X)
        for name, own in zip(spec.output_names, framework(X)):
            scale = max(np.abs(own).max(), 1e-30)
            assert np.abs(reference[name] - own).max() <= TOLERANCE * scale, (path, name, "export != framework")
        result, oracle = session.run(X), naive_ism(spec, X)
        assert set(result) == set(oracle) == set(spec.output_names)
        for name, expected in oracle.items():
            scale = max(np.abs(expected).max(), np.abs(reference[name]).max())
            assert scale > 0
            error = np.abs(result[name] - expected).max()
            assert error <= TOLERANCE * scale, (path, name, n, error / scale)


# --- PyTorch ---------------------------------------------------------------------------


def needs_torch():
    return pytest.importorskip("torch", reason="the PyTorch recipes need torch")


def needs_dynamo():
    torch = needs_torch()
    if importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the dynamo exporter (torch.onnx.export(..., dynamo=True)) needs onnxscript")
    return torch


def torch_cnn(padding: int | str = 4):
    """A seeded (N, 4, L) CNN: conv k7, dilated conv k5 (dilation 2, ``padding``) with a
    residual, a profile head (N, 2, L) and a counts head on the mean over length (N, 1)."""
    torch = needs_torch()
    from torch import nn

    class CNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv1d(4, 8, 7, padding=3)
            self.conv2 = nn.Conv1d(8, 8, 5, dilation=2, padding=padding)
            self.profile = nn.Conv1d(8, 2, 1)
            self.counts = nn.Linear(8, 1)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            h = torch.relu(self.conv2(h)) + h
            return self.profile(h), self.counts(h.mean(dim=-1))

    torch.manual_seed(0)
    return CNN().eval()


def torch_outputs(model) -> Callable[[np.ndarray], list[np.ndarray]]:
    torch = needs_torch()

    def run(X: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(X))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return run


def test_torchscript_recipe(tmp_path, monkeypatch):
    model = torch_cnn()
    check_export(run_recipe(TORCHSCRIPT, model, tmp_path, monkeypatch), torch_outputs(model))


def test_dynamo_recipe(tmp_path, monkeypatch):
    needs_dynamo()
    model = torch_cnn()
    check_export(run_recipe(DYNAMO, model, tmp_path, monkeypatch), torch_outputs(model))


def test_verify_command_of_the_section(tmp_path, monkeypatch, cli):
    """The section's ``yuzu-onnx verify`` line passes on the TorchScript recipe's file."""
    (line,) = [line for block in code_blocks("sh") for line in block.splitlines() if line.strip()]
    command = shlex.split(line)
    assert command[0] == "yuzu-onnx"
    run_recipe(TORCHSCRIPT, torch_cnn(), tmp_path, monkeypatch)
    result = cli(*command[1:])
    assert result.rc == 0, result.err


def test_same_padding_dilated_torchscript_export_is_refused_naming_the_fix(tmp_path, monkeypatch):
    """``padding='same'`` with a dilation: TorchScript writes auto_pad SAME_UPPER, which ONNX
    Runtime cannot run; yuzu-onnx says so in one message that names both fixes."""
    path = run_recipe(TORCHSCRIPT, torch_cnn(padding="same"), tmp_path, monkeypatch)
    conv = [n for n in onnx.load(str(path)).graph.node if any(a.name == "dilations" and list(a.ints) == [2]
                                                            for a in n.attribute)]
    assert [a.s for n in conv for a in n.attribute if a.name == "auto_pad"] == [b"SAME_UPPER"]
    for attempt in (lambda: load_model(path), lambda: naive_ism(path, random_onehot(1, L, seed=1))):
        with pytest.raises(ModelError) as failure:
            attempt()
        message = str(failure.value)
        assert "\n" not in message
        assert "Dilation not supported for AutoPadType::SAME_UPPER" in message
        assert "dynamo=True" in message and "dilation * (kernel_size - 1) // 2" in message


def test_same_padding_dilated_cli_error_is_one_line(tmp_path, monkeypatch, cli):
    path = run_recipe(TORCHSCRIPT, torch_cnn(padding="same"), tmp_path, monkeypatch)
    result = cli("convert", path, "-o", tmp_path / "model.ism.onnx")
    assert result.rc != 0
    assert len(result.error_lines) == 1 and "dynamo=True" in result.error_lines[0]
    assert "Traceback" not in result.err


def test_same_padding_dilated_dynamo_recipe(tmp_path, monkeypatch):
    """The dynamo exporter writes integer pads for the same layer: converts and matches."""
    needs_dynamo()
    model = torch_cnn(padding="same")
    path = run_recipe(DYNAMO, model, tmp_path, monkeypatch)
    pads = [a.s for n in onnx.load(str(path)).graph.node for a in n.attribute if a.name == "auto_pad"]
    assert all(p in (b"", b"NOTSET") for p in pads), pads
    check_export(path, torch_outputs(model))


def test_explicit_padding_equals_same_padding():
    """The README's integer padding, ``dilation * (k - 1) // 2``, computes what 'same' does."""
    torch = needs_torch()
    same, explicit = torch_cnn(padding="same"), torch_cnn(padding=2 * (5 - 1) // 2)
    x = torch.from_numpy(random_onehot(2, L, seed=3))
    with torch.no_grad():
        for a, b in zip(same(x), explicit(x)):
            assert torch.equal(a, b)


# --- the Enformer positional features ----------------------------------------------------

N_FEATURES = 6


def gamma_pdf(x, concentration, rate):
    """enformer-pytorch's gamma_pdf, verbatim: torch.xlogy and torch.lgamma."""
    import torch

    log_unnormalized_prob = torch.xlogy(concentration - 1.0, x) - rate * x
    log_normalization = torch.lgamma(concentration) - concentration * torch.log(rate)
    return torch.exp(log_unnormalized_prob - log_normalization)


def get_positional_embed(seq_len, feature_size, device):
    """Gamma positional features of each position, ``(seq_len, feature_size)``, computed like
    enformer-pytorch's ``get_positional_features_gamma`` (its defaults) from the length only."""
    import torch

    positions = torch.arange(seq_len, device=device)
    stddev = seq_len / (2 * feature_size)
    start_mean = seq_len / feature_size
    mean = torch.linspace(start_mean, seq_len, feature_size, device=device)[None, ...]
    concentration = (mean / stddev) ** 2
    rate = mean / stddev**2
    probabilities = gamma_pdf(positions.float().abs()[..., None], concentration, rate) + 1e-8
    return probabilities / torch.amax(probabilities)


@pytest.fixture
def modeling_enformer(monkeypatch) -> types.ModuleType:
    """A stand-in for ``enformer_pytorch.modeling_enformer`` (the real package is not needed):
    ``from enformer_pytorch import modeling_enformer`` gives this module."""
    package = types.ModuleType("enformer_pytorch")
    module = types.ModuleType("enformer_pytorch.modeling_enformer")
    module.get_positional_embed = get_positional_embed
    package.modeling_enformer = module
    monkeypatch.setitem(sys.modules, "enformer_pytorch", package)
    monkeypatch.setitem(sys.modules, "enformer_pytorch.modeling_enformer", module)
    return module


def positional_cnn(modeling: types.ModuleType):
    """A seeded (N, L, 4) model, as Enformer takes, that adds a projection of the gamma
    positional features, looked up at call time in ``modeling``, to its convolutions."""
    torch = needs_torch()
    from torch import nn

    class PositionalCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv1d(4, 8, 7, padding=3)
            self.conv2 = nn.Conv1d(8, 8, 5, dilation=2, padding=4)
            self.to_pos = nn.Linear(N_FEATURES, 8)
            self.profile = nn.Conv1d(8, 2, 1)
            self.counts = nn.Linear(8, 1)

        def forward(self, x):
            h = torch.relu(self.conv1(x.transpose(1, 2)))
            positions = modeling.get_positional_embed(x.shape[1], N_FEATURES, x.device)
            h = h + self.to_pos(positions).transpose(0, 1)
            h = torch.relu(self.conv2(h)) + h
            return self.profile(h), self.counts(h.mean(dim=-1))

    torch.manual_seed(0)
    return PositionalCNN().eval()


def test_positional_features_defeat_both_exporters(tmp_path, modeling_enformer):
    """What the README says goes wrong: xlogy (TorchScript) and lgamma (dynamo), and
    replacing xlogy alone is not enough."""
    torch = needs_torch()
    model, x = positional_cnn(modeling_enformer), torch.zeros(1, L, 4)
    with pytest.raises(Exception, match="aten::xlogy"):
        torch.onnx.export(model, (x,), str(tmp_path / "a.onnx"), dynamo=False, opset_version=17)
    original = torch.xlogy
    try:
        torch.xlogy = lambda a, b: torch.where(a == 0, 0.0, a * torch.log(b))
        with pytest.raises(Exception, match="aten::lgamma"):
            torch.onnx.export(model, (x,), str(tmp_path / "b.onnx"), dynamo=False, opset_version=17)
    finally:
        torch.xlogy = original
    if importlib.util.find_spec("onnxscript") is not None:
        with pytest.raises(Exception, match="lgamma"):
            torch.onnx.export(model, (x,), str(tmp_path / "c.onnx"), dynamo=True, opset_version=18)


def test_enformer_recipe(tmp_path, monkeypatch, modeling_enformer):
    model = positional_cnn(modeling_enformer)
    path = run_recipe(ENFORMER, model, tmp_path, monkeypatch)
    assert modeling_enformer.get_positional_embed is get_positional_embed  # restored after the export
    check_export(path, torch_outputs(model))


def test_enformer_recipe_with_the_dynamo_exporter(tmp_path, monkeypatch, modeling_enformer):
    """The README's context manager, with the dynamo exporter's arguments it names."""
    torch = needs_dynamo()
    model = positional_cnn(modeling_enformer)
    block = recipe(ENFORMER)
    namespace = {"model": model, "L": L}
    exec(compile(block[: block.index("\nmodel.eval()")], "README.md", "exec"), namespace)
    x = torch.zeros(1, L, 4)
    with namespace["constant_while_exporting"](modeling_enformer, "get_positional_embed"):
        model(x)
        torch.onnx.export(model, (x,), str(tmp_path / "model.onnx"), dynamo=True, opset_version=18,
                          input_names=["input"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    check_export(tmp_path / "model.onnx", torch_outputs(model))


# --- Keras / TensorFlow, JAX / Flax --------------------------------------------------------


def test_keras_recipe(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow", reason="the Keras recipe needs tensorflow (tensorflow-cpu)")
    pytest.importorskip("tf2onnx", reason="the Keras recipe needs tf2onnx")
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((L, 4), name="input")
    h = keras.layers.Conv1D(8, 7, padding="same", activation="relu")(x)
    h = keras.layers.Add()([keras.layers.Conv1D(8, 5, dilation_rate=2, padding="same", activation="relu")(h), h])
    profile = keras.layers.Conv1D(2, 1, name="profile")(h)
    counts = keras.layers.Dense(1, name="counts")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(x, [profile, counts])
    path = run_recipe(KERAS, model, tmp_path, monkeypatch)
    assert load_model(path).layout == "nlc"
    check_export(path, lambda X: [np.asarray(t) for t in model(X)])


def test_jax_recipe(tmp_path, monkeypatch):
    pytest.importorskip("jax", reason="the JAX recipe needs jax")
    pytest.importorskip("flax.nnx", reason="the JAX recipe's model needs flax (NNX)")
    pytest.importorskip("jax2onnx", reason="the JAX recipe needs jax2onnx")
    import jax.numpy as jnp
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv1 = nnx.Conv(4, 8, kernel_size=(7,), padding="SAME", rngs=rngs)
            self.conv2 = nnx.Conv(8, 8, kernel_size=(5,), kernel_dilation=(2,), padding="SAME", rngs=rngs)
            self.profile = nnx.Conv(8, 2, kernel_size=(1,), rngs=rngs)
            self.counts = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):  # (N, L, 4)
            h = nnx.relu(self.conv1(x))
            h = nnx.relu(self.conv2(h)) + h
            return self.profile(h), self.counts(h.mean(axis=1))

    model = CNN(nnx.Rngs(0))
    path = run_recipe(JAX, model, tmp_path, monkeypatch)
    assert load_model(path).layout == "nlc"
    check_export(path, lambda X: [np.asarray(t) for t in model(jnp.asarray(X))])


def test_every_block_of_the_section_is_run_here():
    blocks = code_blocks("python")
    assert len(blocks) == len(RECIPES)
    for marker in RECIPES:
        recipe(marker)
    assert len(code_blocks("sh")) == 1
