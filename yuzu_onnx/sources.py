"""Sequence inputs split into shards: read and encode any row range on its own.

A genome-scale input (100,000 BED regions, a large FASTA or NPY file) is never encoded
at once. :func:`open_source` reads only what locates the sequences (the BED lines, the
byte offsets of FASTA records, the shape of a memory-mapped NPY array); a
:class:`SequenceSource` then encodes any rows ``start:stop`` into a
:class:`~yuzu_onnx.encoding.SequenceBatch`: the genome is read and one-hot encoded per
shard, by the local engine in the driver or by CPU tasks on a Ray cluster
(:mod:`yuzu_onnx.distributed`). A source is small and picklable; it holds paths, not
sequences (a gzipped FASTA, which cannot be read from an offset, holds its records).

Every source gives the same sequences, names and coordinates as
:func:`yuzu_onnx.sequences.read_sequences` on the whole file.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .encoding import SequenceBatch
from .errors import InputError, SequenceError, option
from .layout import SequenceSpec
from .sequences import (
    _check_array_shape,
    _load_array,
    batch_from_strings,
    default_names,
    parse_fasta,
    sequence_file_kind,
)
from .textfiles import GZIP_MAGIC


@dataclass(frozen=True)
class SequenceSource:
    """Where ``n`` sequences come from, readable by row range (see :func:`open_source`).

    Attributes
    ----------
    kind: ``npy``, ``npz``, ``fasta`` or ``bed``.
    path: the input file.
    n: the number of sequences.
    spec: the model's layout, alphabet and length.
    genome: BED only: the genome FASTA.
    strand: BED only: reverse-complement ``-`` strand regions.
    regions: BED only: ``(chrom, start, end, name, strand)`` per region.
    offsets: plain FASTA only: the byte offset of each record and the file's size (n + 1).
    records: gzipped FASTA only: ``(name, sequence)`` per record.
    key: NPZ only: the array holding the sequences.
    first: the first row this source covers (a :meth:`part` covers rows ``first:n``).
    """

    kind: str
    path: str
    n: int
    spec: SequenceSpec
    genome: str | None = None
    strand: bool = False
    regions: tuple[tuple[str, int, int, str | None, str], ...] = ()
    offsets: tuple[int, ...] = ()
    records: tuple[tuple[str, str], ...] = ()
    key: str = "x"
    first: int = 0

    def __len__(self) -> int:
        return self.n - self.first

    def part(self, start: int, stop: int) -> SequenceSource:
        """The same source restricted to rows ``start:stop`` (small: ships to a worker)."""
        self._check_rows(start, stop)
        lo, hi = start - self.first, stop - self.first
        return replace(self, n=stop, first=start, regions=self.regions[lo:hi],
                       offsets=self.offsets[lo : hi + 1], records=self.records[lo:hi])

    def _check_rows(self, start: int, stop: int) -> None:
        if not self.first <= start < stop <= self.n:
            raise InputError(f"rows {start}:{stop} are outside the input's rows {self.first}:{self.n}")

    def read(self, start: int, stop: int) -> SequenceBatch:
        """Sequences ``start:stop``, encoded for the model.

        Returns
        -------
        SequenceBatch: ``x`` of shape ``(stop - start, A, L)`` or ``(stop - start, L, A)``.
        """
        self._check_rows(start, stop)
        if self.kind == "bed":
            return self._read_bed(start, stop)
        if self.kind == "fasta":
            return self._read_fasta(start, stop)
        return self._read_array(start, stop)

    def _read_bed(self, start: int, stop: int) -> SequenceBatch:
        from .genome import BedRegion, extract_regions

        regions = [BedRegion(*r) for r in self.regions[start - self.first : stop - self.first]]
        return extract_regions(regions, self.genome, self.spec.seq_len, strand=self.strand,
                               alphabet=self.spec.alphabet, layout=self.spec.layout)

    def _read_fasta(self, start: int, stop: int) -> SequenceBatch:
        lo, hi = start - self.first, stop - self.first
        if self.records:
            records = list(self.records[lo:hi])
        else:
            with open(self.path, "rb") as fh:
                fh.seek(self.offsets[lo])
                text = fh.read(self.offsets[hi] - self.offsets[lo]).decode("utf-8", "replace")
            records = parse_fasta(text, source=self.path)
        return batch_from_strings(records, self.spec)

    def _read_array(self, start: int, stop: int) -> SequenceBatch:
        path = Path(self.path)
        names = default_names(stop)[start:]
        if self.kind == "npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            x = arr[None] if arr.ndim == 2 else arr[start:stop]
        else:
            with _load_array(path, "NPZ file") as data:
                arr = data[self.key]
                x = arr[None] if arr.ndim == 2 else arr[start:stop]
                if "names" in data.files:
                    names = tuple(str(v) for v in np.asarray(data["names"]).ravel()[start:stop])
        x = _check_array_shape(np.asarray(x), self.spec, f"{str(path)!r}")
        return SequenceBatch(x=x, names=names)


def open_source(path: str | os.PathLike, spec: SequenceSpec, *, genome: str | os.PathLike | None = None,
                strand: bool = False) -> SequenceSource:
    """Locate the sequences of an input file without encoding them.

    Parameters
    ----------
    path: ``.npy``, ``.npz``, FASTA (optionally gzipped) or ``.bed`` (with ``genome``).
    spec: the model's layout, alphabet and length.
    genome: the genome FASTA for BED input (its ``.fai`` index is built here, once).
    strand: BED input only: reverse-complement ``-`` strand regions.

    Raises
    ------
    InputError: a missing file, an unknown format, BED without ``genome``.
    SequenceError: an empty input, or an NPY/NPZ array of the wrong shape.
    """
    p, kind = sequence_file_kind(path)
    if kind == "bed":
        source = _bed_source(p, spec, genome, strand)
    elif kind == "fasta":
        source = _fasta_source(p, spec)
    else:
        source = _array_source(p, spec, kind)
    if source.n == 0:
        raise SequenceError(f"{str(p)!r} holds no sequences")
    return source


def _bed_source(path: Path, spec: SequenceSpec, genome, strand: bool) -> SequenceSource:
    from .genome import open_genome, read_bed

    if genome is None:
        raise InputError(f"BED input {str(path)!r} needs a genome FASTA ({option('genome')}) to read sequences from")
    regions = tuple((r.chrom, r.start, r.end, r.name, r.strand) for r in read_bed(path))
    fasta = open_genome(genome)  # builds the .fai index once, before any worker opens it
    try:
        known = set(fasta.keys())
    finally:
        fasta.close()
    missing = next((r for r in regions if r[0] not in known), None)
    if missing is not None:
        from .genome import BedRegion, _unknown_chrom_message

        raise SequenceError(_unknown_chrom_message(BedRegion(*missing), dict.fromkeys(known, 0)))
    return SequenceSource("bed", str(path), len(regions), spec, genome=os.fspath(genome), strand=bool(strand),
                          regions=regions)


def _fasta_source(path: Path, spec: SequenceSpec) -> SequenceSource:
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == GZIP_MAGIC[:2]
    if gzipped:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            records = tuple(parse_fasta(fh.read(), source=str(path)))
        _check_lengths(records, spec)
        return SequenceSource("fasta", str(path), len(records), spec, records=records)
    offsets = _record_offsets(path)
    return SequenceSource("fasta", str(path), len(offsets) - 1, spec, offsets=tuple(offsets))


def _record_offsets(path: Path) -> list[int]:
    """Byte offsets of the FASTA records (``>`` lines), then the file size."""
    offsets: list[int] = []
    position = 0
    seen_text = False
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b">"):
                offsets.append(position)
            elif line.strip() and not line.startswith(b";") and not offsets:
                seen_text = True
            position += len(line)
    if seen_text or not offsets:
        parse_fasta(path.read_text("utf-8", "replace"), source=str(path))  # raises the reader's error
    offsets.append(position)
    return offsets


def _check_lengths(records: Sequence[tuple[str, str]], spec: SequenceSpec) -> None:
    for name, seq in records:
        if len(seq) != spec.seq_len:
            raise SequenceError(f"sequence {name!r} has length {len(seq)} but the model needs length {spec.seq_len}")


def _array_source(path: Path, spec: SequenceSpec, kind: str) -> SequenceSource:
    if kind == "npy":
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        if x.ndim == 2:
            _check_array_shape(np.asarray(x), spec, f"{str(path)!r}")
            return SequenceSource("npy", str(path), 1, spec)
        _check_array_shape(np.asarray(x[:1]), spec, f"{str(path)!r}")
        return SequenceSource("npy", str(path), int(x.shape[0]), spec)
    with _load_array(path, "NPZ file") as data:
        keys = list(data.files)
        if "x" in keys:
            key = "x"
        else:
            arrays = [k for k in keys if k not in ("names", "__metadata__")]
            if len(arrays) != 1:
                raise SequenceError(f"{str(path)!r} holds arrays {keys}; put the one-hot sequences under key 'x'")
            key = arrays[0]
        x = np.asarray(data[key])
        n = 1 if x.ndim == 2 else int(x.shape[0])
        _check_array_shape(x[:1] if x.ndim == 3 else x, spec, f"{str(path)!r} (key {key!r})")
        if "names" in keys and len(np.asarray(data["names"]).ravel()) != n:
            raise SequenceError(f"{str(path)!r} has {len(np.asarray(data['names']).ravel())} names for {n} sequences")
    return SequenceSource("npz", str(path), n, spec, key=key)


__all__ = ["SequenceSource", "open_source"]
