"""Sequences in and out: one-hot encoding, FASTA, NPY/NPZ and BED input.

Everything here produces or checks a float32 one-hot array in the model's layout:
``(N, A, L)`` for ``"ncl"`` models and ``(N, L, A)`` for ``"nlc"`` models. Columns that
are not a base of the alphabet (``N`` and the IUPAC ambiguity codes for DNA/RNA, ``X``
for protein) are all-zero columns.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .alphabets import PROTEIN
from .errors import InputError, SequenceError

if TYPE_CHECKING:  # pragma: no cover
    from .importer import ModelSpec

NCL = "ncl"
NLC = "nlc"
LAYOUTS = (NCL, NLC)

#: characters encoded as an all-zero column for nucleotide alphabets (IUPAC ambiguity codes)
NUCLEOTIDE_AMBIGUOUS = "NRYSWKMBDHV"
#: characters encoded as an all-zero column for the protein alphabet
PROTEIN_AMBIGUOUS = "XBZJUO*"

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".faa", ".frn", ".fas", ".mpfa", ".seq")
BED_SUFFIXES = (".bed",)
GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
SUM_TOLERANCE = 1e-6

_UNKNOWN = -2  # lookup-table code: not allowed
_ZERO = -1  # lookup-table code: all-zero column


@dataclass(frozen=True, eq=False)
class SequenceBatch:
    """Encoded sequences ready for a model.

    Attributes
    ----------
    x: shape=(N, A, L) or (N, L, A), float32 one-hot in the model's layout.
    names: one name per sequence.
    coords: for BED input, ``(chrom, start, end, strand)`` per sequence: the resized
        region (0-based, half-open) and ``"-"`` when the sequence was reverse-complemented,
        else ``"+"``; ``None`` for other inputs.
    """

    x: np.ndarray
    names: tuple[str, ...]
    coords: tuple[tuple[str, int, int, str], ...] | None = None

    def __post_init__(self):
        if len(self.names) != len(self.x):
            raise InputError(f"{len(self.names)} names for {len(self.x)} sequences")
        if self.coords is not None and len(self.coords) != len(self.x):
            raise InputError(f"{len(self.coords)} coordinates for {len(self.x)} sequences")

    def __len__(self) -> int:
        return len(self.x)


# --------------------------------------------------------------------------- alphabets


def alphabet_kind(alphabet: str) -> str:
    """``"nucleotide"`` (DNA/RNA), ``"protein"`` or ``"custom"`` for an alphabet's letters."""
    letters = alphabet.upper()
    if len(letters) == 4 and set(letters) <= set("ACGTU"):
        return "nucleotide"
    if sorted(letters) == sorted(PROTEIN):
        return "protein"
    return "custom"


def unknown_letter(alphabet: str) -> str:
    """The letter written for an all-zero column: ``N`` (nucleotides), ``X`` (protein)."""
    return "X" if alphabet_kind(alphabet) == "protein" else "N"


def _lookup_table(alphabet: str) -> np.ndarray:
    """A 256-entry table: byte → alphabet index, ``_ZERO`` or ``_UNKNOWN``."""
    letters = alphabet.upper()
    table = np.full(256, _UNKNOWN, dtype=np.int16)
    kind = alphabet_kind(letters)
    if kind == "nucleotide":
        for ch in NUCLEOTIDE_AMBIGUOUS:
            table[ord(ch)] = _ZERO
        if "T" in letters and "U" not in letters:
            table[ord("U")] = letters.index("T")
        if "U" in letters and "T" not in letters:
            table[ord("T")] = letters.index("U")
    elif kind == "protein":
        for ch in PROTEIN_AMBIGUOUS:
            table[ord(ch)] = _ZERO
    for i, ch in enumerate(letters):
        table[ord(ch)] = i
    for byte in range(ord("a"), ord("z") + 1):  # case-insensitive
        table[byte] = table[byte - 32]
    return table


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"layout must be 'ncl' or 'nlc', got {layout!r}")


