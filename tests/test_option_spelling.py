"""Each interface names options its own way: ``--seq-len`` on the command line,
``seq_len=`` from Python; install hints name what installs (issue #16 items 7 and 8)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import onnx
import pytest

import yuzu_onnx
from yuzu_onnx.errors import (
    InputError,
    YuzuError,
    install_hint,
    interface,
    option,
    option_spelling,
    render,
)
from yuzu_onnx.testing import build_dynamic_length

PACKAGE = Path(yuzu_onnx.__file__).parent


@pytest.mark.parametrize(
    ("name", "value", "cli", "python"),
    [
        ("seq_len", None, "--seq-len", "seq_len="),
        ("seq_len", 500, "--seq-len 500", "seq_len=500"),
        ("layout", "nlc", "--layout nlc", "layout='nlc'"),
        ("input_name", None, "--input", "input_name="),
        ("plot_output", None, "--output", "output="),
        ("probe_seed", None, "--probe-seed", "seed="),
        ("fmt", "npy", "--format npy", "fmt='npy'"),
        ("resume", True, "--resume", "resume=True"),
    ],
)
def test_option_renders_per_interface(name, value, cli, python):
    ref = option(name) if value is None else option(name, value)
    assert render(f"give {ref} now", "cli") == f"give {cli} now"
    assert render(f"give {ref} now", "python") == f"give {python} now"


def test_str_of_an_error_follows_the_interface_in_effect():
    exc = InputError(f"give {option('seq_len')}")
    assert str(exc) == "give seq_len="
    with interface("cli"):
        assert str(exc) == "give --seq-len"
        wrapped = YuzuError(f"cannot convert: {exc}")  # a message built from another keeps the spelling
    assert str(wrapped) == "cannot convert: give --seq-len"
    assert str(exc) == "give seq_len="
    assert option_spelling("max_memory", "cli") == "--max-memory"
    with pytest.raises(ValueError):
        with interface("shell"):
            pass


@pytest.fixture
def dynamic_model(tmp_path) -> Path:
    path = tmp_path / "dyn.onnx"
    onnx.save(build_dynamic_length(seq_len=64), str(path))
    return path


def test_dynamic_length_python_says_seq_len_keyword(dynamic_model):
    with pytest.raises(yuzu_onnx.ModelError, match=r"dynamic sequence length; give seq_len=$"):
        yuzu_onnx.convert(dynamic_model)


def test_dynamic_length_cli_says_seq_len_option(cli_subprocess, dynamic_model, tmp_path):
    res = cli_subprocess("convert", dynamic_model, "-o", tmp_path / "o.onnx")
    assert res.rc == 2 and res.error_lines == ["yuzu-onnx: error: input 'x' has a dynamic sequence length; "
                                               "give --seq-len"], res.err


def test_batch_size_in_both_spellings(cli, tiny_ism, tiny_model, seq_files, onehot_ncl, tmp_path):
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "r.npz", "--batch-size", "0")
    assert res.rc == 2 and "--batch-size 0 is too small" in res.error_lines[0], res.err
    with pytest.raises(InputError, match=r"^batch_size=0 is not a positive integer$"):
        yuzu_onnx.naive_ism(tiny_model, onehot_ncl, batch_size=0)
    with pytest.raises(InputError, match=r"raise max_memory= to at least"):
        yuzu_onnx.ISMSession(tiny_ism).batch_size_for(10)


def test_plot_several_outputs_names_output_per_interface(cli, bpnet_model, seq_files, tmp_path):
    from yuzu_onnx.plot import plot_from_npz

    result = tmp_path / "r.npz"
    assert cli("naive", bpnet_model, seq_files["nlc"], "-o", result, "--quiet").rc == 0
    res = cli("plot", result, "-o", tmp_path / "f.png")
    assert res.rc == 2 and res.error_lines[0].endswith("choose one with --output"), res.err
    with pytest.raises(InputError, match=r"choose one with output=$"):
        plot_from_npz(result, path=tmp_path / "f.png")


def _message_strings(tree: ast.AST):
    """The literal text of every raised exception's and every warning's message."""
    for node in ast.walk(tree):
        call = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "warn":
            call = node
        if call is None:
            continue
        for arg in call.args[:1]:
            for part in ast.walk(arg):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    yield node.lineno, part.value


def test_no_message_outside_the_cli_spells_an_option_for_one_interface():
    """Library messages name options with errors.option(), never as a literal ``--name``."""
    literal = re.compile(r"(?<![\w-])--[a-z]")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "cli.py" or "testing" in path.parts:
            continue
        for lineno, text in _message_strings(ast.parse(path.read_text())):
            if literal.search(text):
                found.append(f"{path.relative_to(PACKAGE)}:{lineno}: {text!r}")
    assert not found, "\n".join(found)


def test_install_hints_name_what_installs():
    assert install_hint("pyfaidx", "genome") == "pip install pyfaidx (or, in a yuzu-onnx checkout, pip install '.[genome]')"
    assert install_hint("matplotlib") == "pip install matplotlib"
    unquoted_extra = re.compile(r"pip install [\w.-]+\[")  # unquoted brackets, or a name not on PyPI
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py":  # install_hint itself
            continue
        text = path.read_text()
        assert "yuzu-onnx[" not in text, path
        assert not unquoted_extra.search(text), path


def test_missing_pyfaidx_hint_in_the_cli(cli_subprocess, tiny_model, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t0\t64\n")
    genome = tmp_path / "g.fa"
    genome.write_text(">chr1\n" + "ACGT" * 40 + "\n")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "pyfaidx.py").write_text("raise ImportError('blocked for the test')\n")
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    res = cli_subprocess("naive", tiny_model, bed, "--genome", genome, "-o", tmp_path / "r.npz", env=env)
    assert res.rc == 2, res.err
    assert res.error_lines[0].endswith(
        "needs pyfaidx, which is not installed; pip install pyfaidx (or, in a yuzu-onnx checkout, "
        "pip install '.[genome]')"), res.err

