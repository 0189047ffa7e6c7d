"""One-hot encoding: sequences of letters to and from float32 one-hot arrays.

Arrays are laid out ``(N, A, L)`` for ``"ncl"`` models and ``(N, L, A)`` for ``"nlc"``
models. Columns that are not a base of the alphabet (``N`` and the IUPAC ambiguity codes
for DNA/RNA, ``X`` for protein) are all-zero columns. :func:`random_one_hot` is the one
generator of seeded random one-hot batches (shape measurement, checks, tests, tools).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .alphabets import PROTEIN
from .errors import InputError, SequenceError
from .layout import LAYOUTS, NCL, NLC, layout_of

#: characters encoded as an all-zero column for nucleotide alphabets (IUPAC ambiguity codes)
NUCLEOTIDE_AMBIGUOUS = "NRYSWKMBDHV"
#: characters encoded as an all-zero column for the protein alphabet
PROTEIN_AMBIGUOUS = "XBZJUO*"
#: which sequences of a :func:`random_one_hot` batch get all-zero columns
UNKNOWN_SEQUENCES = ("all", "first", "last")

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


def check_layout(layout: str) -> None:
    """Refuse a layout other than ``"ncl"`` or ``"nlc"`` (:class:`InputError` naming it)."""
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
    check_layout(layout)
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
    check_layout(layout)
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


# --------------------------------------------------------------------------- random


def random_one_hot(
    n: int,
    seq_len: int,
    *,
    alphabet_size: int = 4,
    layout: str = NCL,
    seed=0,
    rng: np.random.Generator | None = None,
    n_unknown: int = 0,
    unknown_in: str = "all",
) -> np.ndarray:
    """Seeded random one-hot sequences, optionally with all-zero ("N") columns.

    Parameters
    ----------
    n: number of sequences.
    seq_len: sequence length ``L``.
    alphabet_size: ``A`` (4 for DNA).
    layout: ``"ncl"`` → shape ``(n, A, L)``; ``"nlc"`` → shape ``(n, L, A)``.
    seed: anything ``np.random.default_rng`` takes; ignored when ``rng`` is given.
    rng: draw from this generator (it advances) instead of a new one from ``seed``.
    n_unknown: this many distinct random positions (at most ``L``) become all-zero
        columns in each sequence chosen by ``unknown_in``.
    unknown_in: ``"all"`` sequences, only the ``"first"`` or only the ``"last"``.

    Returns
    -------
    np.ndarray, float32, shape ``(n, A, L)`` or ``(n, L, A)``.

    Notes
    -----
    The draws are ``rng.integers(0, A, (n, L))`` for the bases, then one
    ``rng.choice(L, n_unknown, replace=False)`` per chosen sequence, in order: the same
    seed gives the same array in both layouts.
    """
    axes = layout_of(layout)
    if unknown_in not in UNKNOWN_SEQUENCES:
        raise InputError(f"unknown_in must be one of {', '.join(UNKNOWN_SEQUENCES)}, got {unknown_in!r}")
    if rng is None:
        rng = np.random.default_rng(seed)
    x = np.eye(alphabet_size, dtype=np.float32)[rng.integers(0, alphabet_size, (n, seq_len))]  # (n, L, A)
    if n_unknown and n:
        rows = {"all": range(n), "first": (0,), "last": (n - 1,)}[unknown_in]
        for i in rows:
            x[i, rng.choice(seq_len, size=min(n_unknown, seq_len), replace=False)] = 0.0
    return axes.from_nla(x)
