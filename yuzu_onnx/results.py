"""Result files: NPZ archives and folders of NPY files, written atomically.

Every file is first written to a temporary file in its destination folder, flushed to
disk (``fsync``) and then renamed into place with ``os.replace``, so a crash or an error
never leaves a partial result under the final name. Callers should run
:func:`check_output_path` before any long computation so that a missing or read-only
folder is reported up front.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from .atomic import atomic_file, write_json
from .errors import InputError

METADATA_KEY = "__metadata__"
MANIFEST = "metadata.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------- checks


def check_output_path(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Check up front that ``path`` can be written, and return it as a ``Path``.

    Parameters
    ----------
    path: the output file (``folder=False``) or output folder (``folder=True``).
    folder: for an output folder, the folder itself may be missing (it is created on
        write) but its parent must exist.

    Raises
    ------
    InputError: the containing folder is missing, is not a folder or is not writable, or
        ``path`` exists with the wrong kind (a folder where a file is wanted or vice versa).
    """
    p = Path(path)
    if folder and p.exists():
        if not p.is_dir():
            raise InputError(f"output folder {str(p)!r} exists and is not a folder")
        _probe_writable(p, f"output folder {str(p)!r}")
        return p
    if not folder and p.is_dir():
        raise InputError(f"output path {str(p)!r} is a folder; give a file name such as {str(p / 'ism.npz')!r}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"output folder {str(parent)!r} does not exist (for {str(p)!r}); create it first")
    if not parent.is_dir():
        raise InputError(f"{str(parent)!r} is not a folder (for output {str(p)!r})")
    _probe_writable(parent, f"output folder {str(parent)!r}")
    return p


def _probe_writable(folder: Path, what: str) -> None:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".yuzu-write-check-")
    except OSError as exc:
        raise InputError(f"{what} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(name)


def _as_saveable(name: str, value) -> np.ndarray:
    if name == "names" or (isinstance(value, (list, tuple)) and value and isinstance(value[0], str)):
        arr = np.asarray([str(v) for v in np.asarray(value, dtype=object).ravel()], dtype=str)
        return arr.reshape(np.shape(value)) if np.ndim(value) else arr
    arr = np.asarray(value)
    if arr.dtype == object:
        raise InputError(f"array {name!r} has dtype object; only numeric and string arrays can be saved")
    return arr


def _metadata_json(metadata: Mapping | None) -> str:
    try:
        return json.dumps(dict(metadata or {}), sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata cannot be stored as JSON: {exc}") from None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------- NPZ


def write_npz(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    *,
    metadata: Mapping | None = None,
    compress: bool = False,
) -> Path:
    """Write arrays to an ``.npz`` file atomically.

    Parameters
    ----------
    path: the output file (written exactly under this name).
    arrays: name → array; ``names`` (a list of strings) is stored as a unicode array.
    metadata: JSON-serialisable dict stored as a JSON string under ``__metadata__``.
    compress: use ``np.savez_compressed``.

    Returns
    -------
    Path: the written file.

    Raises
    ------
    InputError: unwritable destination, a reserved or non-string key, or an object array.
    """
    p = check_output_path(path)
    payload = _npz_payload(arrays)
    payload[METADATA_KEY] = np.array(_metadata_json(metadata))
    save = np.savez_compressed if compress else np.savez
    with atomic_file(p) as fh:
        save(fh, **payload)
    return p


def _npz_payload(arrays: Mapping[str, object]) -> dict[str, np.ndarray]:
    """``arrays`` as the arrays of an ``.npz``, their names checked (non-empty strings, not
    the metadata key)."""
    payload = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"array names must be non-empty strings, got {name!r}")
        if name == METADATA_KEY:
            raise InputError(f"{METADATA_KEY!r} is reserved for metadata; rename that array")
        payload[name] = _as_saveable(name, value)
    return payload


def _write_rows(fh, name: str, blocks: Iterable[np.ndarray], shape: tuple[int, ...]) -> None:
    """One ``.npy`` into the open binary file ``fh``: the header of ``shape`` (the dtype of the
    first block, float32 when there is none), then ``blocks`` of rows one after another."""
    from numpy.lib import format as npy_format

    stream = iter(blocks)
    first = next(stream, None)
    dtype = np.dtype(np.float32) if first is None else np.asarray(first).dtype
    npy_format.write_array_header_2_0(fh, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                                           "shape": shape})
    rows = 0
    for block in itertools.chain([] if first is None else [first], stream):
        block = np.ascontiguousarray(block, dtype=dtype)
        if block.shape[1:] != shape[1:]:
            raise ValueError(f"{name}: a block of shape {block.shape} in an array of shape {shape}")
        fh.write(memoryview(block).cast("B"))
        rows += len(block)
    if rows != shape[0]:
        raise ValueError(f"{name}: {rows} rows written, {shape[0]} expected")


