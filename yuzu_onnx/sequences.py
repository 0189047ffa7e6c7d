"""Sequences in: FASTA, NPY/NPZ and BED input, checked against the model.

Everything here produces or checks a float32 one-hot array in the model's layout:
``(N, A, L)`` for ``"ncl"`` models and ``(N, L, A)`` for ``"nlc"`` models. The encoding
itself (letters to columns, all-zero columns for ``N``) is :mod:`yuzu_onnx.encoding`;
BED regions are read from a genome FASTA by :mod:`yuzu_onnx.genome`.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .encoding import SequenceBatch, check_layout, one_hot
from .errors import InputError, SequenceError, option
from .layout import NCL, NLC
from .textfiles import GZIP_MAGIC, read_text

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from .importer import ModelSpec

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".faa", ".frn", ".fas", ".mpfa", ".seq")
BED_SUFFIXES = (".bed",)
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
SUM_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- validation


def check_one_hot(
    X,
    *,
    layout: str,
    alphabet_size: int,
    seq_len: int | None = None,
    what: str = "X",
) -> np.ndarray:
    """Check a one-hot array and return it as a C-contiguous float32 array.

    Parameters
    ----------
    X: shape=(N, A, L) for ``"ncl"`` or (N, L, A) for ``"nlc"``; a single sequence,
        (A, L) or (L, A), is taken as a batch of one (as the CLI reads a 2-D ``.npy``).
    layout: ``"ncl"`` or ``"nlc"``.
    alphabet_size: ``A``.
    seq_len: ``L``, or ``None`` to accept any length.
    what: the argument's name, used in messages.

    Raises
    ------
    SequenceError: wrong rank or shape, non-finite values, values outside ``[0, 1]``, or a
        column summing to more than 1; the message names the sequence and the position.
    """
    check_layout(layout)
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:
            raise SequenceError(f"{what} cannot be read as an array: {exc}") from None
    if X.dtype.kind not in "biuf":
        raise SequenceError(f"{what} has dtype {X.dtype}; a float32 one-hot array is needed")
    expected = _expected_shape(layout, alphabet_size, seq_len)
    if X.ndim == 2 and X.shape[0 if layout == NCL else 1] == alphabet_size:
        X = X[None]
    if X.ndim != 3:
        raise SequenceError(
            f"{what} has rank {X.ndim} (shape {X.shape}); expected a rank-3 array of shape "
            f"{expected} ({layout} layout), or one sequence of shape {expected.replace('(N, ', '(')}"
        )
    a_axis, l_axis = (1, 2) if layout == NCL else (2, 1)
    if X.shape[a_axis] != alphabet_size:
        hint = ""
        if X.shape[l_axis] == alphabet_size:
            other = NLC if layout == NCL else NCL
            hint = f"; it looks like the {other} layout: transpose it with x.transpose(0, 2, 1)"
        raise SequenceError(
            f"{what} has shape {X.shape} with alphabet axis {a_axis} of size {X.shape[a_axis]}, "
            f"but the model's alphabet has {alphabet_size} letters; expected {expected}{hint}"
        )
    if seq_len is not None and X.shape[l_axis] != seq_len:
        raise SequenceError(
            f"{what} has sequences of length {X.shape[l_axis]} (shape {X.shape}) but the model "
            f"needs length {seq_len}; expected {expected}"
        )
    X = np.ascontiguousarray(X, dtype=np.float32)
    xn = X if layout == NLC else X.transpose(0, 2, 1)  # view (N, L, A)
    if not np.isfinite(X).all():
        n, j = _first(~np.isfinite(xn).all(axis=2))
        raise SequenceError(f"{what} has a non-finite value (NaN or inf) in sequence {n} at position {j}")
    if X.size and (X.min() < 0 or X.max() > 1):
        n, j = _first(((xn < 0) | (xn > 1)).any(axis=2))
        col = xn[n, j]
        raise SequenceError(
            f"{what} has a value outside [0, 1] in sequence {n} at position {j} "
            f"(column {np.array2string(col, precision=4)}); one-hot values must be in [0, 1]"
        )
    sums = xn.sum(axis=2, dtype=np.float64)
    if sums.size and sums.max() > 1 + SUM_TOLERANCE:
        n, j = _first(sums > 1 + SUM_TOLERANCE)
        raise SequenceError(
            f"{what} has a column summing to {sums[n, j]:.6g} > 1 in sequence {n} at position {j}; "
            "each position must hold at most one base"
        )
    return X


def validate_one_hot(X, spec: ModelSpec) -> np.ndarray:
    """Check a one-hot array against a model and return it as float32.

    Parameters
    ----------
    X: shape=(N, *spec.input_shape): ``(N, A, L)`` for ncl models, ``(N, L, A)`` for nlc.
    spec: the model, from :func:`yuzu_onnx.importer.load_model`.

    Raises
    ------
    SequenceError: see :func:`check_one_hot`.
    """
    return check_one_hot(X, layout=spec.layout, alphabet_size=spec.alphabet_size, seq_len=spec.seq_len)


def _expected_shape(layout: str, size: int, length: int | None) -> str:
    ell = "L" if length is None else str(length)
    return f"(N, {size}, {ell})" if layout == NCL else f"(N, {ell}, {size})"


def _first(mask: np.ndarray) -> tuple[int, int]:
    n, j = np.argwhere(mask)[0]
    return int(n), int(j)


# --------------------------------------------------------------------------- FASTA


def read_fasta(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read a FASTA file, plain or gzipped.

    Records may span several lines; blank lines and ``;`` comment lines are skipped. A
    record's name is the first word of its header line.

    Returns
    -------
    list of ``(name, sequence)``

    Raises
    ------
    SequenceError: an empty file, sequence text before the first header, or a record
        without sequence.
    """
    return parse_fasta(read_text(path), source=str(path))


