"""What a new user trips over in the commands (issue #16, part B): converted models where an
original is needed, resuming with other batch settings, the naive runner's memory budget,
one meaning per option name, help texts, messages that say what they mean."""

from __future__ import annotations

import pytest

import yuzu_onnx
from yuzu_onnx.errors import ModelError
from yuzu_onnx.testing import random_onehot

# --------------------------------------------------------------------------- converted models


@pytest.mark.parametrize("command", [
    ["naive", "{ism}", "{seqs}", "-o", "{out}"],
    ["ism", "{ism}", "{seqs}", "-o", "{out}"],
    ["verify", "{ism}", "-n", "1"],
    ["convert", "{ism}", "-o", "{out_onnx}"],
])
def test_commands_that_need_an_original_model_refuse_a_converted_one(cli, tiny_ism, seq_files, tmp_path,
                                                                      command):
    values = {"ism": tiny_ism, "seqs": seq_files["ncl"], "out": tmp_path / "z.npz",
              "out_onnx": tmp_path / "again.onnx"}
    res = cli(*[part.format(**values) for part in command])
    assert res.rc == 2, res.err
    assert len(res.error_lines) == 1 and "converted ISM model" in res.error_lines[0]
    assert "yuzu-onnx run" in res.error_lines[0]
    assert "ONNXRuntimeError" not in res.err and "warning" not in res.err
    assert not (tmp_path / "z.npz").exists() and not (tmp_path / "again.onnx").exists()


def test_python_entry_points_refuse_a_converted_model(tiny_ism, tmp_path):
    import onnx

    from yuzu_onnx.importer import load_model

    x = random_onehot(1, 64, seed=0)
    for call in (lambda: load_model(tiny_ism), lambda: load_model(onnx.load(str(tiny_ism))),
                 lambda: yuzu_onnx.convert(tiny_ism), lambda: yuzu_onnx.naive_ism(tiny_ism, x),
                 lambda: yuzu_onnx.ism(tiny_ism, x, cache_dir=tmp_path)):
        with pytest.raises(ModelError, match="is a converted ISM model"):
            call()