def write_npy_in_rows(path: str | os.PathLike, blocks: Iterable[np.ndarray], shape: tuple[int, ...]) -> Path:
    """Write one ``.npy`` file atomically from ``blocks`` of rows (see :func:`write_npz_in_rows`)."""
    p = Path(path)
    with atomic_file(p, suffix=".tmp.npy") as fh:
        _write_rows(fh, p.name, blocks, tuple(int(d) for d in shape))
    return p


def write_npz_in_rows(
    path: str | os.PathLike,
    row_blocks: Mapping[str, Callable[[], Iterable[np.ndarray]]],
    shapes: Mapping[str, tuple[int, ...]],
    arrays: Mapping[str, np.ndarray],
    *,
    metadata: Mapping | None = None,
) -> Path:
    """Write an ``.npz`` that ``np.load`` reads like one of :func:`write_npz`, with the
    arrays of ``row_blocks`` streamed in blocks of rows: none of them is held whole.

    Parameters
    ----------
    path: the output file (written atomically).
    row_blocks: name → a function returning that array's blocks of rows in order (one
        dtype, that of the first block); their rows must add up to ``shapes[name][0]``.
    shapes: name → the whole array's shape.
    arrays: further arrays written whole (``x``, ``names``).
    metadata: stored as :func:`write_npz` stores it, when given.
    """
    import zipfile

    from numpy.lib import format as npy_format

    p = check_output_path(path)
    with atomic_file(p) as fh, zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, blocks in row_blocks.items():
            with zf.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                _write_rows(member, name, blocks(), tuple(int(d) for d in shapes[name]))
        payload = _npz_payload(arrays)
        if metadata is not None:
            payload[METADATA_KEY] = np.array(_metadata_json(metadata))
        for name, value in payload.items():
            with zf.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                npy_format.write_array(member, value, allow_pickle=False)
    return p


def read_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read an ``.npz`` written by :func:`write_npz`.

    Returns
    -------
    (arrays, metadata): the arrays without ``__metadata__``, and the metadata dict
    (empty when the file has none).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"result file {str(p)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise InputError(f"cannot read {str(p)!r} as an NPZ file: {type(exc).__name__}: {exc}") from None
    raw = arrays.pop(METADATA_KEY, None)
    metadata = json.loads(str(raw)) if raw is not None else {}
    return arrays, metadata


# --------------------------------------------------------------------------- NPY folders


def npy_file_name(name: str) -> str:
    """The ``.npy`` file name for an array name (unsafe characters become ``_``)."""
    safe = _SAFE.sub("_", name).strip(".") or "array"
    return f"{safe}.npy"


def _file_names(names) -> dict[str, str]:
    files: dict[str, str] = {}
    used: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise InputError(f"array names must be non-empty strings, got {name!r}")
        fname = npy_file_name(name)
        if fname.lower() in used or fname == MANIFEST:
            other = used.get(fname.lower(), MANIFEST)
            raise InputError(f"arrays {other!r} and {name!r} would share the file name {fname!r}")
        used[fname.lower()] = name
        files[name] = fname
    return files


def _write_manifest(folder: Path, metadata: Mapping | None, entries: Mapping[str, dict]) -> None:
    doc = {"metadata": json.loads(_metadata_json(metadata)), "arrays": dict(entries)}
    write_json(folder / MANIFEST, doc, sort_keys=True)


def write_npy_dir(
    folder: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    *,
    metadata: Mapping | None = None,
) -> Path:
    """Write one ``.npy`` per array, plus ``metadata.json``, each file atomically.

    ``metadata.json`` holds ``{"metadata": ..., "arrays": {name: {"file", "shape",
    "dtype"}}}``, the map from array names to files (unsafe characters in names become
    ``_``). The folder is created when its parent exists.

    Returns
    -------
    Path: the folder.
    """
    p = check_output_path(folder, folder=True)
    files = _file_names(arrays)
    saveable = {name: _as_saveable(name, value) for name, value in arrays.items()}
    p.mkdir(exist_ok=True)
    entries = {}
    for name, arr in saveable.items():
        with atomic_file(p / files[name], suffix=".tmp.npy") as fh:
            np.save(fh, arr, allow_pickle=False)
        entries[name] = {"file": files[name], "shape": list(arr.shape), "dtype": str(arr.dtype)}
    _write_manifest(p, metadata, entries)
    return p


