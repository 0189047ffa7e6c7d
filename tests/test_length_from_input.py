"""A dynamic-length model takes its length from the sequences: ``naive``, ``ism`` and
:func:`yuzu_onnx.naive_ism` / :func:`yuzu_onnx.ism` need no ``--seq-len`` when the input
fixes it; one sequence without a batch axis is a batch of one (issue #16 item 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import yuzu_onnx
from yuzu_onnx.errors import SequenceError
from yuzu_onnx.results import read_npz
from yuzu_onnx.testing import build_dynamic_length

L = 64  # the length of the conftest sequences


@pytest.fixture(scope="module")
def dynamic_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dynamic")
    paths = {}
    for layout in ("ncl", "nlc"):
        paths[layout] = folder / f"dyn_{layout}.onnx"
        onnx.save(build_dynamic_length(layout=layout, seq_len=L, seed=4), str(paths[layout]))
    return paths


@pytest.mark.parametrize("command", ["naive", "ism"])
@pytest.mark.parametrize("kind", ["fasta", "ncl"])
def test_cli_takes_the_length_from_the_input(cli, dynamic_models, seq_files, tmp_path, command, kind):
    out, ref = tmp_path / "r.npz", tmp_path / "ref.npz"
    res = cli(command, dynamic_models["ncl"], seq_files[kind], "-o", out, "--quiet")
    assert res.rc == 0, res.err
    assert cli("naive", dynamic_models["ncl"], seq_files[kind], "-o", ref, "--seq-len", L, "--quiet").rc == 0
    got, want = read_npz(out)[0], read_npz(ref)[0]
    assert got["y"].shape[:3] == (5, 4, L)
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-5)


def test_cli_channels_last_array(cli, dynamic_models, seq_files, tmp_path):
    res = cli("naive", dynamic_models["nlc"], seq_files["nlc"], "-o", tmp_path / "r.npz", "--quiet")
    assert res.rc == 0, res.err
    assert read_npz(tmp_path / "r.npz")[0]["y"].shape[:3] == (5, L, 4)


def test_records_of_different_lengths_name_the_first_that_differs(cli_subprocess, dynamic_models, tmp_path):
    fasta = tmp_path / "mixed.fa"
    fasta.write_text(">a\n" + "ACGT" * 16 + "\n>b\n" + "GATC" * 16 + "\n>c\n" + "ACG" * 10 + "\n>d\nACGT\n")
    out = tmp_path / "r.npz"
    res = cli_subprocess("ism", dynamic_models["ncl"], fasta, "-o", out)
    assert res.rc == 2, res.err
    assert res.error_lines == [
        "yuzu-onnx: error: the model's length is dynamic, so it is taken from the input, but sequence 'c' "
        "has length 30 and the first, 'a', has length 64; one run takes one length; split the file by length"
    ], res.err
    assert not out.exists()


def test_given_seq_len_still_wins(cli, dynamic_models, seq_files, tmp_path):
    res = cli("naive", dynamic_models["ncl"], seq_files["fasta"], "-o", tmp_path / "r.npz", "--seq-len", 32)
    assert res.rc == 2 and "length 64 but the model needs length 32" in res.error_lines[0], res.err


def test_python_naive_ism_and_ism_take_the_length_from_x(dynamic_models, onehot_ncl, tmp_path):
    naive = yuzu_onnx.naive_ism(dynamic_models["ncl"], onehot_ncl)
    fast = yuzu_onnx.ism(dynamic_models["ncl"], onehot_ncl, cache_dir=tmp_path)
    assert naive["y"].shape[:3] == (5, 4, L)
    np.testing.assert_allclose(fast["y"], naive["y"], atol=1e-4)
    nlc = yuzu_onnx.naive_ism(dynamic_models["nlc"], onehot_ncl[0].T)  # one (L, A) sequence
    assert nlc["y"].shape[:3] == (1, L, 4)


def test_session_run_takes_one_sequence(tiny_ism, onehot_ncl):
    session = yuzu_onnx.ISMSession(tiny_ism)
    one, batch = session.run(onehot_ncl[0]), session.run(onehot_ncl[:1])
    assert one.keys() == batch.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], batch[name])
    with pytest.raises(SequenceError, match="rank 1"):
        session.run(onehot_ncl[0, 0])
