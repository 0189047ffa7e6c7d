"""Variant tables: one row per single-base substitution, scored by ISM.

An ISM result holds, for every sequence ``n``, window position ``j`` and base ``a``, the
change of each model output when ``a`` is put at ``j``. This module lays it out as a
table with one row per (sequence, position, ref, alt) with ``alt != ref``:

=============  ============================================================================
``name``       the sequence name
``position``   0-based position in the sequence (``window_start + j``)
``chrom``      only with ``coords``: the chromosome of the sequence's interval
``pos``        only with ``coords``: 1-based genomic coordinate of the position
``strand``     only with ``coords``: ``+`` or ``-`` (``.`` is read as ``+``)
``genome_ref`` only with ``coords``: the reference base on the ``+`` strand
``genome_alt`` only with ``coords``: the alternative base on the ``+`` strand
``ref``        the sequence's base at the position (``N`` where the input is not one-hot)
``alt``        the substituted base, as the model saw it
``<output>``   the ISM delta, for an output without extra dims (one value per sequence)
``<output>_l2`` the Euclidean norm of the delta over the output's dims, otherwise
=============  ============================================================================

Coordinates follow BED: ``coords[n] = (chrom, start, end, strand)`` with 0-based,
end-exclusive ``start, end`` and ``end - start == L``. On the ``+`` strand sequence
position ``p`` is the genomic base ``start + p`` (0-based), reported 1-based as
``start + p + 1``. A ``-`` strand sequence is the reverse complement of the interval,
so its position ``p`` is the genomic base ``end - 1 - p`` (reported as ``end - p``) and
its letters are complemented to give ``genome_ref``/``genome_alt``.

Positions where the input is one-hot give ``A - 1`` rows (the reference base, whose
delta is exactly 0, is left out); positions that are not one-hot (``N``, padding) give
``A`` rows with ``ref = N``.

:func:`write_variants_tsv` formats the table with vectorised numpy byte arithmetic (no
Python loop per row), several million rows per second; :func:`variant_rows` yields
rows as dicts for use in Python and :func:`variant_table` returns the columns.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .errors import InputError, install_hint
from .layout import LAYOUTS
from .reductions import l2_norm

_COMPLEMENT_PAIRS = {"A": "TU", "T": "A", "U": "A", "C": "G", "G": "C", "N": "N"}
_BASE_COLUMNS = ("name", "position")
_COORD_COLUMNS = ("chrom", "pos", "strand", "genome_ref", "genome_alt")
_ALLELE_COLUMNS = ("ref", "alt")
_ROWS_PER_CHUNK = 500_000


class _Source:
    """Validated inputs, with every ISM array reduced to a score of shape (N, Lw, A)."""

    def __init__(self, ism_arrays, X, layout, alphabet, names, window_start, coords):
        if layout not in LAYOUTS:
            raise InputError(f"layout must be 'ncl' or 'nlc', got {layout!r}")
        if not isinstance(ism_arrays, Mapping) or not ism_arrays:
            raise InputError("ism_arrays must be a non-empty mapping of output name to ISM array")
        X = np.asarray(X)
        if X.ndim != 3:
            raise InputError(f"X must have shape (N, A, L) or (N, L, A), got {X.shape}")
        xl = X if layout == "nlc" else np.swapaxes(X, 1, 2)  # (N, L, A)
        n, length, a = xl.shape
        if not isinstance(alphabet, str) or len(alphabet) != a or len(set(alphabet)) != a:
            raise InputError(f"alphabet must be {a} distinct letters (the one-hot axis), got {alphabet!r}")
        self.alphabet = alphabet.upper()
        names = np.asarray(names, dtype=str).reshape(-1)
        if names.shape[0] != n:
            raise InputError(f"got {names.shape[0]} names for {n} sequences")
        for bad in (s for s in names.tolist() if "\t" in s or "\n" in s or "\r" in s):
            raise InputError(f"sequence name {bad!r} contains a tab or newline")
        self.names = names

        self.columns_out: list[str] = []
        self.scores: list[np.ndarray] = []
        lw = None
        for out_name, arr in ism_arrays.items():
            arr = np.asarray(arr)
            if arr.ndim < 3:
                raise InputError(f"ISM array {out_name!r} has shape {arr.shape}; expected rank >= 3")
            nla = arr if layout == "nlc" else np.swapaxes(arr, 1, 2)  # (N, Lw, A, *out)
            if nla.shape[0] != n or nla.shape[2] != a:
                raise InputError(
                    f"ISM array {out_name!r} has shape {arr.shape}, which does not fit X {X.shape} "
                    f"in layout {layout!r} (N={n}, A={a})"
                )
            if lw is None:
                lw = nla.shape[1]
            elif nla.shape[1] != lw:
                raise InputError(f"ISM arrays cover windows of different lengths ({lw} and {nla.shape[1]})")
            if nla.ndim == 3:
                self.columns_out.append(str(out_name))
                self.scores.append(nla)
            else:
                self.columns_out.append(f"{out_name}_l2")
                self.scores.append(l2_norm(nla))
        clash = set(self.columns_out) & {*_BASE_COLUMNS, *_COORD_COLUMNS, *_ALLELE_COLUMNS}
        if clash or len(set(self.columns_out)) != len(self.columns_out):
            raise InputError(f"output names give clashing column names: {sorted(clash) or self.columns_out}")
        if not 0 <= int(window_start) <= length - lw:
            raise InputError(
                f"window_start {window_start} with a window of {lw} positions does not fit in "
                f"sequences of length {length}"
            )
        self.n, self.length, self.a, self.lw = n, length, a, lw
        self.window_start = int(window_start)

        xw = xl[:, self.window_start : self.window_start + lw, :]
        is_one = xw == 1
        onehot = (is_one.sum(axis=2) == 1) & ((is_one | (xw == 0)).all(axis=2))
        self.ref_idx = np.where(onehot, is_one.argmax(axis=2), a)  # a = "N"
        self.letters = np.array(list(self.alphabet) + ["N"])
        self.coords = None if coords is None else self._coords(coords)

    def _coords(self, coords):
        if len(coords) != self.n:
            raise InputError(f"got {len(coords)} coordinates for {self.n} sequences")
        chrom, start, end, minus = [], [], [], []
        for i, c in enumerate(coords):
            if len(c) not in (3, 4):
                raise InputError(f"coordinate {i} must be [chrom, start, end, strand], got {c!r}")
            strand = str(c[3]) if len(c) == 4 else "+"
            if strand not in ("+", "-", "."):
                raise InputError(f"coordinate {i} has strand {strand!r}; expected +, - or .")
            s, e = int(c[1]), int(c[2])
            if e - s != self.length:
                raise InputError(
                    f"coordinate {i} ({c[0]}:{s}-{e}) spans {e - s} bases but sequences have "
                    f"length {self.length}"
                )
            chrom.append(str(c[0]))
            start.append(s)
            end.append(e)
            minus.append(strand == "-")
        minus_arr = np.array(minus, dtype=bool)
        # complements in the model's own letters: A pairs with T for DNA, with U for RNA
        known = set(self.letters)
        comp = np.array(
            [next((p for p in _COMPLEMENT_PAIRS.get(c, "") if p in known), "") for c in self.letters]
        )
        if minus_arr.any() and (comp == "").any():
            missing = [c for c, m in zip(self.letters, comp, strict=True) if not m]
            raise InputError(
                f"'-' strand coordinates need complementary letters; alphabet {self.alphabet!r} "
                f"has no complement for {''.join(missing)}"
            )
        return {
            "chrom": np.array(chrom, dtype=str),
            "start": np.array(start, dtype=np.int64),
            "end": np.array(end, dtype=np.int64),
            "minus": minus_arr,
            "complement": comp,
        }

    @property
    def column_names(self) -> list[str]:
        coords = list(_COORD_COLUMNS) if self.coords is not None else []
        return [*_BASE_COLUMNS, *coords, *_ALLELE_COLUMNS, *self.columns_out]

    def index(self, lo: int, hi: int):
        """Row indices (sequence, window position, alt) for sequences ``lo:hi``, row order."""
        ref = self.ref_idx[lo:hi]
        keep = np.arange(self.a)[None, None, :] != ref[:, :, None]
        n_idx, j_idx, a_idx = np.nonzero(keep)
        return n_idx + lo, j_idx, a_idx

    def chunks(self) -> Iterator[tuple[int, int]]:
        per_seq = max(1, self.lw * self.a)
        step = max(1, _ROWS_PER_CHUNK // per_seq)
        for lo in range(0, self.n, step):
            yield lo, min(self.n, lo + step)

    def table(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """The columns for sequences ``lo:hi`` as numpy arrays (str, int64, float)."""
        n_idx, j_idx, a_idx = self.index(lo, hi)
        cols: dict[str, np.ndarray] = {}
        for col, kind, value in self._values(n_idx, j_idx, a_idx):
            if kind == "int":
                cols[col] = value
            elif kind == "float":
                cols[col] = np.asarray(value)
            else:  # (lookup table of strings, row indices into it)
                table, idx = value
                cols[col] = table[idx]
        return cols

    def text(self, lo: int, hi: int, digits: int) -> tuple[bytes, int]:
        """The TSV lines for sequences ``lo:hi`` and their number."""
        n_idx, j_idx, a_idx = self.index(lo, hi)
        fields = []
        for _, kind, value in self._values(n_idx, j_idx, a_idx):
            if kind == "int":
                fields.append(_int_field(value))
            elif kind == "float":
                fields.append(_float_field(value, digits))
            else:
                table, idx = value
                fields.append(_str_field(table)[idx])
        return _join_fields(fields), len(n_idx)

    def _values(self, n_idx, j_idx, a_idx):
        """``(column, kind, value)`` in column order; strings come as (table, indices)."""
        ref = self.ref_idx[n_idx, j_idx]
        position = self.window_start + j_idx
        yield "name", "str", (self.names, n_idx)
        yield "position", "int", position
        if self.coords is not None:
            c = self.coords
            minus = c["minus"][n_idx]
            both = np.concatenate([self.letters, c["complement"]])
            shift = np.where(minus, len(self.letters), 0)
            yield "chrom", "str", (c["chrom"], n_idx)
            yield "pos", "int", np.where(minus, c["end"][n_idx] - position, c["start"][n_idx] + position + 1)
            yield "strand", "str", (np.array(["+", "-"]), minus.astype(np.intp))
            yield "genome_ref", "str", (both, ref + shift)
            yield "genome_alt", "str", (both, a_idx + shift)
        yield "ref", "str", (self.letters, ref)
        yield "alt", "str", (self.letters, a_idx)
        for col, score in zip(self.columns_out, self.scores, strict=True):
            yield col, "float", score[n_idx, j_idx, a_idx]


def variant_table(
    ism_arrays: Mapping[str, np.ndarray],
    X: np.ndarray,
    *,
    layout: str,
    alphabet: str,
    names: Sequence[str],
    window_start: int = 0,
    coords: Sequence[Sequence] | None = None,
) -> dict[str, np.ndarray]:
    """The variant table as columns (numpy arrays of equal length), in row order.

    Parameters are those of :func:`variant_rows`. Rows run over sequences, then
    window positions, then alternative bases in alphabet order.
    """
    src = _Source(ism_arrays, X, layout, alphabet, names, window_start, coords)
    parts = [src.table(lo, hi) for lo, hi in src.chunks()]
    if not parts:
        return {c: np.empty(0) for c in src.column_names}
    return {c: np.concatenate([p[c] for p in parts]) for c in src.column_names}


def variant_rows(
    ism_arrays: Mapping[str, np.ndarray],
    X: np.ndarray,
    *,
    layout: str,
    alphabet: str,
    names: Sequence[str],
    window_start: int = 0,
    coords: Sequence[Sequence] | None = None,
) -> Iterator[dict[str, object]]:
    """Yield one dict per (sequence, position, ref, alt) with ``alt != ref``.

    Parameters
    ----------
    ism_arrays: output name → ISM array, shape=(N, A, Lw, *out_dims) for ``ncl`` or
        (N, Lw, A, *out_dims) for ``nlc`` (reductions ``none``, ``sum`` or ``l2``;
        an array without out_dims is written as its signed delta under the output's
        name, one with out_dims as the norm of the delta, column ``<output>_l2``).
    X: shape=(N, A, L) or (N, L, A), the one-hot input.
    layout: ``"ncl"`` or ``"nlc"``, the layout of ``X`` and of the ISM arrays.
    alphabet: the letters of the one-hot axis, e.g. ``"ACGT"``.
    names: N sequence names.
    window_start: sequence position of the ISM window's first column.
    coords: optional N BED intervals ``(chrom, start, end[, strand])`` with
        ``end - start == L``; adds the genomic columns (see the module docstring).

    Yields
    ------
    dict: column name → value (str, int or float), keys in column order.
    """
    src = _Source(ism_arrays, X, layout, alphabet, names, window_start, coords)
    columns = src.column_names
    for lo, hi in src.chunks():
        table = src.table(lo, hi)
        for values in zip(*(table[c].tolist() for c in columns), strict=True):
            yield dict(zip(columns, values, strict=True))


def write_variants_tsv(
    path: str | os.PathLike,
    ism_arrays: Mapping[str, np.ndarray],
    X: np.ndarray,
    *,
    layout: str,
    alphabet: str,
    names: Sequence[str],
    window_start: int = 0,
    coords: Sequence[Sequence] | None = None,
    digits: int = 7,
) -> int:
    """Write the variant table as a tab-separated file with a header line.

    Parameters are those of :func:`variant_rows`, plus ``digits``, the significant
    digits of the scores (printed like ``%.{digits}g``: ``0.0123``, ``-1.5e-05``).
    A path ending in ``.gz`` is gzip-compressed. The file is written to a temporary
    name beside ``path`` and renamed into place, so readers never see half a file.

    Returns
    -------
    int: the number of rows written (the header not counted).
    """
    if not isinstance(digits, int) or not 1 <= digits <= 17:
        raise InputError(f"digits must be an int from 1 to 17, got {digits!r}")
    src = _Source(ism_arrays, X, layout, alphabet, names, window_start, coords)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with atomic_file(path) as raw, (gzip.open(raw, "wb") if path.suffix == ".gz" else nullcontext(raw)) as fh:
        fh.write(("\t".join(src.column_names) + "\n").encode())
        for lo, hi in src.chunks():
            text, count = src.text(lo, hi, digits)
            fh.write(text)
            rows += count
    return rows


class VariantFileWriter:
    """Write the variant table block by block: TSV (``.tsv``, ``.tsv.gz``) or Parquet (``.parquet``).

    Each :meth:`write` adds the rows of a block of sequences (the arguments of
    :func:`variant_rows`), so a table of a genome-scale result never sits in memory. The
    file is written under a temporary name beside ``path`` and renamed into place by
    :meth:`close`; :meth:`abort` removes it. Parquet needs ``pyarrow``
    (``pip install pyarrow``); its columns are those of
    the TSV, with ``position``/``pos`` as int64, scores as float32 and the rest as strings.

    Parameters
    ----------
    path: the table; ``.parquet`` selects Parquet, anything else TSV (gzipped for ``.gz``).
    digits: TSV only: significant digits of the scores.
    """

    def __init__(self, path: str | os.PathLike, *, digits: int = 7) -> None:
        import tempfile

        if not isinstance(digits, int) or not 1 <= digits <= 17:
            raise InputError(f"digits must be an int from 1 to 17, got {digits!r}")
        self.path = Path(path)
        self.parquet = is_parquet(self.path)
        self.pa = _pyarrow() if self.parquet else None
        self.digits = digits
        self.rows = 0
        self._writer = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._tmp = Path(tmp)
        self._raw = os.fdopen(fd, "wb")
        self._fh = gzip.open(self._raw, "wb") if (not self.parquet and self.path.suffix == ".gz") else self._raw

    def write(self, ism_arrays: Mapping[str, np.ndarray], X: np.ndarray, *, layout: str, alphabet: str,
              names: Sequence[str], window_start: int = 0, coords: Sequence[Sequence] | None = None) -> int:
        """Add the rows of one block of sequences; returns how many."""
        src = _Source(ism_arrays, X, layout, alphabet, names, window_start, coords)
        count = 0
        for lo, hi in src.chunks():
            if self.parquet:
                count += self._write_parquet(src, src.table(lo, hi))
            else:
                if self.rows == 0 and count == 0:
                    self._fh.write(("\t".join(src.column_names) + "\n").encode())
                text, n = src.text(lo, hi, self.digits)
                self._fh.write(text)
                count += n
        self.rows += count
        return count

    def _write_parquet(self, src: _Source, columns: Mapping[str, np.ndarray]) -> int:
        pa = self.pa
        arrays = []
        for name in src.column_names:
            value = columns[name]
            if name in src.columns_out:
                arrays.append(pa.array(np.asarray(value, dtype=np.float32)))
            elif value.dtype.kind in "iu":
                arrays.append(pa.array(value.astype(np.int64)))
            else:
                arrays.append(pa.array(value.astype(str).tolist(), type=pa.string()))
        table = pa.Table.from_arrays(arrays, names=list(src.column_names))
        if self._writer is None:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self._fh, table.schema)
        self._writer.write_table(table)
        return table.num_rows

    def close(self) -> int:
        """Finish the file and rename it into place; returns the number of rows."""
        if self.parquet and self._writer is None:
            raise InputError(f"no variant rows to write to {str(self.path)!r}")
        if self._writer is not None:
            self._writer.close()
        if self._fh is not self._raw:
            self._fh.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        return self.rows

    def abort(self) -> None:
        """Drop the temporary file."""
        for fh in (self._fh, self._raw):
            with contextlib.suppress(Exception):
                fh.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()


def write_variants_file(path: str | os.PathLike, ism_arrays: Mapping[str, np.ndarray], X: np.ndarray, *,
                        layout: str, alphabet: str, names: Sequence[str], window_start: int = 0,
                        coords: Sequence[Sequence] | None = None) -> int:
    """Write the variant table as Parquet (``.parquet``) or TSV (anything else); returns the rows.

    Parameters are those of :func:`variant_rows`.
    """
    if not is_parquet(path):
        return write_variants_tsv(path, ism_arrays, X, layout=layout, alphabet=alphabet, names=names,
                                  window_start=window_start, coords=coords)
    writer = VariantFileWriter(path)
    try:
        writer.write(ism_arrays, X, layout=layout, alphabet=alphabet, names=names, window_start=window_start,
                     coords=coords)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def is_parquet(path: str | os.PathLike) -> bool:
    """Whether a variant table path asks for Parquet (``.parquet``)."""
    return str(path).lower().endswith(".parquet")


def _pyarrow():
    try:
        import pyarrow
    except ImportError:
        raise InputError(f"writing a Parquet variant table needs pyarrow: {install_hint('pyarrow', 'ray')}; "
                         "or give a .tsv path") from None
    return pyarrow


# ----------------------------------------------------------------------------------------
# Vectorised text formatting. Each field is a (rows, width) uint8 matrix of ASCII codes
# padded with NUL bytes anywhere inside; a row's line is its fields joined by tabs, and
# dropping every NUL byte of the whole block compacts it into the final text.

_ZERO = ord("0")


def _str_field(values: np.ndarray) -> np.ndarray:
    """Strings → (n, width) UTF-8 bytes, NUL-padded on the right."""
    encoded = np.char.encode(np.asarray(values, dtype=str), "utf-8")
    width = max(1, encoded.dtype.itemsize)
    encoded = encoded.astype(f"S{width}")
    return encoded.view(np.uint8).reshape(len(encoded), width)


def _int_field(values: np.ndarray) -> np.ndarray:
    """Integers → (n, width) decimal digits, leading zeros as NUL, '-' for negatives."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    mag = np.abs(v)
    width = len(str(int(mag.max()))) if v.size else 1
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = _digits(mag, width)
    n_digits = np.maximum(1, np.searchsorted(powers[::-1], mag, side="right"))
    shown = np.arange(width)[None, :] >= (width - n_digits)[:, None]
    out = np.empty((v.size, width + 1), np.uint8)
    out[:, 0] = np.where(v < 0, ord("-"), 0)
    np.multiply(digits + _ZERO, shown, out=out[:, 1:], casting="unsafe")
    return out