def read_npy_dir(folder: str | os.PathLike, *, mmap: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Read a folder written by :func:`write_npy_dir` or :class:`NpyStreamWriter`.

    Parameters
    ----------
    mmap: memory-map the arrays (read-only) instead of loading them.

    Returns
    -------
    (arrays, metadata)
    """
    p = Path(folder)
    manifest = p / MANIFEST
    if not manifest.is_file():
        raise InputError(f"{str(p)!r} is not a yuzu-onnx result folder (no {MANIFEST})")
    doc = json.loads(manifest.read_text("utf-8"))
    mode = "r" if mmap else None
    arrays = {
        name: np.load(p / entry["file"], mmap_mode=mode, allow_pickle=False)
        for name, entry in doc.get("arrays", {}).items()
    }
    return arrays, doc.get("metadata", {})


class NpyStreamWriter:
    """Write arrays larger than memory into a folder of ``.npy`` files, block by block.

    Each array is a memory-mapped temporary ``.npy`` file in ``folder`` until
    :meth:`finish` flushes it and renames it into place; :meth:`abort` (or an exception
    inside a ``with`` block) removes the temporary files.

    Parameters
    ----------
    folder: the output folder (created when its parent exists).
    shapes: array name → full shape; rows are the first axis.
    dtype: the dtype of every array.

    Examples
    --------
    >>> with NpyStreamWriter(out, {"y": (n, 4, 100)}) as w:  # doctest: +SKIP
    ...     for start, block in blocks:
    ...         w.write("y", start, block)
    """

    def __init__(self, folder: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]], dtype=np.float32):
        self.folder = check_output_path(folder, folder=True)
        self.dtype = np.dtype(dtype)
        self.shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        for name, shape in self.shapes.items():
            if len(shape) < 1 or any(d < 0 for d in shape):
                raise InputError(f"array {name!r} needs a shape with a row axis, got {shape}")
        self.files = _file_names(self.shapes)
        self.folder.mkdir(exist_ok=True)
        self._tmp: dict[str, Path] = {}
        self._maps: dict[str, np.memmap] = {}
        self._written: dict[str, np.ndarray] = {}
        self._done = False
        try:
            for name, shape in self.shapes.items():
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{self.files[name]}.", suffix=".tmp.npy")
                os.close(fd)
                self._tmp[name] = Path(tmp)
                self._maps[name] = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)
                self._written[name] = np.zeros(shape[0], dtype=bool)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, start_row: int, block: np.ndarray) -> None:
        """Write ``block`` into rows ``start_row : start_row + len(block)`` of ``name``."""
        if self._done:
            raise InputError("this writer is already finished or aborted")
        if name not in self._maps:
            raise InputError(f"no array {name!r}; arrays: {', '.join(self.shapes)}")
        block = np.asarray(block)
        shape = self.shapes[name]
        if block.shape[1:] != shape[1:] or block.ndim != len(shape):
            raise InputError(
                f"block of shape {block.shape} does not fit array {name!r} of shape {shape} "
                f"(rows must have shape {shape[1:]})"
            )
        stop = start_row + block.shape[0]
        if start_row < 0 or stop > shape[0]:
            raise InputError(f"rows {start_row}:{stop} are outside array {name!r} with {shape[0]} rows")
        self._maps[name][start_row:stop] = block
        self._written[name][start_row:stop] = True

    def finish(self, *, metadata: Mapping | None = None) -> Path:
        """Flush every array, rename it into place and write ``metadata.json``.

        Raises
        ------
        InputError: some rows were never written (the temporary files are removed).
        """
        if self._done:
            raise InputError("this writer is already finished or aborted")
        missing = {name: int((~w).sum()) for name, w in self._written.items() if not w.all()}
        if missing:
            self.abort()
            detail = ", ".join(f"{name!r}: {n} rows" for name, n in missing.items())
            raise InputError(f"stream writer finished with rows never written ({detail})")
        entries = {}
        for name, mm in self._maps.items():
            mm.flush()
            with open(self._tmp[name], "rb+") as fh:
                os.fsync(fh.fileno())
            entries[name] = {"file": self.files[name], "shape": list(self.shapes[name]), "dtype": str(self.dtype)}
        self._maps.clear()
        for name, tmp in self._tmp.items():
            os.replace(tmp, self.folder / self.files[name])
        self._tmp.clear()
        _write_manifest(self.folder, metadata, entries)
        self._done = True
        return self.folder

    def abort(self) -> None:
        """Drop the temporary files; nothing is left under the final names."""
        self._maps.clear()
        for tmp in self._tmp.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._tmp.clear()
        self._done = True

    def __enter__(self) -> NpyStreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finish()