def parse_fasta(text: str, *, source: str = "<string>") -> list[tuple[str, str]]:
    """Parse FASTA text; see :func:`read_fasta`."""
    records: list[tuple[str, list[str], int]] = []
    for lineno, line in enumerate(io.StringIO(text), start=1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            header = line[1:].strip()
            name = header.split()[0] if header else f"record_{len(records) + 1}"
            records.append((name, [], lineno))
        elif not records:
            raise SequenceError(
                f"{source!r} line {lineno}: sequence text before the first '>' header; "
                "every FASTA record needs a '>name' line"
            )
        else:
            records[-1][1].append("".join(line.split()))
    if not records:
        raise SequenceError(f"{source!r} contains no FASTA records (expected lines starting with '>')")
    out = []
    for name, chunks, lineno in records:
        seq = "".join(chunks)
        if not seq:
            raise SequenceError(f"{source!r} line {lineno}: record {name!r} has no sequence")
        out.append((name, seq))
    return out


# --------------------------------------------------------------------------- dispatch


def sequence_file_kind(path: str | os.PathLike) -> tuple[Path, str]:
    """``(path, format)`` of an existing sequence file (format as :func:`_sniff`); an
    :class:`InputError` names a missing path or one that is not a file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"sequence file {str(p)!r} does not exist")
    if not p.is_file():
        raise InputError(f"sequence path {str(p)!r} is not a file")
    return p, _sniff(p)


def _sniff(path: Path) -> str:
    """The input format of a file: ``npy``, ``npz``, ``fasta`` or ``bed``."""
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith(".npy"):
        return "npy"
    if stem.endswith(".npz"):
        return "npz"
    if stem.endswith(FASTA_SUFFIXES):
        return "fasta"
    if stem.endswith(BED_SUFFIXES):
        return "bed"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if head.startswith(GZIP_MAGIC):
        with gzip.open(path, "rb") as fh:
            try:
                head = fh.read(64)
            except (OSError, EOFError):
                head = b""
    if head.lstrip()[:1] == b">":
        return "fasta"
    raise InputError(
        f"cannot tell the format of {str(path)!r}; give a .fa/.fasta (optionally .gz), "
        ".npy, .npz or .bed file"
    )


def read_sequences(
    path: str | os.PathLike,
    spec: ModelSpec,
    *,
    genome: str | os.PathLike | None = None,
    strand: bool = False,
) -> SequenceBatch:
    """Read sequences for a model from FASTA, NPY, NPZ or BED (with a genome FASTA).

    Parameters
    ----------
    path: ``.fa``/``.fasta``/``.fna`` (optionally gzipped), ``.npy``, ``.npz`` or ``.bed``.
        Other names are recognised by their content.
    spec: the model, from :func:`yuzu_onnx.importer.load_model`.
    genome: the genome FASTA for BED input.
    strand: BED input only: reverse-complement regions on the ``-`` strand.

    Returns
    -------
    SequenceBatch: ``x`` of shape ``(N, *spec.input_shape)``, float32.

    Raises
    ------
    InputError: a missing file or unknown format; BED without ``genome``.
    SequenceError: sequences that do not fit the model.
    """
    p, kind = sequence_file_kind(path)
    if kind == "npy":
        return _read_npy(p, spec)
    if kind == "npz":
        return _read_npz(p, spec)
    if kind == "bed":
        if genome is None:
            raise InputError(f"BED input {str(p)!r} needs a genome FASTA ({option('genome')}) to read sequences from")
        from .genome import extract_regions, read_bed

        return extract_regions(
            read_bed(p), genome, spec.seq_len, strand=strand, alphabet=spec.alphabet, layout=spec.layout
        )
    records = read_fasta(p)
    return batch_from_strings(records, spec)


def input_length(
    path: str | os.PathLike, *, layout: str, alphabet_size: int, what: str = "the model's length is dynamic"
) -> int:
    """The one sequence length of an input file, for a model whose length is dynamic.

    FASTA: every record's length (they must agree); NPY/NPZ: the length axis of the array
    (``(N, A, L)`` or ``(N, L, A)`` by ``layout``, or one sequence without ``N``); BED: the
    regions' length (they must agree, or ``--seq-len`` resizes them).

    Raises
    ------
    SequenceError: records or regions of different lengths, naming the first that
        differs; an array that is not rank 2 or 3.
    InputError: a missing file or unknown format.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"sequence file {str(p)!r} does not exist")
    kind = _sniff(p)
    if kind in ("npy", "npz"):
        if kind == "npy":
            shape = tuple(np.load(p, mmap_mode="r", allow_pickle=False).shape)
        else:
            with _load_array(p, "NPZ file") as data:
                keys = [k for k in data.files if k not in ("names", "__metadata__")]
                shape = tuple(np.asarray(data["x" if "x" in data.files else keys[0]]).shape) if keys else ()
        if len(shape) not in (2, 3):
            raise SequenceError(f"{str(p)!r} holds an array of shape {shape}; expected (N, A, L) or (N, L, A)")
        length_axis = (2 if layout == NCL else 1) - (3 - len(shape))
        return int(shape[length_axis])
    if kind == "bed":
        from .genome import read_bed

        items = [(r.name or f"{r.chrom}:{r.start}-{r.end}", r.end - r.start) for r in read_bed(p)]
        noun, fix = "region", f"; give {option('seq_len')} to centre every region on one length"
    else:
        items = [(name, len(seq)) for name, seq in read_fasta(p)]
        noun, fix = "sequence", "; split the file by length"
    first_name, first_len = items[0]
    for name, length in items[1:]:
        if length != first_len:
            raise SequenceError(
                f"{what}, so it is taken from the input, but {noun} {name!r} has length {length} and the "
                f"first, {first_name!r}, has length {first_len}; one run takes one length{fix}"
            )
    return first_len


