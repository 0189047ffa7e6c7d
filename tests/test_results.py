"""Result files: atomic NPZ and NPY-folder writers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from yuzu_onnx import results
from yuzu_onnx.errors import InputError
from yuzu_onnx.results import (
    NpyStreamWriter,
    check_output_path,
    read_npy_dir,
    read_npz,
    write_npy_dir,
    write_npz,
    write_npz_in_rows,
)


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "ism/logits": rng.normal(size=(3, 4, 10, 2)).astype(np.float32),
        "names": ["seq a", "séq b", "c"],
    }


def test_write_read_npz_roundtrip(tmp_path):
    path = tmp_path / "out.npz"
    meta = {"model": "m.onnx", "window": [0, 10], "n": np.int64(3)}
    assert write_npz(path, _arrays(), metadata=meta) == path
    arrays, metadata = read_npz(path)
    assert set(arrays) == {"ism/logits", "names"}
    np.testing.assert_array_equal(arrays["ism/logits"], _arrays()["ism/logits"])
    assert arrays["names"].dtype.kind == "U"
    assert arrays["names"].tolist() == ["seq a", "séq b", "c"]
    assert metadata == {"model": "m.onnx", "window": [0, 10], "n": 3}
    with np.load(path) as raw:  # plain numpy can read it, metadata is a JSON string
        assert json.loads(str(raw["__metadata__"]))["model"] == "m.onnx"
    assert os.listdir(tmp_path) == ["out.npz"]
    write_npz(path, {"y": np.ones(2)}, compress=True)  # overwrite in place
    arrays, metadata = read_npz(path)
    assert set(arrays) == {"y"} and metadata == {}


def test_npz_written_in_rows_reads_like_one_written_whole(tmp_path):
    ism = _arrays()["ism/logits"]
    counts = np.arange(6, dtype=np.float16).reshape(3, 2)  # a block's dtype is kept
    blocks = {"ism/logits": lambda: iter([ism[:2], ism[2:]]), "counts": lambda: iter([counts[:1], counts[1:]]),
              "none": lambda: iter([])}
    shapes = {"ism/logits": ism.shape, "counts": counts.shape, "none": (0, 5)}
    meta = {"model": "m.onnx", "window": [0, 10]}
    write_npz_in_rows(tmp_path / "rows.npz", blocks, shapes, {"names": ["seq a", "séq b", "c"]}, metadata=meta)
    write_npz(tmp_path / "whole.npz", {**_arrays(), "counts": counts, "none": np.zeros((0, 5), np.float32)},
              metadata=meta)
    rows, rows_meta = read_npz(tmp_path / "rows.npz")
    whole, whole_meta = read_npz(tmp_path / "whole.npz")
    assert set(rows) == set(whole) and rows_meta == whole_meta
    for name, value in whole.items():
        assert rows[name].dtype == value.dtype and rows[name].shape == value.shape
        np.testing.assert_array_equal(rows[name], value)
    with pytest.raises(ValueError, match=r"ism/logits: 2 rows written, 3 expected"):
        write_npz_in_rows(tmp_path / "short.npz", {"ism/logits": lambda: iter([ism[:2]])}, shapes, {})
    with pytest.raises(ValueError, match=r"a block of shape \(1, 2\) in an array of shape \(3, 4, 10, 2\)"):
        write_npz_in_rows(tmp_path / "bad.npz", {"ism/logits": lambda: iter([counts[:1]])}, shapes, {})
    assert sorted(os.listdir(tmp_path)) == ["rows.npz", "whole.npz"]  # a failed write leaves nothing
    write_npz_in_rows(tmp_path / "bare.npz", {}, {}, {"y": np.ones(2)})
    with np.load(tmp_path / "bare.npz") as raw:
        assert list(raw) == ["y"]  # no metadata asked for, none written


def test_write_npz_leaves_no_partial_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "out.npz"

    def exploding_savez(fh, **arrays):
        fh.write(b"PK partial data")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(results.np, "savez", exploding_savez)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_npz(path, {"y": np.ones(3)})
    assert os.listdir(tmp_path) == []


def test_write_npz_keeps_old_file_when_overwrite_fails(tmp_path, monkeypatch):
    path = tmp_path / "out.npz"
    write_npz(path, {"y": np.arange(3)})

    def exploding_savez(fh, **arrays):
        fh.write(b"garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(results.np, "savez", exploding_savez)
    with pytest.raises(KeyboardInterrupt):
        write_npz(path, {"y": np.ones(3)})
    monkeypatch.undo()
    np.testing.assert_array_equal(read_npz(path)[0]["y"], np.arange(3))
    assert os.listdir(tmp_path) == ["out.npz"]


def test_write_npz_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_npz(tmp_path / "missing" / "out.npz", {"y": np.ones(2)})
    with pytest.raises(InputError, match="is a folder"):
        write_npz(tmp_path, {"y": np.ones(2)})
    with pytest.raises(InputError, match="reserved"):
        write_npz(tmp_path / "a.npz", {"__metadata__": np.ones(2)})
    with pytest.raises(InputError, match="object"):
        write_npz(tmp_path / "a.npz", {"y": np.array([1, "a", None], dtype=object)})
    with pytest.raises(InputError, match="JSON"):
        write_npz(tmp_path / "a.npz", {"y": np.ones(2)}, metadata={"f": object()})
    assert os.listdir(tmp_path) == []


def test_read_npz_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_npz(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(InputError, match="cannot read"):
        read_npz(junk)


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "x.npz") == tmp_path / "x.npz"
    with pytest.raises(InputError, match=r"output folder .*missing.* does not exist"):
        check_output_path(tmp_path / "missing" / "x.npz")
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(InputError, match="is not a folder"):
        check_output_path(afile / "x.npz")
    with pytest.raises(InputError, match="exists and is not a folder"):
        check_output_path(afile, folder=True)
    assert check_output_path(tmp_path / "newdir", folder=True) == tmp_path / "newdir"
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "a" / "b", folder=True)
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # the write probe cleans up


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_check_output_path_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            check_output_path(ro / "x.npz")
    finally:
        ro.chmod(0o700)


def test_write_npy_dir_roundtrip(tmp_path):
    folder = tmp_path / "out"
    write_npy_dir(folder, _arrays(), metadata={"k": 1})
    assert sorted(os.listdir(folder)) == ["ism_logits.npy", "metadata.json", "names.npy"]
    manifest = json.loads((folder / "metadata.json").read_text())
    assert manifest["metadata"] == {"k": 1}
    assert manifest["arrays"]["ism/logits"] == {"file": "ism_logits.npy", "shape": [3, 4, 10, 2], "dtype": "float32"}
    arrays, metadata = read_npy_dir(folder)
    np.testing.assert_array_equal(arrays["ism/logits"], _arrays()["ism/logits"])
    assert arrays["names"].tolist() == ["seq a", "séq b", "c"]
    assert metadata == {"k": 1}
    np.testing.assert_array_equal(np.load(folder / "ism_logits.npy"), _arrays()["ism/logits"])


def test_write_npy_dir_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_npy_dir(tmp_path / "a" / "b", {"y": np.ones(2)})
    with pytest.raises(InputError, match="share the file name"):
        write_npy_dir(tmp_path / "out", {"a/b": np.ones(2), "a:b": np.ones(2)})
    with pytest.raises(InputError, match="not a yuzu-onnx result folder"):
        read_npy_dir(tmp_path)


def test_stream_writer(tmp_path):
    folder = tmp_path / "stream"
    full = np.arange(7 * 3 * 2, dtype=np.float32).reshape(7, 3, 2)
    with NpyStreamWriter(folder, {"y": (7, 3, 2), "z": (2,)}) as writer:
        for start in range(0, 7, 3):
            writer.write("y", start, full[start : start + 3])
        writer.write("z", 0, np.array([5, 6]))
        # nothing appears under the final names before finish()
        assert not (folder / "y.npy").exists()
    assert sorted(os.listdir(folder)) == ["metadata.json", "y.npy", "z.npy"]
    arrays, metadata = read_npy_dir(folder, mmap=True)
    np.testing.assert_array_equal(arrays["y"], full)
    np.testing.assert_array_equal(arrays["z"], [5, 6])
    assert metadata == {}


def test_stream_writer_finish_with_metadata(tmp_path):
    writer = NpyStreamWriter(tmp_path / "s", {"y": (2, 2)}, dtype=np.float64)
    writer.write("y", 0, np.eye(2))
    writer.finish(metadata={"model": "m"})
    arrays, metadata = read_npy_dir(tmp_path / "s")
    assert arrays["y"].dtype == np.float64 and metadata == {"model": "m"}
    with pytest.raises(InputError, match="already finished"):
        writer.write("y", 0, np.eye(2))


def test_stream_writer_error_midway_leaves_nothing(tmp_path):
    folder = tmp_path / "stream"
    with pytest.raises(RuntimeError, match="model crashed"):
        with NpyStreamWriter(folder, {"y": (6, 2)}) as writer:
            writer.write("y", 0, np.ones((3, 2)))
            raise RuntimeError("model crashed")
    assert os.listdir(folder) == []


def test_stream_writer_checks(tmp_path):
    writer = NpyStreamWriter(tmp_path / "s", {"y": (4, 2)})
    with pytest.raises(InputError, match="no array 'q'"):
        writer.write("q", 0, np.ones((1, 2)))
    with pytest.raises(InputError, match="does not fit"):
        writer.write("y", 0, np.ones((1, 3)))
    with pytest.raises(InputError, match="outside"):
        writer.write("y", 3, np.ones((2, 2)))
    writer.write("y", 0, np.ones((3, 2)))
    with pytest.raises(InputError, match="'y': 1 rows"):
        writer.finish()
    assert os.listdir(tmp_path / "s") == []
    with pytest.raises(InputError, match="does not exist"):
        NpyStreamWriter(tmp_path / "x" / "y", {"y": (1,)})
