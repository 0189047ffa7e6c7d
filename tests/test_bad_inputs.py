"""The bad-input matrix: every mistake gives its exit code, one line naming the problem,
no traceback, and no result file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx import InputError
from yuzu_onnx.encoding import random_one_hot
from yuzu_onnx.results import read_npz
from yuzu_onnx.testing import build_dynamic_length

L = 64
RNG = np.random.default_rng(7)


def _model(nodes, inputs, outputs, inits=None, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "bad", inputs, outputs,
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _seq_input(name="x", length=L, channels=4):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, length])


def _conv_head(first_input: str, extra_nodes=(), extra_inits=None, out_tail=None):
    """x → [extra] → Conv(4→3, k5, same) → ReduceMean over length → [out_tail] → y (N, 3)."""
    nodes = list(extra_nodes) + [
        helper.make_node("Conv", [first_input, "W", "B"], ["c"], pads=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["m" if out_tail else "y"], axes=[2], keepdims=0),
    ]
    if out_tail:
        nodes += out_tail
    inits = {"W": RNG.standard_normal((3, 4, 5)) * 0.5, "B": RNG.standard_normal(3) * 0.1, **(extra_inits or {})}
    return nodes, inits


def assert_refused(res, code: int, *needles: str, out: Path | None = None) -> None:
    """Exit ``code``, exactly one error line naming the problem, no traceback, no result."""
    assert res.rc == code, (res.rc, res.err)
    assert "Traceback" not in res.err
    assert len(res.error_lines) == 1, res.err
    line = res.error_lines[0]
    for needle in needles:
        assert needle in line, (needle, line)
    if out is not None:
        assert not out.exists()
        assert not out.with_name(out.name + ".partial").exists()
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith("." + out.name)]
        assert not leftovers, leftovers


# --------------------------------------------------------------------------- models


def test_model_is_a_folder(cli, tmp_path):
    assert_refused(cli("convert", tmp_path, "-o", tmp_path / "m.onnx"), 2, "is not a file", out=tmp_path / "m.onnx")


def test_model_missing(cli, tmp_path):
    res = cli("inspect", tmp_path / "nope.onnx")
    assert_refused(res, 2, "does not exist")


def test_model_not_onnx(cli, tmp_path, seq_files):
    path = tmp_path / "model.onnx"
    path.write_text("this is not a model\n")
    assert_refused(cli("convert", path, "-o", tmp_path / "m.onnx"), 2, "not an ONNX model", out=tmp_path / "m.onnx")
    out = tmp_path / "r.npz"
    assert_refused(cli("run", path, seq_files["ncl"], "-o", out), 2, "not an ONNX model", out=out)


def test_model_truncated(cli, tmp_path, tiny_model, seq_files):
    path = tmp_path / "trunc.onnx"
    raw = tiny_model.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "r.npz"
    assert_refused(cli("ism", path, seq_files["ncl"], "-o", out), 2, "truncated", out=out)


def test_no_one_hot_input(cli, tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_seq_input(channels=7, length=10)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 7, 10])])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert_refused(cli("convert", path, "-o", tmp_path / "o.onnx"), 2, "no one-hot-like input", out=tmp_path / "o.onnx")


def test_several_candidate_inputs(cli, tmp_path):
    model = _model([helper.make_node("Add", ["a", "b"], ["y"])], [_seq_input("a"), _seq_input("b")],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, L])])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert_refused(cli("inspect", path), 2, "several inputs", "--input")


def test_dynamic_length_needs_seq_len(cli, tmp_path, seq_files):
    path = tmp_path / "dyn.onnx"
    onnx.save(build_dynamic_length(seq_len=L), str(path))
    assert_refused(cli("convert", path, "-o", tmp_path / "o.onnx"), 2, "--seq-len", out=tmp_path / "o.onnx")
    assert cli("convert", path, "-o", tmp_path / "o.onnx", "--seq-len", L).rc == 0
    # naive and ism take the length from the sequences (tests/test_length_from_input.py)
    assert cli("naive", path, seq_files["ncl"], "-o", tmp_path / "r.npz", "--quiet").rc == 0


def test_run_given_an_original_model(cli, tiny_model, seq_files, tmp_path):
    out = tmp_path / "r.npz"
    assert_refused(cli("run", tiny_model, seq_files["ncl"], "-o", out), 2, "not a converted", "yuzu-onnx convert",
                   out=out)


def _edited(tiny_ism: Path, tmp_path: Path, edit) -> Path:
    model = onnx.load(str(tiny_ism))
    props = {p.key: p.value for p in model.metadata_props}
    edit(props)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda p: [p.pop(k) for k in list(p) if k.startswith("yuzu_onnx.")], "not a converted"),
        (lambda p: p.pop("yuzu_onnx.window"), "missing or malformed"),
        (lambda p: p.update({"yuzu_onnx.seq_len": "80"}), "disagrees with the graph"),
        (lambda p: p.update({"yuzu_onnx.outputs": '{"other": {"reduce": "none"}}'}), "outputs"),
    ],
    ids=["metadata-missing", "window-missing", "seq-len-edited", "outputs-edited"],
)
def test_converted_model_with_bad_metadata(cli, tiny_ism, seq_files, tmp_path, edit, needle):
    path = _edited(tiny_ism, tmp_path, edit)
    out = tmp_path / "r.npz"
    assert_refused(cli("run", path, seq_files["ncl"], "-o", out), 2, needle, out=out)


# --------------------------------------------------------------------------- sequences


def _write_npy(path: Path, array) -> Path:
    np.save(path, np.asarray(array, dtype=np.float32))
    return path


def _onehot(n=2, length=L):
    return random_one_hot(n, length, rng=RNG)


def _with_column(column, position=4):
    x = _onehot()
    x[1, :, position] = column
    return x


SEQUENCE_CASES = {
    "wrong-length": (lambda p: _write_npy(p / "x.npy", _onehot(length=50)), ["(N, 4, 64)"]),
    "wrong-layout": (lambda p: _write_npy(p / "x.npy", _onehot().transpose(0, 2, 1)), ["nlc layout", "transpose"]),
    "wrong-alphabet-size": (lambda p: _write_npy(p / "x.npy", np.zeros((2, 5, L))), ["(N, 4, 64)"]),
    "nan": (lambda p: _write_npy(p / "x.npy", np.where(np.arange(L) == 9, np.nan, _onehot())), ["non-finite"]),
    "inf": (lambda p: _write_npy(p / "x.npy", np.where(np.arange(L) == 9, np.inf, _onehot())), ["non-finite"]),
    "soft-sum-above-1": (lambda p: _write_npy(p / "x.npy", _with_column([0.6, 0.6, 0, 0])),
                         ["summing to 1.2", "sequence 1", "position 4"]),
    "negative": (lambda p: _write_npy(p / "x.npy", _with_column([-0.5, 1, 0, 0])),
                 ["outside [0, 1]", "sequence 1", "position 4"]),
    "empty-fasta": (lambda p: (p / "e.fa").write_text("") and p / "e.fa" or p / "e.fa", ["no FASTA records"]),
    "mixed-length-fasta": (
        lambda p: (p / "m.fa").write_text(">a\n" + "A" * L + "\n>b\n" + "C" * (L - 1) + "\n") and p / "m.fa",
        ["'b'", "length 63"],
    ),
    "character-outside-alphabet": (
        lambda p: (p / "c.fa").write_text(">a\n" + "ACGT" * 4 + "J" + "A" * (L - 17) + "\n") and p / "c.fa",
        ["'J'"],
    ),
    "empty-npy": (lambda p: _write_npy(p / "x.npy", np.zeros((0, 4, L))), ["no sequences"]),
    "missing-input": (lambda p: p / "nothing.fa", ["does not exist"]),
}


@pytest.mark.parametrize("case", list(SEQUENCE_CASES))
def test_bad_sequences(cli, tiny_ism, tmp_path, case):
    make, needles = SEQUENCE_CASES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = make(folder)
    out = tmp_path / "r.npz"
    assert_refused(cli("run", tiny_ism, path, "-o", out), 2, *needles, out=out)


def test_bad_sequences_in_naive_too(cli, tiny_model, tmp_path):
    path = _write_npy(tmp_path / "x.npy", _with_column([-0.5, 1, 0, 0]))
    out = tmp_path / "r.npz"
    assert_refused(cli("naive", tiny_model, path, "-o", out), 2, "outside [0, 1]", out=out)


# --------------------------------------------------------------------------- models that misbehave


def test_model_with_nan_reference_output(cli, tmp_path, seq_files):
    nodes, inits = _conv_head("x", out_tail=[helper.make_node("Add", ["m", "nan"], ["y"])],
                              extra_inits={"nan": np.array([0.0, np.nan, 0.0])})
    model = _model(nodes, [_seq_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    path = tmp_path / "nan.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "r.npz"
    res = cli("ism", path, seq_files["fasta"], "-o", out)
    assert_refused(res, 2, "output 'y'", "sequence 's0'", "non-finite", "the sequence itself", out=out)
    res = cli("naive", path, seq_files["fasta"], "-o", out)
    assert_refused(res, 2, "output 'y'", "sequence 's0'", out=out)


def test_op_the_analysis_cannot_place_falls_back_to_naive(cli, tmp_path, seq_files):
    axis = helper.make_node("Constant", [], ["axis"], value=numpy_helper.from_array(np.array(2, np.int64)))
    cumsum = helper.make_node("CumSum", ["x", "axis"], ["cs"])
    scale = helper.make_node("Mul", ["cs", "tenth"], ["xs"])
    nodes, inits = _conv_head("xs", extra_nodes=[axis, cumsum, scale], extra_inits={"tenth": np.array(0.1)})
    model = _model(nodes, [_seq_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    path = tmp_path / "cumsum.onnx"
    onnx.save(model, str(path))
    res = cli("ism", path, seq_files["ncl"], "-o", tmp_path / "a.npz")
    assert res.rc == 0, res.err
    assert any("falling back to exact naive ISM" in w for w in res.warning_lines), res.err
    assert "Traceback" not in res.err
    assert cli("naive", path, seq_files["ncl"], "-o", tmp_path / "b.npz").rc == 0
    a, _ = read_npz(tmp_path / "a.npz")
    b, _ = read_npz(tmp_path / "b.npz")
    scale = max(np.abs(a["y"]).max(), np.abs(b["y"]).max())
    assert np.abs(a["y"] - b["y"]).max() <= 1e-5 * scale
    # the cached conversion still says so on the second run
    res = cli("ism", path, seq_files["ncl"], "-o", tmp_path / "c.npz")
    assert any("naive" in w for w in res.warning_lines)


# --------------------------------------------------------------------------- resources and paths


def test_memory_budget_too_small(cli, tiny_ism, tiny_model, seq_files, tmp_path):
    out = tmp_path / "r.npz"
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", out, "--max-memory", "1K")
    assert_refused(res, 2, "needs about", "budget is 1.00 KiB", "--max-memory", "runtime and weights",
                   "convert the model again with --max-memory", out=out)
    res = cli("naive", tiny_model, seq_files["ncl"], "-o", out, "--max-memory", "1K")
    assert_refused(res, 2, "needs about", "--max-memory", out=out)
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", out, "--max-memory", "lots")
    assert_refused(res, 2, "memory size", out=out)


def test_output_in_missing_folder(cli, tiny_ism, tiny_model, seq_files, tmp_path):
    out = tmp_path / "missing" / "r.npz"
    assert_refused(cli("run", tiny_ism, seq_files["ncl"], "-o", out), 2, "does not exist")
    assert not out.parent.exists()
    assert_refused(cli("convert", tiny_model, "-o", out.with_suffix(".onnx")), 2, "does not exist")
    assert not out.parent.exists()


def _blocks_writes(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


def test_output_in_read_only_folder(cli, tiny_ism, seq_files, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if not _blocks_writes(folder):
            pytest.skip("permissions do not block writes here (running as root)")
        out = folder / "r.npz"
        assert_refused(cli("run", tiny_ism, seq_files["ncl"], "-o", out), 2, "not writable", out=out)
    finally:
        folder.chmod(0o755)


def test_cuda_where_unavailable(cli, tiny_ism, tiny_model, seq_files, tmp_path):
    out = tmp_path / "r.npz"
    res = cli("run", tiny_ism, seq_files["ncl"], "-o", out, "--device", "cuda")
    assert res.rc == 0, res.err
    assert "Traceback" not in res.err
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert len(res.warning_lines) == 1 and "CPUExecutionProvider" in res.warning_lines[0]
        assert "CPUExecutionProvider" in read_npz(out)[1]["provider"]
    assert cli("naive", tiny_model, seq_files["ncl"], "-o", tmp_path / "n.npz", "--device", "cpu").rc == 0
    a, b = read_npz(out)[0]["y"], read_npz(tmp_path / "n.npz")[0]["y"]
    assert np.abs(a - b).max() <= 1e-5 * max(np.abs(a).max(), np.abs(b).max())


def test_bad_option_values(cli, tiny_ism, tiny_model, seq_files, tmp_path):
    out = tmp_path / "r.npz"
    assert_refused(cli("run", tiny_ism, seq_files["ncl"], "-o", out, "--batch-size", "0"), 2, "--batch-size", out=out)
    assert_refused(cli("convert", tiny_model, "-o", tmp_path / "m.onnx", "--window", "50:10"), 2, "window",
                   out=tmp_path / "m.onnx")
    assert_refused(cli("convert", tiny_model, "-o", tmp_path / "m.onnx", "--outputs", "nope"), 2, "'nope'",
                   out=tmp_path / "m.onnx")
    assert_refused(cli("convert", tiny_model, "-o", tmp_path / "m.onnx", "--reduce", "max"), 2, "'max'",
                   out=tmp_path / "m.onnx")
    assert_refused(cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "r.txt"), 2, ".npz")
    assert not (tmp_path / "r.txt").exists()
    assert os.listdir(tmp_path) == []


def test_yuzu_device_and_cuda_provider_options_are_checked(monkeypatch):
    from yuzu_onnx.runtime import CUDA, cuda_provider_options, provider_entries, providers_for

    monkeypatch.setenv("YUZU_DEVICE", "gpu")
    with pytest.raises(InputError, match="YUZU_DEVICE must be one of auto, cpu, cuda, got 'gpu'"):
        providers_for("auto")
    assert providers_for("cpu") == ["CPUExecutionProvider"]  # an explicit device does not read it
    monkeypatch.setenv("YUZU_DEVICE", "cuda")
    assert providers_for("auto")[0] == CUDA
    monkeypatch.setenv("YUZU_CUDA_PROVIDER_OPTIONS", " cudnn_conv_algo_search=HEURISTIC , device_id=0")
    assert cuda_provider_options() == {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC", "device_id": "0"}
    assert provider_entries([CUDA, "CPUExecutionProvider"])[0] == (CUDA, cuda_provider_options())
    monkeypatch.setenv("YUZU_CUDA_PROVIDER_OPTIONS", "use_tf32")
    with pytest.raises(InputError, match="YUZU_CUDA_PROVIDER_OPTIONS must be key=value pairs"):
        cuda_provider_options()
