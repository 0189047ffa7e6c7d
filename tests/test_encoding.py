"""One-hot encoding: letters to columns and back, reverse complement, random batches."""

from __future__ import annotations

import numpy as np
import pytest

from yuzu_onnx.encoding import decode_one_hot, one_hot, random_one_hot, reverse_complement
from yuzu_onnx.errors import InputError, SequenceError

# --------------------------------------------------------------------------- one_hot


def test_one_hot_ncl_and_nlc():
    x = one_hot(["ACGT", "TTGA"], "ACGT")
    assert x.dtype == np.float32 and x.shape == (2, 4, 4)
    np.testing.assert_array_equal(x[0], np.eye(4))
    np.testing.assert_array_equal(x[1].argmax(axis=0), [3, 3, 2, 0])
    y = one_hot(["ACGT", "TTGA"], "ACGT", layout="nlc")
    assert y.shape == (2, 4, 4)
    np.testing.assert_array_equal(y, x.transpose(0, 2, 1))


def test_one_hot_case_n_iupac_and_u():
    x = one_hot(["acgtNnRYSWKMBDHVu"], "ACGT", layout="nlc")[0]
    np.testing.assert_array_equal(x[:4], np.eye(4))
    assert np.all(x[4:16] == 0)
    np.testing.assert_array_equal(x[16], [0, 0, 0, 1])  # U read as T


def test_one_hot_rna_reads_t_as_u():
    x = one_hot(["ACGUT"], "ACGU", layout="nlc")[0]
    np.testing.assert_array_equal(x[3], x[4])
    np.testing.assert_array_equal(x[4], [0, 0, 0, 1])


def test_one_hot_protein():
    letters = "ACDEFGHIKLMNPQRSTVWY"
    x = one_hot([letters.lower() + "XBZJUO*"], letters, layout="nlc")[0]
    np.testing.assert_array_equal(x[:20], np.eye(20))
    assert np.all(x[20:] == 0)
    assert decode_one_hot(x[None], letters, "nlc") == [letters + "X" * 7]


def test_one_hot_bad_character_names_sequence_position_and_char():
    with pytest.raises(SequenceError) as info:
        one_hot(["ACGT", "ACZT"], "ACGT", names=["first", "second"])
    msg = str(info.value)
    assert "'second'" in msg and "position 2" in msg and "'Z'" in msg
    with pytest.raises(SequenceError, match=r"sequence 0 has character '-' at position 1"):
        one_hot(["A-GT"], "ACGT")
    with pytest.raises(SequenceError, match=r"character 'é' at position 3"):
        one_hot(["ACGé"], "ACGT")
    with pytest.raises(SequenceError, match="'X'"):  # X is protein-only
        one_hot(["ACGX"], "ACGT")


def test_one_hot_mixed_lengths():
    with pytest.raises(SequenceError) as info:
        one_hot(["ACGT", "ACGT", "ACG"], "ACGT", names=["a", "b", "c"])
    msg = str(info.value)
    assert "'c' has length 3" in msg and "'a' has length 4" in msg


def test_one_hot_rejects_single_string_and_bad_layout():
    with pytest.raises(TypeError, match="list"):
        one_hot("ACGT", "ACGT")
    with pytest.raises(InputError, match="layout"):
        one_hot(["ACGT"], "ACGT", layout="nchw")


def test_decode_roundtrip():
    seqs = ["ACGTNNAC", "TTTTGGGA"]
    for layout in ("ncl", "nlc"):
        assert decode_one_hot(one_hot(seqs, "ACGT", layout=layout), "ACGT", layout) == seqs
    with pytest.raises(SequenceError, match="alphabet"):
        decode_one_hot(np.zeros((1, 5, 3)), "ACGT", "ncl")


def test_reverse_complement():
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("acRY") == "RYgt"


# --------------------------------------------------------------------------- random_one_hot


def _eye_draw(rng, n, length, a):
    """The draw every copy of the random one-hot generator made before there was one."""
    return np.eye(a, dtype=np.float32)[rng.integers(0, a, (n, length))]  # (n, L, A)


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("a", [4, 20])
def test_random_one_hot_matches_the_eye_draw(layout, a):
    want = _eye_draw(np.random.default_rng(7), 3, 11, a)
    want = want if layout == "nlc" else np.ascontiguousarray(want.transpose(0, 2, 1))
    got = random_one_hot(3, 11, alphabet_size=a, layout=layout, seed=7)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(random_one_hot(1, 9, layout=layout, seed=[7, 1]),
                                  random_one_hot(1, 9, layout=layout, rng=np.random.default_rng([7, 1])))


@pytest.mark.parametrize("unknown_in", ["all", "first", "last"])
def test_random_one_hot_unknown_columns_and_rng_state(unknown_in):
    rng = np.random.default_rng(3)
    want = _eye_draw(rng, 4, 12, 4)
    rows = {"all": range(4), "first": [0], "last": [3]}[unknown_in]
    for i in rows:
        want[i, rng.choice(12, size=2, replace=False)] = 0.0
    after = rng.standard_normal(3)
    mine = np.random.default_rng(3)
    got = random_one_hot(4, 12, layout="nlc", rng=mine, n_unknown=2, unknown_in=unknown_in)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mine.standard_normal(3), after)  # the generator advanced alike
    assert (got.sum(axis=2) == 0).sum() == 2 * len(rows)


def test_random_one_hot_refuses_bad_options():
    with pytest.raises(InputError, match="'nchw'"):
        random_one_hot(1, 4, layout="nchw")
    with pytest.raises(InputError, match="'middle'"):
        random_one_hot(1, 4, n_unknown=1, unknown_in="middle")
    assert random_one_hot(0, 4, n_unknown=2).shape == (0, 4, 4)
