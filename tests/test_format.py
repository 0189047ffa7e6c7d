"""The converted-model format: the metadata record written by emit and read by the session."""

from __future__ import annotations

import json
from dataclasses import replace

import onnx
import pytest

from yuzu_onnx.convert import convert_model
from yuzu_onnx.errors import ModelError
from yuzu_onnx.format import (
    FORMAT,
    GAUSSIAN_KEYS,
    KEYS,
    MEMORY_KEYS,
    PREFIX,
    GaussianInfo,
    is_converted,
    metadata_of,
    read_converted_info,
    write_converted_info,
)
from yuzu_onnx.importer import load_model
from yuzu_onnx.layout import SequenceSpec
from yuzu_onnx.testing import build_bpnet, build_tiny_cnn

# what yuzu-onnx 0.1.0 (format ism/1) writes for a tiny ncl CNN, entry for entry
WRITTEN_BY_0_1_0 = {
    "yuzu_onnx.format": "ism/1",
    "yuzu_onnx.version": "0.1.0",
    "yuzu_onnx.source_sha256": "ab" * 32,
    "yuzu_onnx.input": "x",
    "yuzu_onnx.layout": "ncl",
    "yuzu_onnx.alphabet": "ACGT",
    "yuzu_onnx.seq_len": "64",
    "yuzu_onnx.window": "0:64",
    "yuzu_onnx.probes": "spaced",
    "yuzu_onnx.outputs": '{"y": {"reduce": "none"}}',
    "yuzu_onnx.stages": '[{"spacing": 5, "probes": 15, "probes_with_unknown_bases": 20, "receptive_field": 5, '
                        '"nodes": 2}]',
    "yuzu_onnx.first_conv_shortcut": '["conv0"]',
    "yuzu_onnx.tail_chunk": "64",
    "yuzu_onnx.peak_bytes_per_sequence": "123456",
    "yuzu_onnx.naive_flops": "1.23457e+09",
    "yuzu_onnx.rewritten_flops": "4.5e+07",
    "yuzu_onnx.fallback": "",
    "yuzu_onnx.region_stops": '["Flatten"]',
    "yuzu_onnx.tail": "vectors",
}


@pytest.fixture(scope="module")
def converted() -> onnx.ModelProto:
    return convert_model(load_model(build_bpnet(layout="nlc", seq_len=64, seed=1)), window="8:40").model


def test_emitted_metadata_is_the_record_written_back(converted):
    info = read_converted_info(converted)
    assert list(info.to_props().items()) == [(p.key, p.value) for p in converted.metadata_props]
    written = [k.removeprefix(PREFIX) for k in info.to_props()]
    assert [k for k in written if k not in MEMORY_KEYS] == list(KEYS)
    assert written[written.index("peak_bytes_per_sequence") + 1] == "fixed_bytes" and info.fixed_bytes > 0
    assert info.sequence == SequenceSpec("nlc", "ACGT", 64) and info.window == (8, 40)
    assert info.probes == "spaced" and info.gaussian is None and info.fallback_reason is None
    assert set(info.reductions) == {o.name for o in converted.graph.output}
    assert is_converted(converted) and is_converted(metadata_of(converted))
    assert not is_converted(build_tiny_cnn(layout="ncl"))


def test_reads_what_version_0_1_0_writes():
    info = read_converted_info(WRITTEN_BY_0_1_0)
    assert info.to_props() == WRITTEN_BY_0_1_0
    assert list(info.to_props()) == list(WRITTEN_BY_0_1_0)
    assert (info.layout, info.alphabet_size, info.seq_len) == ("ncl", 4, 64)
    assert info.first_conv_shortcut == ("conv0",) and info.region_stops == ("Flatten",)
    assert info.naive_flops == pytest.approx(1.23457e9) and info.peak_bytes_per_sequence == 123456
    assert info.stages[0]["spacing"] == 5 and info.tail == "vectors" and info.version == "0.1.0"


def test_optional_keys_take_their_defaults():
    required = {k: v for k, v in WRITTEN_BY_0_1_0.items()
                if k.removeprefix(PREFIX) in ("format", "input", "layout", "alphabet", "seq_len", "window", "outputs")}
    info = read_converted_info(required)
    assert (info.probes, info.tail, info.version, info.source_sha256) == ("spaced", "materialised", None, "")
    assert (info.stages, info.naive_flops, info.peak_bytes_per_sequence) == ((), 0.0, 0)


def test_gaussian_entries_come_last_and_round_trip():
    gaussian = GaussianInfo(alpha=1.05, alpha_mode="auto", pearson_r=0.999991234, seed=3, condition_number=231.84)
    info = read_converted_info(WRITTEN_BY_0_1_0)
    props = replace(info, probes="gaussian", gaussian=gaussian).to_props()
    keys = [k.removeprefix(PREFIX) for k in props]
    assert keys[-7:] == ["probes", "stages", *GAUSSIAN_KEYS]
    assert props[PREFIX + "alpha"] == "1.05" and props[PREFIX + "pearson_r"] == "0.99999123"
    assert props[PREFIX + "condition_number"] == "231.8" and props[PREFIX + "seed"] == "3"
    again = read_converted_info(props)
    assert again.gaussian == GaussianInfo(1.05, "auto", 0.99999123, 3, 231.8)
    assert again.to_props() == props


@pytest.mark.parametrize(
    "edit, needle",
    [
        ({"yuzu_onnx.window": None}, "no yuzu_onnx.window"),
        ({"yuzu_onnx.seq_len": "sixty"}, "yuzu_onnx.seq_len = 'sixty'"),
        ({"yuzu_onnx.layout": "nchw"}, "yuzu_onnx.layout = 'nchw'"),
        ({"yuzu_onnx.window": "3-9"}, "yuzu_onnx.window = '3-9'"),
        ({"yuzu_onnx.outputs": "[1]"}, "yuzu_onnx.outputs"),
        ({"yuzu_onnx.stages": "{"}, "yuzu_onnx.stages"),
        ({"yuzu_onnx.tail": "sideways"}, "yuzu_onnx.tail"),
        ({"yuzu_onnx.window": "10:99"}, "does not fit length 64"),
        ({"yuzu_onnx.format": "ism/0"}, "'ism/0'"),
    ],
)
def test_bad_metadata_names_the_key(edit, needle):
    props = {k: v for k, v in {**WRITTEN_BY_0_1_0, **edit}.items() if v is not None}
    with pytest.raises(ModelError, match="convert|reads") as info:
        read_converted_info(props, source="'m.onnx'")
    assert needle in str(info.value) and "'m.onnx'" in str(info.value)


def test_unconverted_model_and_graph_checks(converted):
    with pytest.raises(ModelError, match="not a converted yuzu-onnx model"):
        read_converted_info(build_tiny_cnn(layout="ncl"))
    edited = onnx.ModelProto()
    edited.CopyFrom(converted)
    info = read_converted_info(converted)
    outputs = json.dumps({"other": {"reduce": "none"}})
    write_converted_info(edited, replace(info, outputs=json.loads(outputs)))
    with pytest.raises(ModelError, match="outputs"):
        read_converted_info(edited)
    write_converted_info(edited, replace(info, input_name="nope"))
    with pytest.raises(ModelError, match="'nope'"):
        read_converted_info(edited)
    assert read_converted_info(metadata_of(edited)).input_name == "nope"  # props alone: no graph to check
    assert FORMAT == "ism/1"