def _seq_label(i: int, names: Sequence[str] | None) -> str:
    return f"sequence {names[i]!r}" if names is not None else f"sequence {i}"


# --------------------------------------------------------------------------- one-hot


def one_hot(
    seqs: Sequence[str],
    alphabet: str,
    *,
    layout: str = NCL,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """One-hot encode sequences of equal length.

    Parameters
    ----------
    seqs: N strings of the same length L (case-insensitive).
    alphabet: the letters of the one-hot axis, e.g. ``"ACGT"``.
    layout: ``"ncl"`` → shape ``(N, A, L)``; ``"nlc"`` → ``(N, L, A)``.
    names: optional sequence names, used in error messages.

    Returns
    -------
    np.ndarray, float32, shape=(N, A, L) or (N, L, A)

    Notes
    -----
    For DNA/RNA alphabets ``N`` and the IUPAC ambiguity codes ``RYSWKMBDHV`` become
    all-zero columns, and ``U`` is read as ``T`` (DNA) or ``T`` as ``U`` (RNA). For
    protein, ``X``, ``B``, ``Z``, ``J``, ``U``, ``O`` and ``*`` become all-zero columns.

    Raises
    ------
    SequenceError: a character outside the alphabet, or sequences of different lengths.
    """
    _check_layout(layout)
    if isinstance(seqs, (str, bytes)):
        raise TypeError("seqs must be a sequence of strings, not a single string; wrap it in a list")
    seqs = list(seqs)
    if names is not None and len(names) != len(seqs):
        raise InputError(f"{len(names)} names for {len(seqs)} sequences")
    if not alphabet:
        raise InputError("alphabet must not be empty")
    size = len(alphabet)
    if not seqs:
        shape = (0, size, 0) if layout == NCL else (0, 0, size)
        return np.zeros(shape, dtype=np.float32)
    length = len(seqs[0])
    for i, s in enumerate(seqs):
        if not isinstance(s, str):
            raise TypeError(f"{_seq_label(i, names)} is a {type(s).__name__}, not a str")
        if len(s) != length:
            first = _seq_label(0, names)
            raise SequenceError(
                f"{_seq_label(i, names)} has length {len(s)} but {first} has length {length}; "
                "all sequences must have the same length"
            )
    table = _lookup_table(alphabet)
    try:
        raw = "".join(seqs).encode("ascii")
    except UnicodeEncodeError:
        flat = "".join(seqs)
        pos = next(k for k, ch in enumerate(flat) if ord(ch) > 127)
        raise _bad_char(pos, flat[pos], length, names, alphabet) from None
    codes = table[np.frombuffer(raw, dtype=np.uint8)].reshape(len(seqs), length)
    bad = np.flatnonzero(codes == _UNKNOWN)
    if bad.size:
        pos = int(bad[0])
        raise _bad_char(pos, chr(raw[pos]), length, names, alphabet)
    eye = np.concatenate([np.eye(size, dtype=np.float32), np.zeros((1, size), np.float32)])
    x = eye[np.where(codes == _ZERO, size, codes)]  # (N, L, A)
    return x if layout == NLC else np.ascontiguousarray(x.transpose(0, 2, 1))


def _bad_char(flat_pos: int, ch: str, length: int, names, alphabet: str) -> SequenceError:
    i, j = divmod(flat_pos, length)
    kind = alphabet_kind(alphabet)
    allowed = {
        "nucleotide": f"{alphabet} or an ambiguity code ({NUCLEOTIDE_AMBIGUOUS})",
        "protein": f"the 20 amino acids or {PROTEIN_AMBIGUOUS}",
        "custom": alphabet,
    }[kind]
    return SequenceError(
        f"{_seq_label(i, names)} has character {ch!r} at position {j}, which is not in the "
        f"alphabet (allowed: {allowed}, any case)"
    )


def decode_one_hot(X: np.ndarray, alphabet: str, layout: str = NCL) -> list[str]:
    """Turn a one-hot array back into strings.

    Parameters
    ----------
    X: shape=(N, A, L) for ``"ncl"`` or (N, L, A) for ``"nlc"``.
    alphabet: the letters of the one-hot axis.
    layout: ``"ncl"`` or ``"nlc"``.

    Returns
    -------
    list[str]: all-zero columns become ``N`` (DNA/RNA) or ``X`` (protein); a soft
    column becomes its largest entry's letter.
    """
    _check_layout(layout)
    X = np.asarray(X)
    if X.ndim != 3:
        raise SequenceError(f"expected a rank-3 one-hot array, got shape {X.shape}")
    axis = 1 if layout == NCL else 2
    if X.shape[axis] != len(alphabet):
        raise SequenceError(
            f"array of shape {X.shape} has {X.shape[axis]} letters on the alphabet axis "
            f"(layout {layout}) but alphabet {alphabet!r} has {len(alphabet)}"
        )
    xn = X if layout == NLC else X.transpose(0, 2, 1)
    letters = np.frombuffer((alphabet.upper() + unknown_letter(alphabet)).encode("ascii"), np.uint8)
    idx = np.where(xn.max(axis=2, initial=0) > 0, xn.argmax(axis=2), len(alphabet))
    chars = letters[idx]
    return [row.tobytes().decode("ascii") for row in chars]


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA sequence (IUPAC codes and case preserved; U → A)."""
    return seq.translate(_COMPLEMENT)[::-1]


_COMPLEMENT = str.maketrans(
    "ACGTURYSWKMBDHVNacgturyswkmbdhvn", "TGCAAYRSWMKVHDBNtgcaayrswmkvhdbn"
)


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
    X: shape=(N, A, L) for ``"ncl"`` or (N, L, A) for ``"nlc"``.
    layout: ``"ncl"`` or ``"nlc"``.
    alphabet_size: ``A``.
    seq_len: ``L``, or ``None`` to accept any length.
    what: the argument's name, used in messages.

    Raises
    ------
    SequenceError: wrong rank or shape, non-finite values, values outside ``[0, 1]``, or a
        column summing to more than 1; the message names the sequence and the position.
    """
    _check_layout(layout)
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:
            raise SequenceError(f"{what} cannot be read as an array: {exc}") from None
    if X.dtype.kind not in "biuf":
        raise SequenceError(f"{what} has dtype {X.dtype}; a float32 one-hot array is needed")
    expected = _expected_shape(layout, alphabet_size, seq_len)
    if X.ndim != 3:
        raise SequenceError(
            f"{what} has rank {X.ndim} (shape {X.shape}); expected a rank-3 array of shape "
            f"{expected} ({layout} layout)"
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


def _read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file, gunzipping it when it starts with the gzip magic bytes."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file {str(p)!r} does not exist")
    if not p.is_file():
        raise InputError(f"{str(p)!r} is not a file")
    raw = p.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"{str(p)!r} is a damaged gzip file: {exc}") from None
    return raw


def read_text(path: str | os.PathLike) -> str:
    """A text file's contents, plain or gzipped (detected by its magic bytes)."""
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{str(path)!r} is not a text file (byte {exc.start} is not valid UTF-8)"
        ) from None


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
    p = Path(path)
    if not p.exists():
        raise InputError(f"sequence file {str(p)!r} does not exist")
    if not p.is_file():
        raise InputError(f"sequence path {str(p)!r} is not a file")
    kind = _sniff(p)
    if kind == "npy":
        return _read_npy(p, spec)
    if kind == "npz":
        return _read_npz(p, spec)
    if kind == "bed":
        if genome is None:
            raise InputError(f"BED input {str(p)!r} needs a genome FASTA (--genome) to read sequences from")
        from .genome import extract_regions, read_bed

        return extract_regions(
            read_bed(p), genome, spec.seq_len, strand=strand, alphabet=spec.alphabet, layout=spec.layout
        )
    records = read_fasta(p)
    return batch_from_strings(records, spec)


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
