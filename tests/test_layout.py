"""Layout values, the sequence spec, and the one window parser."""

from __future__ import annotations

import numpy as np
import pytest

from yuzu_onnx.errors import InputError
from yuzu_onnx.importer import load_model
from yuzu_onnx.layout import LAYOUTS, NCL, NLC, SequenceSpec, layout_of
from yuzu_onnx.testing import build_tiny_cnn
from yuzu_onnx.window import parse_window


def test_layout_values():
    assert LAYOUTS == ("ncl", "nlc") == (NCL, NLC)
    ncl, nlc = layout_of("ncl"), layout_of("nlc")
    assert (ncl.alphabet_axis, ncl.length_axis, nlc.alphabet_axis, nlc.length_axis) == (1, 2, 2, 1)
    assert ncl.shape(2, 4, 10) == (2, 4, 10) and nlc.shape(2, 4, 10) == (2, 10, 4)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # (N, L, A)
    assert nlc.from_nla(x) is x
    np.testing.assert_array_equal(ncl.from_nla(x), x.transpose(0, 2, 1))
    assert ncl.from_nla(x).flags.c_contiguous
    np.testing.assert_array_equal(ncl.to_nla(ncl.from_nla(x)), x)
    with pytest.raises(InputError, match="'nchw'"):
        layout_of("nchw")


def test_sequence_spec_is_shared_by_model_spec():
    assert SequenceSpec("ncl", "ACGT", 10).input_shape == (4, 10)
    assert SequenceSpec("nlc", "ACDEFGHIKLMNPQRSTVWY", 7).input_shape == (7, 20)
    spec = load_model(build_tiny_cnn(layout="nlc"))
    assert spec.sequence == SequenceSpec("nlc", spec.alphabet, spec.seq_len)
    assert spec.input_shape == spec.sequence.input_shape == (spec.seq_len, 4)


@pytest.mark.parametrize(
    "window, expected",
    [(None, (0, 50)), ((3, 9), (3, 9)), ([0, 50], (0, 50)), (np.array([4, 5]), (4, 5)),
     ("10:30", (10, 30)), (":20", (0, 20)), ("7:", (7, 50)), ((np.int64(1), np.int32(2)), (1, 2))],
)
def test_parse_window_forms(window, expected):
    got = parse_window(window, 50)
    assert got == expected and all(type(v) is int for v in got)


@pytest.mark.parametrize(
    "window, needle",
    [("ab", "START:END (e.g. 100:200), got 'ab'"), ("1:2:3", "got '1:2:3'"), ((1, 2, 3), "got (1, 2, 3)"),
     (5, "got 5"), (("a", 2), "got ('a', 2)"), ((5, 5), "window (5, 5) must satisfy"),
     ("40:60", "window 40:60 must satisfy 0 <= start < end <= 50"), ((-1, 4), "0 <= start < end <= 50")],
)
def test_parse_window_errors_name_the_value(window, needle):
    with pytest.raises(InputError) as info:
        parse_window(window, 50)
    assert needle in str(info.value)