def length_from_sequences(
    path_or_proto: str | os.PathLike | onnx.ModelProto,
    X,
    *,
    seq_len: int | None = None,
    input_name: str | None = None,
    layout: str = "auto",
    alphabet: str | int | None = None,
) -> int | None:
    """The ``seq_len`` to load a model with for the sequences ``X`` (an array, or a
    sequence file for :func:`input_length`): ``seq_len`` when given,
    ``None`` when the model fixes its length, else the length of the sequences."""
    if seq_len is not None:
        return seq_len
    from .importer import input_axes

    axes = input_axes(path_or_proto, input_name=input_name, layout=layout, alphabet=alphabet)
    if axes.seq_len is not None:
        return None
    if isinstance(X, (str, os.PathLike)):
        return input_length(X, layout=axes.layout, alphabet_size=axes.alphabet_size)
    shape = np.shape(X)
    if len(shape) not in (2, 3):
        return None  # the sequence check names the problem
    return int(shape[(2 if axes.layout == NCL else 1) - (3 - len(shape))])


def batch_from_strings(records: Sequence[tuple[str, str]], spec: ModelSpec) -> SequenceBatch:
    """Encode ``(name, sequence)`` pairs for a model, checking each length first."""
    for name, seq in records:
        if len(seq) != spec.seq_len:
            raise SequenceError(
                f"sequence {name!r} has length {len(seq)} but the model needs length {spec.seq_len}"
            )
    names = tuple(name for name, _ in records)
    x = one_hot([seq for _, seq in records], spec.alphabet, layout=spec.layout, names=names)
    return SequenceBatch(x=x, names=names)


