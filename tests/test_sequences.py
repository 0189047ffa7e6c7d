"""FASTA reading, the input-file dispatch and one-hot validation."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx.encoding import one_hot
from yuzu_onnx.errors import InputError, SequenceError
from yuzu_onnx.importer import load_model
from yuzu_onnx.sequences import SequenceBatch, read_fasta, read_sequences, validate_one_hot

L = 10


def conv_spec(layout: str, length: int = L):
    """A one-Conv DNA model in the given layout (built inline)."""
    in_shape = ["batch", 4, length] if layout == "ncl" else ["batch", length, 4]
    nodes, src = [], "x"
    if layout == "nlc":
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]))
        src = "xt"
    nodes.append(helper.make_node("Conv", [src, "W"], ["y"], pads=[1, 1], kernel_shape=[3]))
    w = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, length])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return load_model(model)


@pytest.fixture(scope="module")
def ncl_spec():
    return conv_spec("ncl")


@pytest.fixture(scope="module")
def nlc_spec():
    return conv_spec("nlc")


# --------------------------------------------------------------------------- FASTA


def test_read_fasta_multiline_blank_lines(tmp_path):
    path = tmp_path / "s.fa"
    path.write_text(">one desc here\nACGT\nAC\n\n>two\r\nTTTT\r\nGG\r\n\n")
    assert read_fasta(path) == [("one", "ACGTAC"), ("two", "TTTTGG")]


def test_read_fasta_gzip_detected_by_magic(tmp_path):
    for name in ("s.fa.gz", "s.fa"):  # the second is gzipped despite its name
        path = tmp_path / name
        path.write_bytes(gzip.compress(b">a\nACGT\n>b\nGGCC\n"))
        assert read_fasta(path) == [("a", "ACGT"), ("b", "GGCC")]


def test_read_fasta_errors(tmp_path):
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(SequenceError, match="no FASTA records"):
        read_fasta(empty)
    blank = tmp_path / "blank.fa"
    blank.write_text("\n\n  \n")
    with pytest.raises(SequenceError, match="no FASTA records"):
        read_fasta(blank)
    headless = tmp_path / "headless.fa"
    headless.write_text("ACGT\n>a\nACGT\n")
    with pytest.raises(SequenceError, match="line 1: sequence text before the first '>'"):
        read_fasta(headless)
    nosq = tmp_path / "noseq.fa"
    nosq.write_text(">a\nACGT\n>b\n>c\nAC\n")
    with pytest.raises(SequenceError, match="line 3: record 'b' has no sequence"):
        read_fasta(nosq)
    with pytest.raises(InputError, match="does not exist"):
        read_fasta(tmp_path / "missing.fa")
    binary = tmp_path / "bin.fa"
    binary.write_bytes(b">a\n\xff\xfe\n")
    with pytest.raises(InputError, match="not a text file"):
        read_fasta(binary)


# --------------------------------------------------------------------------- read_sequences


def test_read_sequences_fasta(tmp_path, ncl_spec, nlc_spec):
    path = tmp_path / "s.fasta"
    path.write_text(">a\nACGTACGTAC\n>b\nacgtnNNNTT\n")
    batch = read_sequences(path, ncl_spec)
    assert isinstance(batch, SequenceBatch) and batch.coords is None
    assert batch.names == ("a", "b") and batch.x.shape == (2, 4, L)
    assert read_sequences(path, nlc_spec).x.shape == (2, L, 4)
    gz = tmp_path / "s.fna.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_sequences(gz, ncl_spec).x, batch.x)
    sniffed = tmp_path / "s.txt"  # no FASTA extension: recognised by '>'
    sniffed.write_text(path.read_text())
    np.testing.assert_array_equal(read_sequences(sniffed, ncl_spec).x, batch.x)


def test_read_sequences_fasta_wrong_length(tmp_path, ncl_spec):
    path = tmp_path / "s.fa"
    path.write_text(">a\nACGTACGTAC\n>short\nACGT\n")
    with pytest.raises(SequenceError, match="sequence 'short' has length 4 but the model needs length 10"):
        read_sequences(path, ncl_spec)


def test_read_sequences_npy(tmp_path, ncl_spec, nlc_spec):
    x = one_hot(["ACGTACGTAC", "NNGTACGTAC"], "ACGT")
    path = tmp_path / "x.npy"
    np.save(path, x)
    batch = read_sequences(path, ncl_spec)
    np.testing.assert_array_equal(batch.x, x)
    assert batch.names == ("seq0", "seq1")
    with pytest.raises(SequenceError) as info:
        read_sequences(path, nlc_spec)
    msg = str(info.value)
    assert "(2, 4, 10)" in msg and "expects (N, 10, 4)" in msg
    assert "ncl layout" in msg and "transpose" in msg
    single = tmp_path / "one.npy"
    np.save(single, x[0].astype(np.float64))
    assert read_sequences(single, ncl_spec).x.shape == (1, 4, L)
    noext = tmp_path / "data"
    with open(noext, "wb") as fh:
        np.save(fh, x)
    np.testing.assert_array_equal(read_sequences(noext, ncl_spec).x, x)


def test_read_sequences_npy_wrong_shape_and_values(tmp_path, ncl_spec):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 4, 7), np.float32))
    with pytest.raises(SequenceError) as info:
        read_sequences(path, ncl_spec)
    assert "(2, 4, 7)" in str(info.value) and "transpose" not in str(info.value)
    bad = one_hot(["ACGTACGTAC"], "ACGT")
    bad[0, :, 3] = [1, 1, 0, 0]
    np.save(path, bad)
    with pytest.raises(SequenceError, match="sequence 0 at position 3"):
        read_sequences(path, ncl_spec)


def test_read_sequences_npz(tmp_path, ncl_spec):
    x = one_hot(["ACGTACGTAC", "NNGTACGTAC"], "ACGT")
    named = tmp_path / "a.npz"
    np.savez(named, x=x, names=np.array(["r1", "r2"]))
    batch = read_sequences(named, ncl_spec)
    assert batch.names == ("r1", "r2")
    np.testing.assert_array_equal(batch.x, x)
    only = tmp_path / "b.npz"
    np.savez(only, onehot=x)
    assert read_sequences(only, ncl_spec).names == ("seq0", "seq1")
    ambiguous = tmp_path / "c.npz"
    np.savez(ambiguous, a=x, b=x)
    with pytest.raises(SequenceError, match="key 'x'"):
        read_sequences(ambiguous, ncl_spec)
    bad_names = tmp_path / "d.npz"
    np.savez(bad_names, x=x, names=np.array(["r1"]))
    with pytest.raises(SequenceError, match="1 names for 2 sequences"):
        read_sequences(bad_names, ncl_spec)


def test_read_sequences_dispatch_errors(tmp_path, ncl_spec):
    with pytest.raises(InputError, match="does not exist"):
        read_sequences(tmp_path / "nope.fa", ncl_spec)
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t0\t10\n")
    with pytest.raises(InputError, match="genome"):
        read_sequences(bed, ncl_spec)
    odd = tmp_path / "r.xyz"
    odd.write_text("hello\n")
    with pytest.raises(InputError, match="cannot tell the format"):
        read_sequences(odd, ncl_spec)
    with pytest.raises(InputError, match="not a file"):
        read_sequences(tmp_path, ncl_spec)


# --------------------------------------------------------------------------- validate_one_hot


def test_validate_one_hot(ncl_spec):
    x = one_hot(["ACGTACGTAC"], "ACGT").astype(np.float64)
    out = validate_one_hot(x, ncl_spec)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    soft = x.copy()
    soft[0, :, 2] = [0.5, 0.5 + 1e-7, 0, 0]  # within the sum tolerance
    validate_one_hot(soft, ncl_spec)
    over = x.copy()
    over[0, :, 9] = [0.7, 0.7, 0, 0]
    with pytest.raises(SequenceError, match=r"summing to 1.4 > 1 in sequence 0 at position 9"):
        validate_one_hot(over, ncl_spec)
    with pytest.raises(SequenceError, match="rank 1"):
        validate_one_hot(x[0, 0], ncl_spec)
    assert validate_one_hot(x[0], ncl_spec).shape == (1, *x.shape[1:])  # one sequence: a batch of one
    with pytest.raises(SequenceError, match="length 5"):
        validate_one_hot(x[:, :, :5], ncl_spec)