def _float_field(values: np.ndarray, digits: int) -> np.ndarray:
    """Floats → (n, width) text like ``'%.{digits}g' % v`` (``nan``, ``inf``, ``0``).

    Each value is rounded to ``d = digits`` significant decimal digits, ``m * 10**(e-d+1)``
    with ``10**(d-1) <= m < 10**d``. A table per row holds the digit characters (trailing
    zeros already NUL), a ``'0'``, the point, the exponent's characters; one gather
    pattern per *case* lays a row out: fixed notation for each ``-4 <= e < d``,
    scientific otherwise, ``0`` for zero. Rows are sorted by case so each pattern is
    applied to one contiguous block.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n, d = v.size, digits
    finite = np.isfinite(v)
    nonzero = finite & (v != 0)
    mag = np.where(nonzero, np.abs(v), 1.0)
    exp = np.floor(np.log10(mag)).astype(np.int64)
    for _ in range(2):  # log10 can be off by one next to powers of ten
        mant = _scaled(mag, d - 1 - exp)
        exp += (mant >= 10.0**d).astype(np.int64) - (mant < 10.0 ** (d - 1)).astype(np.int64)
    mant = _scaled(mag, d - 1 - exp)
    carry = mant >= 10.0**d  # 9.99..95 rounds up to 10**d
    exp += carry
    m = np.where(carry, 10 ** (d - 1), mant.astype(np.int64))
    dig = _digits(m, d)  # (n, d)
    n_sig = d - np.argmax(dig[:, ::-1] != 0, axis=1)  # digits up to the last non-zero one
    fixed = (exp >= -4) & (exp < d)
    kept = np.where(fixed, np.maximum(n_sig, exp + 1), n_sig)
    point_after = np.where(fixed, np.maximum(exp + 1, 1), 1)  # digits before the point

    # the per-row table: d digit chars, '0', point, NUL, 'e', exponent sign, 3 exponent digits
    zero_c, point_c, nul_c, e_c = d, d + 1, d + 2, d + 3
    table = np.zeros((n, d + 8), np.uint8)
    np.multiply(dig + _ZERO, np.arange(d)[None, :] < kept[:, None], out=table[:, :d], casting="unsafe")
    table[:, zero_c] = _ZERO
    table[:, point_c] = np.where((kept > point_after) | (fixed & (exp < 0)), ord("."), 0)
    table[:, e_c] = ord("e")
    table[:, e_c + 1] = np.where(exp < 0, ord("-"), ord("+"))
    e_abs = np.abs(exp)
    table[:, e_c + 2] = np.where(e_abs >= 100, e_abs // 100 % 10 + _ZERO, 0)
    table[:, e_c + 3] = e_abs // 10 % 10 + _ZERO
    table[:, e_c + 4] = e_abs % 10 + _ZERO

    width = d + 6
    patterns = []
    for e in range(-4, d):  # fixed notation, case e + 4
        if e >= 0:
            pat = [*range(e + 1), point_c, *range(e + 1, d)]
        else:
            pat = [zero_c, point_c, *([zero_c] * (-e - 1)), *range(d)]
        patterns.append(pat)
    patterns.append([0, point_c, *range(1, d), e_c, e_c + 1, e_c + 2, e_c + 3, e_c + 4])  # scientific
    patterns.append([zero_c])  # zero (and, overwritten below, nan / inf)
    pattern = np.full((len(patterns), width), nul_c, np.intp)
    for i, pat in enumerate(patterns):
        pattern[i, : len(pat)] = pat
    case = np.where(fixed, exp + 4, d + 4)
    case[~nonzero] = d + 5

    order = np.argsort(case, kind="stable")
    sorted_case = case[order]
    sorted_table = table[order]
    body_sorted = np.empty((n, width), np.uint8)
    bounds = np.flatnonzero(np.diff(sorted_case)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, n], strict=True):
        if hi > lo:
            body_sorted[lo:hi] = sorted_table[lo:hi][:, pattern[sorted_case[lo]]]
    out = np.empty((n, width + 1), np.uint8)
    out[order, 1:] = body_sorted
    out[:, 0] = np.where((v < 0) & ~np.isnan(v), ord("-"), 0)
    out[(v == 0), 0] = 0
    for mask, text in ((np.isnan(v), b"nan"), (np.isinf(v), b"inf")):
        if mask.any():
            out[mask, 1:] = 0
            out[np.ix_(mask, np.arange(1, len(text) + 1))] = np.frombuffer(text, np.uint8)
    return out


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers → (n, width) decimal digits, most significant first.

    One scalar division per digit column: NumPy divides by a scalar much faster than by
    a broadcast array, and faster still in 32 bits.
    """
    small = values.size == 0 or int(values.max()) < 2**32
    vals = values.astype(np.uint32 if small else np.int64)
    ten = vals.dtype.type(10)
    out = np.empty((values.size, width), np.uint8)
    for i in range(width):
        out[:, i] = (vals // vals.dtype.type(10 ** (width - 1 - i))) % ten
    return out


def _scaled(mag: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``round(mag * 10**shift)`` without overflowing the power of ten."""
    up = np.where(shift >= 0, shift, 0)
    down = np.where(shift < 0, -shift, 0)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.rint(mag * np.power(10.0, up) / np.power(10.0, down))


def _join_fields(fields: list[np.ndarray]) -> bytes:
    n = fields[0].shape[0]
    tab = np.full((n, 1), ord("\t"), np.uint8)
    parts: list[np.ndarray] = []
    for i, f in enumerate(fields):
        if i:
            parts.append(tab)
        parts.append(f)
    parts.append(np.full((n, 1), ord("\n"), np.uint8))
    block = np.concatenate(parts, axis=1).ravel()
    return block[block != 0].tobytes()