def _load_array(path: Path, what: str):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"cannot read {what} {str(path)!r}: {exc} (object arrays are not supported)") from None
    except Exception as exc:
        raise InputError(f"cannot read {what} {str(path)!r}: {type(exc).__name__}: {exc}") from None


def _check_array_shape(x: np.ndarray, spec: ModelSpec, source: str) -> np.ndarray:
    want = tuple(spec.input_shape)
    if x.ndim == 2 and x.shape == want:
        x = x[None]
    if x.ndim != 3 or tuple(x.shape[1:]) != want:
        exp = f"(N, {want[0]}, {want[1]})"
        msg = (
            f"{source} holds an array of shape {x.shape}; the model ({spec.layout} layout) "
            f"expects {exp}"
        )
        if x.ndim == 3 and tuple(x.shape[1:]) == want[::-1]:
            other = NLC if spec.layout == NCL else NCL
            msg += (
                f"; the array looks like the {other} layout: transpose it with "
                "x.transpose(0, 2, 1) before saving"
            )
        raise SequenceError(msg)
    return validate_one_hot(x, spec)


def _read_npy(path: Path, spec: ModelSpec) -> SequenceBatch:
    x = _load_array(path, "NPY file")
    x = _check_array_shape(np.asarray(x), spec, f"{str(path)!r}")
    return SequenceBatch(x=x, names=default_names(len(x)))


def _read_npz(path: Path, spec: ModelSpec) -> SequenceBatch:
    with _load_array(path, "NPZ file") as data:
        keys = list(data.files)
        if "x" in keys:
            key = "x"
        else:
            arrays = [k for k in keys if k not in ("names", "__metadata__")]
            if len(arrays) != 1:
                raise SequenceError(
                    f"{str(path)!r} holds arrays {keys}; put the one-hot sequences under key 'x'"
                )
            key = arrays[0]
        x = _check_array_shape(np.asarray(data[key]), spec, f"{str(path)!r} (key {key!r})")
        if "names" in keys:
            names = tuple(str(v) for v in np.asarray(data["names"]).ravel())
            if len(names) != len(x):
                raise SequenceError(
                    f"{str(path)!r} has {len(names)} names for {len(x)} sequences"
                )
        else:
            names = default_names(len(x))
    return SequenceBatch(x=x, names=names)


def default_names(n: int) -> tuple[str, ...]:
    """Names for sequences given without names: ``seq0``, ``seq1``, ..."""
    return tuple(f"seq{i}" for i in range(n))
