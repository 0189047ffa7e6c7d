"""Atomic files (atomic.py): all or nothing under the final name, usual permissions."""

from __future__ import annotations

import json
import os

import pytest

from yuzu_onnx.atomic import atomic_file, default_file_mode, write_json


def test_atomic_file_writes_and_renames(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_file(path) as fh:
        fh.write(b"data")
        assert not path.exists()
    assert path.read_bytes() == b"data"
    assert os.stat(path).st_mode & 0o777 == default_file_mode()
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_file_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write(b"new")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_write_json(tmp_path):
    path = tmp_path / "doc.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    text = path.read_text("utf-8")
    assert text.endswith("}\n") and text.index('"b"') < text.index('"a"')
    assert json.loads(text) == {"b": 1, "a": [1, 2]}
    write_json(path, {"b": 1, "a": 2}, sort_keys=True)
    assert path.read_text("utf-8").index('"a"') < path.read_text("utf-8").index('"b"')
